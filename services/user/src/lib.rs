//! The user service (`duovarsity.user.v1.UserService`): accounts, credentials, access and
//! refresh tokens, signing keys (JWKS), roles and tiers.
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

pub mod password;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use duovarsity_common::Error;
use duovarsity_common::auth::{KeyError, KeyRing, KeySource, TokenIssuer, caller};
use duovarsity_common::cache::{Cache, CacheHub};
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::events::{EventBus, PendingEvent, pending_event};
use duovarsity_common::grpc::GrpcServer;
use duovarsity_common::health::Probe;
use duovarsity_common::time::{now_millis, timestamp_from_millis};
use duovarsity_common::validate::page_token;
use duovarsity_config::Config;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::events::UserRegistered;
use duovarsity_proto::user::user_service_server::{UserService, UserServiceServer};
use duovarsity_proto::user::{
    GetJwksRequest, GetMeRequest, GetUserRequest, Jwks, ListUsersRequest, ListUsersResponse,
    LoginRequest, LogoutRequest, LogoutResponse, RefreshRequest, RegisterRequest, RegisterResponse,
    Role, SetRoleRequest, SetTierRequest, Tier, TokenPair, UpdateProfileRequest, User,
};
use prost::Message as _;
use ring::rand::{SecureRandom, SystemRandom};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::password::{
    account_violations, check_display_name, check_locale, check_time_zone, ensure_valid,
    normalize_email,
};
use crate::store::{
    ProfilePatch, RefreshTokenRecord, Rotation, SqlUserStore, UserRecord, UserStore,
};

/// The service name used for its database file and in logs.
pub const SERVICE: &str = "user";
/// The full name of the gRPC service.
pub const USER_SERVICE_NAME: &str = duovarsity_proto::user::user_service_server::SERVICE_NAME;
const DEFAULT_PAGE_SIZE: u32 = 50;
/// The cache of GetMe answers (see [`Users`]).
pub const PROFILE_CACHE: &str = "user_profile";
/// Refresh tokens carry this prefix so that secret scanners can recognise a leaked one.
const REFRESH_PREFIX: &str = "dvr1_";

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
}

impl UserModule {
    /// Connects (and, unless turned off, migrates) the database, loads (or creates) the
    /// signing keys, and makes sure the bootstrap admin of the configuration exists.
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        Self::open_with(config, &CacheHub::local()).await
    }

    /// [`UserModule::open`] with the process's shared caches.
    pub async fn open_with(config: &Config, caches: &CacheHub) -> Result<Self, StartError> {
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
        Ok(Self {
            db,
            ring,
            keys_dir: config.jwt_keys_dir(),
            users,
            outbox,
        })
    }

    pub fn users(&self) -> &Users {
        &self.users
    }
}

#[async_trait]
impl ServiceModule for UserModule {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICES: &'static [&'static str] = &[USER_SERVICE_NAME];

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn open(context: &ServiceContext) -> Result<Self, OpenError> {
        let caches = context.caches().await?;
        Ok(Self::open_with(&context.config, &caches).await?)
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        server.add_service(UserServiceServer::new(self.users.clone()))
    }

    /// Ready while the database answers.
    fn probes(&self) -> Vec<Probe> {
        vec![self.db.probe(SERVICE)]
    }

    /// Publishes this service's outbox, and reloads the signing keys when their directory
    /// changes (a key added, or removed to revoke it) or on SIGHUP.
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        let relay = self.outbox.relay(self.db.clone(), bus);
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
        vec![Box::pin(relay.run(shutdown)), Box::pin(keys)]
    }

    /// The signing keys, for verifiers in the same process.
    fn local_keys(&self) -> Option<Arc<dyn KeySource>> {
        Some(self.ring.clone())
    }

    async fn close(&self) {
        self.db.close().await;
    }
}

/// Writes a new signing key into `dir` (see [`KeyRing::rotate`]).
pub fn rotate_keys(dir: &Path) -> Result<String, KeyError> {
    KeyRing::rotate(dir)
}

/// The gRPC handlers.
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

