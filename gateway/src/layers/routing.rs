//! The route of a request's method and path, from the table the `google.api.http`
//! annotations made: [`Matched`] for the layers inside, or 404 `ROUTE_NOT_FOUND` / 405
//! `METHOD_NOT_ALLOWED` with `Allow`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use duovarsity_common::telemetry;
use http::StatusCode;
use tonic::Code;

use super::Matched;
use super::metrics::RouteLabel;
use crate::Gateway;
use crate::problem::Problem;
use crate::routes::Lookup;

pub async fn route(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let matched = match gateway.table.lookup(&method, request.uri().path()) {
        Lookup::Found(route, bindings) => Matched {
            route: route.clone(),
            bindings,
        },
        Lookup::NotFound => {
            return Problem::new(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                format!("no route for {method} {}", request.uri().path()),
            )
            .with_reason("ROUTE_NOT_FOUND")
            .into_response();
        }
        Lookup::WrongMethod(allowed) => {
            let mut problem = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                format!("{method} is not allowed here"),
            )
            .with_reason("METHOD_NOT_ALLOWED");
            problem.allow = allowed;
            return problem.into_response();
        }
    };
    let route = matched.route.clone();
    telemetry::spans::record_http_route(&method, &route.label);
    request.extensions_mut().insert(matched);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(RouteLabel(route));
    response
}
