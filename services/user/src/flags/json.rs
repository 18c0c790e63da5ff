//! `google.protobuf.Struct`/`Value` and JSON meet here: flag definitions travel as
//! Structs (so REST bodies are plain JSON) and are stored and compiled as JSON.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};

pub fn to_json(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            // Whole numbers stay whole (weights, counts): 10, not 10.0.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(to_json).collect())
        }
        Some(Kind::StructValue(object)) => struct_to_json(object),
    }
}

pub fn struct_to_json(object: &Struct) -> serde_json::Value {
    serde_json::Value::Object(
        object
            .fields
            .iter()
            .map(|(key, value)| (key.clone(), to_json(value)))
            .collect(),
    )
}

pub fn from_json(json: &serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(from_json).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(struct_from_json(json)),
    };
    Value { kind: Some(kind) }
}

/// A JSON object as a Struct (anything else: an empty Struct).
pub fn struct_from_json(json: &serde_json::Value) -> Struct {
    Struct {
        fields: json
            .as_object()
            .map(|object| {
                object
                    .iter()
                    .map(|(k, v)| (k.clone(), from_json(v)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
