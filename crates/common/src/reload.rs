//! Settings files replaced at run time: [`watch`] calls back when a file's modification
//! time changes (checked every second) or the process gets SIGHUP. The caller reads and
//! validates the file, and keeps what runs when the new one is bad.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

fn modified(file: &Path) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

/// Calls `on_change` when `file` changes or on SIGHUP, until `shutdown`.
pub async fn watch(file: Option<PathBuf>, shutdown: CancellationToken, on_change: impl Fn()) {
    let mut hangups = hangups();
    let mut seen = file.as_deref().and_then(modified);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let now = file.as_deref().and_then(modified);
                if now != seen {
                    seen = now;
                    on_change();
                }
            }
            Some(()) = next_hangup(&mut hangups) => on_change(),
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        return signal.recv().await;
    }
    let _ = hangups;
    std::future::pending().await
}

/// Where reloads are reported: `settings.reloaded` events on the bus (the user service
/// records them in the audit trail beside flag changes), or nowhere (a process without a
/// bus: they are logged and counted only). A report is published off the reloading
/// thread, retried with backoff for about a minute, then given up with a log line.
#[derive(Clone, Default)]
pub struct Audit {
    bus: Option<std::sync::Arc<dyn crate::events::EventBus>>,
}

/// How many times a report is tried before it is given up.
const AUDIT_ATTEMPTS: u32 = 8;

impl Audit {
    pub fn new(bus: std::sync::Arc<dyn crate::events::EventBus>) -> Self {
        Self { bus: Some(bus) }
    }

    /// Reports that `component` reloaded `file` (`None`: its built-in settings), applied
    /// or refused with `error`.
    pub fn record(&self, component: &str, file: Option<&Path>, error: Option<String>) {
        let Some(bus) = self.bus.clone() else {
            return;
        };
        let payload = duovarsity_proto::events::SettingsReloaded {
            component: component.to_string(),
            path: file.map(|f| f.display().to_string()).unwrap_or_default(),
            checksum: file
                .and_then(|f| std::fs::read(f).ok())
                .map(|bytes| crate::digest::sha256_hex(&bytes))
                .unwrap_or_default(),
            applied: error.is_none(),
            error: error.unwrap_or_default(),
            replica: hostname(),
        };
        let event = crate::events::pending_event(component, &payload);
        tokio::spawn(async move {
            let mut backoff =
                crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(15));
            for attempt in 1..=AUDIT_ATTEMPTS {
                match bus.publish(event.record.clone()).await {
                    Ok(_) => return,
                    Err(error) if attempt == AUDIT_ATTEMPTS => {
                        tracing::warn!(%error, component = %payload.component, "a settings reload was not recorded in the audit trail");
                    }
                    Err(_) => backoff.wait().await,
                }
            }
        });
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default()
}
