//! The validation layer: protovalidate field rules checked before a handler runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

/// Checks every request against the protovalidate rules of its message
/// ([`crate::validate::rules`]) before the handler runs: a violation is INVALID_ARGUMENT
/// with BadRequest field violations, which the gateway turns into a 400 problem. Only
/// methods whose request declares rules are buffered and decoded; the others (media
/// uploads among them) stream through untouched.
#[derive(Clone)]
pub struct ValidateLayer {
    methods: Arc<HashMap<String, prost_reflect::MessageDescriptor>>,
}

/// The largest request body the layer buffers to check; larger ones are refused.
const VALIDATED_BODY_LIMIT: usize = 4 * 1024 * 1024;

impl ValidateLayer {
    pub fn new() -> Self {
        let mut methods = HashMap::new();
        for service in duovarsity_proto::descriptor_pool().services() {
            for method in service.methods() {
                let input = method.input();
                if crate::validate::rules::declares_rules(&input) {
                    methods.insert(format!("/{}/{}", service.full_name(), method.name()), input);
                }
            }
        }
        Self {
            methods: Arc::new(methods),
        }
    }
}

impl Default for ValidateLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = ValidateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ValidateService {
            inner,
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ValidateService<S> {
    inner: S,
    methods: Arc<HashMap<String, prost_reflect::MessageDescriptor>>,
}

impl<S, R> Service<http::Request<tonic::body::Body>> for ValidateService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<R>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(input) = self.methods.get(request.uri().path()).cloned() else {
            return Box::pin(inner.call(request));
        };
        Box::pin(async move {
            use http_body_util::BodyExt as _;
            let (parts, body) = request.into_parts();
            let bytes = match http_body_util::Limited::new(body, VALIDATED_BODY_LIMIT)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let status = tonic::Status::resource_exhausted(format!(
                        "the request could not be read (at most {VALIDATED_BODY_LIMIT} bytes): {error}"
                    ));
                    return Ok(status.into_http());
                }
            };
            // One uncompressed gRPC frame: flag, big-endian length, message. Anything else
            // goes on to tonic, which answers it as it always does.
            if let Some(message) = single_frame(&bytes)
                && let Ok(decoded) = prost_reflect::DynamicMessage::decode(input, message)
            {
                let violations = crate::validate::rules::violations(&decoded);
                if !violations.is_empty() {
                    let status = tonic::Status::from(crate::Error::InvalidArgument(violations));
                    return Ok(status.into_http());
                }
            }
            let body = tonic::body::Body::new(http_body_util::Full::new(bytes));
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

/// The message of a body holding exactly one uncompressed gRPC frame.
fn single_frame(bytes: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = bytes.split_first()?;
    let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..)?;
    (compressed == 0 && message.len() == length).then_some(message)
}
