//! The payment store on SQLite and PostgreSQL, one suite for both: idempotency keys, and
//! the ledger summing to zero over random captures and refunds.

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use duovarsity_common::events::outbox::Outbox;
use duovarsity_payment::ledger::{Sale, balances};
use duovarsity_payment::orders::{self, Applied, EventKind, ProviderEvent};
use duovarsity_payment::state::OrderState;
use duovarsity_payment::store;
use duovarsity_payment::store::ledger::Entry;
use duovarsity_payment::store::orders::OrderRow;
use rand::{Rng, SeedableRng};

mod idempotency;
use idempotency::idempotency_keys;

async fn open(url: &str) -> Database {
    let db = Database::connect(url, None, 16).await.unwrap();
    db.migrate(&duovarsity_payment::migrations()).await.unwrap();
    db
}

async fn suite(db: Database) {
    idempotency_keys(db.clone()).await;
    ledger(db.clone()).await;
    orders(db.clone()).await;
    provider_events_in_any_order(db).await;
}

/// Property: whatever order a provider delivers captures and refunds in, however often,
/// once every event got through (a refused one is retried, as providers retry what was
/// not acknowledged), each order holds its capture and the sum of its distinct refunds,
/// the ledger sums to zero and the provider's balance is exactly captured - fees -
/// refunds.
async fn provider_events_in_any_order(db: Database) {
    use rand::seq::SliceRandom;
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let outbox = Outbox::new(duovarsity_payment::OUTBOX_TABLE);
    let mut events = Vec::new();
    let mut expected = Vec::new();
    let mut tx = db.writer().begin().await.unwrap();
    for n in 0..25 {
        let amount = rng.gen_range(1_000..100_000);
        let mut row = order(&format!("p-{n}"), &format!("po-{n}"));
        row.amount_minor = amount;
        row.learner_id = format!("learner-p{n}");
        // A currency of its own: the other parts of the suite share the database.
        row.currency = "EUR".to_string();
        store::orders::insert(&mut tx, &row).await.unwrap();
        let fee = amount / 50;
        events.push(event(
            &format!("cap-{n}"),
            &format!("po-{n}"),
            EventKind::Captured {
                payment_id: format!("pay-{n}"),
                amount,
                fee,
            },
        ));
        let mut back = 0;
        while back < amount && rng.gen_bool(0.5) {
            let part = rng.gen_range(1..=amount - back);
            events.push(event(
                &format!("ref-{n}-{back}"),
                &format!("po-{n}"),
                refunded(&format!("rfnd-{n}-{back}"), part),
            ));
            back += part;
        }
        expected.push((row.id, amount, fee, back));
    }
    tx.commit().await.unwrap();
    // Shuffled, with a third delivered twice; then whatever was refused is redelivered
    // until nothing is.
    let mut pending: Vec<ProviderEvent> = events.clone();
    pending.extend(events.iter().filter(|_| rng.gen_bool(0.33)).cloned());
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds < 50, "events never settled: {pending:?}");
        pending.shuffle(&mut rng);
        let mut again = Vec::new();
        for event in pending {
            match orders::apply(&db, &outbox, &event).await.unwrap() {
                Applied::Refused(_) => again.push(event),
                Applied::Moved(_) | Applied::Duplicate | Applied::Stale(_) => {}
                Applied::UnknownOrder => panic!("{event:?}"),
            }
        }
        pending = again;
    }
    let (mut captured_total, mut fees, mut refunds) = (0, 0, 0);
    for (id, amount, fee, refunded) in expected {
        let row = store::orders::by_id(&db, &id).await.unwrap().unwrap();
        assert_eq!(
            (row.captured_minor, row.refunded_minor),
            (amount, refunded),
            "{id}"
        );
        let state = if refunded == amount {
            OrderState::Refunded
        } else if refunded > 0 {
            OrderState::PartiallyRefunded
        } else {
            OrderState::Captured
        };
        assert_eq!(row.state, state, "{id}");
        captured_total += amount;
        fees += fee;
        refunds += refunded;
    }
    assert_eq!(store::ledger::imbalance(&db).await.unwrap(), vec![]);
    let balances = store::ledger::balances(&db, "EUR").await.unwrap();
    assert_eq!(
        balances["provider_balance:razorpay"],
        captured_total - fees - refunds
    );
    assert_eq!(balances["provider_fees:razorpay"], fees);
}

