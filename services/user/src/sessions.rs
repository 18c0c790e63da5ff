//! Sessions: signing in, refresh-token rotation with reuse detection, and logout. A
//! refresh token is `dvr1_` plus 32 random bytes, stored only as its SHA-256; each one
//! works once, and its successor joins the same family.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use duovarsity_common::Error;
use duovarsity_common::time::now_millis;
use duovarsity_proto::user::TokenPair;
use ring::rand::{SecureRandom, SystemRandom};

use crate::convert::user_to_proto;
use crate::rules::normalize_email;
use crate::store::{RefreshTokenRecord, Rotation, UserRecord};
use crate::{Users, password};

/// Refresh tokens carry this prefix so that secret scanners can recognise a leaked one.
const REFRESH_PREFIX: &str = "dvr1_";

impl Users {
    /// Unknown email and wrong password get the same answer, in similar time.
    pub(crate) async fn login(&self, email: &str, password: String) -> Result<TokenPair, Error> {
        let user = self.store.user_by_email(&normalize_email(email)).await?;
        let matches =
            password::verify(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
        let user = match user {
            Some(user) if matches => user,
            _ => {
                return Err(Error::unauthenticated(
                    "INVALID_CREDENTIALS",
                    "the email or password is wrong",
                ));
            }
        };
        let family_id = uuid::Uuid::now_v7().to_string();
        let (refresh_token, record) = self.new_refresh_token(&user.id, &family_id)?;
        self.store.insert_refresh_token(&record).await?;
        self.token_pair(&user, refresh_token)
    }

    /// Trades a refresh token for a new pair; a spent one revokes its whole family.
    pub(crate) async fn refresh(&self, presented: &str) -> Result<TokenPair, Error> {
        if presented.is_empty() {
            return Err(Error::invalid("refresh_token", "is required"));
        }
        // Family and user are taken from the presented token inside the rotation.
        let (refresh_token, successor) = self.new_refresh_token("", "")?;
        match self
            .store
            .rotate_refresh_token(&hash_refresh_token(presented), successor, now_millis())
            .await?
        {
            Rotation::Rotated { user_id } => {
                let user = self.user(&user_id).await?;
                self.token_pair(&user, refresh_token)
            }
            Rotation::Reused => {
                tracing::warn!(
                    "a rotated refresh token was presented again; its family is revoked"
                );
                Err(Error::unauthenticated(
                    "REFRESH_TOKEN_REUSED",
                    "this refresh token was already used; the session is revoked, sign in again",
                ))
            }
            Rotation::Invalid => Err(invalid_refresh_token()),
        }
    }

    /// Revokes the family of the presented refresh token.
    pub(crate) async fn logout(&self, presented: &str) -> Result<(), Error> {
        if presented.is_empty() {
            return Err(Error::invalid("refresh_token", "is required"));
        }
        if !self
            .store
            .revoke_family(&hash_refresh_token(presented), now_millis())
            .await?
        {
            return Err(invalid_refresh_token());
        }
        Ok(())
    }

    /// Issues an access token and starts or continues a refresh family.
    fn token_pair(&self, user: &UserRecord, refresh_token: String) -> Result<TokenPair, Error> {
        let access_token = self.issuer.issue(&user.id, &user.role, &user.tier)?;
        Ok(TokenPair {
            access_token,
            token_type: "Bearer".into(),
            expires_in: i32::try_from(self.issuer.ttl().as_secs()).unwrap_or(i32::MAX),
            refresh_token,
            refresh_expires_in: i32::try_from(self.refresh_ttl.as_secs()).unwrap_or(i32::MAX),
            user: Some(user_to_proto(user)?),
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
