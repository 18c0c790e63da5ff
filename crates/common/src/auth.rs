//! Access tokens: Ed25519-signed JWTs (`alg: EdDSA`) issued by the user service and verified
//! everywhere else from its JSON Web Key Set.
//!
//! - [`KeyRing`]: the signing keys, one PKCS#8 PEM file per key in a directory. The newest
//!   key (kids are UUIDv7, so newest sorts last) signs; every key in the ring verifies, and
//!   rotation keeps the previous key so tokens signed before a rotation stay valid.
//! - [`TokenIssuer`]: turns a user into a short-lived access token.
//! - [`TokenVerifier`]: checks a token against keys from a [`KeySource`], caching them and
//!   refetching (at most once per `min_refetch`) when a token names an unknown `kid`. Only
//!   EdDSA is accepted, so `alg: none` and HMAC tokens forged with the public key fail.
//! - [`AccessPolicy`] and [`authorize`]: which methods are public and which roles may call
//!   the others, read once from the `duovarsity.options.v1.access` method option.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use duovarsity_proto::duovarsity::options::v1::Access;
use duovarsity_proto::user::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use prost_reflect::DescriptorPool;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::error::Error;

mod verifier;
pub use verifier::TokenVerifier;

/// The `iss` of every access token.
pub const ISSUER: &str = "duovarsity";
/// Clock skew tolerated when checking `exp` and `iat`.
const LEEWAY_SECS: u64 = 5;

/// What an access token asserts about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// `learner`, `instructor` or `admin`.
    pub role: String,
    /// `free`, `standard` or `premium`.
    pub tier: String,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
    /// Unique per token (UUIDv7).
    pub jti: String,
}

impl Claims {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// A key ring could not be read, written or generated.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key directory {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("key file {0} is not an Ed25519 PKCS#8 PEM key")]
    Malformed(PathBuf),
    #[error(
        "no signing key in {0} and key generation is off (set DUOVARSITY_JWT_GENERATE_KEYS=true or mount a key)"
    )]
    Missing(PathBuf),
    #[error("could not generate a key")]
    Generate,
}

/// One Ed25519 key pair.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public_key: Vec<u8>,
}

impl SigningKey {
    fn from_pkcs8(kid: String, der: &[u8]) -> Option<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).ok()?;
        Some(Self {
            kid,
            encoding: EncodingKey::from_ed_der(der),
            public_key: pair.public_key().as_ref().to_vec(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK (RFC 8037).
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(&self.public_key),
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }
    }
}

/// The signing keys, oldest first, as found in their directory. The directory is read
/// again by [`KeyRing::reload`] (the user service calls it when the directory changes), so
/// a key added or removed there is published, and a removed key stops verifying, without
/// a restart.
pub struct KeyRing {
    dir: PathBuf,
    keys: std::sync::RwLock<Arc<Vec<Arc<SigningKey>>>>,
}

const PEM_TAG: &str = "PRIVATE KEY";

impl KeyRing {
    /// Reads every `<kid>.pem` in `dir`; when there is none, generates one if `generate`.
    pub fn load(dir: &Path, generate: bool) -> Result<Self, KeyError> {
        let mut keys = read_keys(dir)?;
        if keys.is_empty() {
            if !generate {
                return Err(KeyError::Missing(dir.to_path_buf()));
            }
            Self::rotate(dir)?;
            keys = read_keys(dir)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            keys: std::sync::RwLock::new(Arc::new(keys.into_iter().map(Arc::new).collect())),
        })
    }

    /// Reads the directory again. A directory that holds no key (or a malformed one) is
    /// refused and the running keys stay. Returns whether the set of keys changed.
    pub fn reload(&self) -> Result<bool, KeyError> {
        let keys = read_keys(&self.dir)?;
        if keys.is_empty() {
            return Err(KeyError::Missing(self.dir.clone()));
        }
        let kids =
            |keys: &[Arc<SigningKey>]| keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>();
        let fresh: Vec<Arc<SigningKey>> = keys.into_iter().map(Arc::new).collect();
        let mut current = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = kids(&current) != kids(&fresh);
        if changed {
            *current = Arc::new(fresh);
        }
        Ok(changed)
    }

    fn current(&self) -> Arc<Vec<Arc<SigningKey>>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Writes a new key that signs once the ring is loaded or reloaded, and deletes keys older than
    /// the current one, which keeps verifying tokens it signed. Returns the new `kid`.
    pub fn rotate(dir: &Path) -> Result<String, KeyError> {
        std::fs::create_dir_all(dir).map_err(|e| KeyError::Io(dir.to_path_buf(), e))?;
        let existing = read_keys(dir)?;
        let document =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        let kid = uuid::Uuid::now_v7().to_string();
        let path = dir.join(format!("{kid}.pem"));
        let pem = pem::encode(&pem::Pem::new(PEM_TAG, document.as_ref().to_vec()));
        write_private(&path, pem.as_bytes()).map_err(|e| KeyError::Io(path.clone(), e))?;
        // Keep the newest existing key (it still verifies); drop anything older.
        if existing.len() > 1 {
            for old in &existing[..existing.len() - 1] {
                let old_path = dir.join(format!("{}.pem", old.kid));
                std::fs::remove_file(&old_path).map_err(|e| KeyError::Io(old_path, e))?;
            }
        }
        Ok(kid)
    }

    /// The key that signs new tokens (the newest).
    pub fn signing_key(&self) -> Arc<SigningKey> {
        self.current()
            .last()
            .cloned()
            .expect("a loaded key ring is never empty")
    }

    pub fn jwks(&self) -> Vec<Jwk> {
        self.current().iter().map(|key| key.jwk()).collect()
    }
}

