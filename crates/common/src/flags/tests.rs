use serde_json::json;

use super::definition::Document;
use super::targeting::bucket_percent;
use super::*;

fn set(flags: serde_json::Value, version: i64) -> FlagSet {
    let document: Document =
        serde_json::from_value(json!({"version": version, "flags": flags})).unwrap();
    FlagSet::compile(&document).unwrap()
}

fn context<'a>(user: &'a str, tier: &'a str, role: &'a str) -> FlagContext<'a> {
    FlagContext {
        user_id: Some(user),
        tier: Some(tier),
        role: Some(role),
        course_id: None,
    }
}

fn rollout(percent: u32) -> serde_json::Value {
    json!({"ai-tutor": {
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "off",
        "targeting": {"fractional": [["on", percent], ["off", 100 - percent]]}
    }})
}

#[test]
fn targeting_rules_apply_in_the_order_written() {
    let flags = Flags::new();
    flags.replace(set(
        json!({"checkout-provider": {
            "state": "ENABLED",
            "variants": {"razorpay": "razorpay", "stripe": "stripe", "none": "none"},
            "defaultVariant": "razorpay",
            "targeting": {"if": [
                {"==": [{"var": "userId"}, "u-vip"]}, "none",
                {"in": [{"var": "tier"}, ["premium", "standard"]]}, "stripe",
                {"and": [{"==": [{"var": "role"}, "admin"]}, {"!": {"==": [{"var": "tier"}, "premium"]}}]}, "none",
                null
            ]}
        }}),
        1,
    ));
    let value = |user, tier, role| {
        flags
            .string("checkout-provider", &context(user, tier, role))
            .map(|v| v.to_string())
    };
    // The first rule wins over the second for the same learner.
    assert_eq!(
        value("u-vip", "premium", "learner").as_deref(),
        Some("none")
    );
    assert_eq!(
        value("u-1", "premium", "learner").as_deref(),
        Some("stripe")
    );
    assert_eq!(value("u-1", "free", "admin").as_deref(), Some("none"));
    // Nothing matched: the default variant.
    assert_eq!(value("u-1", "free", "learner").as_deref(), Some("razorpay"));
    let evaluation = flags
        .evaluate("checkout-provider", &context("u-1", "free", "learner"))
        .unwrap();
    assert_eq!(evaluation.reason, Reason::TargetingMatch);
}

#[test]
fn a_learner_stays_in_a_rollout_as_it_grows() {
    let users: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
    let enabled_at = |percent| {
        let flags = Flags::new();
        flags.replace(set(rollout(percent), 1));
        users
            .iter()
            .filter(|u| flags.enabled("ai-tutor", &context(u, "free", "learner")))
            .cloned()
            .collect::<std::collections::HashSet<_>>()
    };
    // Weights written as doubles (as the API's Struct carries them) mean the same.
    let doubles = Flags::new();
    doubles.replace(set(
        json!({"ai-tutor": {"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": "off", "targeting": {"fractional": [["on", 5.0], ["off", 95.0]]}}}),
        1,
    ));
    let five = enabled_at(5);
    let five_doubles: std::collections::HashSet<_> = users
        .iter()
        .filter(|u| doubles.enabled("ai-tutor", &context(u, "free", "learner")))
        .cloned()
        .collect();
    assert_eq!(five, five_doubles);
    let twenty = enabled_at(20);
    let all = enabled_at(100);
    assert!(
        five.is_subset(&twenty),
        "growing 5 % to 20 % dropped someone"
    );
    assert!(twenty.is_subset(&all));
    assert_eq!(all.len(), users.len());
    assert!(enabled_at(0).is_empty());
    // The shares are near what was asked for (2000 learners: within a few per cent).
    assert!((60..=140).contains(&five.len()), "5 % gave {}", five.len());
    assert!(
        (340..=460).contains(&twenty.len()),
        "20 % gave {}",
        twenty.len()
    );
    // The bucket is a pure function of the flag and the user.
    for user in users.iter().take(50) {
        let in_five = five.contains(user);
        assert_eq!(in_five, bucket_percent("ai-tutor", user) < 5.0, "{user}");
    }
}

