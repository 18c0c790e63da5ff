//! One contract suite for the user store, run against SQLite and against PostgreSQL.

use std::sync::Arc;

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use duovarsity_user::store::{
    self, ProfilePatch, RefreshTokenRecord, Rotation, SqlUserStore, UserRecord, UserStore,
};

fn user(n: u32, email: &str) -> UserRecord {
    UserRecord {
        id: uuid::Uuid::now_v7().to_string(),
        email: email.to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        display_name: format!("User {n}"),
        locale: "en".into(),
        time_zone: "UTC".into(),
        role: "learner".into(),
        tier: "free".into(),
        created_at: 1_700_000_000_000 + i64::from(n),
        updated_at: 1_700_000_000_000 + i64::from(n),
    }
}

fn token(hash: &str, family: &str, user_id: &str, expires_at: i64) -> RefreshTokenRecord {
    RefreshTokenRecord {
        token_hash: hash.to_string(),
        family_id: family.to_string(),
        user_id: user_id.to_string(),
        issued_at: 1,
        expires_at,
    }
}

async fn open(url: &str) -> Arc<dyn UserStore> {
    let db = Database::connect(url, None, 8).await.unwrap();
    db.migrate(&store::migrations()).await.unwrap();
    // Migrating twice is a no-op.
    db.migrate(&store::migrations()).await.unwrap();
    Arc::new(SqlUserStore::new(db))
}

async fn suite(store: Arc<dyn UserStore>) {
    accounts(store.as_ref()).await;
    pagination(store.as_ref()).await;
    refresh_families(store.as_ref()).await;
    concurrent_rotation_has_one_winner(store).await;
}

async fn accounts(store: &dyn UserStore) {
    let ada = user(1, "ada@example.com");
    store.insert_user(&ada, None).await.unwrap();
    let duplicate = user(2, "ada@example.com");
    match store.insert_user(&duplicate, None).await {
        Err(Error::AlreadyExists { reason, .. }) => assert_eq!(reason, "EMAIL_TAKEN"),
        other => panic!("expected ALREADY_EXISTS, got {other:?}"),
    }
    assert_eq!(
        store
            .user_by_email("ada@example.com")
            .await
            .unwrap()
            .unwrap(),
        ada
    );
    assert_eq!(store.user_by_id(&ada.id).await.unwrap().unwrap(), ada);
    assert!(
        store
            .user_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .user_by_id("01900000-0000-7000-8000-000000000000")
            .await
            .unwrap()
            .is_none()
    );

    let patched = store
        .update_profile(
            &ada.id,
            &ProfilePatch {
                time_zone: Some("Europe/Lisbon".into()),
                ..Default::default()
            },
            42,
            |user| {
                duovarsity_common::events::pending_event(
                    &user.id,
                    &duovarsity_proto::events::UserProfileUpdated {
                        user_id: user.id.clone(),
                        ..Default::default()
                    },
                )
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.time_zone, "Europe/Lisbon");
    assert_eq!(patched.display_name, ada.display_name);
    assert_eq!(patched.updated_at, 42);

    assert_eq!(
        store
            .set_role(&ada.id, "instructor", 43)
            .await
            .unwrap()
            .role,
        "instructor"
    );
    assert_eq!(
        store.set_tier(&ada.id, "premium", 44).await.unwrap().tier,
        "premium"
    );
    assert!(matches!(
        store
            .set_role("01900000-0000-7000-8000-000000000000", "admin", 45)
            .await,
        Err(Error::NotFound { .. })
    ));
}

async fn pagination(store: &dyn UserStore) {
    for n in 10..17 {
        store
            .insert_user(&user(n, &format!("page{n}@example.com")), None)
            .await
            .unwrap();
    }
    let all = store.list_users(None, 1000).await.unwrap();
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_users(after.as_deref(), 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|u| u.id.clone());
        pages.extend(page);
    }
    assert_eq!(pages, all, "pages visit every row once, in id order");
    let ids: Vec<&String> = all.iter().map(|u| &u.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
}

async fn refresh_families(store: &dyn UserStore) {
    let owner = user(20, "tokens@example.com");
    store.insert_user(&owner, None).await.unwrap();
    store
        .insert_refresh_token(&token("t1", "fam-a", &owner.id, 10_000))
        .await
        .unwrap();

    // A current token rotates into its successor, in the same family.
    let outcome = store
        .rotate_refresh_token("t1", token("t2", "ignored", "ignored", 10_000), 100)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Rotation::Rotated {
            user_id: owner.id.clone()
        }
    );
    let outcome = store
        .rotate_refresh_token("t2", token("t3", "", "", 10_000), 101)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Rotation::Rotated {
            user_id: owner.id.clone()
        }
    );

    // Reusing t1 revokes the family, including the current t3.
    assert_eq!(
        store
            .rotate_refresh_token("t1", token("t9", "", "", 10_000), 102)
            .await
            .unwrap(),
        Rotation::Reused
    );
    assert_eq!(
        store
            .rotate_refresh_token("t3", token("t10", "", "", 10_000), 103)
            .await
            .unwrap(),
        Rotation::Invalid
    );

    // Unknown and expired tokens are invalid; nothing is stored for them.
    assert_eq!(
        store
            .rotate_refresh_token("nope", token("t11", "", "", 10_000), 104)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    store
        .insert_refresh_token(&token("old", "fam-b", &owner.id, 50))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("old", token("t12", "", "", 10_000), 105)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    assert_eq!(
        store
            .rotate_refresh_token("t12", token("t13", "", "", 10_000), 106)
            .await
            .unwrap(),
        Rotation::Invalid
    );

    // Logout revokes a family; unknown tokens say so.
    store
        .insert_refresh_token(&token("l1", "fam-c", &owner.id, 10_000))
        .await
        .unwrap();
    assert!(store.revoke_family("l1", 107).await.unwrap());
    assert_eq!(
        store
            .rotate_refresh_token("l1", token("l2", "", "", 10_000), 108)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    assert!(!store.revoke_family("never-issued", 109).await.unwrap());
}

async fn concurrent_rotation_has_one_winner(store: Arc<dyn UserStore>) {
    let owner = user(30, "race@example.com");
    store.insert_user(&owner, None).await.unwrap();
    store
        .insert_refresh_token(&token("race", "fam-race", &owner.id, 10_000))
        .await
        .unwrap();
    let attempts = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .rotate_refresh_token(
                    "race",
                    token(&format!("race-next-{i}"), "", "", 10_000),
                    200,
                )
                .await
                .unwrap()
        })
    });
    let outcomes: Vec<Rotation> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Rotated { .. }))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
}

