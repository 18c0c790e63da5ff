//! Marks the words a query matched, by the query's own rules (as typed, within the typo
//! allowance, or begun by the word being typed), in text split like the index splits it.
//! Output is HTML-escaped with matches in `<mark></mark>`.

use strsim::osa_distance;

use crate::index::analyzer;
use crate::query::Word;

/// Whether the index word `token` is matched by `word`.
pub fn matches(token: &str, word: &Word) -> bool {
    if token == word.text || (word.prefix && token.starts_with(&word.text)) {
        return true;
    }
    let allowed = usize::from(word.typos);
    if allowed == 0 {
        return false;
    }
    if osa_distance(token, &word.text) <= allowed {
        return true;
    }
    if word.prefix {
        // Some beginning of the token within the allowance (the prefix automaton's rule).
        let typed = word.text.chars().count();
        let chars: Vec<char> = token.chars().collect();
        return (typed.saturating_sub(allowed)..=typed + allowed)
            .filter(|len| *len <= chars.len())
            .any(|len| {
                osa_distance(&chars[..len].iter().collect::<String>(), &word.text) <= allowed
            });
    }
    false
}

/// Byte ranges of `text`'s words that `words` match.
fn matched(text: &str, words: &[Word]) -> Vec<(usize, usize)> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut ranges = Vec::new();
    while stream.advance() {
        let token = stream.token();
        if words.iter().any(|w| matches(&token.text, w)) {
            ranges.push((token.offset_from, token.offset_to));
        }
    }
    ranges
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn marked(text: &str, ranges: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len() + ranges.len() * 13);
    let mut at = 0;
    for &(from, to) in ranges {
        escape_into(&mut out, &text[at..from]);
        out.push_str("<mark>");
        escape_into(&mut out, &text[from..to]);
        out.push_str("</mark>");
        at = to;
    }
    escape_into(&mut out, &text[at..]);
    out
}

/// `text`, escaped, with every matched word marked.
pub fn mark(text: &str, words: &[Word]) -> String {
    marked(text, &matched(text, words))
}

/// The index of the char boundary at or before `at`.
fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// About `width` bytes of `text` around its first match (its beginning when nothing
/// matches), escaped, matches marked, `…` where it was cut.
pub fn snippet(text: &str, words: &[Word], width: usize) -> String {
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let ranges = matched(text, words);
    let first = ranges.first().map_or(0, |r| r.0);
    let start = floor_boundary(text, first.saturating_sub(width / 3));
    // Begin at a word when cutting into the text.
    let start = if start == 0 {
        0
    } else {
        text[start..]
            .find(char::is_whitespace)
            .map_or(start, |space| start + space + 1)
            .min(first)
    };
    let end = floor_boundary(text, (start + width).min(text.len()));
    let end = if end == text.len() {
        end
    } else {
        text[..end]
            .rfind(char::is_whitespace)
            .filter(|e| *e > start)
            .unwrap_or(end)
    };
    let inside: Vec<(usize, usize)> = ranges
        .iter()
        .filter(|(from, to)| *from >= start && *to <= end)
        .map(|(from, to)| (from - start, to - start))
        .collect();
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.push_str(&marked(&text[start..end], &inside));
    if end < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::words;

    #[test]
    fn marks_exact_typo_and_prefix_matches_and_escapes_the_rest() {
        // One typo in "python", and "intro" is the prefix being typed.
        let w = words("pyhton intro").unwrap();
        assert_eq!(
            mark("Python & <i>Introduction</i>", &w),
            "<mark>Python</mark> &amp; &lt;i&gt;<mark>Introduction</mark>&lt;/i&gt;"
        );
        let w = words("cat ").unwrap();
        assert_eq!(mark("Cats and a cat", &w), "Cats and a <mark>cat</mark>");
    }

    #[test]
    fn a_snippet_is_cut_around_the_first_match_on_word_boundaries() {
        let text = format!("{} needle {}", "hay ".repeat(100), "straw ".repeat(100));
        let s = snippet(&text, &words("needle ").unwrap(), 120);
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("<mark>needle</mark>"), "{s}");
        assert!(s.len() < 170, "{s}");
        assert!(!s.contains("ha…") && !s.contains("…ay"), "{s}");
    }
}
