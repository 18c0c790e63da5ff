//! JSON to protobuf and back, following the proto3 JSON mapping (lowerCamelCase names, 64-bit
//! integers as strings, well-known types in their JSON forms) through prost-reflect.
//!
//! A request message is assembled as one JSON object: the body (whole or into one field),
//! then path variables, then (for body-less bindings) query parameters. Path variables win
//! over the body. It is then deserialised once, refusing unknown fields, so every input
//! path has the same validation and the same error messages.

use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value};

use crate::routes::{BodyTarget, Route};

/// Why a request could not become a message. Always a 400 (or 415) for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body must be a JSON object")]
    NotAnObject,
    #[error("{0}")]
    InvalidField(String),
    #[error("unknown query parameter {0:?}")]
    UnknownParameter(String),
    #[error("query parameter {name:?}: {message}")]
    InvalidParameter { name: String, message: String },
}

/// The full name of the message whose HTTP form is a raw body.
pub const HTTP_BODY: &str = "google.api.HttpBody";

/// Whether the route's HTTP body is raw bytes (a `google.api.HttpBody` target) rather than
/// JSON.
pub fn takes_raw_body(route: &Route) -> bool {
    match &route.body {
        BodyTarget::Whole => route.method.input().full_name() == HTTP_BODY,
        BodyTarget::Field(name) => route
            .method
            .input()
            .get_field_by_name(name)
            .is_some_and(|f| matches!(f.kind(), Kind::Message(m) if m.full_name() == HTTP_BODY)),
        BodyTarget::None => false,
    }
}

/// Whether the response is raw bytes with their own content type.
pub fn returns_raw_body(route: &Route) -> bool {
    route.method.output().full_name() == HTTP_BODY
}

/// The encoded request message for `route`. `content_type` (the request's Content-Type)
/// matters only for raw `google.api.HttpBody` bodies, which keep it.
pub fn request_message(
    route: &Route,
    bindings: &[(Vec<String>, String)],
    query: Option<&str>,
    body: &[u8],
    content_type: &str,
) -> Result<Vec<u8>, RequestError> {
    let input = route.method.input();
    let body_json = if takes_raw_body(route) {
        use base64::Engine as _;
        Some(serde_json::json!({
            "contentType": content_type,
            "data": base64::engine::general_purpose::STANDARD.encode(body),
        }))
    } else if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(body)
                .map_err(|e| RequestError::MalformedJson(e.to_string()))?,
        )
    };
    let mut object = match (&route.body, body_json) {
        (BodyTarget::Whole, Some(Value::Object(object))) => object,
        (BodyTarget::Whole, Some(_)) => return Err(RequestError::NotAnObject),
        (BodyTarget::Field(field), Some(value)) => {
            let mut object = Map::new();
            object.insert(field.clone(), value);
            object
        }
        // A body on a body-less binding is ignored, as HTTP allows for GET and DELETE.
        _ => Map::new(),
    };
    for (field_path, value) in bindings {
        let field = resolve(&input, field_path).ok_or_else(|| {
            RequestError::InvalidField(format!(
                "path variable {} names no field",
                field_path.join(".")
            ))
        })?;
        set_path(
            &mut object,
            &input,
            field_path,
            scalar_json(&field, value).map_err(|message| {
                RequestError::InvalidField(format!(
                    "path variable {}: {message}",
                    field_path.join(".")
                ))
            })?,
        );
    }
    if route.body != BodyTarget::Whole
        && let Some(query) = query
    {
        apply_query(&mut object, &input, route, bindings, query)?;
    }
    let message = DynamicMessage::deserialize_with_options(
        input,
        Value::Object(object),
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| RequestError::InvalidField(e.to_string()))?;
    Ok(message.encode_to_vec())
}

/// The raw body and content type of a `google.api.HttpBody` response.
pub fn response_raw(bytes: &[u8]) -> Result<(String, Vec<u8>), String> {
    let body = duovarsity_proto::google::api::HttpBody::decode(bytes).map_err(|e| e.to_string())?;
    Ok((body.content_type, body.data))
}

