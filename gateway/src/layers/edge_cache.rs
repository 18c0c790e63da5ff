//! The edge cache in the request path: an anonymous GET the cache holds is answered here
//! (200, or 304 on a matching `If-None-Match`) without going further; a 200 from inside
//! whose `Cache-Control` lets a shared cache keep it is stored, with the cache tags the
//! service sent, unless an invalidation arrived while it was being made.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{StatusCode, header};
use http_body_util::BodyExt;

use super::Matched;
use crate::Gateway;
use crate::edge_cache::EdgeCache;

/// The cache tags of an answer (`cache=key,…`), as its service sent them.
#[derive(Clone)]
pub struct CacheTags(pub String);

pub async fn serve(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let (Some(edge), true) = (
        &gateway.edge_cache,
        request.extensions().get::<Matched>().is_some(),
    ) else {
        return next.run(request).await;
    };
    let Some(key) = EdgeCache::key(request.method(), request.uri(), request.headers()) else {
        return next.run(request).await;
    };
    if let Some(response) = edge.lookup(&key, request.headers()) {
        return response;
    }
    let generation = edge.generation();
    let response = next.run(request).await;
    if response.status() != StatusCode::OK
        || !response.headers().contains_key(header::CACHE_CONTROL)
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The body is one buffer already: collecting it copies nothing.
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let tags = parts
        .extensions
        .get::<CacheTags>()
        .map(|tags| tags.0.as_str());
    edge.store(key, &parts.headers, &bytes, tags, generation);
    Response::from_parts(parts, Body::from(bytes))
}
