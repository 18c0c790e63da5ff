//! Rows to protobuf: the one place where stored names (`"admin"`, `"premium"`) meet the
//! wire enums, through prost's generated names ([`StoredName`]). A stored name that is not
//! one of ours is corruption or a missing migration, never a default (a wrong role is a
//! security bug).

use duovarsity_common::Error;
use duovarsity_common::enums::StoredName;
use duovarsity_common::events::{PendingEvent, pending_event};
use duovarsity_common::time::timestamp_from_millis;
use duovarsity_proto::events::{UserProfileUpdated, UserRegistered};
use duovarsity_proto::user::{Role, Tier, User};

use crate::store::UserRecord;

/// The stored name of a role or tier the domain has already checked is specified.
pub fn stored<E: StoredName + std::fmt::Debug>(value: E) -> Result<String, Error> {
    value
        .stored_name()
        .ok_or_else(|| Error::internal("storing an enum", &format!("{value:?} is unspecified")))
}

pub fn user_to_proto(user: &UserRecord) -> Result<User, Error> {
    Ok(User {
        id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        time_zone: user.time_zone.clone(),
        role: Role::from_stored("users.role", &user.role)? as i32,
        tier: Tier::from_stored("users.tier", &user.tier)? as i32,
        created_at: Some(timestamp_from_millis(user.created_at)),
        updated_at: Some(timestamp_from_millis(user.updated_at)),
    })
}

/// The `user.registered` event of a new account.
pub fn registered_event(user: &UserRecord) -> PendingEvent {
    pending_event(
        &user.id,
        &UserRegistered {
            user_id: user.id.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            time_zone: user.time_zone.clone(),
        },
    )
}

/// The `user.profile_updated` event of an account whose profile changed.
pub fn profile_updated_event(user: &UserRecord) -> PendingEvent {
    pending_event(
        &user.id,
        &UserProfileUpdated {
            user_id: user.id.clone(),
            display_name: user.display_name.clone(),
            time_zone: user.time_zone.clone(),
        },
    )
}