fn order(id: &str, provider_order_id: &str) -> OrderRow {
    OrderRow {
        id: id.to_string(),
        learner_id: "learner-9".to_string(),
        course_id: format!("course-of-{id}"),
        instructor_id: "teacher-9".to_string(),
        amount_minor: 49_900,
        currency: "INR".to_string(),
        instructor_share_bps: 7_000,
        provider: "razorpay".to_string(),
        provider_order_id: Some(provider_order_id.to_string()),
        state: OrderState::Created,
        payment_id: None,
        captured_minor: 0,
        refunded_minor: 0,
        client_secret: None,
        captured_at: None,
        created_at: 1,
        updated_at: 1,
    }
}

fn event(event_id: &str, provider_order_id: &str, kind: EventKind) -> ProviderEvent {
    ProviderEvent {
        provider: "razorpay".to_string(),
        event_id: event_id.to_string(),
        provider_order_id: provider_order_id.to_string(),
        kind,
    }
}

fn captured(amount: i64) -> EventKind {
    EventKind::Captured {
        payment_id: "pay_1".to_string(),
        amount,
        fee: amount / 50,
    }
}

fn refunded(refund_id: &str, amount: i64) -> EventKind {
    EventKind::Refunded {
        refund_id: refund_id.to_string(),
        amount,
    }
}

/// Provider events, delivered twice, late and out of order, move orders only forward and
/// post to the ledger once.
async fn orders(db: Database) {
    let mut tx = db.writer().begin().await.unwrap();
    for (id, provider_order) in [("o-1", "order_A"), ("o-2", "order_B"), ("o-3", "order_C")] {
        store::orders::insert(&mut tx, &order(id, provider_order))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let outbox = Outbox::new(duovarsity_payment::OUTBOX_TABLE);
    let apply = |e: ProviderEvent| {
        let db = db.clone();
        let outbox = outbox.clone();
        async move { orders::apply(&db, &outbox, &e).await }
    };
    use OrderState::*;
    let steps = [
        (
            event("e1", "order_A", EventKind::AttemptFailed),
            Applied::Moved(Failed),
        ),
        (
            event("e2", "order_A", captured(49_900)),
            Applied::Moved(Captured),
        ),
        (event("e2", "order_A", captured(49_900)), Applied::Duplicate),
        (
            event("e3", "order_A", captured(49_900)),
            Applied::Stale(Captured),
        ),
        (
            event(
                "e4",
                "order_A",
                EventKind::Authorized {
                    payment_id: "pay_1".into(),
                },
            ),
            Applied::Stale(Captured),
        ),
        (
            event("e5", "order_A", refunded("rfnd_1", 10_000)),
            Applied::Moved(PartiallyRefunded),
        ),
        // The refund we applied, reported again under the provider's own event id.
        (
            event("e5-webhook", "order_A", refunded("rfnd_1", 10_000)),
            Applied::Duplicate,
        ),
        (
            event("e7", "order_A", refunded("rfnd_2", 39_900)),
            Applied::Moved(Refunded),
        ),
        (event("e8", "order_Z", captured(100)), Applied::UnknownOrder),
        (
            event("e9", "order_B", refunded("rfnd_3", 100)),
            Applied::Refused(Created),
        ),
    ];
    for (index, (event, expected)) in steps.into_iter().enumerate() {
        if index == 7 {
            // More than is left of the capture is refused, and changes nothing.
            let too_much = apply(self::event("e6", "order_A", refunded("rfnd_x", 50_000))).await;
            assert!(
                matches!(too_much, Err(Error::InvalidArgument(_))),
                "{too_much:?}"
            );
        }
        assert_eq!(apply(event.clone()).await.unwrap(), expected, "{event:?}");
    }
    // One payment.captured and two payment.refunded went to the outbox with the moves.
    let news: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_outbox")
        .fetch_one(db.writer())
        .await
        .unwrap();
    assert_eq!(news, 3);
    let balances = store::ledger::balances(&db, "INR").await.unwrap();
    assert_eq!(
        balances["instructor_payable:teacher-9:course-of-o-1"], 0,
        "fully refunded"
    );

    // Twenty deliveries of one capture under different event ids, at once: one applies.
    let racing = (0..20).map(|n| apply(event(&format!("race-{n}"), "order_C", captured(49_900))));
    let outcomes = futures::future::join_all(racing).await;
    let moved = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Applied::Moved(Captured))))
        .count();
    assert_eq!(moved, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(Applied::Moved(_) | Applied::Stale(_))))
    );
    let balances = store::ledger::balances(&db, "INR").await.unwrap();
    assert_eq!(
        balances["instructor_payable:teacher-9:course-of-o-3"], -34_930,
        "posted once"
    );
    assert_eq!(store::ledger::imbalance(&db).await.unwrap(), vec![]);
}

