//! Who may see and change a course, and what valid course input looks like.
//!
//! - Only the owning instructor or an admin edits a course, its outline and its
//!   prerequisites; another instructor gets PERMISSION_DENIED.
//! - A draft is visible to its owner and admins only; an archived course also to its
//!   enrolled learners. Everyone else gets NOT_FOUND, so drafts do not leak by id.

use duovarsity_common::auth::Claims;
use duovarsity_common::{Error, FieldViolation};

use crate::store::CourseRow;

/// Owner instructor or admin.
pub fn can_edit(claims: &Claims, instructor_id: &str) -> bool {
    claims.is_admin() || (claims.role == "instructor" && claims.sub == instructor_id)
}

pub fn ensure_can_edit(claims: &Claims, course: &CourseRow) -> Result<(), Error> {
    if can_edit(claims, &course.instructor_id) {
        Ok(())
    } else {
        Err(Error::permission_denied(
            "NOT_COURSE_OWNER",
            "only the course's instructor or an admin may change it",
        ))
    }
}

/// Whether `claims` (None: anonymous) may read a course in `status` owned by
/// `instructor_id`; `enrolled` says whether the caller has an enrollment in it.
pub fn can_view(
    claims: Option<&Claims>,
    status: &str,
    instructor_id: &str,
    enrolled: bool,
) -> bool {
    match status {
        "published" => true,
        "archived" => enrolled || claims.is_some_and(|c| can_edit(c, instructor_id)),
        _ => claims.is_some_and(|c| can_edit(c, instructor_id)),
    }
}

/// Whether the caller may read a lesson's published content. A free published course is
/// open to everyone; a paid one, like an archived one, to learners whose enrollment grants
/// access (`has_access`: active or completed), its instructor and admins.
pub fn can_read_lessons(
    claims: Option<&Claims>,
    status: &str,
    instructor_id: &str,
    paid: bool,
    has_access: bool,
) -> bool {
    let editor = claims.is_some_and(|c| can_edit(c, instructor_id));
    match status {
        "published" if !paid => true,
        "published" | "archived" => has_access || editor,
        _ => editor,
    }
}

/// Enrollment states that grant access to a course's lessons.
pub fn grants_access(enrollment_status: &str) -> bool {
    matches!(enrollment_status, "active" | "completed")
}

pub fn check_slug(slug: &str) -> Option<FieldViolation> {
    let ok = (3..=80).contains(&slug.len())
        && slug.split('-').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    (!ok).then(|| {
        FieldViolation::new(
            "course.slug",
            "must be 3-80 lower-case letters, digits and single hyphens",
        )
    })
}

pub fn check_title(field: &str, title: &str) -> Option<FieldViolation> {
    let len = title.trim().chars().count();
    (len == 0 || len > 200).then(|| FieldViolation::new(field, "must be 1 to 200 characters"))
}

pub fn check_summary(summary: &str) -> Option<FieldViolation> {
    (summary.chars().count() > 2000)
        .then(|| FieldViolation::new("course.summary", "must be at most 2000 characters"))
}

pub fn check_language(language: &str) -> Option<FieldViolation> {
    (!duovarsity_common::validate::is_language_tag(language)).then(|| {
        FieldViolation::new(
            "course.language",
            "must be a BCP 47 language tag such as \"en\"",
        )
    })
}

