//! The double-entry ledger. Every movement of money is a [`Transaction`] of postings
//! (debits positive, credits negative, integer minor units of one currency) whose amounts
//! sum to zero; a transaction that would not balance cannot be built. So the sum over
//! every account of the ledger is zero at all times, and any balance (what an instructor
//! has earned on a course, what the provider holds, the fees paid) is a sum of postings.
//!
//! A capture of `amount` with a provider `fee`:
//!
//! | account | posting |
//! |---|---|
//! | learner receivable | +amount, then -amount (the learner owed it and paid it) |
//! | provider balance | +(amount - fee) |
//! | provider fees | +fee |
//! | instructor payable | -(amount × share) |
//! | platform revenue | -(amount - instructor part) |
//!
//! A refund of `refund` reverses the sale in proportion (the provider keeps its fee):
//! provider balance -refund, instructor payable and platform revenue debited by their
//! parts of it. Rounding is in the platform's favour on the way in and exact on the way
//! back: over a sequence of refunds, the instructor part reversed is computed from the
//! running total, so a fully refunded sale leaves both parts at exactly zero.

use std::collections::BTreeMap;
use std::fmt;

/// An account of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    /// What a learner owes for an order.
    LearnerReceivable { learner: String },
    /// Money held for the platform by a payment provider.
    ProviderBalance { provider: String },
    /// Fees a payment provider charged.
    ProviderFees { provider: String },
    /// What the platform owes an instructor for a course.
    InstructorPayable { instructor: String, course: String },
    /// The platform's share of sales.
    PlatformRevenue,
}

impl fmt::Display for Account {
    /// A stable name, as stored: `learner_receivable:<id>`, `provider_balance:<name>`,
    /// `provider_fees:<name>`, `instructor_payable:<id>:<course>`, `platform_revenue`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LearnerReceivable { learner } => write!(f, "learner_receivable:{learner}"),
            Self::ProviderBalance { provider } => write!(f, "provider_balance:{provider}"),
            Self::ProviderFees { provider } => write!(f, "provider_fees:{provider}"),
            Self::InstructorPayable { instructor, course } => {
                write!(f, "instructor_payable:{instructor}:{course}")
            }
            Self::PlatformRevenue => write!(f, "platform_revenue"),
        }
    }
}

/// One line of a transaction: a debit (positive) or credit (negative) of minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: Account,
    pub amount: i64,
}

/// Postings of one currency that sum to zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    currency: String,
    postings: Vec<Posting>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("the postings sum to {0}, not zero")]
    Unbalanced(i128),
    #[error("a transaction needs postings")]
    Empty,
    #[error("{0:?} is not an ISO 4217 currency code")]
    Currency(String),
    #[error("{what} must be {rule}, not {value}")]
    Amount {
        what: &'static str,
        rule: &'static str,
        value: i64,
    },
}

impl Transaction {
    /// Refuses postings that do not sum to zero (zero postings are dropped).
    pub fn new(currency: &str, postings: Vec<Posting>) -> Result<Self, LedgerError> {
        let valid_currency =
            currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
        if !valid_currency {
            return Err(LedgerError::Currency(currency.to_string()));
        }
        let postings: Vec<Posting> = postings.into_iter().filter(|p| p.amount != 0).collect();
        if postings.is_empty() {
            return Err(LedgerError::Empty);
        }
        let sum: i128 = postings.iter().map(|p| i128::from(p.amount)).sum();
        if sum != 0 {
            return Err(LedgerError::Unbalanced(sum));
        }
        Ok(Self {
            currency: currency.to_string(),
            postings,
        })
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }
}

/// Who a sale involves and how it splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    pub learner: String,
    pub instructor: String,
    pub course: String,
    pub provider: String,
    pub currency: String,
    /// The instructor's share in basis points (7,000 = 70 %).
    pub instructor_share_bps: u32,
}

