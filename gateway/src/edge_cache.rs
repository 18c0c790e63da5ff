//! The gateway's edge cache: answers that a service marks `public, max-age=N` are kept
//! and served again without a call, for anonymous `GET`s only.
//!
//! - **Key:** method, path and query, and the request headers such answers vary on
//!   (`Accept-Language`, which services receive). Calls with `Authorization` or `Cookie`
//!   neither read nor fill it.
//! - **Freshness:** an entry lives `max-age` (or `s-maxage`) seconds from when it was
//!   stored and carries `Age`. `no-store`, `no-cache` and `private` answers are not kept.
//! - **Revalidation:** a hit whose ETag the client names in `If-None-Match` is a 304.
//! - **Invalidation:** services name the cache entries an answer was built from
//!   (`cache-tags` metadata); an invalidation of one of them ([`CacheHub::invalidations`],
//!   in process or through Redis) drops the answer at once, so a changed course is not
//!   served stale for the rest of its `max-age`. A missed invalidation drops everything.
//!   An answer whose call started before an invalidation arrived and ended after it is
//!   not kept (it may have been read before the change): [`EdgeCache::generation`] is
//!   taken before the call and [`EdgeCache::store`] refuses if it moved.
//! - **Bounds:** `DUOVARSITY_EDGE_CACHE_BYTES` of bodies (0 turns it off).
//!
//! [`CacheHub::invalidations`]: duovarsity_common::cache::CacheHub::invalidations

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use duovarsity_common::cache::{CacheHub, Invalidation};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tokio::sync::broadcast;

/// Request headers that shape an answer (forwarded to services): part of the key.
const VARY: HeaderName = header::ACCEPT_LANGUAGE;
type HeaderName = http::HeaderName;

struct Entry {
    headers: HeaderMap,
    body: Bytes,
    /// `<cache>\n<key>` of the service cache entries it was built from.
    tags: Vec<String>,
    stored: Instant,
    fresh_for: Duration,
}

impl Entry {
    fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(header::ETAG)
    }
}

struct Freshness;

impl moka::Expiry<String, Arc<Entry>> for Freshness {
    fn expire_after_create(&self, _: &String, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.fresh_for)
    }
}

pub struct EdgeCache {
    entries: moka::sync::Cache<String, Arc<Entry>>,
    /// Invalidations heard so far.
    generation: std::sync::atomic::AtomicU64,
    /// Held for its subscription to invalidations, which stops with the last handle.
    _caches: Option<CacheHub>,
}

impl EdgeCache {
    /// A cache of at most `max_bytes` of answers, following the invalidations of `caches`.
    pub fn start(max_bytes: u64, caches: &CacheHub) -> Arc<Self> {
        Self::following(max_bytes, caches.invalidations(), Some(caches.clone()))
    }

    fn following(
        max_bytes: u64,
        invalidations: broadcast::Receiver<Invalidation>,
        caches: Option<CacheHub>,
    ) -> Arc<Self> {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Arc<Entry>| {
                u32::try_from(key.len() + entry.body.len() + 256).unwrap_or(u32::MAX)
            })
            .expire_after(Freshness)
            .support_invalidation_closures()
            .build();
        let cache = Arc::new(Self {
            entries,
            generation: std::sync::atomic::AtomicU64::new(0),
            _caches: caches,
        });
        tokio::spawn(follow(Arc::downgrade(&cache), invalidations));
        cache
    }

    /// The key of a request the cache may answer, or None (not an anonymous GET).
    pub fn key(method: &Method, uri: &http::Uri, headers: &HeaderMap) -> Option<String> {
        if method != Method::GET
            || headers.contains_key(header::AUTHORIZATION)
            || headers.contains_key(header::COOKIE)
        {
            return None;
        }
        let vary = headers
            .get(VARY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Some(format!("{path}\n{vary}"))
    }

    /// The stored answer for `key`, as a 200 or (when `request` names its ETag) a 304.
    pub fn lookup(&self, key: &str, request: &HeaderMap) -> Option<Response> {
        let Some(entry) = self.entries.get(key) else {
            metrics::counter!("gateway_edge_cache_requests_total", "result" => "miss").increment(1);
            return None;
        };
        let revalidated = entry
            .etag()
            .is_some_and(|etag| if_none_match(request, etag));
        metrics::counter!("gateway_edge_cache_requests_total", "result" => if revalidated { "not_modified" } else { "hit" })
            .increment(1);
        let mut response = if revalidated {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            entry.body.clone().into_response()
        };
        let headers = response.headers_mut();
        for (name, value) in &entry.headers {
            headers.insert(name, value.clone());
        }
        headers.insert(
            header::AGE,
            HeaderValue::from(entry.stored.elapsed().as_secs()),
        );
        Some(response)
    }

    /// How many invalidations this cache has heard: take it before calling the service
    /// whose answer may be stored.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps a 200 answer under `key` when its `Cache-Control` allows a shared cache to;
    /// `tags` as the service sent them (`cache=key,…`). Not when an invalidation arrived
    /// since `generation` was taken: the answer may predate the change.
    pub fn store(
        &self,
        key: String,
        headers: &HeaderMap,
        body: &Bytes,
        tags: Option<&str>,
        generation: u64,
    ) {
        if self.generation() != generation {
            return;
        }
        let Some(fresh_for) = headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(shared_freshness)
        else {
            return;
        };
        let tags = tags
            .unwrap_or("")
            .split(',')
            .filter_map(|tag| tag.trim().split_once('='))
            .map(|(cache, key)| format!("{cache}\n{key}"))
            .collect();
        let kept = [
            header::CONTENT_TYPE,
            header::ETAG,
            header::CACHE_CONTROL,
            header::X_CONTENT_TYPE_OPTIONS,
            header::VARY,
        ];
        let mut stored = HeaderMap::new();
        for name in kept {
            if let Some(value) = headers.get(&name) {
                stored.insert(name, value.clone());
            }
        }
        self.entries.insert(
            key,
            Arc::new(Entry {
                headers: stored,
                body: body.clone(),
                tags,
                stored: Instant::now(),
                fresh_for,
            }),
        );
    }

    fn drop_tagged(&self, tag: String) {
        // Invalidations are rare (writes); a scan of the entries is fine.
        let dropped = self
            .entries
            .invalidate_entries_if(move |_, entry| entry.tags.contains(&tag));
        if let Err(error) = dropped {
            tracing::warn!(%error, "dropping edge cache entries failed; dropping them all");
            self.entries.invalidate_all();
        }
    }
}

