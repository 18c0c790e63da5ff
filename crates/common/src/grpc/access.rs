//! The access layer: every call is checked against its method's
//! `duovarsity.options.v1.access` option before a handler runs.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::auth::{AccessPolicy, TokenVerifier, authorize, bearer_token};

/// Enforces the `duovarsity.options.v1.access` option of every method and hands verified
/// [`crate::auth::Claims`] to handlers through the request extensions.
#[derive(Clone)]
pub struct AuthLayer {
    state: Arc<AuthState>,
}

struct AuthState {
    verifier: Arc<TokenVerifier>,
    policy: AccessPolicy,
}

impl AuthLayer {
    pub fn new(verifier: Arc<TokenVerifier>) -> Self {
        Self {
            state: Arc::new(AuthState {
                verifier,
                policy: AccessPolicy::from_pool(duovarsity_proto::descriptor_pool()),
            }),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    state: Arc<AuthState>,
}

impl<S, B, R> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is the one that was driven to readiness (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let access = state.policy.lookup(request.uri().path());
            let bearer = bearer_token(request.headers().get(http::header::AUTHORIZATION));
            match authorize(access, bearer, &state.verifier).await {
                Ok(claims) => {
                    if let Some(claims) = claims {
                        request.extensions_mut().insert(claims);
                    }
                    // For methods whose messages carry further tokens (a gateway's live
                    // session opens each socket with its holder's).
                    request.extensions_mut().insert(state.verifier.clone());
                    inner.call(request).await
                }
                Err(error) => Ok(tonic::Status::from(error).into_http()),
            }
        })
    }
}
