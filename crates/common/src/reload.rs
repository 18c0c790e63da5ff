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
