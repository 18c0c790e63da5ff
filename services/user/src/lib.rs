//! The user service (`duovarsity.user.v1.UserService`): accounts, credentials, access and
//! refresh tokens, signing keys (JWKS), roles and tiers.
//!
//! Rooms: [`grpc`] holds thin handlers (decode, take the caller, call one domain function);
//! the rules live in the domain modules `accounts` (sign-up, profiles, roles and tiers)
//! and `sessions` (sign-in, refresh-token rotation, logout), with what an account must be
//! in [`rules`] and argon2id in [`password`]; `convert` is the one place rows become
//! protobuf; [`store`] runs SQL and nothing else.
//!
//! Invariants:
//! - Passwords are stored only as argon2id hashes, refresh tokens only as SHA-256 hashes.
//! - Unknown email and wrong password give the same UNAUTHENTICATED answer in similar time.
//! - A refresh token works once. Its successor joins the same family; presenting a spent
//!   token revokes the family (reuse detection), and logout revokes it too.
//! - Who may call which method is declared in the proto (`duovarsity.options.v1.access`)
//!   and enforced by the shared auth layer before a handler runs; handlers read the
//!   verified claims from the request.
#![forbid(unsafe_code)]

mod accounts;
mod convert;
pub mod flags;
pub mod grpc;
pub mod password;
pub mod rules;
mod sessions;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use duovarsity_common::auth::{KeyError, KeyRing, KeySource, TokenIssuer};
use duovarsity_common::cache::{Cache, CacheHub};
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::consumer::Consumer;
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::events::{EventBus, topics};
use duovarsity_common::flags::distribution::Distribution;
use duovarsity_common::grpc::GrpcServer;
use duovarsity_config::Config;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::flags::flag_service_server::FlagServiceServer;
use duovarsity_proto::user::Role;
use duovarsity_proto::user::user_service_server::UserServiceServer;
use tokio_util::sync::CancellationToken;

use crate::flags::FlagOwner;
use crate::flags::grpc::FlagGrpc;
use crate::flags::settings::SettingsAudit;
use crate::grpc::UserGrpc;
use crate::store::flags::FlagStore;
use crate::store::{SqlUserStore, UserStore};

/// The service name used for its database file and in logs.
pub const SERVICE: &str = "user";
/// The full name of the gRPC service.
pub const USER_SERVICE_NAME: &str = duovarsity_proto::user::user_service_server::SERVICE_NAME;
/// The feature-flag service, served beside the user service: flags target by tier and
/// role, which this service owns, and need a database and an audit trail, which it has.
pub const FLAG_SERVICE_NAME: &str = duovarsity_proto::flags::flag_service_server::SERVICE_NAME;
/// The cache of GetMe answers (see [`Users`]).
pub const PROFILE_CACHE: &str = "user_profile";

/// The service failed to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("user database: {0}")]
    Database(#[from] duovarsity_common::db::OpenError),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL: {0}")]
    BootstrapAdmin(String),
}

/// An opened user service: its database, its keys and the gRPC handlers.
pub struct UserModule {
    db: Database,
    ring: Arc<KeyRing>,
    /// Where the signing keys are read from (watched for changes).
    keys_dir: std::path::PathBuf,
    users: Users,
    outbox: Outbox,
    flags: FlagOwner,
    flags_file: Option<std::path::PathBuf>,
    flags_reload: Duration,
}

