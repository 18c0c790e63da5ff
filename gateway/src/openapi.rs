//! `/openapi.json`: an OpenAPI 3.1 document generated from the same route table and message
//! descriptors that drive transcoding, so it cannot drift from what the gateway serves.

use std::collections::BTreeMap;

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
            let name = variable.field_path.join(".");
            if let Some(field) = resolve(&input, &variable.field_path) {
                bound.push(field.clone());
                parameters.push(json!({
                    "name": name, "in": "path", "required": true,
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
        for field in message.fields() {
            properties.insert(field.json_name().to_string(), field_schema(&field, schemas));
        }
        schemas.insert(
            name.clone(),
            json!({"type": "object", "properties": properties}),
        );
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
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
}
