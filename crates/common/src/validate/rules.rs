//! protovalidate field rules (`(buf.validate.field)` options), declared once in the proto
//! files and read from the descriptor set: the gRPC server kit checks every request against
//! them before a handler runs ([`crate::grpc::ValidateLayer`]), and the gateway publishes
//! them in `/openapi.json` as JSON Schema constraints.
//!
//! The evaluator covers the subset declared in `proto/buf/validate/validate.proto` (lengths,
//! ranges, patterns, email, uuid, required, defined enums, list sizes, per-item rules of
//! lists) with protovalidate's semantics: rules apply to every value of a field without
//! presence, zero included, unless `ignore = IGNORE_IF_ZERO_VALUE`; to fields with
//! presence only when set. Set sub-messages and lists of messages are checked
//! recursively, and a violation names the field by its path (`course.title`,
//! `channels[1].category`, `attachment_ids[0]`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use duovarsity_proto::buf::validate::{
    FieldRules, Ignore, field_rules, int32_rules, int64_rules, string_rules, u_int32_rules,
};
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};
use regex::Regex;

use crate::FieldViolation;

/// The field option that carries the rules.
pub const EXTENSION: &str = "buf.validate.field";

/// The rules declared on `field`, if any.
pub fn of(field: &FieldDescriptor) -> Option<FieldRules> {
    duovarsity_proto::field_option(field, EXTENSION)
}

/// Every rule violation in `message`, with field paths.
pub fn violations(message: &DynamicMessage) -> Vec<FieldViolation> {
    let mut found = Vec::new();
    check_message(message, "", &mut found);
    found
}

/// Whether `message`, or a message inside it, declares any rule.
pub fn declares_rules(message: &MessageDescriptor) -> bool {
    fn visit(message: &MessageDescriptor, seen: &mut Vec<String>) -> bool {
        if seen.iter().any(|name| name == message.full_name()) {
            return false;
        }
        seen.push(message.full_name().to_string());
        message.fields().any(|field| {
            of(&field).is_some()
                || matches!(field.kind(), Kind::Message(inner) if visit(&inner, seen))
        })
    }
    visit(message, &mut Vec::new())
}

/// The rule violations of a generated message, by its full protobuf name (for entry points
/// that do not come through gRPC, such as the CLI and the bootstrap admin).
pub fn check<M: prost::Message>(full_name: &str, message: &M) -> Vec<FieldViolation> {
    let Some(descriptor) = duovarsity_proto::descriptor_pool().get_message_by_name(full_name)
    else {
        return vec![FieldViolation::new(
            full_name,
            "is not a message of the contracts",
        )];
    };
    match DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()) {
        Ok(decoded) => violations(&decoded),
        Err(error) => vec![FieldViolation::new(full_name, error.to_string())],
    }
}

/// One field's rules, with its pattern compiled once.
struct Compiled {
    field: FieldDescriptor,
    rules: FieldRules,
    pattern: Option<Regex>,
    /// The rules of each item of a repeated field (`repeated.items`).
    items: Option<Box<Compiled>>,
}

impl Compiled {
    fn new(field: &FieldDescriptor, rules: FieldRules) -> Self {
        let pattern = string_rules_of(&rules)
            .and_then(|s| s.pattern.as_deref())
            .map(|p| {
                // Patterns are part of the contract: a bad one fails the build's tests
                // (`every_pattern_in_the_contracts_compiles`), never a request.
                Regex::new(p).unwrap_or_else(|e| panic!("{}: bad pattern: {e}", field.full_name()))
            });
        let items = match &rules.r#type {
            Some(field_rules::Type::Repeated(repeated)) => repeated
                .items
                .as_ref()
                .map(|items| Box::new(Self::new(field, (**items).clone()))),
            _ => None,
        };
        Self {
            field: field.clone(),
            rules,
            pattern,
            items,
        }
    }
}

