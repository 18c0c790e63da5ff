//! A platform killed with SIGKILL in the middle of learners' traffic loses no event and
//! applies none twice once it is started again.

use super::*;

/// One call that may fail because the platform was killed: the JSON answer of a success.
async fn attempt(request: reqwest::RequestBuilder) -> Option<serde_json::Value> {
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// What one learner's client does: sign up, enroll in every course, finish each lesson in
/// two progress writes. Stops at the first failure (the platform was killed).
async fn learn(api: &duovarsity_testkit::Api, email: &str, courses: &[(String, String)]) {
    use duovarsity_testkit::TEST_PASSWORD;
    let account =
        serde_json::json!({"email": email, "password": TEST_PASSWORD, "displayName": email});
    let register = api.client.post(api.url("/v1/auth/register")).json(&account);
    if attempt(register).await.is_none() {
        return;
    }
    let credentials = serde_json::json!({"email": email, "password": TEST_PASSWORD});
    let login = api
        .client
        .post(api.url("/v1/auth/login"))
        .json(&credentials);
    let Some(tokens) = attempt(login).await else {
        return;
    };
    let token = tokens["accessToken"].as_str().unwrap_or_default();
    for (course, lesson) in courses {
        let enroll = api
            .client
            .post(api.url(&format!("/v1/courses/{course}/enrollments")))
            .json(&serde_json::json!({}));
        if attempt(enroll.bearer_auth(token)).await.is_none() {
            return;
        }
        for percent in [50, 100] {
            let progress = api
                .client
                .put(api.url(&format!("/v1/lessons/{lesson}/progress")))
                .json(&serde_json::json!({ "percent": percent }));
            if attempt(progress.bearer_auth(token)).await.is_none() {
                return;
            }
        }
    }
}

/// A learner's inbox titles and how many lessons the course service stores as completed.
async fn outcome(
    api: &duovarsity_testkit::Api,
    token: &str,
    courses: &[(String, String)],
) -> (Vec<String>, usize) {
    use reqwest::Method;
    let (status, inbox) = api
        .call(
            Method::GET,
            "/v1/notifications?pageSize=100",
            Some(token),
            None,
        )
        .await;
    assert!(status.is_success(), "{inbox}");
    let titles = inbox["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_string())
        .collect();
    let mut completed = 0;
    for (course, _) in courses {
        let (status, progress) = api
            .call(
                Method::GET,
                &format!("/v1/courses/{course}/progress"),
                Some(token),
                None,
            )
            .await;
        if status.is_success() {
            completed += progress["lessons"].as_array().map_or(0, |lessons| {
                lessons.iter().filter(|l| l["completed"] == true).count()
            });
        }
    }
    (titles, completed)
}

/// The embedded bus keeps what it acknowledges: learners record progress from parallel
/// clients while the platform is killed with SIGKILL at random moments and started again.
/// Afterwards every lesson stored as completed has exactly one "Lesson completed"
/// notification, and every stored account exactly one welcome, in the inbox and as mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_sigkill_and_are_applied_once() {
    use duovarsity_testkit::{Api, TEST_ADMIN};
    const ROUNDS: usize = 3;
    const LEARNERS_PER_ROUND: usize = 10;
    let data = tempfile::tempdir().unwrap();
    let (mut child, mut base) = start_up(data.path());
    let api = Api::new(&base);
    let (_, admin) = api.sign_in(TEST_ADMIN).await;
    let mut courses = Vec::new();
    for slug in ["crash-a", "crash-b", "crash-c"] {
        let (course, lesson) = api.course_with_lesson(&admin, slug).await;
        api.publish(&admin, &course).await;
        courses.push((course, lesson));
    }
    let courses = std::sync::Arc::new(courses);
    // Kill moments from the clock, so each run kills somewhere else.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut emails = Vec::new();
    for round in 0..ROUNDS {
        if round > 0 {
            (child, base) = start_up(data.path());
        }
        let api = std::sync::Arc::new(Api::new(&base));
        let mut clients = tokio::task::JoinSet::new();
        for n in 0..LEARNERS_PER_ROUND {
            let email = format!("crash-{round}-{n}@example.com");
            emails.push(email.clone());
            let (api, courses) = (api.clone(), courses.clone());
            clients.spawn(async move { learn(&api, &email, &courses).await });
        }
        let kill_after = Duration::from_millis(500 + (seed >> (round * 8)) % 2000);
        tokio::time::sleep(kill_after).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        clients.join_all().await;
    }

    let (mut child, base) = start_up(data.path());
    let api = Api::new(&base);
    let mut stored = Vec::new();
    for email in &emails {
        let body =
            serde_json::json!({"email": email, "password": duovarsity_testkit::TEST_PASSWORD});
        let (status, tokens) = api
            .call(reqwest::Method::POST, "/v1/auth/login", None, Some(body))
            .await;
        if status.is_success() {
            stored.push((
                email.clone(),
                tokens["accessToken"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(
        !stored.is_empty(),
        "no account was stored before the first kill"
    );
    let started = Instant::now();
    let mut completions = 0;
    for (email, token) in &stored {
        loop {
            let (titles, completed) = outcome(&api, token, &courses).await;
            let count = |title: &str| titles.iter().filter(|t| *t == title).count();
            let settled =
                count("Welcome to Duovarsity") == 1 && count("Lesson completed") == completed;
            if settled {
                completions += completed;
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{email}: {completed} lessons completed, inbox {titles:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Mail follows the inbox (the mailer sends what the consumer queued).
    let welcomes = |email: &str| {
        std::fs::read_dir(data.path().join("mail"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .filter(|mail| mail.contains(email) && mail.contains("Subject: Welcome"))
            .count()
    };
    for (email, _) in &stored {
        while welcomes(email) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{email}: no welcome mail"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(welcomes(email), 1, "{email}: a welcome mail twice");
    }
    // Settled is final: a second look finds nothing applied twice.
    for (email, token) in &stored {
        let (titles, completed) = outcome(&api, token, &courses).await;
        let lessons = titles.iter().filter(|t| *t == "Lesson completed").count();
        assert_eq!(lessons, completed, "{email}: {titles:?}");
    }
    eprintln!(
        "{} accounts and {completions} completed lessons survived {ROUNDS} kills",
        stored.len()
    );
    assert!(completions > 0, "no lesson was completed before a kill");
    child.kill().unwrap();
    child.wait().unwrap();
}
