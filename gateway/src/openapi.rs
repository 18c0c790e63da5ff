//! `/openapi.json`: an OpenAPI 3.1 document generated from the same route table and message
//! descriptors that drive transcoding, so it cannot drift from what the gateway serves.

use std::collections::BTreeMap;

use duovarsity_proto::buf::validate::FieldRules;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::routes::{BodyTarget, RouteTable};
use crate::transcode::resolve;

pub fn document(table: &RouteTable) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    for route in table.routes() {
        let input = route.method.input();
        let output = route.method.output();
        let mut parameters = Vec::new();
        let mut bound = Vec::new();
        for variable in route.template.variables() {
            if let Some(field) = resolve(&input, &variable.field_path) {
                bound.push(field.clone());
                parameters.push(json!({
                    "name": variable.parameter_name(), "in": "path", "required": true,
                    "description": format!("Sets `{}`.", variable.field_path.join(".")),
                    "schema": field_schema(&field, &mut schemas),
                }));
            }
        }
        if route.body != BodyTarget::Whole {
            for field in input.fields() {
                let in_body = matches!(&route.body, BodyTarget::Field(f) if f == field.name());
                if bound.contains(&field) || in_body || field.is_map() {
                    continue;
                }
                if matches!(field.kind(), Kind::Message(_)) && !field_is_scalar_json(&field) {
                    continue;
                }
                parameters.push(json!({
                    "name": field.json_name(), "in": "query", "required": false,
                    "schema": field_schema(&field, &mut schemas),
                }));
            }
        }
        let mut operation = json!({
            "operationId": format!("{}_{}", route.method.parent_service().name(), route.method.name()),
            "tags": [route.method.parent_service().name()],
            "summary": route.method.name(),
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": response_schema(route, &output, &mut schemas)}},
                },
                "default": {
                    "description": "An error (RFC 9457 problem details)",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            },
        });
        match &route.body {
            BodyTarget::Whole => {
                operation["requestBody"] = json!({
                    "required": true,
                    "content": {"application/json": {"schema": message_ref(&input, &mut schemas)}},
                });
            }
            BodyTarget::Field(name) => {
                if let Some(field) = input.get_field_by_name(name) {
                    operation["requestBody"] = json!({
                        "required": true,
                        "content": {"application/json": {"schema": field_schema(&field, &mut schemas)}},
                    });
                }
            }
            BodyTarget::None => {}
        }
        if !route.access.public {
            operation["security"] = json!([{"bearerAuth": []}]);
        }
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.http_method.as_str().to_lowercase(), operation);
    }
    schemas.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Duovarsity API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Generated from the gRPC contracts' google.api.http annotations.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    })
}

fn response_schema(
    route: &crate::routes::Route,
    output: &MessageDescriptor,
    schemas: &mut BTreeMap<String, Value>,
) -> Value {
    if route.response_body.is_empty() {
        return message_ref(output, schemas);
    }
    output
        .get_field_by_name(&route.response_body)
        .map(|field| field_schema(&field, schemas))
        .unwrap_or_else(|| json!({}))
}

fn field_is_scalar_json(field: &FieldDescriptor) -> bool {
    matches!(field.kind(), Kind::Message(m) if well_known(&m).is_some())
}

fn well_known(message: &MessageDescriptor) -> Option<Value> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
        }
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.StringValue" | "google.protobuf.BytesValue" => json!({"type": "string"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": "integer"}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64"})
        }
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => json!({"type": "number"}),
        _ => return None,
    })
}