/// Compiled rules per message type, built on first use.
static COMPILED: LazyLock<RwLock<HashMap<String, Arc<Vec<Compiled>>>>> =
    LazyLock::new(Default::default);

fn compiled(message: &MessageDescriptor) -> Arc<Vec<Compiled>> {
    if let Some(found) = COMPILED
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(message.full_name())
    {
        return found.clone();
    }
    let fields: Vec<Compiled> = message
        .fields()
        .map(|field| Compiled::new(&field, of(&field).unwrap_or_default()))
        .collect();
    let fields = Arc::new(fields);
    COMPILED
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(message.full_name().to_string(), fields.clone());
    fields
}

fn string_rules_of(rules: &FieldRules) -> Option<&duovarsity_proto::buf::validate::StringRules> {
    match &rules.r#type {
        Some(field_rules::Type::String(s)) => Some(s),
        _ => None,
    }
}

fn check_message(message: &DynamicMessage, prefix: &str, found: &mut Vec<FieldViolation>) {
    for compiled in compiled(&message.descriptor()).iter() {
        let field = &compiled.field;
        let path = format!("{prefix}{}", field.name());
        let present = message.has_field(field);
        let value = message.get_field(field);
        let rules = &compiled.rules;
        if rules.required() && !present {
            found.push(FieldViolation::new(&path, "is required"));
            continue;
        }
        let ignored = match rules.ignore() {
            Ignore::Always => true,
            Ignore::IfZeroValue => !present,
            // Fields with presence (messages, `optional`, oneof members) are checked only
            // when set; fields without presence always.
            Ignore::Unspecified => field.supports_presence() && !present,
        };
        if !ignored {
            check_value(compiled, &value, &path, found);
            if let (Some(rules), Value::List(items)) = (&compiled.items, &*value) {
                for (index, item) in items.iter().enumerate() {
                    check_value(rules, item, &format!("{path}[{index}]"), found);
                }
            }
        }
        // Set sub-messages are checked whatever their own field's rules.
        match &*value {
            Value::Message(inner) if present => {
                check_message(inner, &format!("{path}."), found);
            }
            Value::List(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let Value::Message(inner) = item {
                        check_message(inner, &format!("{path}[{index}]."), found);
                    }
                }
            }
            _ => {}
        }
    }
}

