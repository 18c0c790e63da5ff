//! Feature flags, owned here: definitions checked before they are stored, every change in
//! the audit trail with its author, and the whole set published to every process after
//! each change ([`duovarsity_common::flags::distribution`]) and again every reload
//! period, so that a process that missed a message, or a Redis that lost the stored set,
//! converges. `DUOVARSITY_FLAGS_FILE` is imported the same way (author `file`, with the
//! file's SHA-256) at start and whenever it changes.

pub mod grpc;
pub mod json;
pub mod settings;

use std::path::{Path, PathBuf};
use std::time::Duration;

use duovarsity_common::Error;
use duovarsity_common::digest::sha256_hex;
use duovarsity_common::flags::distribution::Distribution;
use duovarsity_common::flags::{Document, Flag, FlagSet};
use duovarsity_common::time::now_millis;
use tokio_util::sync::CancellationToken;

use crate::store::flags::{Author, FlagChangeRecord, FlagRecord, FlagStore};

/// The most flags there may be: every process holds and publishes all of them.
pub const MAX_FLAGS: usize = 500;

/// The owner of the flags: the store, and the process's distribution.
#[derive(Clone)]
pub struct FlagOwner {
    store: FlagStore,
    distribution: Distribution,
    max_flags: usize,
}

impl FlagOwner {
    pub fn new(store: FlagStore, distribution: Distribution) -> Self {
        Self {
            store,
            distribution,
            max_flags: MAX_FLAGS,
        }
    }

    /// With another limit on the number of flags (tests).
    pub fn with_max_flags(mut self, max_flags: usize) -> Self {
        self.max_flags = max_flags;
        self
    }

    /// The flags this process evaluates.
    pub fn flags(&self) -> &duovarsity_common::flags::Flags {
        &self.distribution.flags
    }

    /// Compiles the stored flags and publishes them. A stored flag that no longer
    /// compiles (written by an older version) is skipped and logged; the rest apply.
    pub async fn publish(&self) -> Result<(), Error> {
        let (records, version) = (self.store.all().await?, self.store.version().await?);
        let mut flags = serde_json::Map::new();
        for record in records {
            match serde_json::from_str::<serde_json::Value>(&record.definition)
                .map_err(|e| e.to_string())
                .and_then(|definition| Flag::compile(&record.key, &definition).map(|_| definition))
            {
                Ok(definition) => {
                    flags.insert(record.key, definition);
                }
                Err(error) => {
                    tracing::error!(key = %record.key, %error, "a stored flag does not compile; skipped")
                }
            }
        }
        let set = FlagSet::compile(&Document { version, flags })
            .map_err(|error| Error::internal("compiling the stored flags", &error))?;
        self.distribution.publish(set).await;
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<FlagRecord>, Error> {
        self.store.all().await
    }

    pub async fn get(&self, key: &str) -> Result<FlagRecord, Error> {
        self.store
            .get(key)
            .await?
            .ok_or_else(|| Error::not_found(format!("flag {key}")))
    }

    /// Creates or replaces a flag after checking that it compiles (the reason otherwise,
    /// and nothing changes).
    pub async fn put(
        &self,
        key: &str,
        definition: &serde_json::Value,
        actor: &str,
    ) -> Result<FlagRecord, Error> {
        Flag::compile(key, definition).map_err(|reason| Error::invalid("definition", reason))?;
        if self.store.get(key).await?.is_none() && self.store.count().await? >= self.max_flags {
            return Err(Error::FailedPrecondition {
                reason: "TOO_MANY_FLAGS",
                message: format!(
                    "there are {} flags already, the most there may be; delete one first",
                    self.max_flags
                ),
            });
        }
        let author = Author {
            actor,
            source: "api",
            checksum: "",
        };
        self.store
            .change(key, Some(&definition.to_string()), &author, now_millis())
            .await?;
        self.publish().await?;
        self.get(key).await
    }

    /// Removes a flag (NOT_FOUND when there is none).
    pub async fn delete(&self, key: &str, actor: &str) -> Result<(), Error> {
        let author = Author {
            actor,
            source: "api",
            checksum: "",
        };
        if !self.store.change(key, None, &author, now_millis()).await? {
            return Err(Error::not_found(format!("flag {key}")));
        }
        self.publish().await
    }

    /// Changes of `subject` (a flag key, or `settings/<component>`; `None`: all), newest
    /// first.
    pub async fn history(
        &self,
        subject: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FlagChangeRecord>, Error> {
        self.store.history(subject, before, limit).await
    }

    /// Imports a flagd file: every flag it names that differs from the stored one, in the
    /// audit trail as author `file` with the file's SHA-256. A file that does not compile
    /// changes nothing. Returns how many flags changed.
    pub async fn import(&self, path: &Path) -> Result<usize, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let document: Document = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a flagd document: {e}", path.display()))?;
        FlagSet::compile(&document).map_err(|e| format!("{}: {e}", path.display()))?;
        let checksum = sha256_hex(&bytes);
        let author = Author {
            actor: "file",
            source: "file",
            checksum: &checksum,
        };
        let mut changed = 0;
        for (key, definition) in &document.flags {
            if self
                .store
                .change(key, Some(&definition.to_string()), &author, now_millis())
                .await
                .map_err(|e| e.to_string())?
            {
                changed += 1;
            }
        }
        self.publish().await.map_err(|e| e.to_string())?;
        Ok(changed)
    }

    /// Imports the file (when set) at start and when it changes, and re-publishes the
    /// stored flags every `every`, until `shutdown`.
    pub async fn run(self, file: Option<PathBuf>, every: Duration, shutdown: CancellationToken) {
        let import = |owner: Self, file: Option<PathBuf>| async move {
            let Some(file) = file else { return };
            match owner.import(&file).await {
                Ok(changed) => {
                    tracing::info!(file = %file.display(), changed, "flags file imported")
                }
                Err(error) => {
                    tracing::error!(%error, "flags file not imported; the flags in use stay")
                }
            }
        };
        import(self.clone(), file.clone()).await;
        let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
        let watch = duovarsity_common::reload::watch(file.clone(), shutdown.clone(), move || {
            let _ = changed_tx.send(());
        });
        tokio::pin!(watch);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = &mut watch => return,
                Some(()) = changed.recv() => import(self.clone(), file.clone()).await,
                _ = tick.tick() => {
                    if let Err(error) = self.publish().await {
                        tracing::warn!(%error, "flags not re-published; retrying next period");
                    }
                }
            }
        }
    }
}