fn read_keys(dir: &Path) -> Result<Vec<SigningKey>, KeyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(KeyError::Io(dir.to_path_buf(), e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| KeyError::Io(dir.to_path_buf(), e))?
            .path();
        if path.extension().is_none_or(|ext| ext != "pem") {
            continue;
        }
        let kid = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .ok_or_else(|| KeyError::Malformed(path.clone()))?
            .to_string();
        let text = std::fs::read(&path).map_err(|e| KeyError::Io(path.clone(), e))?;
        let parsed = pem::parse(text).map_err(|_| KeyError::Malformed(path.clone()))?;
        if parsed.tag() != PEM_TAG {
            return Err(KeyError::Malformed(path));
        }
        let key =
            SigningKey::from_pkcs8(kid, parsed.contents()).ok_or(KeyError::Malformed(path))?;
        keys.push(key);
    }
    keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    Ok(keys)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Signs access tokens with the newest key of a ring.
pub struct TokenIssuer {
    ring: Arc<KeyRing>,
    ttl: Duration,
}

impl TokenIssuer {
    pub fn new(ring: Arc<KeyRing>, ttl: Duration) -> Self {
        Self { ring, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// An access token for `user_id`.
    pub fn issue(&self, user_id: &str, role: &str, tier: &str) -> Result<String, Error> {
        let now = unix_now();
        let claims = Claims {
            sub: user_id.to_string(),
            role: role.to_string(),
            tier: tier.to_string(),
            iss: ISSUER.to_string(),
            iat: now,
            exp: now + self.ttl.as_secs(),
            jti: uuid::Uuid::now_v7().to_string(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use it to mint expired tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let key = self.ring.signing_key();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| Error::internal("signing an access token", &e))
    }
}

/// Where a verifier gets public keys from.
#[async_trait]
pub trait KeySource: Send + Sync {
    async fn fetch(&self) -> Result<Vec<Jwk>, Error>;
}

/// The user service verifies with its own ring, without a network hop.
#[async_trait]
impl KeySource for KeyRing {
    async fn fetch(&self) -> Result<Vec<Jwk>, Error> {
        Ok(self.jwks())
    }
}

/// Public keys from the user service's `GetJwks`, over gRPC: what the gateway and services
/// running apart from the user service verify with.
pub struct RemoteJwks {
    channel: tonic::transport::Channel,
}

impl RemoteJwks {
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self { channel }
    }

    /// The limits of a channel to the user service: a fetch that gets no answer within 3 s
    /// fails (pass it to the configuration's channel builder).
    pub fn endpoint(endpoint: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
        endpoint
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(3))
    }
}

#[async_trait]
impl KeySource for RemoteJwks {
    async fn fetch(&self) -> Result<Vec<Jwk>, Error> {
        use duovarsity_proto::user::GetJwksRequest;
        use duovarsity_proto::user::user_service_client::UserServiceClient;
        let response = UserServiceClient::new(self.channel.clone())
            .get_jwks(GetJwksRequest {})
            .await
            .map_err(|status| {
                tracing::warn!(%status, "JWKS fetch failed");
                Error::Unavailable {
                    message: "the token keys are unavailable; retry shortly".into(),
                    retry_after: Some(Duration::from_secs(1)),
                }
            })?;
        Ok(response.into_inner().keys)
    }
}

/// Who may call each method, read from the `duovarsity.options.v1.access` option.
pub struct AccessPolicy {
    /// Keyed by gRPC path, `/package.Service/Method`.
    methods: HashMap<String, Access>,
}

impl AccessPolicy {
    pub fn from_pool(pool: &DescriptorPool) -> Self {
        let mut methods = HashMap::new();
        for service in pool.services() {
            for method in service.methods() {
                let access = duovarsity_proto::method_option::<Access>(
                    &method,
                    "duovarsity.options.v1.access",
                )
                .unwrap_or_default();
                methods.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    access,
                );
            }
        }
        Self { methods }
    }

    /// `None` for paths outside the contracts (health, reflection): those are public.
    pub fn lookup(&self, path: &str) -> Option<&Access> {
        self.methods.get(path)
    }
}

/// The one authorisation rule, used by the gateway and by every service's auth layer:
/// public methods need nothing; others need valid claims, and a role from the method's list
/// when it has one. A token on a public method is verified when present but not required.
pub async fn authorize(
    access: Option<&Access>,
    bearer: Option<&str>,
    verifier: &TokenVerifier,
) -> Result<Option<Claims>, Error> {
    let public = access.is_none_or(|access| access.public);
    let claims = match bearer {
        Some(token) => match verifier.verify(token).await {
            Ok(claims) => Some(claims),
            Err(_) if public => None,
            Err(error) => return Err(error),
        },
        None if public => None,
        None => {
            return Err(Error::unauthenticated(
                "TOKEN_MISSING",
                "this method needs an access token (Authorization: Bearer <token>)",
            ));
        }
    };
    if let (Some(access), Some(claims)) = (access, &claims)
        && !access.roles.is_empty()
        && !access.roles.iter().any(|role| role == &claims.role)
    {
        return Err(Error::permission_denied(
            "ROLE_REQUIRED",
            format!("this method needs the role {}", access.roles.join(" or ")),
        ));
    }
    Ok(claims)
}

/// The verified caller of a gRPC method; the auth layer guarantees it on every method that
/// is not public.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Claims, Error> {
    request
        .extensions()
        .get::<Claims>()
        .ok_or_else(|| Error::unauthenticated("TOKEN_MISSING", "this method needs an access token"))
}

/// The caller of a public method, when it sent a valid token.
pub fn optional_caller<T>(request: &tonic::Request<T>) -> Option<&Claims> {
    request.extensions().get::<Claims>()
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer_token(header: Option<&http::HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests;
