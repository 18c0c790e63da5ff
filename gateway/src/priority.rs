//! Who is shed first when the gateway is at capacity: a caller's priority, from their
//! role and tier, and the share of a cap (an upstream's calls in flight, or the
//! governor's, [`crate::lag`]) that each priority may use.

/// Who is shed first when an upstream is overloaded: each priority may use a share of the
/// upstream's calls in flight (`DUOVARSITY_UPSTREAM_MAX_IN_FLIGHT`), so lower tiers are
/// refused while premium learners are still served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Throttled learners.
    Low,
    /// Free learners and anonymous calls.
    Free,
    Standard,
    /// Premium learners, instructors and admins.
    Premium,
}

impl Priority {
    /// The priority of a caller with `tier` (None: anonymous) and `role`.
    pub fn of(tier: Option<&str>, role: Option<&str>) -> Self {
        if matches!(role, Some("admin" | "instructor")) {
            return Self::Premium;
        }
        match tier {
            Some("premium") => Self::Premium,
            Some("standard") => Self::Standard,
            Some("throttled") => Self::Low,
            _ => Self::Free,
        }
    }

    pub(crate) fn share(self) -> f64 {
        match self {
            Self::Low => 0.5,
            Self::Free => 0.75,
            Self::Standard => 0.9,
            Self::Premium => 1.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Free => "free",
            Self::Standard => "standard",
            Self::Premium => "premium",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Upstreams;

    /// An upstream's in-flight cap sheds lower tiers first.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_upstream_sheds_lower_tiers_first() {
        let service = "duovarsity.test.v1.Test";
        let mut upstreams = Upstreams::default();
        upstreams
            .add(service, &["http://127.0.0.1:9".to_string()], None)
            .unwrap();
        upstreams.set_max_in_flight(4);
        let pool = upstreams.pool(service).unwrap();
        let calls: Vec<_> = (0..3).map(|_| pool.pick(None).unwrap()).collect();
        assert!(upstreams.admit(service, Priority::Low).is_none());
        assert!(upstreams.admit(service, Priority::Free).is_none());
        assert!(upstreams.admit(service, Priority::Standard).is_some());
        assert!(upstreams.admit(service, Priority::Premium).is_some());
        drop(calls);
        assert!(upstreams.admit(service, Priority::Low).is_some());
    }
}