impl UserModule {
    /// Connects (and, unless turned off, migrates) the database, loads (or creates) the
    /// signing keys, and makes sure the bootstrap admin of the configuration exists.
    async fn start(
        config: &Config,
        caches: &CacheHub,
        distribution: Distribution,
    ) -> Result<Self, StartError> {
        let db = Database::open(&config.database(SERVICE), store::migrations()).await?;
        let ring = Arc::new(KeyRing::load(
            &config.jwt_keys_dir(),
            config.jwt_generate_keys,
        )?);
        let issuer = TokenIssuer::new(
            ring.clone(),
            Duration::from_secs(config.access_token_ttl_secs),
        );
        let store = SqlUserStore::new(db.clone());
        let outbox = store.outbox().clone();
        let users = Users {
            store: Arc::new(store),
            profiles: caches.cache(PROFILE_CACHE),
            issuer: Arc::new(issuer),
            ring: ring.clone(),
            refresh_ttl: Duration::from_secs(config.refresh_token_ttl_secs),
        };
        if let (Some(email), Some(password)) = (
            &config.bootstrap_admin_email,
            &config.bootstrap_admin_password,
        ) {
            users
                .create_account(email, password.expose(), "Administrator", Role::Admin, true)
                .await
                .map_err(|error| StartError::BootstrapAdmin(error.to_string()))?;
            tracing::info!(email = %email, "bootstrap admin is present");
        }
        let flags = FlagOwner::new(FlagStore::new(db.clone()), distribution);
        // Serve with the stored flags (a failure here leaves the built-in defaults until
        // the first periodic publish).
        if let Err(error) = flags.publish().await {
            tracing::warn!(%error, "flags not loaded at start");
        }
        Ok(Self {
            db,
            ring,
            keys_dir: config.jwt_keys_dir(),
            users,
            outbox,
            flags,
            flags_file: config.flags_file.clone(),
            flags_reload: Duration::from_secs(config.flags_reload_secs),
        })
    }

    pub fn users(&self) -> &Users {
        &self.users
    }
}

#[async_trait]
impl ServiceModule for UserModule {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICES: &'static [&'static str] = &[USER_SERVICE_NAME, FLAG_SERVICE_NAME];

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn open(context: &ServiceContext) -> Result<Self, OpenError> {
        let caches = context.caches().await?;
        let distribution = context.flags().await?;
        Ok(Self::start(&context.config, &caches, distribution).await?)
    }

    fn database(&self) -> &Database {
        &self.db
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        server
            .add_service(UserServiceServer::new(UserGrpc(self.users.clone())))
            .add_service(FlagServiceServer::new(FlagGrpc(self.flags.clone())))
    }

    /// Publishes this service's outbox, and reloads the signing keys when their directory
    /// changes (a key added, or removed to revoke it) or on SIGHUP.
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        let relay = self.outbox.relay(self.db.clone(), bus.clone());
        let ring = self.ring.clone();
        let keys = duovarsity_common::reload::watch(
            Some(self.keys_dir.clone()),
            shutdown.clone(),
            move || match ring.reload() {
                Ok(true) => {
                    tracing::info!(kids = ?ring.jwks().iter().map(|k| k.kid.clone()).collect::<Vec<_>>(), "signing keys reloaded")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(%error, "signing keys not reloaded; the running ones stay")
                }
            },
        );
        let flags =
            self.flags
                .clone()
                .run(self.flags_file.clone(), self.flags_reload, shutdown.clone());
        // Settings reloads of other processes, into the audit trail.
        let settings = Consumer::new(
            self.db.clone(),
            store::PROCESSED_TABLE,
            bus.clone(),
            topics::SETTINGS,
            SERVICE,
            SettingsAudit,
        );
        let stop = shutdown.clone();
        let settings = async move {
            if let Err(error) = settings.run(stop).await {
                tracing::error!(%error, "the settings audit consumer stopped");
            }
        };
        vec![
            Box::pin(relay.run(shutdown)),
            Box::pin(keys),
            Box::pin(flags),
            Box::pin(settings),
        ]
    }

    /// The signing keys, for verifiers in the same process.
    fn local_keys(&self) -> Option<Arc<dyn KeySource>> {
        Some(self.ring.clone())
    }
}

/// Writes a new signing key into `dir` (see [`KeyRing::rotate`]).
pub fn rotate_keys(dir: &Path) -> Result<String, KeyError> {
    KeyRing::rotate(dir)
}

/// The user domain: accounts ([`accounts`]) and sessions ([`sessions`]).
#[derive(Clone)]
pub struct Users {
    store: Arc<dyn UserStore>,
    /// Encoded `User` answers of GetMe by user id (the hot path of every signed-in page),
    /// dropped whenever the account changes (role, tier, profile).
    profiles: Cache,
    issuer: Arc<TokenIssuer>,
    ring: Arc<KeyRing>,
    refresh_ttl: Duration,
}
