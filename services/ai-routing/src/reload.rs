//! The catalog in force, replaced at run time without a restart: when its file changes
//! (checked every second) or on SIGHUP, the file is read and validated first; a bad file
//! is refused with a log line and `ai_catalog_reloads_total{outcome="refused"}`, and the
//! running catalog stays. Requests in flight keep the catalog they started with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use duovarsity_common::reload::Audit;
use tokio_util::sync::CancellationToken;

use crate::catalog::{BUILT_IN, Catalog, CatalogError};
use crate::providers::{ModelApi, client};

/// A catalog with a client per provider.
pub struct Live {
    pub catalog: Catalog,
    pub clients: HashMap<String, Arc<dyn ModelApi>>,
}

impl Live {
    fn new(catalog: Catalog, http: &reqwest::Client) -> Self {
        let clients = catalog
            .providers
            .iter()
            .map(|(name, spec)| (name.clone(), client(spec, http)))
            .collect();
        Self { catalog, clients }
    }
}

#[derive(Clone)]
pub struct CatalogHandle {
    live: Arc<RwLock<Arc<Live>>>,
    file: Option<PathBuf>,
    http: reqwest::Client,
}

fn read(file: Option<&PathBuf>) -> Result<Catalog, CatalogError> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|error| CatalogError(format!("{}: {error}", path.display())))?,
        None => BUILT_IN.to_string(),
    };
    Catalog::parse(&text, |name| std::env::var(name).ok())
}

impl CatalogHandle {
    /// Loads `file` (the built-in catalog when None); a bad file stops the start.
    pub fn load(file: Option<PathBuf>, http: reqwest::Client) -> Result<Self, CatalogError> {
        let catalog = read(file.as_ref())?;
        Ok(Self {
            live: Arc::new(RwLock::new(Arc::new(Live::new(catalog, &http)))),
            file,
            http,
        })
    }

    pub fn current(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the file again and swaps it in if it validates.
    pub fn reload(&self) -> Result<(), CatalogError> {
        match read(self.file.as_ref()) {
            Ok(catalog) => {
                let default = catalog.default_model.clone();
                *self
                    .live
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Arc::new(Live::new(catalog, &self.http));
                metrics::counter!("ai_catalog_reloads_total", "outcome" => "applied").increment(1);
                tracing::info!(default_model = %default, "AI catalog reloaded");
                Ok(())
            }
            Err(error) => {
                metrics::counter!("ai_catalog_reloads_total", "outcome" => "refused").increment(1);
                tracing::error!(%error, "AI catalog refused; the running one stays");
                Err(error)
            }
        }
    }

    /// Reloads on file changes and SIGHUP until `shutdown`, reporting each reload, applied
    /// or refused, to `audit`.
    pub async fn watch(self, shutdown: CancellationToken, audit: Audit) {
        let file = self.file.clone();
        duovarsity_common::reload::watch(file.clone(), shutdown, || {
            let refused = self.reload().err().map(|error| error.to_string());
            audit.record("ai-catalog", file.as_deref(), refused);
        })
        .await;
    }
}
