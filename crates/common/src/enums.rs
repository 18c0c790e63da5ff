//! Protobuf enums by their stored names, derived from prost's generated names instead of
//! hand-written match arms. A value's stored name is its protobuf name without the enum's
//! prefix, in lower case: `ROLE_ADMIN` is `admin`, `ENROLLMENT_STATUS_PENDING_PAYMENT` is
//! `pending_payment` (the prefix is what the zero value, `<PREFIX>UNSPECIFIED`, has).
//! Rows, tokens and events carry stored names; the wire carries numbers.

use duovarsity_proto::{course, notification, user};

use crate::error::Error;

/// A protobuf enum whose values are stored by name.
pub trait StoredName: Sized + Copy + Into<i32> + TryFrom<i32> {
    /// prost's `as_str_name`.
    fn proto_name(self) -> &'static str;
    /// prost's `from_str_name`.
    fn from_proto_name(name: &str) -> Option<Self>;

    /// `ROLE_` for `Role`: its zero value's name without `UNSPECIFIED`.
    fn prefix() -> &'static str {
        Self::try_from(0)
            .ok()
            .map(|zero| zero.proto_name())
            .and_then(|name| name.strip_suffix("UNSPECIFIED"))
            .unwrap_or("")
    }

    /// The stored name; `None` for the unspecified (zero) value, which is never stored.
    fn stored_name(self) -> Option<String> {
        if self.into() == 0 {
            return None;
        }
        let name = self.proto_name();
        Some(
            name.strip_prefix(Self::prefix())
                .unwrap_or(name)
                .to_ascii_lowercase(),
        )
    }

    /// The stored name of a wire number; `None` for unspecified or unknown numbers (the
    /// caller reports them as a field violation).
    fn stored_name_of(number: i32) -> Option<String> {
        Self::try_from(number).ok()?.stored_name()
    }

    /// The value a stored name stands for. A name this build does not know (in lower case,
    /// and never the unspecified one) is corruption or a missing migration: an internal
    /// error naming `column` and the value, never a default.
    fn from_stored(column: &str, name: &str) -> Result<Self, Error> {
        let known = (name == name.to_ascii_lowercase())
            .then(|| {
                Self::from_proto_name(&format!("{}{}", Self::prefix(), name.to_ascii_uppercase()))
            })
            .flatten()
            .filter(|value| (*value).into() != 0);
        known
            .ok_or_else(|| Error::internal("unknown stored value", &format!("{column} = {name:?}")))
    }
}

macro_rules! stored_names {
    ($($ty:ty),* $(,)?) => {
        $(impl StoredName for $ty {
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
            fn from_proto_name(name: &str) -> Option<Self> {
                Self::from_str_name(name)
            }
        })*
    };
}

stored_names!(
    user::Role,
    user::Tier,
    course::Level,
    course::LessonKind,
    course::CourseStatus,
    course::EnrollmentStatus,
    notification::Category,
);

#[cfg(test)]
mod tests {
    use super::*;
    use course::{EnrollmentStatus, Level};
    use user::Role;

    #[test]
    fn stored_names_are_the_proto_names_without_prefix_in_lower_case() {
        assert_eq!(Role::prefix(), "ROLE_");
        assert_eq!(Role::Admin.stored_name().as_deref(), Some("admin"));
        assert_eq!(
            EnrollmentStatus::PendingPayment.stored_name().as_deref(),
            Some("pending_payment")
        );
        assert_eq!(Role::Unspecified.stored_name(), None);
        assert_eq!(Level::stored_name_of(99), None);
        assert_eq!(
            Level::stored_name_of(Level::Advanced as i32).as_deref(),
            Some("advanced")
        );
    }

    #[test]
    fn every_stored_name_round_trips_and_nothing_else_is_accepted() {
        for role in [Role::Learner, Role::Instructor, Role::Admin] {
            let name = role.stored_name().unwrap();
            assert_eq!(Role::from_stored("users.role", &name).unwrap(), role);
        }
        for bad in ["unspecified", "ADMIN", "Admin", "root", "", "role_admin"] {
            let error = Role::from_stored("users.role", bad).unwrap_err();
            assert!(matches!(error, Error::Internal), "{bad}: {error:?}");
        }
    }
}
