//! Where a service's endpoints come from, for the gateway and for calls between services.
//!
//! An upstream URL (`DUOVARSITY_<NAME>_SERVICE_URL`) names its source:
//! - `http://host:port[,http://…]`: a fixed list (local runs, Compose).
//! - `dns:///HOST:PORT`: a headless Service's addresses, resolved at start and every 5 s.
//!   A failed lookup keeps the endpoints known (a DNS blip is not an outage).
//! - `kubernetes:///SERVICE[.NAMESPACE]:PORT`: the Service's EndpointSlices, watched
//!   through the API server (list, then watch with bookmarks; a relist after 410 Gone).
//!   `PORT` is the port's name or number. Endpoints that are ready take traffic; when none
//!   is, those still serving while they terminate do, so a rollout's last pods drain. The
//!   API server is found as `kubectl` finds it (in-cluster service account, then
//!   `KUBECONFIG`), or set with `DUOVARSITY_KUBERNETES_API_URL` (for example a
//!   `kubectl proxy`).
//!
//! [`follow`] turns a source into a stream of endpoint sets (sorted `http://` URLs), and
//! [`channel`] into a tonic channel balanced over them (power of two choices, one
//! HTTP/2 connection per endpoint): what services use to call each other.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use tokio::sync::watch;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

/// The URL prefix of an upstream resolved through DNS (gRPC's target syntax).
pub const DNS_SCHEME: &str = "dns:///";
/// The URL prefix of an upstream discovered from its EndpointSlices.
pub const KUBERNETES_SCHEME: &str = "kubernetes:///";
/// How often DNS names are resolved again.
const DNS_INTERVAL: Duration = Duration::from_secs(5);
/// How long to wait before retrying when no Kubernetes client can be built.
const KUBE_RETRY: Duration = Duration::from_secs(5);

/// Where an upstream's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Static(Vec<String>),
    /// `host:port`.
    Dns(String),
    Kubernetes(KubeTarget),
}

/// `kubernetes:///SERVICE[.NAMESPACE]:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeTarget {
    pub service: String,
    /// None: the client's namespace (the pod's own, in a cluster).
    pub namespace: Option<String>,
    /// A port name or number.
    pub port: String,
}

impl Source {
    /// The source `urls` name: one `dns:///` or `kubernetes:///` URL, or fixed URLs.
    pub fn parse(urls: &[String]) -> Result<Self, String> {
        let dynamic =
            |url: &String| url.starts_with(DNS_SCHEME) || url.starts_with(KUBERNETES_SCHEME);
        match urls {
            [url] if url.starts_with(DNS_SCHEME) => {
                let target = &url[DNS_SCHEME.len()..];
                host_and_port(target)?;
                Ok(Self::Dns(target.to_string()))
            }
            [url] if url.starts_with(KUBERNETES_SCHEME) => {
                let (name, port) = host_and_port(&url[KUBERNETES_SCHEME.len()..])?;
                let (service, namespace) = match name.split_once('.') {
                    Some((service, namespace)) => (service, Some(namespace.to_string())),
                    None => (name, None),
                };
                Ok(Self::Kubernetes(KubeTarget {
                    service: service.to_string(),
                    namespace,
                    port: port.to_string(),
                }))
            }
            _ if urls.iter().any(dynamic) => Err(format!(
                "a {DNS_SCHEME} or {KUBERNETES_SCHEME} URL must stand alone, not in a list"
            )),
            _ => Ok(Self::Static(urls.to_vec())),
        }
    }

    pub fn is_static(&self) -> bool {
        matches!(self, Self::Static(_))
    }
}

fn host_and_port(target: &str) -> Result<(&str, &str), String> {
    match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.is_empty() => Ok((host, port)),
        _ => Err(format!("`{target}` must be HOST:PORT")),
    }
}

/// Follows `source` until every receiver is dropped: the current endpoint set, updated as
/// it changes. `kubernetes_api` overrides where the API server is.
pub fn follow(source: Source, kubernetes_api: Option<&str>) -> watch::Receiver<Vec<String>> {
    match source {
        Source::Static(urls) => watch::channel(urls).1,
        Source::Dns(target) => {
            let (sender, receiver) = watch::channel(resolve_now(&target));
            tokio::spawn(follow_dns(sender, target));
            receiver
        }
        Source::Kubernetes(target) => {
            let (sender, receiver) = watch::channel(Vec::new());
            tokio::spawn(follow_endpoint_slices(
                sender,
                target,
                kubernetes_api.map(str::to_string),
            ));
            receiver
        }
    }
}

