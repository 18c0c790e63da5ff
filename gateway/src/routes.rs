//! The REST routing table, derived from the descriptor set: one [`Route`] per
//! `google.api.http` binding (including `additional_bindings`). Adding an annotated RPC to
//! a proto makes it reachable here with no gateway code.

use std::sync::Arc;

use duovarsity_proto::duovarsity::options::v1::{Access, Body as BodyOption, Stream};
use duovarsity_proto::google::api::HttpRule;
use duovarsity_proto::google::api::http_rule::Pattern;
use duovarsity_proto::method_option;
use http::Method;
use prost_reflect::{DescriptorPool, MethodDescriptor};

use crate::meters::RouteMeters;
use crate::template::{PathTemplate, TemplateError};

/// Where the HTTP body goes in the request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyTarget {
    /// No body: fields come from the path and the query string.
    None,
    /// `body: "*"`: the whole request message.
    Whole,
    /// `body: "field"`: that field.
    Field(String),
}

/// One REST binding of one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    pub http_method: Method,
    pub template: PathTemplate,
    /// The template as text: the `route` label of the request metrics.
    pub label: String,
    /// This route's metric handles, made once (`layers::metrics`).
    pub meters: RouteMeters,
    pub body: BodyTarget,
    /// Empty: the whole response message is the HTTP body.
    pub response_body: String,
    pub method: MethodDescriptor,
    /// `/package.Service/Method`.
    pub grpc_path: String,
    /// The full name of the service it calls (`package.Service`), for admission and the
    /// upstream lookup, made once here rather than per request.
    pub service: String,
    pub access: Access,
    /// The server-streaming sibling the request switches to (`duovarsity.options.v1.stream`).
    pub stream: Option<StreamSwitch>,
    /// The proto marks the method `NO_SIDE_EFFECTS` or `IDEMPOTENT`: a call that failed to
    /// reach a replica may be sent to another.
    pub idempotent: bool,
    /// The body may be as large as a media file (`duovarsity.options.v1.body`); otherwise
    /// the JSON limit applies.
    pub media_body: bool,
}

/// Whether `method`'s `idempotency_level` option allows a retry.
fn idempotent(method: &MethodDescriptor) -> bool {
    use prost_reflect::Value;
    // google.protobuf.MethodOptions.IdempotencyLevel: 1 NO_SIDE_EFFECTS, 2 IDEMPOTENT.
    matches!(
        method
            .options()
            .get_field_by_name("idempotency_level")
            .as_deref(),
        Some(Value::EnumNumber(1 | 2))
    )
}

/// When the bool field `when_field` of the request is true, `method` (server-streaming,
/// same service) answers instead, as server-sent events.
#[derive(Debug, Clone)]
pub struct StreamSwitch {
    pub when_field: String,
    pub method: MethodDescriptor,
    pub grpc_path: String,
}

/// Why the routing table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    Template(#[from] TemplateError),
    #[error("{method}: the stream option {message}")]
    Stream { method: String, message: String },
}

/// Every route, most specific first.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

/// The result of looking a request up.
pub enum Lookup<'a> {
    Found(&'a Arc<Route>, Vec<(Vec<String>, String)>),
    /// The path exists with other methods (for a 405 with `Allow`).
    WrongMethod(Vec<Method>),
    NotFound,
}

/// The method's stream option, checked: the field is a bool of the request and the
/// sibling streams from the server with the same input.
fn stream_switch(
    service: &prost_reflect::ServiceDescriptor,
    method: &MethodDescriptor,
) -> Result<Option<StreamSwitch>, RouteError> {
    let Some(option) = method_option::<Stream>(method, "duovarsity.options.v1.stream") else {
        return Ok(None);
    };
    let fail = |message: &str| RouteError::Stream {
        method: method.full_name().to_string(),
        message: message.to_string(),
    };
    let is_bool = method
        .input()
        .get_field_by_name(&option.when_field)
        .is_some_and(|f| matches!(f.kind(), prost_reflect::Kind::Bool));
    if !is_bool {
        return Err(fail("names no bool field of the request"));
    }
    let sibling = service
        .methods()
        .find(|m| m.name() == option.method)
        .ok_or_else(|| fail("names no method of the service"))?;
    if !sibling.is_server_streaming() || sibling.input() != method.input() {
        return Err(fail(
            "must name a server-streaming method with the same request",
        ));
    }
    Ok(Some(StreamSwitch {
        when_field: option.when_field,
        grpc_path: format!("/{}/{}", service.full_name(), sibling.name()),
        method: sibling,
    }))
}

