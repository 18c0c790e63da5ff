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

/// Opaque page tokens (base64url of the cursor text) and the one way list calls page: ask
/// the store for one row more than the page, [`page_token::page`] cuts it off and makes
/// the next token from the last row kept.
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

    /// The cursor a list call's `page_token` carries, read by `parse`: `None` for the first
    /// page (an empty token). A token not made by [`encode`], or one `parse` refuses, is
    /// INVALID_ARGUMENT naming `method`.
    pub fn cursor<T>(
        token: &str,
        method: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, crate::Error> {
        if token.is_empty() {
            return Ok(None);
        }
        decode(token)
            .and_then(|text| parse(&text))
            .map(Some)
            .ok_or_else(|| {
                crate::Error::invalid("page_token", format!("is not a token returned by {method}"))
            })
    }

    /// One page of `rows`, fetched with one row more than `size`: at most `size` rows,
    /// and the token of the next page made from the last row's cursor (empty on the last
    /// page).
    pub fn page<T>(mut rows: Vec<T>, size: u32, cursor: impl Fn(&T) -> String) -> (Vec<T>, String) {
        let size = size as usize;
        if rows.len() <= size {
            return (rows, String::new());
        }
        rows.truncate(size);
        let next = rows
            .last()
            .map(|row| encode(&cursor(row)))
            .unwrap_or_default();
        (rows, next)
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

    #[test]
    fn a_page_is_cut_from_one_row_more_and_its_token_leads_on() {
        let (rows, next) = page_token::page(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(rows, vec![1, 2]);
        let after = page_token::cursor(&next, "List", |c| c.parse::<i32>().ok()).unwrap();
        assert_eq!(after, Some(2));
        let (rows, next) = page_token::page(vec![3], 2, |n| n.to_string());
        assert_eq!((rows, next.as_str()), (vec![3], ""));
        assert_eq!(page_token::cursor("", "List", |_| Some(1)).unwrap(), None);
        for bad in ["%%%", &page_token::encode("x")] {
            let error = page_token::cursor(bad, "ListThings", |c| c.parse::<i32>().ok());
            assert!(
                matches!(&error, Err(crate::Error::InvalidArgument(v)) if v[0].field == "page_token"
                    && v[0].description.contains("ListThings")),
                "{error:?}"
            );
        }
    }
}

pub mod rules;
