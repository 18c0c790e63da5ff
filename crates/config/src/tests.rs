//! Configuration sources, precedence and validation, read from maps (never the process
//! environment).

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_match_the_architecture() {
    let config = Config::from_sources(None, &env(&[])).unwrap();
    assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
    assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(config.body_limit_bytes, 1024 * 1024);
    assert_eq!(
        config.database_url_for("user"),
        "sqlite://./data/user.db?mode=rwc"
    );
}

#[test]
fn environment_overrides_file_and_file_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("duovarsity.toml");
    std::fs::write(
        &file,
        "http_addr = \"0.0.0.0:9000\"\nbody_limit_bytes = 4096\n",
    )
    .unwrap();
    let config = Config::from_sources(
        Some(&file),
        &env(&[
            ("DUOVARSITY_BODY_LIMIT_BYTES", "8192"),
            (
                "DUOVARSITY_CORS_ALLOWED_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("PATH", "/usr/bin"),
            ("DUOVARSITY_TEST_POSTGRES_URL", "ignored by the platform"),
        ]),
    )
    .unwrap();
    assert_eq!(config.http_addr.to_string(), "0.0.0.0:9000");
    assert_eq!(config.body_limit_bytes, 8192);
    assert_eq!(
        config.cors_allowed_origins,
        vec!["https://a.example", "https://b.example"]
    );
}

#[test]
fn a_bad_value_names_its_variable() {
    let err = Config::from_sources(None, &env(&[("DUOVARSITY_HTTP_ADDR", "not-an-address")]))
        .unwrap_err();
    assert_eq!(err.source_name, "DUOVARSITY_HTTP_ADDR", "{err}");

    let err =
        Config::from_sources(None, &env(&[("DUOVARSITY_BODY_LIMIT_BYTES", "12")])).unwrap_err();
    assert_eq!(err.source_name, "DUOVARSITY_BODY_LIMIT_BYTES", "{err}");

    let err = Config::from_sources(
        None,
        &env(&[("DUOVARSITY_DATABASE_URL", "mysql://localhost/db")]),
    )
    .unwrap_err();
    assert_eq!(err.source_name, "DUOVARSITY_DATABASE_URL", "{err}");
}