impl RouteTable {
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, RouteError> {
        let mut routes = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                let Some(rule) = method_option::<HttpRule>(&method, "google.api.http") else {
                    continue;
                };
                let access = method_option::<Access>(&method, "duovarsity.options.v1.access")
                    .unwrap_or_default();
                let media_body = method_option::<BodyOption>(&method, "duovarsity.options.v1.body")
                    .is_some_and(|body| body.media);
                let grpc_path = format!("/{}/{}", service.full_name(), method.name());
                let stream = stream_switch(&service, &method)?;
                let mut bindings = vec![rule.clone()];
                bindings.extend(rule.additional_bindings.iter().cloned());
                for binding in bindings {
                    let Some((http_method, path)) = verb_and_path(&binding) else {
                        continue;
                    };
                    let body = match binding.body.as_str() {
                        "" => BodyTarget::None,
                        "*" => BodyTarget::Whole,
                        field => BodyTarget::Field(field.to_string()),
                    };
                    let template = PathTemplate::parse(&path)?;
                    routes.push(Route {
                        http_method,
                        label: template.to_string(),
                        meters: RouteMeters::default(),
                        template,
                        body,
                        response_body: binding.response_body.clone(),
                        method: method.clone(),
                        grpc_path: grpc_path.clone(),
                        service: method.parent_service().full_name().to_string(),
                        access: access.clone(),
                        stream: stream.clone(),
                        idempotent: idempotent(&method),
                        media_body,
                    });
                }
            }
        }
        routes.sort_by_key(|route| std::cmp::Reverse(route.template.specificity()));
        Ok(Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        })
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let mut allowed = Vec::new();
        for route in &self.routes {
            if let Some(bindings) = route.template.matches(path) {
                if route.http_method == *method {
                    return Lookup::Found(route, bindings);
                }
                if !allowed.contains(&route.http_method) {
                    allowed.push(route.http_method.clone());
                }
            }
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::WrongMethod(allowed)
        }
    }
}

fn verb_and_path(rule: &HttpRule) -> Option<(Method, String)> {
    Some(match rule.pattern.as_ref()? {
        Pattern::Get(path) => (Method::GET, path.clone()),
        Pattern::Put(path) => (Method::PUT, path.clone()),
        Pattern::Post(path) => (Method::POST, path.clone()),
        Pattern::Delete(path) => (Method::DELETE, path.clone()),
        Pattern::Patch(path) => (Method::PATCH, path.clone()),
        Pattern::Custom(custom) => (
            Method::from_bytes(custom.kind.as_bytes()).ok()?,
            custom.path.clone(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::from_pool(duovarsity_proto::descriptor_pool()).unwrap()
    }

    #[test]
    fn the_user_service_is_routed_from_its_annotations() {
        let table = table();
        let Lookup::Found(route, bindings) = table.lookup(&Method::POST, "/v1/auth/login") else {
            panic!("login is routed");
        };
        assert_eq!(route.grpc_path, "/duovarsity.user.v1.UserService/Login");
        assert_eq!(route.body, BodyTarget::Whole);
        assert!(route.access.public);
        assert!(bindings.is_empty());
    }

    #[test]
    fn literal_paths_beat_variables() {
        let table = table();
        let Lookup::Found(route, _) = table.lookup(&Method::GET, "/v1/users/me") else {
            panic!("me is routed");
        };
        assert_eq!(route.method.name(), "GetMe");
        let Lookup::Found(route, bindings) = table.lookup(&Method::GET, "/v1/users/0190") else {
            panic!("get user is routed");
        };
        assert_eq!(route.method.name(), "GetUser");
        assert_eq!(bindings, vec![(vec!["id".to_string()], "0190".to_string())]);
    }

    #[test]
    fn wrong_method_and_unknown_paths() {
        let table = table();
        match table.lookup(&Method::DELETE, "/v1/users/me") {
            Lookup::WrongMethod(allowed) => {
                assert!(allowed.contains(&Method::GET) && allowed.contains(&Method::PATCH));
            }
            _ => panic!("expected 405"),
        }
        assert!(matches!(
            table.lookup(&Method::GET, "/v1/nothing"),
            Lookup::NotFound
        ));
    }
}