fn message_ref(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if let Some(schema) = well_known(message) {
        return schema;
    }
    let name = message.full_name().to_string();
    if !schemas.contains_key(&name) {
        // Reserve the name first so recursive messages terminate.
        schemas.insert(name.clone(), json!({}));
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            properties.insert(field.json_name().to_string(), field_schema(&field, schemas));
            if duovarsity_common::validate::rules::of(&field).is_some_and(|r| r.required()) {
                required.push(field.json_name().to_string());
            }
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        schemas.insert(name.clone(), schema);
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    let mut schema = unconstrained_schema(field, schemas);
    if let Some(rules) = duovarsity_common::validate::rules::of(field) {
        constrain(&mut schema, &rules);
    }
    schema
}

/// The field's protovalidate rules as JSON Schema keywords, so generated clients and
/// fuzzers send what the services accept. The gateway enforces nothing itself: the
/// services check the same rules.
fn constrain(schema: &mut Value, rules: &FieldRules) {
    use duovarsity_proto::buf::validate::{
        field_rules::Type, int32_rules, int64_rules, string_rules, u_int32_rules,
    };
    // Lists carry item rules on `items`; everything else on the schema itself.
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let bounds = |object: &mut Map<String, Value>,
                  lower: Option<(i64, bool)>,
                  upper: Option<(i64, bool)>| {
        if let Some((value, exclusive)) = lower {
            let key = if exclusive {
                "exclusiveMinimum"
            } else {
                "minimum"
            };
            object.insert(key.into(), json!(value));
        }
        if let Some((value, exclusive)) = upper {
            let key = if exclusive {
                "exclusiveMaximum"
            } else {
                "maximum"
            };
            object.insert(key.into(), json!(value));
        }
    };
    match &rules.r#type {
        Some(Type::String(string)) => {
            if let Some(min) = string.min_len {
                object.insert("minLength".into(), json!(min));
            }
            if let Some(max) = string.max_len {
                object.insert("maxLength".into(), json!(max));
            }
            if let Some(pattern) = &string.pattern {
                object.insert("pattern".into(), json!(pattern));
            }
            match string.well_known {
                Some(string_rules::WellKnown::Email(true)) => {
                    object.insert("format".into(), json!("email"));
                }
                Some(string_rules::WellKnown::Uuid(true)) => {
                    object.insert("format".into(), json!("uuid"));
                }
                _ => {}
            }
        }
        Some(Type::Int32(n)) => bounds(
            object,
            n.greater_than.map(|g| match g {
                int32_rules::GreaterThan::Gt(v) => (i64::from(v), true),
                int32_rules::GreaterThan::Gte(v) => (i64::from(v), false),
            }),
            n.less_than.map(|l| match l {
                int32_rules::LessThan::Lt(v) => (i64::from(v), true),
                int32_rules::LessThan::Lte(v) => (i64::from(v), false),
            }),
        ),
        Some(Type::Uint32(n)) => bounds(
            object,
            n.greater_than.map(|g| match g {
                u_int32_rules::GreaterThan::Gt(v) => (i64::from(v), true),
                u_int32_rules::GreaterThan::Gte(v) => (i64::from(v), false),
            }),
            n.less_than.map(|l| match l {
                u_int32_rules::LessThan::Lt(v) => (i64::from(v), true),
                u_int32_rules::LessThan::Lte(v) => (i64::from(v), false),
            }),
        ),
        // int64 travels as a JSON string (proto3 JSON); its range is stated in words.
        Some(Type::Int64(n)) => {
            let lower = n.greater_than.map(|g| match g {
                int64_rules::GreaterThan::Gt(v) => format!("> {v}"),
                int64_rules::GreaterThan::Gte(v) => format!(">= {v}"),
            });
            let upper = n.less_than.map(|l| match l {
                int64_rules::LessThan::Lt(v) => format!("< {v}"),
                int64_rules::LessThan::Lte(v) => format!("<= {v}"),
            });
            let range: Vec<String> = lower.into_iter().chain(upper).collect();
            if !range.is_empty() {
                object.insert(
                    "description".into(),
                    json!(format!("Range: {}", range.join(", "))),
                );
            }
        }
        Some(Type::Repeated(list)) => {
            if let Some(min) = list.min_items {
                object.insert("minItems".into(), json!(min));
            }
            if let Some(max) = list.max_items {
                object.insert("maxItems".into(), json!(max));
            }
            if list.unique() {
                object.insert("uniqueItems".into(), json!(true));
            }
            if let (Some(items), Some(item_schema)) = (&list.items, object.get_mut("items")) {
                constrain(item_schema, items);
            }
        }
        // `defined_only` is what the enum's schema already says.
        Some(Type::Enum(_)) | None => {}
    }
}

fn unconstrained_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return json!({"type": "object"});
        };
        let value = entry.map_entry_value_field();
        return json!({"type": "object", "additionalProperties": field_schema(&value, schemas)});
    }
    let single = match field.kind() {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "uint32"}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Enum(enumeration) => json!({
            "type": "string",
            "enum": enumeration.values().map(|v| v.name().to_string()).collect::<Vec<_>>(),
        }),
        Kind::Message(message) => message_ref(&message, schemas),
    };
    if field.is_list() {
        json!({"type": "array", "items": single})
    } else {
        single
    }
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "description": "The gRPC status code name"},
            "reason": {"type": "string", "description": "Stable machine-readable reason"},
            "requestId": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "description": {"type": "string"}},
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_covers_every_route() {
        let table = RouteTable::from_pool(duovarsity_proto::descriptor_pool()).unwrap();
        let doc = document(&table);
        let login = &doc["paths"]["/v1/auth/login"]["post"];
        assert_eq!(
            login["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/duovarsity.user.v1.LoginRequest"
        );
        assert!(login.get("security").is_none());
        let get_user = &doc["paths"]["/v1/users/{id}"]["get"];
        assert_eq!(get_user["parameters"][0]["in"], "path");
        assert_eq!(get_user["security"][0]["bearerAuth"], json!([]));
        let list = &doc["paths"]["/v1/users"]["get"]["parameters"];
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "pageSize")
        );
        let user = &doc["components"]["schemas"]["duovarsity.user.v1.User"]["properties"];
        assert_eq!(user["createdAt"]["format"], "date-time");
        assert!(
            user["role"]["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("ROLE_ADMIN"))
        );
    }

    #[test]
    fn schemas_carry_the_proto_field_rules() {
        let table = RouteTable::from_pool(duovarsity_proto::descriptor_pool()).unwrap();
        let doc = document(&table);
        let schemas = &doc["components"]["schemas"];
        let register = &schemas["duovarsity.user.v1.RegisterRequest"]["properties"];
        assert_eq!(register["password"]["minLength"], 10);
        assert_eq!(register["password"]["maxLength"], 256);
        assert_eq!(register["email"]["maxLength"], 254);
        let progress = &schemas["duovarsity.course.v1.RecordProgressRequest"]["properties"];
        assert_eq!(progress["percent"]["minimum"], 0);
        assert_eq!(progress["percent"]["maximum"], 100);
        let course = &schemas["duovarsity.course.v1.Course"]["properties"];
        assert_eq!(course["slug"]["pattern"], "^[a-z0-9]+(-[a-z0-9]+)*$");
        let list = &doc["paths"]["/v1/users"]["get"]["parameters"];
        let page_size = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "pageSize")
            .unwrap();
        assert_eq!(page_size["schema"]["maximum"], 100);
        // A nested path variable is a name OpenAPI tools can bind, and says what it sets.
        let update = &doc["paths"]["/v1/courses/{course_id}"]["patch"]["parameters"][0];
        assert_eq!(update["name"], "course_id");
        assert_eq!(update["description"], "Sets `course.id`.");
    }
}
