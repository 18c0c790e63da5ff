//! [`TokenVerifier`]: checks access tokens against the published keys, and remembers
//! verified tokens.
//!
//! The keys are fetched again on an unknown `kid` (at most every `min_refetch`, so forged
//! tokens cannot turn into a flood of JWKS requests) and on a period (`refresh`, 60 s by
//! default; `DUOVARSITY_JWKS_REFRESH_SECS`), so that a key removed from the set (revoked,
//! or retired after a rotation) stops verifying within that period, remembered tokens
//! signed by it included. A failed periodic fetch keeps the keys it had: an outage of the
//! user service does not log everyone out.

use super::*;

/// Verifies access tokens; cheap to share (`Arc`) between requests.
pub struct TokenVerifier {
    source: Arc<dyn KeySource>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    min_refetch: Duration,
    /// How often the keys are fetched whatever the tokens say.
    refresh: Duration,
    /// Held by the one caller doing a periodic fetch.
    refreshing: Mutex<()>,
    /// When the keys were last fetched successfully, in milliseconds since `epoch`
    /// (`u64::MAX`: never), read on every verification without a lock.
    fetched_at: std::sync::atomic::AtomicU64,
    epoch: Instant,
    validation: Validation,
    /// Tokens already verified, with their claims and the `kid` that signed them: a
    /// learner's token is presented on every request, and an Ed25519 verification costs
    /// far more than a lookup.
    verified: moka::future::Cache<String, (Claims, String)>,
}

/// How often the keys are fetched by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// How many verified tokens are remembered, and for how long at most (a token is also
/// dropped once it expires).
const VERIFIED_CAPACITY: u64 = 100_000;
const VERIFIED_TTL: Duration = Duration::from_secs(60);

impl TokenVerifier {
    /// `min_refetch` bounds how often an unknown `kid` may trigger a key fetch, so a flood
    /// of forged tokens cannot turn into a flood of JWKS requests.
    pub fn new(source: Arc<dyn KeySource>, min_refetch: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Self {
            source,
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
            min_refetch,
            refresh: DEFAULT_REFRESH,
            refreshing: Mutex::new(()),
            fetched_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            validation,
            verified: moka::future::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_TTL)
                .build(),
        }
    }

    /// The same verifier, fetching the keys every `refresh` as well.
    pub fn refreshing_every(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// The claims of a valid token, or UNAUTHENTICATED with a reason. A token verified
    /// in the last minute is answered from memory until it expires, while the key that
    /// signed it is still published.
    pub async fn verify(&self, token: &str) -> Result<Claims, Error> {
        self.refresh_if_due().await;
        if let Some((claims, kid)) = self.verified.get(token).await
            && claims.exp > unix_now()
        {
            if self.keys.read().await.contains_key(&kid) {
                return Ok(claims);
            }
            self.verified.invalidate(token).await;
        }
        let (claims, kid) = self.verify_signature(token).await?;
        self.verified
            .insert(token.to_string(), (claims.clone(), kid))
            .await;
        Ok(claims)
    }

    fn millis_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn refresh_due(&self) -> bool {
        let fetched = self.fetched_at.load(std::sync::atomic::Ordering::Relaxed);
        let period = u64::try_from(self.refresh.as_millis()).unwrap_or(u64::MAX);
        fetched != u64::MAX && self.millis_since_epoch().saturating_sub(fetched) >= period
    }

    /// Fetches the keys when the last successful fetch is older than `refresh` (one
    /// caller fetches; the others go on with the keys they have). A failed fetch is tried
    /// again by the next verification after a period, not on every request.
    async fn refresh_if_due(&self) {
        if !self.refresh_due() {
            return;
        }
        let Ok(_refreshing) = self.refreshing.try_lock() else {
            return;
        };
        // Another caller may have fetched while this one waited for the lock.
        if !self.refresh_due() {
            return;
        }
        if let Err(error) = self.fetch().await {
            tracing::warn!(%error, "refreshing the signing keys failed; the known keys stay");
            self.fetched_at.store(
                self.millis_since_epoch(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Whether signing keys are known, fetching them if none are (at most every
    /// `min_refetch`).
    pub async fn keys_known(&self) -> bool {
        if !self.keys.read().await.is_empty() {
            return true;
        }
        let _ = self.refetch().await;
        !self.keys.read().await.is_empty()
    }

    async fn verify_signature(&self, token: &str) -> Result<(Claims, String), Error> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            Error::unauthenticated("TOKEN_MALFORMED", "the access token is malformed")
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(Error::unauthenticated(
                "TOKEN_ALGORITHM",
                "the access token is not signed with EdDSA",
            ));
        }
        let kid = header.kid.ok_or_else(|| {
            Error::unauthenticated("TOKEN_MALFORMED", "the access token names no signing key")
        })?;
        let key = match self.key(&kid).await {
            Some(key) => key,
            None => {
                self.refetch().await?;
                self.key(&kid).await.ok_or_else(|| {
                    Error::unauthenticated(
                        "TOKEN_UNKNOWN_KEY",
                        "the access token was signed by an unknown key",
                    )
                })?
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => {
                    Error::unauthenticated("TOKEN_EXPIRED", "the access token has expired")
                }
                ErrorKind::InvalidSignature => Error::unauthenticated(
                    "TOKEN_SIGNATURE",
                    "the access token signature is invalid",
                ),
                _ => Error::unauthenticated("TOKEN_INVALID", "the access token is invalid"),
            }
        })?;
        if data.claims.iat > unix_now() + LEEWAY_SECS {
            return Err(Error::unauthenticated(
                "TOKEN_INVALID",
                "the access token was issued in the future",
            ));
        }
        Ok((data.claims, kid))
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().await.get(kid).cloned()
    }

    async fn refetch(&self) -> Result<(), Error> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return Ok(());
        }
        *last = Some(Instant::now());
        self.fetch().await
    }

    /// Fetches the key set and replaces the known one.
    async fn fetch(&self) -> Result<(), Error> {
        let jwks = self.source.fetch().await?;
        let mut keys = HashMap::new();
        for jwk in jwks {
            if jwk.kty == "OKP" && jwk.crv == "Ed25519" {
                match DecodingKey::from_ed_components(&jwk.x) {
                    Ok(key) => {
                        keys.insert(jwk.kid, key);
                    }
                    Err(error) => {
                        tracing::warn!(kid = %jwk.kid, %error, "ignoring a malformed JWK")
                    }
                }
            }
        }
        let gone: Vec<String> = {
            let known = self.keys.read().await;
            known
                .keys()
                .filter(|kid| !keys.contains_key(*kid))
                .cloned()
                .collect()
        };
        if !gone.is_empty() {
            tracing::info!(
                ?gone,
                "signing keys left the published set; their tokens are refused"
            );
        }
        *self.keys.write().await = keys;
        self.fetched_at.store(
            self.millis_since_epoch(),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }
}