fn check_value(compiled: &Compiled, value: &Value, path: &str, found: &mut Vec<FieldViolation>) {
    let mut fail = |description: String| found.push(FieldViolation::new(path, description));
    match (&compiled.rules.r#type, value) {
        (Some(field_rules::Type::String(rules)), Value::String(text)) => {
            let chars = text.chars().count() as u64;
            if let Some(min) = rules.min_len
                && chars < min
            {
                fail(format!("must be at least {min} characters"));
            }
            if let Some(max) = rules.max_len
                && chars > max
            {
                fail(format!("must be at most {max} characters"));
            }
            if let Some(pattern) = &compiled.pattern
                && !pattern.is_match(text)
            {
                fail(format!("must match {}", pattern.as_str()));
            }
            match rules.well_known {
                Some(string_rules::WellKnown::Email(true)) if !is_email(text) => {
                    fail("must be an email address".into());
                }
                Some(string_rules::WellKnown::Uuid(true))
                    if uuid::Uuid::parse_str(text).is_err() =>
                {
                    fail("must be a UUID".into());
                }
                _ => {}
            }
        }
        (Some(field_rules::Type::Int32(rules)), Value::I32(n)) => {
            let bounds = Bounds {
                lt: matches!(rules.less_than, Some(int32_rules::LessThan::Lt(_))),
                upper: match rules.less_than {
                    Some(int32_rules::LessThan::Lt(v) | int32_rules::LessThan::Lte(v)) => {
                        Some(i64::from(v))
                    }
                    None => None,
                },
                gt: matches!(rules.greater_than, Some(int32_rules::GreaterThan::Gt(_))),
                lower: match rules.greater_than {
                    Some(int32_rules::GreaterThan::Gt(v) | int32_rules::GreaterThan::Gte(v)) => {
                        Some(i64::from(v))
                    }
                    None => None,
                },
            };
            bounds.check(i64::from(*n), &mut fail);
        }
        (Some(field_rules::Type::Int64(rules)), Value::I64(n)) => {
            let bounds = Bounds {
                lt: matches!(rules.less_than, Some(int64_rules::LessThan::Lt(_))),
                upper: match rules.less_than {
                    Some(int64_rules::LessThan::Lt(v) | int64_rules::LessThan::Lte(v)) => Some(v),
                    None => None,
                },
                gt: matches!(rules.greater_than, Some(int64_rules::GreaterThan::Gt(_))),
                lower: match rules.greater_than {
                    Some(int64_rules::GreaterThan::Gt(v) | int64_rules::GreaterThan::Gte(v)) => {
                        Some(v)
                    }
                    None => None,
                },
            };
            bounds.check(*n, &mut fail);
        }
        (Some(field_rules::Type::Uint32(rules)), Value::U32(n)) => {
            let bounds = Bounds {
                lt: matches!(rules.less_than, Some(u_int32_rules::LessThan::Lt(_))),
                upper: match rules.less_than {
                    Some(u_int32_rules::LessThan::Lt(v) | u_int32_rules::LessThan::Lte(v)) => {
                        Some(i64::from(v))
                    }
                    None => None,
                },
                gt: matches!(rules.greater_than, Some(u_int32_rules::GreaterThan::Gt(_))),
                lower: match rules.greater_than {
                    Some(
                        u_int32_rules::GreaterThan::Gt(v) | u_int32_rules::GreaterThan::Gte(v),
                    ) => Some(i64::from(v)),
                    None => None,
                },
            };
            bounds.check(i64::from(*n), &mut fail);
        }
        (Some(field_rules::Type::Enum(rules)), Value::EnumNumber(n)) => {
            if rules.defined_only()
                && let Kind::Enum(enumeration) = compiled.field.kind()
                && enumeration.get_value(*n).is_none()
            {
                fail(format!("{n} is not a value of {}", enumeration.name()));
            }
        }
        (Some(field_rules::Type::Repeated(rules)), Value::List(items)) => {
            let count = items.len() as u64;
            if let Some(min) = rules.min_items
                && count < min
            {
                fail(format!("must have at least {min} items"));
            }
            if let Some(max) = rules.max_items
                && count > max
            {
                fail(format!("must have at most {max} items"));
            }
            if rules.unique() {
                let mut seen = Vec::with_capacity(items.len());
                for item in items {
                    if seen.contains(&item) {
                        fail("must not repeat an item".into());
                        break;
                    }
                    seen.push(item);
                }
            }
        }
        _ => {}
    }
}

/// A numeric range, inclusive unless `lt`/`gt`.
struct Bounds {
    lt: bool,
    upper: Option<i64>,
    gt: bool,
    lower: Option<i64>,
}

impl Bounds {
    fn check(&self, n: i64, fail: &mut impl FnMut(String)) {
        let below = self
            .lower
            .is_some_and(|l| if self.gt { n <= l } else { n < l });
        let above = self
            .upper
            .is_some_and(|u| if self.lt { n >= u } else { n > u });
        if below || above {
            fail(self.describe());
        }
    }

    fn describe(&self) -> String {
        let lower = self
            .lower
            .map(|l| format!("{} {l}", if self.gt { "greater than" } else { "at least" }));
        let upper = self
            .upper
            .map(|u| format!("{} {u}", if self.lt { "less than" } else { "at most" }));
        match (lower, upper) {
            (Some(l), Some(u)) => format!("must be {l} and {u}"),
            (Some(l), None) => format!("must be {l}"),
            (None, Some(u)) => format!("must be {u}"),
            (None, None) => "is out of range".into(),
        }
    }
}