/// The JSON body for a response message.
pub fn response_json(route: &Route, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let message =
        DynamicMessage::decode(route.method.output(), bytes).map_err(|e| e.to_string())?;
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
    let mut serializer = serde_json::Serializer::new(&mut out);
    if route.response_body.is_empty() {
        message
            .serialize_with_options(&mut serializer, &options)
            .map_err(|e| e.to_string())?;
    } else {
        let value = message
            .get_field_by_name(&route.response_body)
            .ok_or_else(|| format!("response_body {} names no field", route.response_body))?;
        match value.as_message() {
            Some(inner) => inner
                .serialize_with_options(&mut serializer, &options)
                .map_err(|e| e.to_string())?,
            None => {
                // A scalar or list field: serialise the whole message and pick the field.
                let mut whole = Vec::new();
                message
                    .serialize_with_options(&mut serde_json::Serializer::new(&mut whole), &options)
                    .map_err(|e| e.to_string())?;
                let whole: Value = serde_json::from_slice(&whole).map_err(|e| e.to_string())?;
                let field = route
                    .method
                    .output()
                    .get_field_by_name(&route.response_body)
                    .map(|f| f.json_name().to_string())
                    .unwrap_or_default();
                out = serde_json::to_vec(&whole[field.as_str()]).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(out)
}

/// The field a dotted path names (proto or JSON names at each step).
pub fn resolve(message: &MessageDescriptor, path: &[String]) -> Option<FieldDescriptor> {
    let mut current = message.clone();
    let mut field = None;
    for (i, name) in path.iter().enumerate() {
        let found = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))?;
        if i + 1 < path.len() {
            match found.kind() {
                Kind::Message(inner) if !found.is_list() && !found.is_map() => current = inner,
                _ => return None,
            }
        }
        field = Some(found);
    }
    field
}

fn set_path(
    object: &mut Map<String, Value>,
    message: &MessageDescriptor,
    path: &[String],
    value: Value,
) {
    let mut current = object;
    let mut descriptor = message.clone();
    for (i, name) in path.iter().enumerate() {
        let Some(field) = descriptor
            .get_field_by_name(name)
            .or_else(|| descriptor.get_field_by_json_name(name))
        else {
            return;
        };
        // The body may use the proto name; file it under the JSON name so that one key
        // holds the field and a path value cannot be shadowed by a second spelling.
        let key = field.json_name().to_string();
        if field.name() != key
            && let Some(existing) = current.remove(field.name())
        {
            current.entry(key.clone()).or_insert(existing);
        }
        if i + 1 == path.len() {
            current.insert(key, value);
            return;
        }
        let Kind::Message(inner) = field.kind() else {
            return;
        };
        descriptor = inner;
        let entry = current
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        current = entry.as_object_mut().expect("just made an object");
    }
}

fn apply_query(
    object: &mut Map<String, Value>,
    input: &MessageDescriptor,
    route: &Route,
    bindings: &[(Vec<String>, String)],
    query: &str,
) -> Result<(), RequestError> {
    let mut lists: Vec<(Vec<String>, Vec<Value>)> = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let path: Vec<String> = name.split('.').map(str::to_string).collect();
        let field = resolve(input, &path)
            .ok_or_else(|| RequestError::UnknownParameter(name.to_string()))?;
        let bound_by_path = bindings
            .iter()
            .any(|(bound, _)| resolve(input, bound).is_some_and(|b| b == field));
        let bound_by_body =
            matches!(&route.body, BodyTarget::Field(body) if path.first() == Some(body));
        if bound_by_path || bound_by_body {
            return Err(RequestError::InvalidParameter {
                name: name.to_string(),
                message: "is already bound by the path or body".into(),
            });
        }
        if field.is_map() || (matches!(field.kind(), Kind::Message(_)) && !is_string_json(&field)) {
            return Err(RequestError::InvalidParameter {
                name: name.to_string(),
                message: "cannot be set from the query string".into(),
            });
        }
        let json =
            scalar_json(&field, &value).map_err(|message| RequestError::InvalidParameter {
                name: name.to_string(),
                message,
            })?;
        if field.is_list() {
            match lists.iter_mut().find(|(p, _)| *p == path) {
                Some((_, values)) => values.push(json),
                None => lists.push((path, vec![json])),
            }
        } else {
            set_path(object, input, &path, json);
        }
    }
    for (path, values) in lists {
        set_path(object, input, &path, Value::Array(values));
    }
    Ok(())
}

/// Well-known message types whose JSON form is a string (or a scalar).
fn is_string_json(field: &FieldDescriptor) -> bool {
    match field.kind() {
        Kind::Message(message) => matches!(
            message.full_name(),
            "google.protobuf.Timestamp"
                | "google.protobuf.Duration"
                | "google.protobuf.FieldMask"
                | "google.protobuf.StringValue"
                | "google.protobuf.BytesValue"
                | "google.protobuf.Int32Value"
                | "google.protobuf.Int64Value"
                | "google.protobuf.UInt32Value"
                | "google.protobuf.UInt64Value"
                | "google.protobuf.BoolValue"
                | "google.protobuf.FloatValue"
                | "google.protobuf.DoubleValue"
        ),
        _ => false,
    }
}

