//! [`TokenVerifier`]: checks access tokens against the published keys, refetching them
//! on an unknown `kid` (at most every `min_refetch`), and remembers verified tokens.

use super::*;

/// Verifies access tokens; cheap to share (`Arc`) between requests.
pub struct TokenVerifier {
    source: Arc<dyn KeySource>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    min_refetch: Duration,
    validation: Validation,
    /// Tokens already verified, with their claims: a learner's token is presented on
    /// every request, and an Ed25519 verification costs far more than a lookup.
    verified: moka::future::Cache<String, Claims>,
}

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
            validation,
            verified: moka::future::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_TTL)
                .build(),
        }
    }

    /// The claims of a valid token, or UNAUTHENTICATED with a reason. A token verified
    /// in the last minute is answered from memory until it expires.
    pub async fn verify(&self, token: &str) -> Result<Claims, Error> {
        if let Some(claims) = self.verified.get(token).await
            && claims.exp > unix_now()
        {
            return Ok(claims);
        }
        let claims = self.verify_signature(token).await?;
        self.verified
            .insert(token.to_string(), claims.clone())
            .await;
        Ok(claims)
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

    async fn verify_signature(&self, token: &str) -> Result<Claims, Error> {
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
        Ok(data.claims)
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
        *self.keys.write().await = keys;
        Ok(())
    }
}
