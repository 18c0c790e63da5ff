//! Accounts: sign-up (one at a time, the bootstrap admin, and learners in bulk for load
//! tests), profiles, and the roles and tiers admins set. Every change of an account drops
//! its cached GetMe answer.

use duovarsity_common::Error;
use duovarsity_common::time::now_millis;
use duovarsity_common::validate::{page_size, page_token};
use duovarsity_proto::user::{ListUsersResponse, Role, Tier, UpdateProfileRequest, User};
use prost::Message as _;

use crate::convert::{profile_updated_event, registered_event, stored, user_to_proto};
use crate::rules::{
    account_violations, check_display_name, check_locale, check_time_zone, ensure_valid,
    normalize_email,
};
use crate::store::{ProfilePatch, UserRecord};
use crate::{Users, password};

const DEFAULT_PAGE_SIZE: u32 = 50;

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
                .set_role(&existing.id, &stored(role)?, now_millis())
                .await?;
            self.profiles.invalidate(&user.id).await;
            return user_to_proto(&user);
        }
        let user = self
            .new_account(email, password, display_name, role)
            .await?;
        user_to_proto(&user)
    }

    /// A learner signs up.
    pub(crate) async fn register(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<User, Error> {
        let user = self
            .new_account(
                normalize_email(email),
                password,
                display_name,
                Role::Learner,
            )
            .await?;
        user_to_proto(&user)
    }

    /// Learner accounts in bulk, for load tests (`duovarsity seed --learners N`). They
    /// share one password, so it is hashed once (argon2id takes tens of milliseconds
    /// each; a hundred thousand would take an hour) and every account stores the same PHC
    /// string. Accounts are written in batches of 500 per transaction, each with its
    /// `user.registered` event, so the other services learn of them as of any account.
    /// Emails that exist are skipped; returns how many accounts were created.
    /// The id of the account with `email`, if there is one (seeding looks learners up).
    pub async fn id_of(&self, email: &str) -> Result<Option<String>, Error> {
        Ok(self
            .store
            .user_by_email(&normalize_email(email))
            .await?
            .map(|user| user.id))
    }

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
            let rows = batch
                .iter()
                .map(|(email, display_name)| {
                    let user = new_record(
                        email.clone(),
                        password_hash.clone(),
                        display_name,
                        Role::Learner,
                        now,
                    )?;
                    let registered = registered_event(&user);
                    Ok((user, registered))
                })
                .collect::<Result<Vec<_>, Error>>()?;
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
        let hash = password::hash(password.to_string()).await?;
        let user = new_record(email, hash, display_name, role, now_millis())?;
        let registered = registered_event(&user);
        self.store.insert_user(&user, Some(&registered)).await?;
        tracing::info!(user_id = %user.id, role = %user.role, "account created");
        Ok(user)
    }

    pub(crate) async fn user(&self, id: &str) -> Result<UserRecord, Error> {
        self.store
            .user_by_id(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {id}")))
    }

    /// The caller's own account, from the profile cache.
    pub(crate) async fn me(&self, id: &str) -> Result<User, Error> {
        let encoded = self
            .profiles
            .get_or_load(id, || async {
                Ok(user_to_proto(&self.user(id).await?)?.encode_to_vec().into())
            })
            .await?;
        User::decode(encoded).map_err(|e| Error::internal("a cached profile", &e))
    }

    pub(crate) async fn update_profile(
        &self,
        user_id: &str,
        request: UpdateProfileRequest,
    ) -> Result<User, Error> {
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
            .update_profile(user_id, &patch, now_millis(), profile_updated_event)
            .await?;
        self.profiles.invalidate(&user.id).await;
        user_to_proto(&user)
    }

    pub(crate) async fn get_user(&self, id: &str) -> Result<User, Error> {
        user_to_proto(&self.user(valid_user_id(id)?).await?)
    }

    pub(crate) async fn list_users(
        &self,
        requested_size: i32,
        token: &str,
    ) -> Result<ListUsersResponse, Error> {
        let size = page_size(requested_size, DEFAULT_PAGE_SIZE);
        let after = page_token::cursor(token, "ListUsers", |id| {
            uuid::Uuid::parse_str(id).is_ok().then(|| id.to_string())
        })?;
        // One extra row tells whether another page exists.
        let users = self.store.list_users(after.as_deref(), size + 1).await?;
        let (users, next_page_token) = page_token::page(users, size, |u| u.id.clone());
        Ok(ListUsersResponse {
            users: users.iter().map(user_to_proto).collect::<Result<_, _>>()?,
            next_page_token,
        })
    }

    pub(crate) async fn set_role(&self, id: &str, role: i32) -> Result<User, Error> {
        let role = Role::try_from(role)
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
            .set_role(valid_user_id(id)?, &stored(role)?, now_millis())
            .await?;
        self.profiles.invalidate(&user.id).await;
        user_to_proto(&user)
    }

    pub(crate) async fn set_tier(&self, id: &str, tier: i32) -> Result<User, Error> {
        let tier = Tier::try_from(tier)
            .ok()
            .filter(|tier| *tier != Tier::Unspecified)
            .ok_or_else(|| {
                Error::invalid("tier", "must be TIER_FREE, TIER_STANDARD or TIER_PREMIUM")
            })?;
        let user = self
            .store
            .set_tier(valid_user_id(id)?, &stored(tier)?, now_millis())
            .await?;
        self.profiles.invalidate(&user.id).await;
        user_to_proto(&user)
    }
}

/// A new account's row: English, UTC, the free tier.
fn new_record(
    email: String,
    password_hash: String,
    display_name: &str,
    role: Role,
    now: i64,
) -> Result<UserRecord, Error> {
    Ok(UserRecord {
        id: uuid::Uuid::now_v7().to_string(),
        email,
        password_hash,
        display_name: display_name.trim().to_string(),
        locale: "en".into(),
        time_zone: "UTC".into(),
        role: stored(role)?,
        tier: stored(Tier::Free)?,
        created_at: now,
        updated_at: now,
    })
}

fn valid_user_id(id: &str) -> Result<&str, Error> {
    uuid::Uuid::parse_str(id)
        .map(|_| id)
        .map_err(|_| Error::invalid("id", "must be a UUID"))
}