#[test]
fn a_disabled_flag_is_off_and_an_undefined_one_answers_its_built_in_default() {
    let flags = Flags::new();
    let learner = context("u-1", "free", "learner");
    assert!(flags.enabled("ai-tutor", &learner), "built in: on");
    assert!(!flags.enabled("no-such-flag", &learner));
    flags.replace(set(
        json!({"ai-tutor": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}),
        2,
    ));
    assert!(!flags.enabled("ai-tutor", &learner), "the kill switch");
    assert_eq!(
        flags.evaluate("ai-tutor", &learner).unwrap().reason,
        Reason::Disabled
    );
}

#[test]
fn an_older_set_does_not_replace_a_newer_one() {
    let flags = Flags::new();
    assert!(flags.replace(set(rollout(100), 5)));
    assert!(!flags.replace(set(rollout(0), 4)));
    assert!(flags.enabled("ai-tutor", &context("u", "free", "learner")));
    assert!(flags.replace(set(rollout(0), 6)));
    assert!(!flags.enabled("ai-tutor", &context("u", "free", "learner")));
}

#[test]
fn broken_definitions_are_refused_with_the_reason() {
    let cases = [
        (
            json!({"state": "ON", "variants": {"on": true}, "defaultVariant": "on"}),
            "state is ENABLED or DISABLED",
        ),
        (
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "yes"}),
            "defaultVariant: no variant named \"yes\"",
        ),
        (
            json!({"state": "ENABLED", "variants": {"on": true, "s": "x"}, "defaultVariant": "on"}),
            "same type",
        ),
        (
            json!({"state": "ENABLED", "variants": {}, "defaultVariant": "on"}),
            "1 to 32 variants",
        ),
        (
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on", "targeting": {"if": [{"==": [{"var": "email"}, "x"]}, "on"]}}),
            "unknown attribute \"email\"",
        ),
        (
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on", "targeting": {"if": [{"sem_ver": [1, 2]}, "on"]}}),
            "unsupported operation \"sem_ver\"",
        ),
        (
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on", "targeting": {"if": [true, "gone"]}}),
            "no variant named \"gone\"",
        ),
        (
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on", "targeting": {"fractional": [["on", 0]]}}),
            "weight above 0",
        ),
        (
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on", "extra": 1}),
            "unknown field",
        ),
    ];
    for (definition, reason) in cases {
        let error = Flag::compile("a-flag", &definition).unwrap_err();
        assert!(error.contains(reason), "{definition}: {error}");
    }
    assert!(
        Flag::compile("Bad Key", &json!({}))
            .unwrap_err()
            .contains("flag key")
    );
}

#[tokio::test]
async fn openfeature_clients_evaluate_the_platform_flags() {
    let flags = Flags::new();
    flags.replace(set(
        json!({
            "ai-tutor": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                         "targeting": {"if": [{"==": [{"var": "tier"}, "premium"]}, "on"]}},
            "checkout-provider": {"state": "ENABLED", "variants": {"s": "stripe"}, "defaultVariant": "s"}
        }),
        1,
    ));
    let mut api = open_feature::OpenFeature::singleton_mut().await;
    api.set_provider(openfeature::FlagsProvider::new(flags))
        .await;
    let client = api.create_client();
    drop(api);
    let premium = open_feature::EvaluationContext::default()
        .with_targeting_key("u-1")
        .with_custom_field("tier", "premium");
    let free = open_feature::EvaluationContext::default()
        .with_targeting_key("u-2")
        .with_custom_field("tier", "free");
    assert!(
        client
            .get_bool_value("ai-tutor", Some(&premium), None)
            .await
            .unwrap()
    );
    assert!(
        !client
            .get_bool_value("ai-tutor", Some(&free), None)
            .await
            .unwrap()
    );
    assert_eq!(
        client
            .get_string_value("checkout-provider", Some(&free), None)
            .await
            .unwrap(),
        "stripe"
    );
    assert!(
        client
            .get_bool_value("checkout-provider", Some(&free), None)
            .await
            .is_err(),
        "a type mismatch"
    );
    assert!(
        client
            .get_bool_value("nope", Some(&free), None)
            .await
            .is_err()
    );
}