impl Users {
    /// Creates an account with `role` (the bootstrap admin and `duovarsity admin
    /// create-user`). With `promote_existing`, an existing account gets the role instead of
    /// ALREADY_EXISTS; its password is left alone.
    pub async fn create_account(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
        role: Role,
        promote_existing: bool,
    ) -> Result<User, Error> {
        let email = normalize_email(email);
        if promote_existing && let Some(existing) = self.store.user_by_email(&email).await? {
            let user = self
                .store
                .set_role(&existing.id, role_name(role), now_millis())
                .await?;
            self.profiles.invalidate(&user.id).await;
            return to_proto(&user);
        }
        let user = self
            .new_account(email, password, display_name, role)
            .await?;
        to_proto(&user)
    }

    /// Learner accounts in bulk, for load tests (`duovarsity seed --learners N`). They
    /// share one password, so it is hashed once (argon2id takes tens of milliseconds
    /// each; a hundred thousand would take an hour) and every account stores the same PHC
    /// string. Accounts are written in batches of 500 per transaction, each with its
    /// `user.registered` event, so the other services learn of them as of any account.
    /// Emails that exist are skipped; returns how many accounts were created.
    pub async fn create_learners(
        &self,
        accounts: &[(String, String)],
        password: &str,
    ) -> Result<usize, Error> {
        let mut records = Vec::with_capacity(accounts.len());
        for (email, display_name) in accounts {
            let email = normalize_email(email);
            let violations = account_violations(&email, password, display_name);
            if !violations.is_empty() {
                return Err(Error::InvalidArgument(violations));
            }
            records.push((email, display_name.trim().to_string()));
        }
        let password_hash = password::hash(password.to_string()).await?;
        let mut created = 0;
        for batch in records.chunks(500) {
            let now = now_millis();
            let rows: Vec<_> = batch
                .iter()
                .map(|(email, display_name)| {
                    let user = UserRecord {
                        id: uuid::Uuid::now_v7().to_string(),
                        email: email.clone(),
                        password_hash: password_hash.clone(),
                        display_name: display_name.clone(),
                        locale: "en".into(),
                        time_zone: "UTC".into(),
                        role: role_name(Role::Learner).into(),
                        tier: tier_name(Tier::Free).into(),
                        created_at: now,
                        updated_at: now,
                    };
                    let registered = registered_event(&user);
                    (user, registered)
                })
                .collect();
            created += self.store.insert_users(&rows).await?;
        }
        tracing::info!(
            created,
            asked = accounts.len(),
            "learner accounts created in bulk"
        );
        Ok(created)
    }

    async fn new_account(
        &self,
        email: String,
        password: &str,
        display_name: &str,
        role: Role,
    ) -> Result<UserRecord, Error> {
        let violations = account_violations(&email, password, display_name);
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let now = now_millis();
        let user = UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            email,
            password_hash: password::hash(password.to_string()).await?,
            display_name: display_name.trim().to_string(),
            locale: "en".into(),
            time_zone: "UTC".into(),
            role: role_name(role).into(),
            tier: tier_name(Tier::Free).into(),
            created_at: now,
            updated_at: now,
        };
        let registered = registered_event(&user);
        self.store.insert_user(&user, Some(&registered)).await?;
        tracing::info!(user_id = %user.id, role = %user.role, "account created");
        Ok(user)
    }

    /// Issues an access token and starts or continues a refresh family.
    async fn token_pair(
        &self,
        user: &UserRecord,
        refresh_token: String,
    ) -> Result<TokenPair, Error> {
        let access_token = self.issuer.issue(&user.id, &user.role, &user.tier)?;
        Ok(TokenPair {
            access_token,
            token_type: "Bearer".into(),
            expires_in: i32::try_from(self.issuer.ttl().as_secs()).unwrap_or(i32::MAX),
            refresh_token,
            refresh_expires_in: i32::try_from(self.refresh_ttl.as_secs()).unwrap_or(i32::MAX),
            user: Some(to_proto(user)?),
        })
    }

    fn new_refresh_token(
        &self,
        user_id: &str,
        family_id: &str,
    ) -> Result<(String, RefreshTokenRecord), Error> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| {
            Error::internal("generating a refresh token", &"system randomness failed")
        })?;
        let token = format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let now = now_millis();
        let record = RefreshTokenRecord {
            token_hash: hash_refresh_token(&token),
            family_id: family_id.to_string(),
            user_id: user_id.to_string(),
            issued_at: now,
            expires_at: now + self.refresh_ttl.as_millis() as i64,
        };
        Ok((token, record))
    }

    async fn user(&self, id: &str) -> Result<UserRecord, Error> {
        self.store
            .user_by_id(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {id}")))
    }
}