/// The address shape protovalidate's `email` accepts: a local part and a dotted domain,
/// no spaces or angle brackets (not the full RFC 5322 grammar).
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.contains('@')
        && local.len() <= 64
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>')
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str, json: serde_json::Value) -> DynamicMessage {
        let descriptor = duovarsity_proto::descriptor_pool()
            .get_message_by_name(name)
            .unwrap();
        DynamicMessage::deserialize(descriptor, json).unwrap()
    }

    fn fields(found: &[FieldViolation]) -> Vec<&str> {
        found.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn every_pattern_in_the_contracts_compiles() {
        for message in duovarsity_proto::descriptor_pool().all_messages() {
            // Compiling panics on a bad pattern.
            compiled(&message);
        }
    }

    #[test]
    fn strings_numbers_and_enums_are_checked_with_paths() {
        let ok = message(
            "duovarsity.user.v1.RegisterRequest",
            serde_json::json!({"email": "ada@example.com", "password": "correct-horse-battery", "displayName": "Ada"}),
        );
        assert!(violations(&ok).is_empty(), "{:?}", violations(&ok));
        let bad = message(
            "duovarsity.user.v1.RegisterRequest",
            serde_json::json!({"email": "not-an-address", "password": "short", "displayName": ""}),
        );
        assert_eq!(
            fields(&violations(&bad)),
            vec!["email", "password", "display_name"]
        );

        let progress = message(
            "duovarsity.course.v1.RecordProgressRequest",
            serde_json::json!({"lessonId": uuid::Uuid::now_v7().to_string(), "percent": 101, "positionSeconds": -1}),
        );
        assert_eq!(
            fields(&violations(&progress)),
            vec!["percent", "position_seconds"]
        );
        let progress = message(
            "duovarsity.course.v1.RecordProgressRequest",
            serde_json::json!({"lessonId": "x", "percent": 100}),
        );
        assert_eq!(fields(&violations(&progress)), vec!["lesson_id"]);
    }

    #[test]
    fn nested_messages_are_checked_and_zero_values_can_be_ignored() {
        // An update may leave the title out (zero value), but not send one too long.
        let update = message(
            "duovarsity.course.v1.UpdateCourseRequest",
            serde_json::json!({"course": {"id": uuid::Uuid::now_v7().to_string(), "summary": "x"}}),
        );
        assert!(violations(&update).is_empty(), "{:?}", violations(&update));
        let update = message(
            "duovarsity.course.v1.UpdateCourseRequest",
            serde_json::json!({"course": {"id": uuid::Uuid::now_v7().to_string(), "title": "t".repeat(201)}}),
        );
        assert_eq!(fields(&violations(&update)), vec!["course.title"]);
    }

    #[test]
    fn each_item_of_a_repeated_field_is_checked_with_its_index() {
        let lesson = uuid::Uuid::now_v7().to_string();
        let draft = message(
            "duovarsity.content.v1.SaveLessonDraftRequest",
            serde_json::json!({"lessonId": lesson, "markdown": "x", "attachmentIds": [lesson]}),
        );
        assert!(violations(&draft).is_empty(), "{:?}", violations(&draft));
        let draft = message(
            "duovarsity.content.v1.SaveLessonDraftRequest",
            serde_json::json!({"lessonId": lesson, "markdown": "x", "attachmentIds": [lesson, "nope", lesson, "no"]}),
        );
        assert_eq!(
            fields(&violations(&draft)),
            vec!["attachment_ids[1]", "attachment_ids[3]"]
        );
    }

    #[test]
    fn ranges_describe_themselves() {
        let mut said = Vec::new();
        Bounds {
            lt: false,
            upper: Some(100),
            gt: false,
            lower: Some(0),
        }
        .check(101, &mut |s| said.push(s));
        assert_eq!(said, vec!["must be at least 0 and at most 100"]);
        assert!(is_email("a.b@example.co"));
        assert!(!is_email("a@b"));
        assert!(!is_email("a b@example.com"));
        assert!(!is_email("a@b@c.com"));
    }
}