impl Sale {
    /// The instructor's part of `amount` (rounded down: the remainder is the platform's).
    fn instructor_part(&self, amount: i64) -> i64 {
        let part = i128::from(amount) * i128::from(self.instructor_share_bps) / 10_000;
        i64::try_from(part).unwrap_or(i64::MAX)
    }

    fn checked(&self, what: &'static str, value: i64) -> Result<(), LedgerError> {
        if value <= 0 {
            return Err(LedgerError::Amount {
                what,
                rule: "positive",
                value,
            });
        }
        if self.instructor_share_bps > 10_000 {
            return Err(LedgerError::Amount {
                what: "instructor_share_bps",
                rule: "at most 10000",
                value: i64::from(self.instructor_share_bps),
            });
        }
        Ok(())
    }

    /// The transaction of a capture of `amount`, of which the provider kept `fee`.
    pub fn capture(&self, amount: i64, fee: i64) -> Result<Transaction, LedgerError> {
        self.checked("amount", amount)?;
        if !(0..=amount).contains(&fee) {
            return Err(LedgerError::Amount {
                what: "fee",
                rule: "between 0 and the amount",
                value: fee,
            });
        }
        let instructor = self.instructor_part(amount);
        let receivable = Account::LearnerReceivable {
            learner: self.learner.clone(),
        };
        Transaction::new(
            &self.currency,
            vec![
                posting(receivable.clone(), amount),
                posting(receivable, -amount),
                posting(self.provider_balance(), amount - fee),
                posting(self.provider_fees(), fee),
                posting(self.instructor_payable(), -instructor),
                posting(Account::PlatformRevenue, -(amount - instructor)),
            ],
        )
    }

    /// The transaction of a refund of `refund`, after `refunded_before` was already
    /// refunded on a capture of `captured`.
    pub fn refund(
        &self,
        captured: i64,
        refunded_before: i64,
        refund: i64,
    ) -> Result<Transaction, LedgerError> {
        self.checked("refund", refund)?;
        let remaining = captured - refunded_before;
        if refund > remaining {
            return Err(LedgerError::Amount {
                what: "refund",
                rule: "at most what is left of the capture",
                value: refund,
            });
        }
        // The instructor part of everything refunded so far, minus what earlier refunds
        // took back: a full refund takes back exactly what the capture gave.
        let instructor = if refunded_before + refund == captured {
            self.instructor_part(captured) - self.instructor_reversed(captured, refunded_before)
        } else {
            self.instructor_reversed(captured, refunded_before + refund)
                - self.instructor_reversed(captured, refunded_before)
        };
        Transaction::new(
            &self.currency,
            vec![
                posting(self.provider_balance(), -refund),
                posting(self.instructor_payable(), instructor),
                posting(Account::PlatformRevenue, refund - instructor),
            ],
        )
    }

    /// The instructor part taken back once `refunded` of `captured` is refunded (in
    /// proportion, rounded down, never past what the capture gave).
    fn instructor_reversed(&self, captured: i64, refunded: i64) -> i64 {
        if refunded >= captured {
            return self.instructor_part(captured);
        }
        let part = i128::from(self.instructor_part(captured)) * i128::from(refunded)
            / i128::from(captured.max(1));
        i64::try_from(part).unwrap_or(i64::MAX)
    }

    fn provider_balance(&self) -> Account {
        Account::ProviderBalance {
            provider: self.provider.clone(),
        }
    }

    fn provider_fees(&self) -> Account {
        Account::ProviderFees {
            provider: self.provider.clone(),
        }
    }

    fn instructor_payable(&self) -> Account {
        Account::InstructorPayable {
            instructor: self.instructor.clone(),
            course: self.course.clone(),
        }
    }
}

fn posting(account: Account, amount: i64) -> Posting {
    Posting { account, amount }
}

