//! The order state machine. Providers send events late, twice and out of order (a
//! `payment.authorized` webhook after `payment.captured`, a failure of one attempt after
//! another attempt succeeded); the order only ever moves forward:
//!
//! ```text
//! created ──► authorized ──► captured ──► partially_refunded ──► refunded
//!    │  ╲          │              ▲
//!    │   ╲─────────┼──────────────┘ (captured directly)
//!    ▼             ▼
//!  failed ──► (a later attempt: authorized or captured)
//!    │
//!    ▼
//!  expired (from created, failed or authorized: abandoned)
//! ```
//!
//! An event that is behind the order's state is [`Step::Stale`] (acknowledged, nothing
//! changes); one that makes no sense from the state (a refund of an order never paid) is
//! [`Step::Refused`].

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    Created,
    Failed,
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
    Expired,
}

/// What the provider says happened to an order's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An attempt failed (the learner may try again).
    AttemptFailed,
    Authorized,
    Captured,
    /// Part of the capture was refunded; `full` when nothing is left.
    Refunded {
        full: bool,
    },
    /// Abandoned past the payment window.
    Expired,
}

/// The outcome of applying an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The order moves to this state.
    To(OrderState),
    /// Already at or past what the event says: acknowledged, nothing changes.
    Stale,
    /// The event cannot happen from this state.
    Refused,
}

impl OrderState {
    /// Where `event` takes an order in this state.
    pub fn apply(self, event: Event) -> Step {
        use Event as E;
        use OrderState as S;
        match (self, event) {
            (S::Created | S::Failed, E::AttemptFailed) => Step::To(S::Failed),
            (S::Created | S::Failed, E::Authorized) => Step::To(S::Authorized),
            (S::Created | S::Failed | S::Authorized, E::Captured) => Step::To(S::Captured),
            (S::Created | S::Failed | S::Authorized, E::Expired) => Step::To(S::Expired),
            (S::Captured | S::PartiallyRefunded, E::Refunded { full: false }) => {
                Step::To(S::PartiallyRefunded)
            }
            (S::Captured | S::PartiallyRefunded, E::Refunded { full: true }) => {
                Step::To(S::Refunded)
            }
            // Behind the order: an attempt's failure or an authorization after a capture,
            // a capture reported again, an expiry that lost the race to a payment.
            (S::Authorized, E::AttemptFailed | E::Authorized)
            | (
                S::Captured | S::PartiallyRefunded | S::Refunded,
                E::AttemptFailed | E::Authorized | E::Captured | E::Expired,
            )
            | (S::Refunded, E::Refunded { .. }) => Step::Stale,
            (S::Expired, E::AttemptFailed | E::Authorized | E::Expired) => Step::Stale,
            // Money arriving for an expired order is not lost: it is captured (and can be
            // refunded).
            (S::Expired, E::Captured) => Step::To(S::Captured),
            (S::Created | S::Failed | S::Authorized | S::Expired, E::Refunded { .. }) => {
                Step::Refused
            }
        }
    }

    /// Whether the learner has paid for access in this state.
    pub fn grants_access(self) -> bool {
        matches!(self, Self::Captured | Self::PartiallyRefunded)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Failed => "failed",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Expired => "expired",
        }
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an order state")]
pub struct UnknownState(pub String);

impl FromStr for OrderState {
    type Err = UnknownState;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        ALL.iter()
            .copied()
            .find(|state| state.as_str() == value)
            .ok_or_else(|| UnknownState(value.to_string()))
    }
}

/// Every state, for parsing and tests.
pub const ALL: [OrderState; 7] = [
    OrderState::Created,
    OrderState::Failed,
    OrderState::Authorized,
    OrderState::Captured,
    OrderState::PartiallyRefunded,
    OrderState::Refunded,
    OrderState::Expired,
];

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [Event; 6] = [
        Event::AttemptFailed,
        Event::Authorized,
        Event::Captured,
        Event::Refunded { full: false },
        Event::Refunded { full: true },
        Event::Expired,
    ];

    /// How far along an order is; forward moves only increase it (an expired order that
    /// receives money is the one jump from a terminal state, to captured).
    fn progress(state: OrderState) -> u8 {
        match state {
            OrderState::Created => 0,
            OrderState::Failed => 1,
            OrderState::Authorized => 2,
            OrderState::Expired => 3,
            OrderState::Captured => 4,
            OrderState::PartiallyRefunded => 5,
            OrderState::Refunded => 6,
        }
    }

    #[test]
    fn no_event_moves_an_order_backwards() {
        for state in ALL {
            for event in EVENTS {
                if let Step::To(next) = state.apply(event) {
                    assert!(
                        progress(next) >= progress(state),
                        "{state} --{event:?}--> {next}"
                    );
                }
            }
        }
    }

    #[test]
    fn events_in_any_order_end_in_the_same_state() {
        // A capture, its authorization and a failed earlier attempt, in every order.
        let events = [Event::AttemptFailed, Event::Authorized, Event::Captured];
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for order in orders {
            let mut state = OrderState::Created;
            for index in order {
                if let Step::To(next) = state.apply(events[index]) {
                    state = next;
                }
            }
            assert_eq!(state, OrderState::Captured, "{order:?}");
        }
    }

    #[test]
    fn duplicates_are_stale_and_impossible_events_refused() {
        assert_eq!(OrderState::Captured.apply(Event::Captured), Step::Stale);
        assert_eq!(
            OrderState::Refunded.apply(Event::Refunded { full: true }),
            Step::Stale
        );
        assert_eq!(
            OrderState::Created.apply(Event::Refunded { full: false }),
            Step::Refused
        );
        assert_eq!(
            OrderState::Captured.apply(Event::Expired),
            Step::Stale,
            "a paid order does not expire"
        );
        assert!(OrderState::PartiallyRefunded.grants_access());
        assert!(!OrderState::Refunded.grants_access());
    }

    #[test]
    fn states_round_trip_through_their_stored_names() {
        for state in ALL {
            assert_eq!(state.as_str().parse::<OrderState>(), Ok(state));
        }
        assert!("paid".parse::<OrderState>().is_err());
    }
}
