//! The caller: the bearer token verified locally against the user service's keys and
//! checked against the route's `access` option by the same rule every service applies
//! ([`authorize`]); 401/403 otherwise. The claims go to the layers inside ([`Caller`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use duovarsity_common::auth::{authorize, bearer_token};
use http::header;

use super::{Caller, Matched};
use crate::Gateway;
use crate::problem::Problem;

pub async fn authenticate(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(matched) = request.extensions().get::<Matched>() else {
        return next.run(request).await;
    };
    let bearer = bearer_token(request.headers().get(header::AUTHORIZATION));
    match authorize(Some(&matched.route.access), bearer, &gateway.verifier).await {
        Ok(claims) => {
            request.extensions_mut().insert(Caller(claims));
            next.run(request).await
        }
        Err(error) => Problem::from_status(&tonic::Status::from(error)).into_response(),
    }
}
