//! `google.api.http` path templates: parsing and matching.
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! A variable without `=` matches one segment. `**` matches the rest of the path and may
//! only come last. Variable values are percent-decoded; a multi-segment value keeps its
//! `/` separators.

use std::fmt;

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Single,
    /// `**`: the rest of the path (zero or more segments).
    Rest,
}

/// A variable's field path and the segments it spans (`start..end` into `segments`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub field_path: Vec<String>,
    start: usize,
    end: usize,
}

impl Variable {
    /// The variable's name in OpenAPI, which tools bind to identifiers: the field path
    /// joined by `_` (`{course.id}` is `course_id`). The gateway still fills `course.id`.
    pub fn parameter_name(&self) -> String {
        self.field_path.join("_")
    }
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
    /// `/` and the leading literal segments (`/v1/courses`): a path that does not start
    /// with it cannot match, which rejects most routes with one comparison.
    prefix: String,
}

/// Why a template does not parse (reported at gateway start, naming the method).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template {template:?}: {message}")]
pub struct TemplateError {
    template: String,
    message: &'static str,
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let fail = |message| TemplateError {
            template: template.to_string(),
            message,
        };
        let body = template
            .strip_prefix('/')
            .ok_or_else(|| fail("must start with '/'"))?;
        // The verb is a ':' after the last '/' that is outside braces.
        let (body, verb) = split_verb(body);
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        for raw in split_outside_braces(body) {
            if raw.is_empty() {
                return Err(fail("has an empty segment"));
            }
            if let Some(inner) = raw.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| fail("has an unclosed variable"))?;
                let (path, pattern) = match inner.split_once('=') {
                    Some((path, pattern)) => (path, pattern),
                    None => (inner, "*"),
                };
                let field_path: Vec<String> = path.split('.').map(str::to_string).collect();
                if field_path.iter().any(|p| {
                    p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                }) {
                    return Err(fail("has a variable with an invalid field path"));
                }
                let start = segments.len();
                for part in pattern.split('/') {
                    segments.push(
                        parse_plain(part).ok_or_else(|| fail("has an invalid variable pattern"))?,
                    );
                }
                variables.push(Variable {
                    field_path,
                    start,
                    end: segments.len(),
                });
            } else {
                segments.push(parse_plain(raw).ok_or_else(|| fail("has an invalid segment"))?);
            }
        }
        if let Some(position) = segments.iter().position(|s| *s == Segment::Rest)
            && position != segments.len() - 1
        {
            return Err(fail("may use '**' only as the last segment"));
        }
        let literals: Vec<&str> = segments
            .iter()
            .map_while(|segment| match segment {
                Segment::Literal(literal) => Some(literal.as_str()),
                _ => None,
            })
            .collect();
        Ok(Self {
            source: template.to_string(),
            prefix: format!("/{}", literals.join("/")),
            segments,
            variables,
            verb: verb.map(str::to_string),
        })
    }

    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// Literal segments count for more, so `/v1/users/me` wins over `/v1/users/{id}`.
    pub fn specificity(&self) -> (usize, bool, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let bounded = !self.segments.contains(&Segment::Rest);
        (literals, bounded, self.segments.len())
    }

    /// The variable bindings when `path` matches, as (field path, decoded value).
    pub fn matches(&self, path: &str) -> Option<Vec<(Vec<String>, String)>> {
        let after = path.strip_prefix(self.prefix.as_str())?;
        if self.prefix.len() > 1 && !(after.is_empty() || after.starts_with(['/', ':'])) {
            return None;
        }
        let body = path.strip_prefix('/')?;
        let body = match &self.verb {
            Some(verb) => body.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => body,
        };
        let parts: Vec<&str> = body.split('/').collect();
        // Which template segment each path part matched; `**` may take many parts.
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(self.segments.len());
        let mut index = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(index) != Some(&literal.as_str()) {
                        return None;
                    }
                    spans.push((index, index + 1));
                    index += 1;
                }
                Segment::Single => {
                    let part = parts.get(index)?;
                    if part.is_empty() {
                        return None;
                    }
                    spans.push((index, index + 1));
                    index += 1;
                }
                Segment::Rest => {
                    spans.push((index, parts.len()));
                    index = parts.len();
                }
            }
        }
        if index != parts.len() {
            return None;
        }
        let mut bindings = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let from = spans[variable.start].0;
            let to = spans[variable.end - 1].1;
            let value = parts[from..to]
                .iter()
                .map(|part| {
                    percent_decode_str(part)
                        .decode_utf8()
                        .map(|s| s.into_owned())
                })
                .collect::<Result<Vec<_>, _>>()
                .ok()?
                .join("/");
            bindings.push((variable.field_path.clone(), value));
        }
        Some(bindings)
    }

    /// The template in OpenAPI form: `/v1/users/{id}:setRole`.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut index = 0;
        while index < self.segments.len() {
            out.push('/');
            if let Some(variable) = self.variables.iter().find(|v| v.start == index) {
                out.push('{');
                out.push_str(&variable.parameter_name());
                out.push('}');
                index = variable.end;
                continue;
            }
            match &self.segments[index] {
                Segment::Literal(literal) => out.push_str(literal),
                Segment::Single => out.push('*'),
                Segment::Rest => out.push_str("**"),
            }
            index += 1;
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_plain(raw: &str) -> Option<Segment> {
    match raw {
        "*" => Some(Segment::Single),
        "**" => Some(Segment::Rest),
        "" => None,
        literal if !literal.contains(['{', '}', '=', '*']) => {
            Some(Segment::Literal(literal.to_string()))
        }
        _ => None,
    }
}

fn split_verb(body: &str) -> (&str, Option<&str>) {
    let mut depth = 0;
    let mut last_slash = 0;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth == 0 => last_slash = i,
            _ => {}
        }
    }
    let tail = &body[last_slash..];
    let mut depth = 0;
    for (i, c) in tail.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ':' if depth == 0 => {
                let at = last_slash + i;
                return (&body[..at], Some(&body[at + 1..]));
            }
            _ => {}
        }
    }
    (body, None)
}