/// A channel balanced over the endpoints of `source`, each dialed with `configure`
/// (timeouts, keep-alive). A single fixed URL is one lazily connected channel.
pub fn channel(
    source: Source,
    kubernetes_api: Option<&str>,
    configure: fn(Endpoint) -> Endpoint,
) -> Result<Channel, tonic::transport::Error> {
    if let Source::Static(urls) = &source
        && let [url] = urls.as_slice()
    {
        return Ok(configure(Endpoint::from_shared(url.clone())?).connect_lazy());
    }
    Ok(balanced(follow(source, kubernetes_api), configure))
}

/// A channel balanced over the endpoint sets `endpoints` says, each dialed with
/// `configure`: new endpoints join, those that leave are removed.
pub fn balanced(
    mut endpoints: watch::Receiver<Vec<String>>,
    configure: fn(Endpoint) -> Endpoint,
) -> Channel {
    let (channel, changes) = Channel::balance_channel::<String>(64);
    tokio::spawn(async move {
        let mut known = BTreeSet::new();
        loop {
            let next: BTreeSet<String> = endpoints.borrow_and_update().iter().cloned().collect();
            for gone in known.difference(&next) {
                if changes.send(Change::Remove(gone.clone())).await.is_err() {
                    return;
                }
            }
            for new in next.difference(&known) {
                let Ok(endpoint) = Endpoint::from_shared(new.clone()) else {
                    tracing::warn!(endpoint = %new, "skipping an endpoint that is not a URI");
                    continue;
                };
                if changes
                    .send(Change::Insert(new.clone(), configure(endpoint)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            known = next;
            tokio::select! {
                changed = endpoints.changed() => if changed.is_err() { return },
                () = changes.closed() => return,
            }
        }
    });
    channel
}

/// Sorted, deduplicated `http://` URLs of `addresses`.
fn urls_of(addresses: impl Iterator<Item = std::net::SocketAddr>) -> Vec<String> {
    let urls: BTreeSet<String> = addresses
        .map(|address| format!("http://{address}"))
        .collect();
    urls.into_iter().collect()
}

/// The first resolution, at start (blocking, once), so calls have endpoints at once.
fn resolve_now(target: &str) -> Vec<String> {
    use std::net::ToSocketAddrs as _;
    match target.to_socket_addrs() {
        Ok(addresses) => urls_of(addresses),
        Err(error) => {
            tracing::warn!(%target, %error, "cannot resolve an upstream yet");
            Vec::new()
        }
    }
}

async fn follow_dns(sender: watch::Sender<Vec<String>>, target: String) {
    let mut tick = tokio::time::interval(DNS_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = sender.closed() => return,
        }
        match tokio::net::lookup_host(&target).await {
            Ok(addresses) => publish(&sender, urls_of(addresses)),
            Err(error) => {
                tracing::warn!(%target, %error, "resolving an upstream failed; keeping its endpoints")
            }
        }
    }
}

/// Sends `urls` when they differ from the current set.
fn publish(sender: &watch::Sender<Vec<String>>, urls: Vec<String>) {
    sender.send_if_modified(|current| {
        let changed = *current != urls;
        if changed {
            *current = urls;
        }
        changed
    });
}

async fn kube_client(api_url: Option<&str>) -> Result<kube::Client, String> {
    let config = match api_url {
        Some(url) => kube::Config::new(url.parse().map_err(|e| format!("{url}: {e}"))?),
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

async fn follow_endpoint_slices(
    sender: watch::Sender<Vec<String>>,
    target: KubeTarget,
    api_url: Option<String>,
) {
    let client = loop {
        match kube_client(api_url.as_deref()).await {
            Ok(client) => break client,
            Err(error) => {
                tracing::warn!(service = %target.service, %error, "no Kubernetes API to watch endpoints with; retrying");
                tokio::select! {
                    () = tokio::time::sleep(KUBE_RETRY) => {}
                    () = sender.closed() => return,
                }
            }
        }
    };
    let api: kube::Api<EndpointSlice> = match &target.namespace {
        Some(namespace) => kube::Api::namespaced(client, namespace),
        None => kube::Api::default_namespaced(client),
    };
    let selector = format!("kubernetes.io/service-name={}", target.service);
    let events = watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut listing: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = sender.closed() => return,
        };
        let Some(event) = event else { return };
        let name = |slice: &EndpointSlice| slice.metadata.name.clone().unwrap_or_default();
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(slice)) => {
                listing.insert(name(&slice), slice);
            }
            Ok(watcher::Event::InitDone) => slices = std::mem::take(&mut listing),
            Ok(watcher::Event::Apply(slice)) => {
                slices.insert(name(&slice), slice);
            }
            Ok(watcher::Event::Delete(slice)) => {
                slices.remove(&name(&slice));
            }
            Err(error) => {
                metrics::counter!("discovery_watch_errors_total", "service" => target.service.clone())
                    .increment(1);
                tracing::warn!(service = %target.service, %error, "watching EndpointSlices failed; retrying (endpoints kept)");
                continue;
            }
        }
        publish(&sender, endpoints_of_slices(slices.values(), &target.port));
    }
}