pub fn check_tags(tags: &[String]) -> Option<FieldViolation> {
    let ok = tags.len() <= 10
        && tags.iter().all(|t| {
            (1..=32).contains(&t.len())
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    (!ok).then(|| {
        FieldViolation::new(
            "course.tags",
            "at most 10 tags of 1-32 lower-case letters, digits or hyphens",
        )
    })
}

/// A price is an ISO 4217 code (three capital letters) and a positive amount of minor units.
pub fn check_price(currency: &str, amount_minor: i64) -> Option<FieldViolation> {
    let ok =
        currency.len() == 3 && currency.chars().all(|c| c.is_ascii_uppercase()) && amount_minor > 0;
    (!ok).then(|| FieldViolation::new("course.price", "needs an ISO 4217 currency and a positive amount_minor (omit the price for a free course)"))
}

pub use duovarsity_common::validate::ensure_valid;

pub fn valid_id<'a>(field: &str, id: &'a str) -> Result<&'a str, Error> {
    uuid::Uuid::parse_str(id)
        .map(|_| id)
        .map_err(|_| Error::invalid(field, "must be a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "owner-1";

    fn claims(sub: &str, role: &str) -> Claims {
        Claims {
            sub: sub.into(),
            role: role.into(),
            tier: "free".into(),
            iss: "duovarsity".into(),
            iat: 0,
            exp: u64::MAX,
            jti: "jti".into(),
        }
    }

    /// Every kind of caller, with whether they hold an enrollment granting access.
    fn callers() -> Vec<(&'static str, Option<Claims>, bool)> {
        vec![
            ("anonymous", None, false),
            ("learner", Some(claims("learner-1", "learner")), false),
            ("enrolled", Some(claims("learner-2", "learner")), true),
            (
                "other instructor",
                Some(claims("teacher-2", "instructor")),
                false,
            ),
            ("owner", Some(claims(OWNER, "instructor")), false),
            ("admin", Some(claims("admin-1", "admin")), false),
        ]
    }

    #[test]
    fn drafts_are_seen_by_their_editors_and_archived_courses_also_by_their_learners() {
        for (who, claims, enrolled) in callers() {
            let editor = matches!(who, "owner" | "admin");
            for (status, expected) in [
                ("published", true),
                ("archived", editor || enrolled),
                ("draft", editor),
            ] {
                assert_eq!(
                    can_view(claims.as_ref(), status, OWNER, enrolled),
                    expected,
                    "{who} viewing a {status} course"
                );
            }
        }
    }

    #[test]
    fn paid_lessons_are_read_only_with_access_and_free_ones_by_anyone_while_published() {
        for (who, claims, access) in callers() {
            let editor = matches!(who, "owner" | "admin");
            for (status, paid, expected) in [
                ("published", false, true),
                ("published", true, editor || access),
                ("archived", false, editor || access),
                ("archived", true, editor || access),
                ("draft", false, editor),
                ("draft", true, editor),
            ] {
                assert_eq!(
                    can_read_lessons(claims.as_ref(), status, OWNER, paid, access),
                    expected,
                    "{who} reading a lesson of a {status} course (paid: {paid})"
                );
            }
        }
    }

    #[test]
    fn only_the_owner_or_an_admin_edits_and_cancelled_enrollments_grant_nothing() {
        for (who, claims, _) in callers() {
            let Some(claims) = claims else { continue };
            assert_eq!(
                can_edit(&claims, OWNER),
                matches!(who, "owner" | "admin"),
                "{who}"
            );
        }
        // A learner whose id happens to be the owner's is still not an instructor.
        assert!(!can_edit(&claims(OWNER, "learner"), OWNER));
        // A refunded or revoked enrollment is cancelled; one waiting for payment is
        // pending.
        for (status, grants) in [
            ("active", true),
            ("completed", true),
            ("cancelled", false),
            ("pending_payment", false),
        ] {
            assert_eq!(grants_access(status), grants, "{status}");
        }
    }

    #[test]
    fn course_input_is_checked_at_its_edges() {
        for (slug, ok) in [
            ("abc", true),
            ("intro-to-rust-2", true),
            ("ab", false),
            (&"a".repeat(81) as &str, false),
            ("Intro", false),
            ("double--hyphen", false),
            ("-leading", false),
            ("trailing-", false),
            ("spa ce", false),
        ] {
            assert_eq!(check_slug(slug).is_none(), ok, "slug {slug:?}");
        }
        assert!(check_title("course.title", "  ").is_some());
        assert!(check_title("course.title", &"é".repeat(200)).is_none());
        assert!(check_title("course.title", &"é".repeat(201)).is_some());
        assert!(check_summary(&"s".repeat(2000)).is_none());
        assert!(check_summary(&"s".repeat(2001)).is_some());
        assert!(check_tags(&vec!["rust".to_string(); 10]).is_none());
        assert!(check_tags(&vec!["rust".to_string(); 11]).is_some());
        assert!(check_tags(&["Rust".to_string()]).is_some());
        assert!(check_tags(&["".to_string()]).is_some());
        for (currency, amount, ok) in [
            ("USD", 1, true),
            ("INR", 49_900, true),
            ("usd", 100, false),
            ("US", 100, false),
            ("EUR", 0, false),
            ("EUR", -5, false),
        ] {
            assert_eq!(
                check_price(currency, amount).is_none(),
                ok,
                "{currency} {amount}"
            );
        }
        assert!(valid_id("course_id", "0190f8c4-6f1e-7a38-9d3a-1c2b3d4e5f60").is_ok());
        assert!(valid_id("course_id", "not-a-uuid").is_err());
    }
}