fn split_outside_braces(body: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        PathTemplate::parse(template)
            .unwrap()
            .matches(path)
            .map(|b| b.into_iter().map(|(f, v)| (f.join("."), v)).collect())
    }

    #[test]
    fn literals_and_single_variables() {
        assert_eq!(bindings("/v1/users/me", "/v1/users/me"), Some(vec![]));
        assert_eq!(bindings("/v1/users/me", "/v1/users/you"), None);
        assert_eq!(
            bindings("/v1/users/{id}", "/v1/users/0190-ab"),
            Some(vec![("id".into(), "0190-ab".into())])
        );
        assert_eq!(bindings("/v1/users/{id}", "/v1/users/a/b"), None);
        assert_eq!(bindings("/v1/users/{id}", "/v1/users/"), None);
    }

    #[test]
    fn custom_verbs() {
        assert_eq!(
            bindings("/v1/users/{id}:setRole", "/v1/users/42:setRole"),
            Some(vec![("id".into(), "42".into())])
        );
        assert_eq!(bindings("/v1/users/{id}:setRole", "/v1/users/42"), None);
        assert_eq!(
            bindings("/v1/users/{id}:setRole", "/v1/users/42:setTier"),
            None
        );
        assert_eq!(
            bindings("/v1/courses:search", "/v1/courses:search"),
            Some(vec![])
        );
    }

    #[test]
    fn nested_fields_and_multi_segment_patterns() {
        assert_eq!(
            bindings("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books/b%202"),
            Some(vec![("name".into(), "shelves/s1/books/b 2".into())])
        );
        assert_eq!(
            bindings("/v1/files/{path=**}", "/v1/files/a/b/c.txt"),
            Some(vec![("path".into(), "a/b/c.txt".into())])
        );
        assert_eq!(
            bindings("/v1/courses/{course.id}/title", "/v1/courses/c1/title"),
            Some(vec![("course.id".into(), "c1".into())])
        );
    }

    #[test]
    fn specificity_prefers_literals() {
        let me = PathTemplate::parse("/v1/users/me").unwrap();
        let id = PathTemplate::parse("/v1/users/{id}").unwrap();
        assert!(me.specificity() > id.specificity());
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["v1/users", "/v1//users", "/v1/{id", "/v1/{a-b}", "/v1/**/x"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn openapi_form() {
        let t = PathTemplate::parse("/v1/users/{id}:setRole").unwrap();
        assert_eq!(t.openapi_path(), "/v1/users/{id}:setRole");
        let t = PathTemplate::parse("/v1/{name=shelves/*}").unwrap();
        assert_eq!(t.openapi_path(), "/v1/{name}");
        let t = PathTemplate::parse("/v1/courses/{course.id}").unwrap();
        assert_eq!(t.openapi_path(), "/v1/courses/{course_id}");
    }
}