/// How long a shared cache may keep an answer with `cache_control`, or None.
fn shared_freshness(cache_control: &str) -> Option<Duration> {
    let mut public = false;
    let (mut max_age, mut s_maxage) = (None, None);
    for directive in cache_control.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.to_ascii_lowercase().as_str() {
            "public" => public = true,
            "private" | "no-store" | "no-cache" => return None,
            "max-age" => max_age = value.parse::<u64>().ok(),
            "s-maxage" => s_maxage = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    let seconds = s_maxage.or(max_age).filter(|s| *s > 0)?;
    public.then(|| Duration::from_secs(seconds))
}

async fn follow(
    cache: std::sync::Weak<EdgeCache>,
    mut invalidations: broadcast::Receiver<Invalidation>,
) {
    loop {
        let told = invalidations.recv().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        cache
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match told {
            Ok(Invalidation::Key { cache: name, key }) => {
                cache.drop_tagged(format!("{name}\n{key}"))
            }
            Ok(Invalidation::All) | Err(broadcast::error::RecvError::Lagged(_)) => {
                cache.entries.invalidate_all();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Whether an `If-None-Match` header names `etag` (or `*`); weak tags compare equal.
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    let etag = etag.trim_start_matches("W/");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| {
            value
                .split(',')
                .map(|candidate| candidate.trim().trim_start_matches("W/"))
                .any(|candidate| candidate == "*" || candidate == etag)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_answers_with_a_lifetime_are_shared() {
        assert_eq!(
            shared_freshness("public, max-age=60"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            shared_freshness("public, max-age=60, s-maxage=5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(shared_freshness("max-age=60"), None, "not marked public");
        assert_eq!(shared_freshness("public, max-age=0"), None);
        assert_eq!(shared_freshness("public, max-age=60, no-store"), None);
        assert_eq!(shared_freshness("private, no-cache"), None);
    }

    #[tokio::test]
    async fn an_invalidation_drops_the_answers_built_from_the_entry() {
        let (tell, listen) = broadcast::channel(8);
        let cache = EdgeCache::following(1 << 20, listen, None);
        let uri: http::Uri = "/v1/courses/rust".parse().unwrap();
        let key = EdgeCache::key(&Method::GET, &uri, &HeaderMap::new()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        );
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let body = Bytes::from_static(b"{}");
        let before = cache.generation();
        cache.store(
            key.clone(),
            &headers,
            &body,
            Some("course_outline=c1,course_slug=rust"),
            before,
        );
        assert_eq!(
            cache.lookup(&key, &HeaderMap::new()).unwrap().status(),
            StatusCode::OK
        );
        let mut conditional = HeaderMap::new();
        conditional.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
        assert_eq!(
            cache.lookup(&key, &conditional).unwrap().status(),
            StatusCode::NOT_MODIFIED
        );

        tell.send(Invalidation::Key {
            cache: "course_outline".into(),
            key: "c2".into(),
        })
        .unwrap();
        tell.send(Invalidation::Key {
            cache: "course_outline".into(),
            key: "c1".into(),
        })
        .unwrap();
        for _ in 0..100 {
            if cache.lookup(&key, &HeaderMap::new()).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cache.lookup(&key, &HeaderMap::new()).is_none(), "dropped");
        // An answer whose call began before those invalidations is not kept.
        cache.store(key.clone(), &headers, &body, None, before);
        assert!(
            cache.lookup(&key, &HeaderMap::new()).is_none(),
            "predates the change"
        );
        cache.store(key.clone(), &headers, &body, None, cache.generation());
        assert!(cache.lookup(&key, &HeaderMap::new()).is_some());

        let mut signed_in = HeaderMap::new();
        signed_in.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(EdgeCache::key(&Method::GET, &uri, &signed_in).is_none());
        assert!(EdgeCache::key(&Method::POST, &uri, &HeaderMap::new()).is_none());
    }
}