fn invalid_refresh_token() -> Error {
    Error::unauthenticated(
        "REFRESH_TOKEN_INVALID",
        "the refresh token is invalid, expired or revoked",
    )
}

fn hash_refresh_token(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn valid_user_id(id: &str) -> Result<&str, Error> {
    uuid::Uuid::parse_str(id)
        .map(|_| id)
        .map_err(|_| Error::invalid("id", "must be a UUID"))
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Instructor => "instructor",
        Role::Learner | Role::Unspecified => "learner",
    }
}

fn role_from_name(name: &str) -> Result<Role, Error> {
    match name {
        "admin" => Ok(Role::Admin),
        "instructor" => Ok(Role::Instructor),
        "learner" => Ok(Role::Learner),
        other => Err(unknown_stored("users.role", other)),
    }
}

/// A stored enum value this build does not know: corruption or a missing migration, never
/// a default (a wrong role is a security bug).
fn unknown_stored(column: &str, value: &str) -> Error {
    Error::internal(
        "user store: unknown stored value",
        &format!("{column} = {value:?}"),
    )
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Premium => "premium",
        Tier::Standard => "standard",
        Tier::Throttled => "throttled",
        Tier::Free | Tier::Unspecified => "free",
    }
}

fn tier_from_name(name: &str) -> Result<Tier, Error> {
    match name {
        "premium" => Ok(Tier::Premium),
        "standard" => Ok(Tier::Standard),
        "free" => Ok(Tier::Free),
        "throttled" => Ok(Tier::Throttled),
        other => Err(unknown_stored("users.tier", other)),
    }
}

fn to_proto(user: &UserRecord) -> Result<User, Error> {
    Ok(User {
        id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        time_zone: user.time_zone.clone(),
        role: role_from_name(&user.role)? as i32,
        tier: tier_from_name(&user.tier)? as i32,
        created_at: Some(timestamp_from_millis(user.created_at)),
        updated_at: Some(timestamp_from_millis(user.updated_at)),
    })
}

