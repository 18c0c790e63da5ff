//! What an account must be: the contract's field rules on `RegisterRequest` plus what a
//! field rule cannot say, email normalisation, and the profile's display name, locale and
//! time zone.

use duovarsity_common::FieldViolation;
use duovarsity_common::validate;
use duovarsity_proto::user::RegisterRequest;

const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// Trimmed and lower-cased, so `Ana@Example.com ` and `ana@example.com` are one account.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The full name of the request whose field rules (in `user.proto`) a new account meets.
const REGISTER_REQUEST: &str = "duovarsity.user.v1.RegisterRequest";

/// Every rule a new account breaks: the contract's field rules on `RegisterRequest` (the
/// email's shape, 10 to 256 password characters, a 1 to 100 character display name), so
/// the CLI and the bootstrap admin meet the same rules as the API, plus what a field rule
/// cannot say: the password is not the email, and the display name is not blank after
/// trimming and has no control characters.
pub fn account_violations(
    normalized_email: &str,
    password: &str,
    display_name: &str,
) -> Vec<FieldViolation> {
    let request = RegisterRequest {
        email: normalized_email.to_string(),
        password: password.to_string(),
        display_name: display_name.trim().to_string(),
    };
    let mut found = validate::rules::check(REGISTER_REQUEST, &request);
    if found.iter().all(|v| v.field != "password") && normalize_email(password) == normalized_email
    {
        found.push(FieldViolation::new(
            "password",
            "must not be the email address",
        ));
    }
    if display_name.chars().any(char::is_control) {
        found.push(FieldViolation::new(
            "display_name",
            "must not contain control characters",
        ));
    }
    found
}

/// A display name: 1 to 100 characters after trimming, no control characters.
pub fn check_display_name(name: &str) -> Option<FieldViolation> {
    let name = name.trim();
    let problem = if name.is_empty() {
        Some("is required")
    } else if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        Some("must be at most 100 characters")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    };
    problem.map(|description| FieldViolation::new("display_name", description))
}

/// A BCP 47 language tag such as "en" or "pt-BR".
pub fn check_locale(locale: &str) -> Option<FieldViolation> {
    (!duovarsity_common::validate::is_language_tag(locale)).then(|| {
        FieldViolation::new(
            "locale",
            "must be a BCP 47 language tag such as \"en\" or \"pt-BR\"",
        )
    })
}

/// An IANA time zone known to the bundled tz database.
pub fn check_time_zone(zone: &str) -> Option<FieldViolation> {
    jiff::tz::TimeZone::get(zone).is_err().then(|| {
        FieldViolation::new(
            "time_zone",
            "must be an IANA time zone such as \"UTC\" or \"Europe/Lisbon\"",
        )
    })
}

/// Collects violations into one INVALID_ARGUMENT, or passes.
pub use duovarsity_common::validate::ensure_valid;

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(found: &[FieldViolation]) -> Vec<&str> {
        found.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn account_rules_are_the_contract_s_plus_the_domain_s() {
        assert!(account_violations("a@b.co", "exactly10!", "Ada").is_empty());
        assert_eq!(
            fields(&account_violations("a@b.co", "short", "Ada")),
            vec!["password"]
        );
        assert_eq!(
            fields(&account_violations("a@b.co", &"x".repeat(257), "Ada")),
            vec!["password"]
        );
        // Characters, not bytes: nine multi-byte characters are too few, ten pass.
        assert!(!account_violations("a@b.co", "ááááááááá", "Ada").is_empty());
        assert!(account_violations("a@b.co", "áááááááááá", "Ada").is_empty());
        assert_eq!(
            account_violations("learner@example.com", "Learner@Example.com", "Ada")[0].description,
            "must not be the email address"
        );
        assert_eq!(
            fields(&account_violations("a@b.co", "exactly10!", "   ")),
            vec!["display_name"]
        );
        assert_eq!(
            fields(&account_violations("a@b.co", "exactly10!", "A\u{7}da")),
            vec!["display_name"]
        );
        assert_eq!(normalize_email("  Ana@Example.COM "), "ana@example.com");
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert_eq!(
                fields(&account_violations(bad, "exactly10!", "Ada")),
                vec!["email"],
                "{bad}"
            );
        }
    }

    #[test]
    fn profile_rules() {
        assert!(check_locale("en").is_none());
        assert!(check_locale("pt-BR").is_none());
        assert!(check_locale("english!").is_some());
        assert!(check_time_zone("Europe/Lisbon").is_none());
        assert!(check_time_zone("UTC").is_none());
        assert!(check_time_zone("Mars/Olympus_Mons").is_some());
        assert!(check_display_name("  ").is_some());
        assert!(check_display_name("Ada").is_none());
    }
}