/// The endpoints of `slices` on `port` (a name or number): the ready ones, or, when none
/// is ready, those still serving while they terminate.
pub fn endpoints_of_slices<'a>(
    slices: impl Iterator<Item = &'a EndpointSlice>,
    port: &str,
) -> Vec<String> {
    let mut ready = BTreeSet::new();
    let mut draining = BTreeSet::new();
    for slice in slices {
        let ipv6 = match slice.address_type.as_str() {
            "IPv4" => false,
            "IPv6" => true,
            _ => continue,
        };
        let number = slice.ports.iter().flatten().find_map(|candidate| {
            let matches = candidate.name.as_deref() == Some(port)
                || candidate.port.map(|n| n.to_string()).as_deref() == Some(port);
            matches.then_some(candidate.port).flatten()
        });
        let Some(number) = number else { continue };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            // Unset ready means ready; unset serving means as ready.
            let is_ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(is_ready);
            let terminating = conditions.terminating.unwrap_or(false);
            let set = if is_ready && !terminating {
                &mut ready
            } else if serving && terminating {
                &mut draining
            } else {
                continue;
            };
            for address in &endpoint.addresses {
                set.insert(if ipv6 {
                    format!("http://[{address}]:{number}")
                } else {
                    format!("http://{address}:{number}")
                });
            }
        }
    }
    let chosen = if ready.is_empty() { draining } else { ready };
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn urls_name_their_source() {
        let one = |url: &str| Source::parse(&[url.to_string()]);
        assert_eq!(
            one("kubernetes:///course.learn:grpc"),
            Ok(Source::Kubernetes(KubeTarget {
                service: "course".into(),
                namespace: Some("learn".into()),
                port: "grpc".into(),
            }))
        );
        assert_eq!(
            one("kubernetes:///course:50051").unwrap(),
            Source::Kubernetes(KubeTarget {
                service: "course".into(),
                namespace: None,
                port: "50051".into(),
            })
        );
        assert_eq!(
            one("dns:///course:50051"),
            Ok(Source::Dns("course:50051".into()))
        );
        assert!(one("kubernetes:///course").is_err(), "a port is required");
        assert!(
            Source::parse(&["http://a:1".into(), "dns:///b:1".into()]).is_err(),
            "discovery does not mix with a list"
        );
        assert!(one("http://a:1").unwrap().is_static());
    }

    #[test]
    fn ready_endpoints_serve_and_terminating_ones_only_drain() {
        let slices = [
            slice(serde_json::json!({
                "metadata": {"name": "course-a"},
                "addressType": "IPv4",
                "ports": [{"name": "grpc", "port": 50051}, {"name": "metrics", "port": 9090}],
                "endpoints": [
                    {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                    {"addresses": ["10.0.0.2"]},
                    {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                    {"addresses": ["10.0.0.4"], "conditions": {"ready": false}},
                ],
            })),
            slice(serde_json::json!({
                "metadata": {"name": "course-b"},
                "addressType": "IPv6",
                "ports": [{"name": "grpc", "port": 50051}],
                "endpoints": [{"addresses": ["fd00::1"]}],
            })),
            slice(serde_json::json!({
                "metadata": {"name": "course-c"},
                "addressType": "FQDN",
                "ports": [{"name": "grpc", "port": 50051}],
                "endpoints": [{"addresses": ["course.example"]}],
            })),
        ];
        assert_eq!(
            endpoints_of_slices(slices.iter(), "grpc"),
            [
                "http://10.0.0.1:50051",
                "http://10.0.0.2:50051",
                "http://[fd00::1]:50051"
            ]
        );
        assert_eq!(
            endpoints_of_slices(slices[..1].iter(), "9090"),
            ["http://10.0.0.1:9090", "http://10.0.0.2:9090"]
        );
        assert!(endpoints_of_slices(slices.iter(), "http").is_empty());
        let draining = slice(serde_json::json!({
            "metadata": {"name": "course-a"},
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": 50051}],
            "endpoints": [
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.5"], "conditions": {"ready": false, "serving": false, "terminating": true}},
            ],
        }));
        assert_eq!(
            endpoints_of_slices([&draining].into_iter(), "grpc"),
            ["http://10.0.0.3:50051"],
            "with none ready, the serving terminating ones drain the traffic"
        );
    }
}
