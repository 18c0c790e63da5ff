//! Readiness: a [`Probe`] is a check that passes while a dependency (a database, a broker)
//! answers. Services hand theirs to the gRPC server, which reports them on the health
//! service and the admin listener.

use std::sync::Arc;

use futures::future::BoxFuture;

/// A readiness check: `Ok` while a dependency answers.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;
