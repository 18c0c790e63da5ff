//! Idempotency keys: the first claim runs, a repeat answers what it answered, another
//! request under the same key is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use duovarsity_payment::idempotency::{Claim, Idempotency, fingerprint};

pub async fn idempotency_keys(db: Database) {
    let keys = Idempotency::new(db.clone());
    let checkout = fingerprint("Checkout", b"course-1");

    // 100 concurrent requests with one key: one runs (slowly), the others wait for it and
    // get its answer.
    let ran = Arc::new(AtomicUsize::new(0));
    let requests = (0..100).map(|_| {
        let (keys, checkout, ran) = (keys.clone(), checkout.clone(), ran.clone());
        tokio::spawn(async move {
            match keys.claim("learner-1", "key-1", &checkout).await.unwrap() {
                Claim::First => {
                    ran.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    keys.complete("learner-1", "key-1", b"order-1")
                        .await
                        .unwrap();
                    b"order-1".to_vec()
                }
                Claim::Replay(answer) => answer,
            }
        })
    });
    for answer in futures::future::join_all(requests).await {
        assert_eq!(answer.unwrap(), b"order-1");
    }
    assert_eq!(ran.load(Ordering::SeqCst), 1, "exactly one request ran");

    // The same key with another request is refused; in another scope it is another key.
    let other = fingerprint("Checkout", b"course-2");
    let reused = keys.claim("learner-1", "key-1", &other).await;
    assert!(
        matches!(
            reused,
            Err(Error::FailedPrecondition {
                reason: "IDEMPOTENCY_KEY_REUSED",
                ..
            })
        ),
        "{reused:?}"
    );
    assert_eq!(
        keys.claim("learner-2", "key-1", &other).await.unwrap(),
        Claim::First
    );

    // A first request that failed without effect releases its key: the retry runs.
    assert_eq!(
        keys.claim("learner-1", "key-2", &checkout).await.unwrap(),
        Claim::First
    );
    keys.release("learner-1", "key-2").await.unwrap();
    assert_eq!(
        keys.claim("learner-1", "key-2", &checkout).await.unwrap(),
        Claim::First
    );

    // Expired keys are new keys.
    let short = Idempotency::new(db.clone()).with_ttl(Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        short.claim("learner-1", "key-1", &other).await.unwrap(),
        Claim::First
    );

    let bad = keys.claim("learner-1", "", &checkout).await;
    assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
}