#[tonic::async_trait]
impl UserService for Users {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        let user = self
            .new_account(
                normalize_email(&request.email),
                &request.password,
                &request.display_name,
                Role::Learner,
            )
            .await?;
        Ok(Response::new(RegisterResponse {
            user: Some(to_proto(&user)?),
        }))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<TokenPair>, Status> {
        let request = request.into_inner();
        let email = normalize_email(&request.email);
        let user = self.store.user_by_email(&email).await?;
        let matches = password::verify(
            request.password,
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await?;
        let user = match user {
            Some(user) if matches => user,
            _ => {
                return Err(Error::unauthenticated(
                    "INVALID_CREDENTIALS",
                    "the email or password is wrong",
                )
                .into());
            }
        };
        let family_id = uuid::Uuid::now_v7().to_string();
        let (refresh_token, record) = self.new_refresh_token(&user.id, &family_id)?;
        self.store.insert_refresh_token(&record).await?;
        Ok(Response::new(self.token_pair(&user, refresh_token).await?))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<TokenPair>, Status> {
        let presented = request.into_inner().refresh_token;
        if presented.is_empty() {
            return Err(Error::invalid("refresh_token", "is required").into());
        }
        // Family and user are taken from the presented token inside the rotation.
        let (refresh_token, successor) = self.new_refresh_token("", "")?;
        match self
            .store
            .rotate_refresh_token(&hash_refresh_token(&presented), successor, now_millis())
            .await?
        {
            Rotation::Rotated { user_id } => {
                let user = self.user(&user_id).await?;
                Ok(Response::new(self.token_pair(&user, refresh_token).await?))
            }
            Rotation::Reused => {
                tracing::warn!(
                    "a rotated refresh token was presented again; its family is revoked"
                );
                Err(Error::unauthenticated(
                    "REFRESH_TOKEN_REUSED",
                    "this refresh token was already used; the session is revoked, sign in again",
                )
                .into())
            }
            Rotation::Invalid => Err(invalid_refresh_token().into()),
        }
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let presented = request.into_inner().refresh_token;
        if presented.is_empty() {
            return Err(Error::invalid("refresh_token", "is required").into());
        }
        if !self
            .store
            .revoke_family(&hash_refresh_token(&presented), now_millis())
            .await?
        {
            return Err(invalid_refresh_token().into());
        }
        Ok(Response::new(LogoutResponse {}))
    }

    async fn get_me(&self, request: Request<GetMeRequest>) -> Result<Response<User>, Status> {
        let id = &caller(&request)?.sub;
        let encoded = self
            .profiles
            .get_or_load(id, || async {
                Ok(to_proto(&self.user(id).await?)?.encode_to_vec().into())
            })
            .await?;
        let user = User::decode(encoded).map_err(|e| Error::internal("a cached profile", &e))?;
        Ok(Response::new(user))
    }

    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<User>, Status> {
        let user_id = caller(&request)?.sub.clone();
        let request = request.into_inner();
        ensure_valid([
            request.display_name.as_deref().and_then(check_display_name),
            request.locale.as_deref().and_then(check_locale),
            request.time_zone.as_deref().and_then(check_time_zone),
        ])?;
        let patch = ProfilePatch {
            display_name: request.display_name.map(|name| name.trim().to_string()),
            locale: request.locale,
            time_zone: request.time_zone,
        };
        let user = self
            .store
            .update_profile(&user_id, &patch, now_millis())
            .await?;
        self.profiles.invalidate(&user.id).await;
        Ok(Response::new(to_proto(&user)?))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let id = request.into_inner().id;
        Ok(Response::new(to_proto(
            &self.user(valid_user_id(&id)?).await?,
        )?))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let request = request.into_inner();
        let page_size =
            duovarsity_common::validate::page_size(request.page_size, DEFAULT_PAGE_SIZE);
        let after = if request.page_token.is_empty() {
            None
        } else {
            let decoded = page_token::decode(&request.page_token)
                .filter(|id| uuid::Uuid::parse_str(id).is_ok())
                .ok_or_else(|| {
                    Error::invalid("page_token", "is not a token returned by ListUsers")
                })?;
            Some(decoded)
        };
        // One extra row tells whether another page exists.
        let mut users = self
            .store
            .list_users(after.as_deref(), page_size + 1)
            .await?;
        let next_page_token = if users.len() > page_size as usize {
            users.truncate(page_size as usize);
            users
                .last()
                .map(|u| page_token::encode(&u.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListUsersResponse {
            users: users.iter().map(to_proto).collect::<Result<_, _>>()?,
            next_page_token,
        }))
    }

    async fn set_role(&self, request: Request<SetRoleRequest>) -> Result<Response<User>, Status> {
        let request = request.into_inner();
        let role = Role::try_from(request.role)
            .ok()
            .filter(|role| *role != Role::Unspecified)
            .ok_or_else(|| {
                Error::invalid(
                    "role",
                    "must be ROLE_LEARNER, ROLE_INSTRUCTOR or ROLE_ADMIN",
                )
            })?;
        let user = self
            .store
            .set_role(valid_user_id(&request.id)?, role_name(role), now_millis())
            .await?;
        self.profiles.invalidate(&user.id).await;
        Ok(Response::new(to_proto(&user)?))
    }

    async fn set_tier(&self, request: Request<SetTierRequest>) -> Result<Response<User>, Status> {
        let request = request.into_inner();
        let tier = Tier::try_from(request.tier)
            .ok()
            .filter(|tier| *tier != Tier::Unspecified)
            .ok_or_else(|| {
                Error::invalid("tier", "must be TIER_FREE, TIER_STANDARD or TIER_PREMIUM")
            })?;
        let user = self
            .store
            .set_tier(valid_user_id(&request.id)?, tier_name(tier), now_millis())
            .await?;
        self.profiles.invalidate(&user.id).await;
        Ok(Response::new(to_proto(&user)?))
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<Jwks>, Status> {
        Ok(Response::new(Jwks {
            keys: self.ring.jwks(),
        }))
    }
}

/// The `user.registered` event of a new account.
fn registered_event(user: &UserRecord) -> PendingEvent {
    pending_event(
        &user.id,
        &UserRegistered {
            user_id: user.id.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
        },
    )
}