#[test]
fn service_urls_are_read_by_service_name() {
    let config = Config::from_sources(
        None,
        &env(&[
            ("DUOVARSITY_USER_SERVICE_URL", "http://a:1, http://b:1"),
            ("DUOVARSITY_AI_ROUTING_SERVICE_URL", "http://c:1"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.configured_service_urls("user").unwrap(),
        vec!["http://a:1", "http://b:1"]
    );
    assert_eq!(config.service_urls("ai_routing"), vec!["http://c:1"]);
    assert_eq!(config.configured_service_urls("course"), None);
    assert_eq!(
        config.service_urls("course"),
        vec!["http://127.0.0.1:50051"]
    );

    let err = Config::from_sources(None, &env(&[("DUOVARSITY_COURSE_SERVICE_URL", "ftp://x")]))
        .unwrap_err();
    assert_eq!(err.source_name, "DUOVARSITY_COURSE_SERVICE_URL", "{err}");

    // One discovered source (a headless Service's DNS name, or the Service's
    // EndpointSlices); mixed with other URLs, or without a port, it is refused.
    for url in [
        "dns:///course-headless:50051",
        "kubernetes:///course.learn:grpc",
    ] {
        let config =
            Config::from_sources(None, &env(&[("DUOVARSITY_COURSE_SERVICE_URL", url)])).unwrap();
        assert_eq!(config.service_urls("course"), [url]);
    }
    let err = Config::from_sources(
        None,
        &env(&[("DUOVARSITY_COURSE_SERVICE_URL", "kubernetes:///course")]),
    )
    .unwrap_err();
    assert_eq!(err.source_name, "DUOVARSITY_COURSE_SERVICE_URL", "{err}");
    let err = Config::from_sources(
        None,
        &env(&[("DUOVARSITY_COURSE_SERVICE_URL", "dns:///a:1,http://b:1")]),
    )
    .unwrap_err();
    assert_eq!(err.source_name, "DUOVARSITY_COURSE_SERVICE_URL", "{err}");

    let err = config.check_service_names(&["user"]).unwrap_err();
    assert_eq!(
        err.source_name, "DUOVARSITY_AI_ROUTING_SERVICE_URL",
        "{err}"
    );
    assert!(config.check_service_names(&["user", "ai-routing"]).is_ok());
    assert_eq!(config.service_urls("ai-routing"), vec!["http://c:1"]);
}

#[test]
fn service_urls_come_from_a_file_table_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("duovarsity.toml");
    std::fs::write(&file, "[service_urls]\ncourse = \"http://course:50051\"\n").unwrap();
    let config = Config::from_sources(Some(&file), &env(&[])).unwrap();
    assert_eq!(config.service_urls("course"), vec!["http://course:50051"]);
}

#[test]
fn an_unknown_variable_is_refused() {
    let err =
        Config::from_sources(None, &env(&[("DUOVARSITY_HTTP_ADRR", "127.0.0.1:1")])).unwrap_err();
    assert!(err.to_string().contains("http_adrr"), "{err}");
}

#[test]
fn bootstrap_admin_needs_both_halves() {
    let err = Config::from_sources(
        None,
        &env(&[("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL", "root@example.com")]),
    )
    .unwrap_err();
    assert_eq!(err.source_name, "DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD");
}

#[test]
fn a_numeric_password_stays_a_string() {
    let config = Config::from_sources(
        None,
        &env(&[
            ("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL", "root@example.com"),
            ("DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD", "12345678901"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.bootstrap_admin_password.unwrap().expose(),
        "12345678901"
    );
}

#[test]
fn secrets_do_not_leak_through_debug() {
    let config = Config::from_sources(
        None,
        &env(&[(
            "DUOVARSITY_DATABASE_URL",
            "postgres://app:hunter2-password@db/duovarsity",
        )]),
    )
    .unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn payment_providers_come_with_their_secrets() {
    let refused = |pairs: &[(&str, &str)]| Config::from_sources(None, &env(pairs)).unwrap_err();
    let err = refused(&[("DUOVARSITY_RAZORPAY_API_URL", "https://api.razorpay.com")]);
    assert_eq!(err.source_name, "DUOVARSITY_RAZORPAY_API_URL");
    assert!(
        err.message.contains("DUOVARSITY_RAZORPAY_KEY_SECRET"),
        "{err}"
    );
    let err = refused(&[("DUOVARSITY_PAYMENT_PROVIDER", "stripe")]);
    assert_eq!(err.source_name, "DUOVARSITY_PAYMENT_PROVIDER");
    let err = refused(&[("DUOVARSITY_STRIPE_SECRET_KEY", "sk_test_1")]);
    assert_eq!(err.source_name, "DUOVARSITY_STRIPE_WEBHOOK_SECRET");
    let err = refused(&[("DUOVARSITY_PAYMENT_PROVIDER", "paypal")]);
    assert!(
        err.to_string().contains("DUOVARSITY_PAYMENT_PROVIDER"),
        "{err}"
    );
    let err = refused(&[
        ("DUOVARSITY_PAYMENT_RECONCILE_AFTER_SECS", "600"),
        ("DUOVARSITY_PAYMENT_ORDER_TTL_SECS", "60"),
    ]);
    assert_eq!(err.source_name, "DUOVARSITY_PAYMENT_ORDER_TTL_SECS");
    let stripe = Config::from_sources(
        None,
        &env(&[
            ("DUOVARSITY_PAYMENT_PROVIDER", "stripe"),
            ("DUOVARSITY_STRIPE_SECRET_KEY", "sk_test_1"),
            ("DUOVARSITY_STRIPE_WEBHOOK_SECRET", "whsec_1"),
        ]),
    )
    .unwrap();
    assert_eq!(stripe.payment_provider, crate::PaymentProvider::Stripe);
    assert!(
        !format!("{stripe:?}").contains("sk_test_1"),
        "secrets stay masked"
    );
}

#[test]
fn the_payment_sandbox_runs_on_a_laptop_only_unless_turned_on() {
    let sandbox = |pairs: &[(&str, &str)]| {
        Config::from_sources(None, &env(pairs))
            .unwrap()
            .payment_sandbox_enabled()
    };
    assert!(sandbox(&[]), "auto on the default loopback address");
    assert!(sandbox(&[("DUOVARSITY_HTTP_ADDR", "[::1]:8080")]));
    assert!(!sandbox(&[("DUOVARSITY_HTTP_ADDR", "0.0.0.0:8080")]));
    assert!(!sandbox(&[("DUOVARSITY_HTTP_ADDR", "203.0.113.7:8080")]));
    assert!(sandbox(&[
        ("DUOVARSITY_HTTP_ADDR", "0.0.0.0:8080"),
        ("DUOVARSITY_PAYMENT_SANDBOX", "on")
    ]));
    assert!(!sandbox(&[("DUOVARSITY_PAYMENT_SANDBOX", "off")]));
    let error =
        Config::from_sources(None, &env(&[("DUOVARSITY_PAYMENT_SANDBOX", "maybe")])).unwrap_err();
    assert!(error.to_string().contains("PAYMENT_SANDBOX"), "{error}");
    let error = Config::from_sources(
        None,
        &env(&[
            ("DUOVARSITY_PAYMENT_SANDBOX", "on"),
            ("DUOVARSITY_RAZORPAY_API_URL", "https://api.razorpay.com"),
            ("DUOVARSITY_RAZORPAY_KEY_ID", "rzp_live_x"),
            ("DUOVARSITY_RAZORPAY_KEY_SECRET", "s"),
            ("DUOVARSITY_RAZORPAY_WEBHOOK_SECRET", "w"),
        ]),
    )
    .unwrap_err();
    assert!(error.to_string().contains("PAYMENT_SANDBOX"), "{error}");
}

#[test]
fn new_edge_settings_have_their_defaults_and_ranges() {
    let config = Config::from_sources(None, &env(&[])).unwrap();
    assert_eq!(config.admin_addr.to_string(), "127.0.0.1:9464");
    assert_eq!(config.body_read_timeout_ms, 10_000);
    assert_eq!(config.rate_limits_ipv6_prefix, 64);
    assert_eq!(config.jwks_refresh_secs, 60);
    assert_eq!(config.shed_lag_ms, 10);
    for (key, value) in [
        ("DUOVARSITY_SHED_LAG_MS", "10001"),
        ("DUOVARSITY_BODY_READ_TIMEOUT_MS", "0"),
        ("DUOVARSITY_RATE_LIMITS_IPV6_PREFIX", "129"),
        ("DUOVARSITY_JWKS_REFRESH_SECS", "0"),
        ("DUOVARSITY_ADMIN_ADDR", "nowhere"),
    ] {
        let error = Config::from_sources(None, &env(&[(key, value)])).unwrap_err();
        assert!(
            error
                .to_string()
                .to_lowercase()
                .contains(&key[11..].to_lowercase()),
            "{key}: {error}"
        );
    }
}