duovarsity_testkit::on_sqlite_and_postgres!(
    |url: String| async move { suite(open(&url).await).await }
);

mod flags {
    use duovarsity_common::Error;
    use duovarsity_common::db::Database;
    use duovarsity_common::flags::FlagContext;
    use duovarsity_common::flags::distribution::Distribution;
    use duovarsity_user::flags::FlagOwner;
    use duovarsity_user::store::flags::{Author, FlagChangeRecord, FlagStore, record_change};
    use duovarsity_user::store::migrations;
    use serde_json::json;

    fn on(on: bool) -> serde_json::Value {
        json!({"state": "ENABLED", "variants": {"on": true, "off": false},
               "defaultVariant": if on { "on" } else { "off" }})
    }

    async fn suite(url: String) {
        let db = Database::connect(&url, None, 8).await.unwrap();
        db.migrate(&migrations()).await.unwrap();
        let store = FlagStore::new(db.clone());
        let admin = Author {
            actor: "admin-1",
            source: "api",
            checksum: "",
        };

        // A write and its change row; the same definition again changes nothing.
        assert!(
            store
                .change("a", Some("{\"x\":1}"), &admin, 1_000)
                .await
                .unwrap()
        );
        assert!(
            !store
                .change("a", Some("{\"x\":1}"), &admin, 2_000)
                .await
                .unwrap()
        );
        assert!(!store.change("missing", None, &admin, 2_000).await.unwrap());
        // The version never goes backwards, even with a clock that does.
        assert!(
            store
                .change("a", Some("{\"x\":2}"), &admin, 500)
                .await
                .unwrap()
        );
        assert_eq!(store.version().await.unwrap(), 1_001);
        assert!(store.change("a", None, &admin, 3_000).await.unwrap());
        let history = store.history(Some("a"), None, 10).await.unwrap();
        let definitions: Vec<_> = history.iter().map(|c| c.definition.clone()).collect();
        assert_eq!(
            definitions,
            [
                None,
                Some("{\"x\":2}".to_string()),
                Some("{\"x\":1}".to_string())
            ]
        );
        assert_eq!(history[0].previous.as_deref(), Some("{\"x\":2}"));
        // Paging: older than the newest.
        let older = store
            .history(Some("a"), Some(&history[0].id), 10)
            .await
            .unwrap();
        assert_eq!(older.len(), 2);

        // A change recorded from an event is recorded once, however often it arrives.
        let reload = FlagChangeRecord {
            id: uuid::Uuid::now_v7().to_string(),
            key: "settings/ai-catalog".into(),
            actor: "ai-catalog@host".into(),
            source: "file".into(),
            checksum: "abc".into(),
            previous: None,
            definition: Some("{\"applied\":true}".into()),
            changed_at: 4_000,
        };
        for _ in 0..2 {
            let mut tx = db.writer().begin().await.unwrap();
            record_change(&mut tx, &reload).await.unwrap();
            tx.commit().await.unwrap();
        }
        assert_eq!(
            store
                .history(Some("settings/ai-catalog"), None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(store.history(None, None, 10).await.unwrap().len(), 4);

        // The owner: at most `max` flags; replacing one is always allowed; what it
        // publishes is what this process evaluates.
        let owner = FlagOwner::new(store.clone(), Distribution::local()).with_max_flags(2);
        owner.put("f1", &on(true), "admin-1").await.unwrap();
        owner.put("f2", &on(false), "admin-1").await.unwrap();
        match owner.put("f3", &on(true), "admin-1").await {
            Err(Error::FailedPrecondition { reason, .. }) => assert_eq!(reason, "TOO_MANY_FLAGS"),
            other => panic!("expected TOO_MANY_FLAGS, got {other:?}"),
        }
        owner.put("f2", &on(true), "admin-1").await.unwrap();
        assert!(owner.flags().enabled("f2", &FlagContext::default()));
        owner.delete("f1", "admin-1").await.unwrap();
        owner.put("f3", &on(true), "admin-1").await.unwrap();
        assert!(matches!(
            owner.delete("f1", "admin-1").await,
            Err(Error::NotFound { .. })
        ));
        db.close().await;
    }

    duovarsity_testkit::on_sqlite_and_postgres!(|url: String| async move { suite(url).await });
}
