//! Input rules shared by several services.

/// A BCP 47 tag of the common shape: a 2-3 letter language, then 2-8 character subtags
/// ("en", "pt-BR", "zh-Hant-TW").
pub fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let language_ok = parts.next().is_some_and(|lang| {
        (2..=3).contains(&lang.len()) && lang.chars().all(|c| c.is_ascii_alphabetic())
    });
    language_ok
        && parts.all(|sub| {
            (2..=8).contains(&sub.len()) && sub.chars().all(|c| c.is_ascii_alphanumeric())
        })
}

/// The page size a list call asked for: 0 means `default`. The range (0 to 100) is a field
/// rule of every `page_size` in the contracts, enforced before a handler runs.
pub fn page_size(requested: i32, default: u32) -> u32 {
    match u32::try_from(requested) {
        Ok(0) | Err(_) => default,
        Ok(n) => n,
    }
}

/// One INVALID_ARGUMENT with every violation found, or `Ok` when there is none.
pub fn ensure_valid(
    violations: impl IntoIterator<Item = Option<crate::FieldViolation>>,
) -> Result<(), crate::Error> {
    let violations: Vec<crate::FieldViolation> = violations.into_iter().flatten().collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(crate::Error::InvalidArgument(violations))
    }
}

/// Opaque page tokens: base64url of the cursor text.
pub mod page_token {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    pub fn encode(cursor: &str) -> String {
        URL_SAFE_NO_PAD.encode(cursor)
    }

    /// The cursor, or `None` when the token was not made by [`encode`].
    pub fn decode(token: &str) -> Option<String> {
        URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags() {
        for good in ["en", "pt-BR", "zh-Hant-TW", "ast"] {
            assert!(is_language_tag(good), "{good}");
        }
        for bad in ["", "e", "english", "en_US", "en-", "pt-B"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }

    #[test]
    fn page_tokens_round_trip() {
        assert_eq!(
            page_token::decode(&page_token::encode("1700:abc")).as_deref(),
            Some("1700:abc")
        );
        assert_eq!(page_token::decode("%%%"), None);
    }
}

pub mod rules;
