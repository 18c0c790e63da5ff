//! Events become notifications: a welcome in the inbox and as an `.eml` message, learning
//! notifications as a learner progresses, preferences respected, account mail always sent.

use std::time::{Duration, Instant};

use duovarsity_testkit::{TEST_ADMIN, TestPlatform};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Polls the inbox until it has `count` notifications (events are asynchronous).
async fn inbox(p: &TestPlatform, token: &str, count: usize) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = p
            .call(Method::GET, "/v1/notifications", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["notifications"].as_array().unwrap().len() >= count {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "inbox stayed at {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mails(p: &TestPlatform) -> Vec<String> {
    let dir = p.data_dir().join("mail");
    let mut mails: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    mails.sort();
    mails
}

async fn wait_for_mails(p: &TestPlatform, count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let found = mails(p);
        if found.len() >= count {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} mails after 5 s",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn events_become_inbox_notifications_and_mail() {
    let p = TestPlatform::start_with_admin(duovarsity::Component::All, &[]).await;
    let (_, learner) = p.sign_up("learner@example.com").await;
    let (_, other) = p.sign_up("other@example.com").await;

    // Welcome: in the inbox, and as mail to the right address.
    let body = inbox(&p, &learner, 1).await;
    assert_eq!(body["notifications"][0]["title"], "Welcome to Duovarsity");
    assert_eq!(body["notifications"][0]["category"], "CATEGORY_ACCOUNT");
    assert_eq!(body["unreadCount"], "1");
    let welcome: Vec<String> = wait_for_mails(&p, 3)
        .await
        .into_iter()
        .filter(|m| m.contains("learner@example.com"))
        .collect();
    assert_eq!(welcome.len(), 1);
    assert!(
        welcome[0].contains("Subject: Welcome to Duovarsity"),
        "{}",
        welcome[0]
    );
    assert!(welcome[0].contains("welcome to Duovarsity"));

    // Preferences: account mail stays on; learning mail can be turned off.
    let (status, _) = p
        .call(Method::PUT, "/v1/me/notification-preferences", Some(&learner), Some(json!({"channels": [{"category": "CATEGORY_ACCOUNT", "inApp": true, "email": false}]})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, prefs) = p
        .call(Method::PUT, "/v1/me/notification-preferences", Some(&learner), Some(json!({"channels": [{"category": "CATEGORY_LEARNING", "inApp": true, "email": false}]})))
        .await;
    assert_eq!(status, StatusCode::OK, "{prefs}");

    // Learning: enroll and finish a one-lesson course.
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (course_id, lesson_id) = p.course_with_lesson(&admin, "notified").await;
    p.publish(&admin, &course_id).await;
    p.enroll(&learner, &course_id).await;
    p.progress(&learner, &lesson_id, 100).await;

    let body = inbox(&p, &learner, 4).await;
    let titles: Vec<&str> = body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    for title in [
        "Enrollment confirmed",
        "Lesson completed",
        "Course completed: your certificate",
        "Welcome to Duovarsity",
    ] {
        assert!(titles.contains(&title), "{title} missing from {titles:?}");
    }
    // Learning mail is off for this learner: still only the three welcome messages. The
    // learning notifications (and any mail of theirs) were written above; a later sign-up's
    // welcome is queued after them and the mailer sends in queue order, so once it has
    // arrived nothing earlier is still on its way. No guessed pause.
    p.sign_up("marker@example.com").await;
    let sent = wait_for_mails(&p, 4).await;
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(
        sent.iter()
            .all(|mail| mail.contains("Subject: Welcome to Duovarsity")),
        "a learning mail was sent: {sent:?}"
    );

    // Read state, per user.
    let first = body["notifications"][0]["id"].as_str().unwrap().to_string();
    let (status, read) = p
        .call(
            Method::POST,
            &format!("/v1/notifications/{first}:read"),
            Some(&learner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(read["readAt"].is_string());
    assert_eq!(
        p.call(
            Method::POST,
            &format!("/v1/notifications/{first}:read"),
            Some(&other),
            Some(json!({}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (_, count) = p
        .call(
            Method::GET,
            "/v1/notifications:unreadCount",
            Some(&learner),
            None,
        )
        .await;
    assert_eq!(count["count"], "3");
    let (_, count) = p
        .call(
            Method::POST,
            "/v1/notifications:readAll",
            Some(&learner),
            Some(json!({})),
        )
        .await;
    assert_eq!(count["count"], "0");
    let (_, theirs) = p
        .call(Method::GET, "/v1/notifications", Some(&other), None)
        .await;
    assert_eq!(
        theirs["notifications"].as_array().unwrap().len(),
        1,
        "only their own welcome"
    );
    p.stop().await;
}

/// Mail through a real SMTP server (aiosmtpd, started by the test setup).
#[tokio::test]
async fn mail_goes_through_an_smtp_server() {
    let smtp = std::env::var("DUOVARSITY_TEST_SMTP_URL")
        .expect("DUOVARSITY_TEST_SMTP_URL is not set: run the tests with `make test` (scripts/test-services.sh starts aiosmtpd)");
    let maildir = std::path::PathBuf::from(std::env::var("DUOVARSITY_TEST_SMTP_MAILDIR").unwrap())
        .join("new");
    let p = TestPlatform::start_with(
        duovarsity::Component::All,
        &[("DUOVARSITY_MAIL_URL", &smtp)],
    )
    .await;
    let address = format!("smtp-{}@example.com", std::process::id());
    p.sign_up(&address).await;
    let started = Instant::now();
    let message = loop {
        let found = std::fs::read_dir(&maildir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .find(|m| m.contains(&format!("<{address}>")));
        if let Some(message) = found {
            break message;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no mail for {address} in {}",
            maildir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        message.contains("Subject: Welcome to Duovarsity"),
        "{message}"
    );
    assert!(
        message.contains("From: Duovarsity <no-reply@duovarsity.local>"),
        "{message}"
    );
    assert!(message.contains("welcome to Duovarsity"), "{message}");
    assert!(
        mails(&p).is_empty(),
        "with an SMTP URL nothing is written as .eml"
    );
    p.stop().await;
}

/// Two notification replicas on one PostgreSQL database run a mailer each over the same
/// `mail_outbox`: every message goes out exactly once (each mailer claims its rows before
/// sending), never once per replica.
#[tokio::test]
async fn two_mailers_on_one_database_send_each_message_once() {
    use duovarsity_common::db::Database;
    use duovarsity_module::ServiceModule as _;
    use duovarsity_notification::NotificationModule;
    use duovarsity_notification::mail::Mailer;

    let database = duovarsity_testkit::TempPostgres::create().await;
    let data = tempfile::tempdir().unwrap();
    let config = duovarsity_config::Config::from_sources(
        None,
        &[
            ("DUOVARSITY_DATABASE_URL", database.url.as_str()),
            ("DUOVARSITY_DATA_DIR", data.path().to_str().unwrap()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
    .unwrap();
    let db = Database::connect(&database.url, None, 8).await.unwrap();
    db.migrate(&NotificationModule::migrations()).await.unwrap();
    const MESSAGES: usize = 120;
    for n in 0..MESSAGES {
        sqlx::query(
            "INSERT INTO mail_outbox (id, recipient, recipient_name, subject, body, created_at) \
             VALUES ($1, $2, 'Reader', $3, 'Hello', 0)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(format!("reader{n}@example.com"))
        .bind(format!("Message {n}"))
        .execute(db.writer())
        .await
        .unwrap();
    }
    let a = Mailer::from_config(&config, db.clone()).unwrap();
    let b = Mailer::from_config(&config, db.clone()).unwrap();
    // Both ask for a batch at the same moment, round after round, as two replicas polling
    // one table do.
    let mut total = 0;
    loop {
        let (sent_a, sent_b) = tokio::join!(a.send_pending(), b.send_pending());
        let round = sent_a.unwrap() + sent_b.unwrap();
        if round == 0 {
            break;
        }
        total += round;
    }
    let files = std::fs::read_dir(data.path().join("mail")).unwrap().count();
    assert_eq!(total, MESSAGES, "sent, counted by the mailers");
    assert_eq!(files, MESSAGES, "sent, as files");
    db.close().await;
    database.drop_database().await;
}