/// Balances per account of a list of transactions (one currency).
pub fn balances<'a>(
    transactions: impl IntoIterator<Item = &'a Transaction>,
) -> BTreeMap<Account, i64> {
    let mut balances = BTreeMap::new();
    for transaction in transactions {
        for posting in &transaction.postings {
            *balances.entry(posting.account.clone()).or_insert(0) += posting.amount;
        }
    }
    balances
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn sale() -> Sale {
        Sale {
            learner: "learner-1".into(),
            instructor: "teacher-1".into(),
            course: "course-1".into(),
            provider: "razorpay".into(),
            currency: "INR".into(),
            instructor_share_bps: 7_000,
        }
    }

    fn payable(balances: &BTreeMap<Account, i64>) -> i64 {
        balances[&sale().instructor_payable()]
    }

    #[test]
    fn an_unbalanced_transaction_cannot_be_built() {
        let one_sided = vec![posting(Account::PlatformRevenue, -100)];
        assert_eq!(
            Transaction::new("INR", one_sided),
            Err(LedgerError::Unbalanced(-100))
        );
        assert!(matches!(
            Transaction::new("inr", vec![]),
            Err(LedgerError::Currency(_))
        ));
        assert_eq!(Transaction::new("INR", vec![]), Err(LedgerError::Empty));
    }

    #[test]
    fn a_capture_splits_the_sale_and_books_the_fee() {
        let capture = sale().capture(49_900, 1_178).unwrap();
        let balances = balances([&capture]);
        assert_eq!(payable(&balances), -34_930);
        assert_eq!(balances[&Account::PlatformRevenue], -14_970);
        assert_eq!(balances[&sale().provider_balance()], 48_722);
        assert_eq!(balances[&sale().provider_fees()], 1_178);
        assert_eq!(balances.values().sum::<i64>(), 0);
        let receivable = Account::LearnerReceivable {
            learner: "learner-1".into(),
        };
        assert_eq!(balances[&receivable], 0, "owed and paid");
        assert!(sale().capture(100, 101).is_err(), "a fee above the amount");
        assert!(sale().capture(0, 0).is_err());
    }

    #[test]
    fn a_full_refund_in_parts_leaves_nothing_owed() {
        let sale = sale();
        let mut ledger = vec![sale.capture(999, 30).unwrap()];
        let mut refunded = 0;
        for part in [1, 333, 333, 332] {
            ledger.push(sale.refund(999, refunded, part).unwrap());
            refunded += part;
        }
        let balances = balances(&ledger);
        assert_eq!(payable(&balances), 0);
        assert_eq!(balances[&Account::PlatformRevenue], 0);
        // The provider kept its fee: the platform is out of pocket by exactly that.
        assert_eq!(balances[&sale.provider_balance()], -30);
        assert!(sale.refund(999, 999, 1).is_err(), "nothing left to refund");
    }

    /// Property: whatever the sequence of captures and partial refunds, every transaction
    /// balances, the ledger sums to zero, and no instructor balance changes sign.
    #[test]
    fn random_captures_and_refunds_keep_the_ledger_at_zero() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for _ in 0..200 {
            let sale = Sale {
                instructor_share_bps: rng.gen_range(0..=10_000),
                ..sale()
            };
            let captured = rng.gen_range(1..1_000_000);
            let mut ledger = vec![sale.capture(captured, rng.gen_range(0..=captured)).unwrap()];
            let mut refunded = 0;
            while refunded < captured && rng.gen_bool(0.7) {
                let part = rng.gen_range(1..=captured - refunded);
                ledger.push(sale.refund(captured, refunded, part).unwrap());
                refunded += part;
                let balances = balances(&ledger);
                assert_eq!(balances.values().sum::<i64>(), 0);
                assert!(payable(&balances) <= 0, "{balances:?}");
                assert!(balances[&Account::PlatformRevenue] <= 0, "{balances:?}");
            }
            if refunded == captured {
                assert_eq!(payable(&balances(&ledger)), 0);
            }
        }
    }
}