/// Property: random captures and partial refunds of several sales, recorded with some
/// applied twice, leave every currency summing to zero, balances equal to the postings'
/// sums, and instructor earnings a query over them.
async fn ledger(db: Database) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut expected = Vec::new();
    for n in 0..40 {
        let sale = Sale {
            learner: format!("learner-{}", n % 7),
            instructor: format!("teacher-{}", n % 3),
            course: format!("course-{}", n % 5),
            provider: ["razorpay", "stripe"][n % 2].to_string(),
            currency: "INR".to_string(),
            instructor_share_bps: rng.gen_range(5_000..=9_000),
        };
        let captured = rng.gen_range(100..100_000);
        let mut steps = vec![(
            "capture".to_string(),
            captured,
            sale.capture(captured, rng.gen_range(0..captured / 10))
                .unwrap(),
        )];
        let mut refunded = 0;
        while refunded < captured && rng.gen_bool(0.4) {
            let part = rng.gen_range(1..=captured - refunded);
            steps.push((
                format!("refund-{refunded}"),
                part,
                sale.refund(captured, refunded, part).unwrap(),
            ));
            refunded += part;
        }
        for (kind, amount, transaction) in steps {
            let reference = format!("order-{n}");
            let entry = Entry {
                kind: &kind,
                reference: &reference,
                order_id: &reference,
                amount,
            };
            let mut tx = db.writer().begin().await.unwrap();
            assert!(
                store::ledger::record(&mut tx, &entry, &transaction)
                    .await
                    .unwrap()
            );
            // A duplicate (a webhook delivered twice) posts nothing.
            assert!(
                !store::ledger::record(&mut tx, &entry, &transaction)
                    .await
                    .unwrap()
            );
            tx.commit().await.unwrap();
            expected.push(transaction);
        }
    }
    assert_eq!(store::ledger::imbalance(&db).await.unwrap(), vec![]);
    let stored = store::ledger::balances(&db, "INR").await.unwrap();
    let computed: std::collections::BTreeMap<String, i64> = balances(&expected)
        .into_iter()
        .map(|(account, balance)| (account.to_string(), balance))
        .collect();
    assert_eq!(stored, computed);
    let earnings = store::ledger::instructor_earnings(&db, "teacher-0", "INR")
        .await
        .unwrap();
    assert!(!earnings.is_empty());
    for (course, earned) in earnings {
        assert!(earned >= 0);
        assert_eq!(
            -computed[&format!("instructor_payable:teacher-0:{course}")],
            earned
        );
    }
}
duovarsity_testkit::on_sqlite_and_postgres!(
    |url: String| async move { suite(open(&url).await).await }
);
