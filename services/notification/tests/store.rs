//! The notification store on SQLite and PostgreSQL, one suite for both: what preferences
//! let through (in the inbox and by mail), per-user sequence numbers, and that one user's
//! calls never read or change another's notifications.

use duovarsity_common::db::Database;
use duovarsity_notification::store::{NotificationStore, migrations};
use sqlx::Row as _;

async fn open(url: &str) -> Database {
    let db = Database::connect(url, None, 4).await.unwrap();
    db.migrate(&migrations()).await.unwrap();
    db
}

/// One notification for `user`, committed.
async fn notify(db: &Database, store: &NotificationStore, user: &str, category: &str, title: &str) {
    let mut tx = db.writer().begin().await.unwrap();
    store
        .notify(
            &mut tx,
            user,
            category,
            title,
            "body",
            true,
            &format!("event-{title}"),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn mails_to(db: &Database, address: &str) -> Vec<String> {
    sqlx::query("SELECT subject FROM mail_outbox WHERE recipient = $1 ORDER BY id")
        .bind(address)
        .fetch_all(db.writer())
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("subject").unwrap())
        .collect()
}

async fn suite(db: Database) {
    let store = NotificationStore::new(db.clone());
    let mut tx = db.writer().begin().await.unwrap();
    store
        .save_recipient(&mut tx, "ada", "ada@example.com", "Ada")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Defaults: in the inbox and by mail.
    notify(&db, &store, "ada", "course", "welcome").await;
    // Mail off for course news: the inbox only. Inbox off for payments: mail only.
    store
        .set_preference("ada", "course", true, false)
        .await
        .unwrap();
    store
        .set_preference("ada", "payment", false, true)
        .await
        .unwrap();
    assert_eq!(
        store.preference("ada", "course").await.unwrap(),
        (true, false)
    );
    notify(&db, &store, "ada", "course", "new lesson").await;
    notify(&db, &store, "ada", "payment", "receipt").await;
    // Account mail cannot be turned off.
    store
        .set_preference("ada", "account", true, false)
        .await
        .unwrap();
    notify(&db, &store, "ada", "account", "password changed").await;
    assert_eq!(
        mails_to(&db, "ada@example.com").await,
        ["welcome", "receipt", "password changed"]
    );
    let inbox = store.list("ada", None, false, 10).await.unwrap();
    let titles: Vec<_> = inbox.iter().map(|n| n.title.as_str()).collect();
    assert_eq!(
        titles,
        ["password changed", "new lesson", "welcome"],
        "newest first"
    );

    // Sequence numbers are per user, from 1, in commit order.
    notify(&db, &store, "grace", "course", "hello grace").await;
    let seqs: Vec<_> = store
        .after("ada", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|n| n.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(store.after("grace", 0, 10).await.unwrap()[0].seq, 1);
    assert_eq!(store.after("ada", 2, 10).await.unwrap().len(), 1);

    // Paging: before a cursor, and unread only.
    let page = store
        .list("ada", Some(&inbox[0].id), false, 1)
        .await
        .unwrap();
    assert_eq!(page[0].title, "new lesson");

    // Another user can neither read nor mark Ada's notifications.
    let grace_reads = store.mark_read("grace", &inbox[0].id, 5).await.unwrap();
    assert_eq!(grace_reads, None);
    assert_eq!(store.unread_count("ada").await.unwrap(), 3);
    assert!(
        store
            .list("grace", None, false, 10)
            .await
            .unwrap()
            .iter()
            .all(|n| n.title == "hello grace")
    );

    // Reading is idempotent: the first time is kept.
    for at in [5, 9] {
        let read = store.mark_read("ada", &inbox[0].id, at).await.unwrap();
        assert_eq!(read.unwrap().read_at, Some(5), "read again at {at}");
    }
    assert_eq!(store.unread_count("ada").await.unwrap(), 2);
    let unread = store.list("ada", None, true, 10).await.unwrap();
    assert_eq!(unread.len(), 2);
    store.mark_all_read("ada", 11).await.unwrap();
    assert_eq!(store.unread_count("ada").await.unwrap(), 0);
    assert_eq!(store.unread_count("grace").await.unwrap(), 1);
}

duovarsity_testkit::on_sqlite_and_postgres!(
    |url: String| async move { suite(open(&url).await).await }
);
