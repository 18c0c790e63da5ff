//! A fake Kubernetes API server that speaks the real list/watch protocol for
//! EndpointSlices, so discovery is tested against what a client sees from a cluster:
//!
//! - `GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=…` lists
//!   the matching slices with the list's `resourceVersion`.
//! - With `watch=true&resourceVersion=N` it streams newline-delimited `ADDED`, `MODIFIED`
//!   and `DELETED` events after `N`, a `BOOKMARK` every [`BOOKMARK_EVERY`] when
//!   `allowWatchBookmarks=true`, and ends after `timeoutSeconds`.
//! - A watch from a version older than the history kept ([`FakeKube::expire`]) gets one
//!   `ERROR` event with a 410 `Status`, as a compacted API server answers; the client must
//!   list again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::MockServer;

/// How often an open watch that asked for bookmarks gets one.
pub const BOOKMARK_EVERY: Duration = Duration::from_millis(300);

/// One endpoint of a slice, with its conditions.
#[derive(Debug, Clone, Copy)]
pub struct SliceEndpoint<'a> {
    pub address: &'a str,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl<'a> SliceEndpoint<'a> {
    pub fn ready(address: &'a str) -> Self {
        Self {
            address,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    /// A pod shutting down that still serves the calls it has.
    pub fn terminating(address: &'a str) -> Self {
        Self {
            address,
            ready: false,
            serving: true,
            terminating: true,
        }
    }
}

#[derive(Clone)]
struct Change {
    version: u64,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    version: u64,
    /// By (namespace, name).
    slices: BTreeMap<(String, String), Value>,
    history: Vec<Change>,
    /// Watches from a version below this are answered 410 Gone.
    oldest: u64,
    /// How many times the history expired: a watch opened before does not bookmark
    /// versions after it (it would let a client skip the 410).
    epoch: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
    /// Told when history expires: open watches end, as a restarted API server's do.
    expired: broadcast::Sender<()>,
    lists: AtomicUsize,
    watches: AtomicUsize,
    gone: AtomicUsize,
}

/// The fake API server; stopped when dropped.
pub struct FakeKube {
    server: MockServer,
    shared: Arc<Shared>,
}

impl FakeKube {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                version: 1,
                oldest: 1,
                ..Inner::default()
            }),
            changes: broadcast::channel(1024).0,
            expired: broadcast::channel(4).0,
            lists: AtomicUsize::new(0),
            watches: AtomicUsize::new(0),
            gone: AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                axum::routing::get(endpoint_slices),
            )
            .with_state(shared.clone());
        Self {
            server: MockServer::serve(router).await,
            shared,
        }
    }

    /// The API server's URL (`DUOVARSITY_KUBERNETES_API_URL`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Creates or replaces slice `name` of `service` in `namespace`: `endpoints` on one
    /// port named `grpc`.
    pub fn apply(
        &self,
        namespace: &str,
        name: &str,
        service: &str,
        port: u16,
        endpoints: &[SliceEndpoint<'_>],
    ) {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|e| {
                json!({
                    "addresses": [e.address],
                    "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                })
            })
            .collect();
        let object = json!({
            "kind": "EndpointSlice",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
            "endpoints": endpoints,
        });
        self.change(namespace, name, Some(object));
    }

    pub fn delete(&self, namespace: &str, name: &str) {
        self.change(namespace, name, None);
    }

    fn change(&self, namespace: &str, name: &str, object: Option<Value>) {
        let mut inner = self.shared.inner.lock().expect("fake kube lock");
        inner.version += 1;
        let version = inner.version;
        let key = (namespace.to_string(), name.to_string());
        let (kind, mut object) = match object {
            Some(object) if inner.slices.contains_key(&key) => ("MODIFIED", object),
            Some(object) => ("ADDED", object),
            None => match inner.slices.remove(&key) {
                Some(object) => ("DELETED", object),
                None => return,
            },
        };
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        if kind != "DELETED" {
            inner.slices.insert(key, object.clone());
        }
        let change = Change {
            version,
            namespace: namespace.to_string(),
            kind,
            object,
        };
        inner.history.push(change.clone());
        let _ = self.shared.changes.send(change);
    }

    /// Forgets the history (an etcd compaction) and ends every open watch: clients that
    /// watch again from the version they had get 410 Gone and must list again.
    pub fn expire(&self) {
        let mut inner = self.shared.inner.lock().expect("fake kube lock");
        inner.history.clear();
        inner.version += 1;
        inner.oldest = inner.version;
        inner.epoch += 1;
        let _ = self.shared.expired.send(());
    }

    /// Lists served, watches opened, and watches answered 410 Gone so far.
    pub fn requests(&self) -> (usize, usize, usize) {
        (
            self.shared.lists.load(Ordering::Relaxed),
            self.shared.watches.load(Ordering::Relaxed),
            self.shared.gone.load(Ordering::Relaxed),
        )
    }
}

/// `key=value` terms of an equality-based label selector.
fn selects(selector: Option<&String>, object: &Value) -> bool {
    selector.is_none_or(|selector| {
        selector
            .split(',')
            .filter(|term| !term.is_empty())
            .all(|term| match term.split_once('=') {
                Some((key, value)) => {
                    object["metadata"]["labels"][key.trim_end_matches('=')] == json!(value)
                }
                None => false,
            })
    })
}

async fn endpoint_slices(
    State(shared): State<Arc<Shared>>,
    Path(namespace): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let selector = query.get("labelSelector");
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watch {
        shared.lists.fetch_add(1, Ordering::Relaxed);
        let inner = shared.inner.lock().expect("fake kube lock");
        let items: Vec<&Value> = inner
            .slices
            .iter()
            .filter(|((ns, _), object)| *ns == namespace && selects(selector, object))
            .map(|(_, object)| object)
            .collect();
        return axum::Json(json!({
            "kind": "EndpointSliceList",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"resourceVersion": inner.version.to_string()},
            "items": items,
        }))
        .into_response();
    }
    shared.watches.fetch_add(1, Ordering::Relaxed);
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = Duration::from_secs(
        query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(300),
    );
    let (backlog, changes, expired, gone, epoch) = {
        let inner = shared.inner.lock().expect("fake kube lock");
        let gone = from < inner.oldest;
        let backlog: Vec<Change> = inner
            .history
            .iter()
            .filter(|change| change.version > from)
            .cloned()
            .collect();
        // Subscribed under the lock: no change falls between the backlog and the stream.
        (
            backlog,
            shared.changes.subscribe(),
            shared.expired.subscribe(),
            gone,
            inner.epoch,
        )
    };
    if gone {
        shared.gone.fetch_add(1, Ordering::Relaxed);
        let status = json!({
            "type": "ERROR",
            "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "Expired", "code": 410,
                "message": format!("too old resource version: {from}"),
            },
        });
        return line(&status).into_response();
    }
    let selector = selector.cloned();
    let visible = move |change: &Change| {
        change.namespace == namespace && selects(selector.as_ref(), &change.object)
    };
    let first: Vec<String> = backlog
        .iter()
        .filter(|change| visible(change))
        .map(event)
        .collect();
    let state = (
        changes,
        expired,
        tokio::time::Instant::now() + timeout,
        from,
    );
    let live =
        futures::stream::unfold(state, move |(mut changes, mut expired, until, mut last)| {
            let visible = visible.clone();
            let shared = shared.clone();
            async move {
                loop {
                    let tick = tokio::time::sleep(BOOKMARK_EVERY);
                    // An expiry ends the watch before any change made after it is sent.
                    tokio::select! {
                    biased;
                    _ = expired.recv() => return None,
                    change = changes.recv() => match change {
                            Ok(change) => {
                                last = change.version;
                                if visible(&change) {
                                    return Some((event(&change), (changes, expired, until, last)));
                                }
                            }
                            Err(_) => return None,
                        },
                        () = tokio::time::sleep_until(until) => return None,
                        () = tick, if bookmarks => {
                            let version = {
                            let inner = shared.inner.lock().expect("fake kube lock");
                            if inner.epoch != epoch {
                                return None;
                            }
                            inner.version.max(last)
                        };
                            let bookmark = json!({
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                                    "metadata": {"resourceVersion": version.to_string()},
                                },
                            });
                            return Some((line(&bookmark), (changes, expired, until, last)));
                        }
                    }
                }
            }
        });
    let stream = futures::StreamExt::map(
        futures::StreamExt::chain(futures::stream::iter(first), live),
        Ok::<_, std::convert::Infallible>,
    );
    axum::body::Body::from_stream(stream).into_response()
}

fn event(change: &Change) -> String {
    line(&json!({"type": change.kind, "object": change.object}))
}

fn line(value: &Value) -> String {
    format!("{value}\n")
}