/// A text value (path or query) as the JSON the field's type expects.
fn scalar_json(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let bool_kind = matches!(field.kind(), Kind::Bool)
        || matches!(field.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.BoolValue");
    if bool_kind {
        return match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("must be true or false".into()),
        };
    }
    // Numbers stay strings: the proto3 JSON mapping accepts both, and the deserialiser
    // then reports range and syntax errors in one place.
    Ok(Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Lookup, RouteTable};
    use duovarsity_proto::user::{ListUsersRequest, RegisterRequest, SetRoleRequest};
    use http::Method;

    fn encode(
        method: Method,
        path: &str,
        query: Option<&str>,
        body: &str,
    ) -> Result<Vec<u8>, RequestError> {
        let table = RouteTable::from_pool(duovarsity_proto::descriptor_pool()).unwrap();
        let Lookup::Found(route, bindings) = table.lookup(&method, path) else {
            panic!("{path} is routed");
        };
        request_message(route, &bindings, query, body.as_bytes(), "")
    }

    #[test]
    fn whole_body_in_camel_or_proto_case() {
        let bytes = encode(
            Method::POST,
            "/v1/auth/register",
            None,
            r#"{"email":"a@b.co","password":"0123456789","displayName":"Ann"}"#,
        )
        .unwrap();
        let request = RegisterRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(request.display_name, "Ann");
        let bytes = encode(
            Method::POST,
            "/v1/auth/register",
            None,
            r#"{"display_name":"Bo"}"#,
        )
        .unwrap();
        assert_eq!(
            RegisterRequest::decode(bytes.as_slice())
                .unwrap()
                .display_name,
            "Bo"
        );
    }

    #[test]
    fn path_variables_override_the_body() {
        let bytes = encode(
            Method::POST,
            "/v1/users/0190aaaa:setRole",
            None,
            r#"{"id":"someone-else","role":"ROLE_ADMIN"}"#,
        )
        .unwrap();
        let request = SetRoleRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(request.id, "0190aaaa");
        assert_eq!(request.role, 3);
    }

    #[test]
    fn query_parameters_fill_body_less_requests() {
        let bytes = encode(
            Method::GET,
            "/v1/users",
            Some("pageSize=25&page_token=abc"),
            "",
        )
        .unwrap();
        let request = ListUsersRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(request.page_size, 25);
        assert_eq!(request.page_token, "abc");
    }

    #[test]
    fn a_field_body_fills_that_field_and_the_query_the_rest() {
        let table = RouteTable::from_pool(duovarsity_proto::descriptor_pool()).unwrap();
        let Lookup::Found(route, bindings) = table.lookup(&Method::POST, "/v1/users/u-7:setTier")
        else {
            panic!("setTier is routed");
        };
        // The same RPC bound as `body: "tier"`: the body is the field's JSON value.
        let mut route = Route::clone(route);
        route.body = BodyTarget::Field("tier".into());
        let bytes = request_message(&route, &bindings, None, br#""TIER_PREMIUM""#, "").unwrap();
        let request = duovarsity_proto::user::SetTierRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!((request.id.as_str(), request.tier), ("u-7", 3));
        assert!(matches!(
            request_message(
                &route,
                &bindings,
                Some("tier=TIER_FREE"),
                br#""TIER_PREMIUM""#,
                ""
            ),
            Err(RequestError::InvalidParameter { .. })
        ));
    }

    #[test]
    fn a_nested_path_variable_merges_into_a_field_body() {
        let bytes = encode(
            Method::PATCH,
            "/v1/courses/c-42",
            Some("updateMask=title"),
            r#"{"title":"After","course_id":"x"}"#,
        );
        // `course_id` is not a Course field: unknown fields are refused even in a field body.
        assert!(bytes.is_err());
        let bytes = encode(
            Method::PATCH,
            "/v1/courses/c-42",
            Some("updateMask=title"),
            r#"{"title":"After","id":"ignored"}"#,
        )
        .unwrap();
        let request =
            duovarsity_proto::course::UpdateCourseRequest::decode(bytes.as_slice()).unwrap();
        let course = request.course.unwrap();
        assert_eq!(
            (course.id.as_str(), course.title.as_str()),
            ("c-42", "After")
        );
        assert_eq!(
            request.update_mask.unwrap().paths,
            vec!["title".to_string()]
        );
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(
            encode(Method::POST, "/v1/auth/login", None, r#"{"email":"#),
            Err(RequestError::MalformedJson(_))
        ));
        assert!(matches!(
            encode(Method::POST, "/v1/auth/login", None, r#"[1,2]"#),
            Err(RequestError::NotAnObject)
        ));
        let err = encode(Method::POST, "/v1/auth/login", None, r#"{"emial":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("emial"), "{err}");
        assert!(matches!(
            encode(Method::GET, "/v1/users", Some("nope=1"), ""),
            Err(RequestError::UnknownParameter(_))
        ));
        assert!(matches!(
            encode(Method::GET, "/v1/users", Some("pageSize=many"), ""),
            Err(RequestError::InvalidField(_))
        ));
    }
}
