//! Learners complete lessons through REST; XP, streak and rank follow from the events. Every
//! analytics route is asked by the callers it is for and by those it is not.

use duovarsity::Component;
use duovarsity_common::events::catalog::{decode, topics};
use duovarsity_proto::events::{Envelope, LessonCompleted};
use duovarsity_testkit::{TEST_ADMIN, TestPlatform};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{complete, course_with_lessons, instructor, learner, until, xp_becomes};

async fn get(p: &TestPlatform, token: Option<&str>, path: &str) -> (StatusCode, Value) {
    p.call(Method::GET, path, token, None).await
}

fn names(board: &Value) -> Vec<(String, String, String)> {
    board["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["rank"].as_str().unwrap_or_default().to_string(),
                e["displayName"].as_str().unwrap_or_default().to_string(),
                e["xp"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_lessons_become_xp_streak_and_rank_and_every_route_keeps_to_its_callers() {
    let p = TestPlatform::start_with_admin(Component::All, &[]).await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (_, teacher) = instructor(&p, &admin, "Grace Teacher").await;
    let (course, lessons) = course_with_lessons(&p, &teacher, "xp-course", 4).await;
    let (ada_id, ada) = learner(&p, "Ada").await;
    let (bob_id, bob) = learner(&p, "Bob").await;
    let (_, carol) = learner(&p, "Carol").await;

    // Ada lives in Auckland: her days begin there.
    let (status, me) = p
        .call(
            Method::PATCH,
            "/v1/users/me",
            Some(&ada),
            Some(json!({"timeZone": "Pacific/Auckland"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    until(&p, &ada, "/v1/me/activity", |a| {
        a["timeZone"] == "Pacific/Auckland"
    })
    .await;

    // Her first lesson: 10 XP, a streak of one, today met on the calendar. (A group of the
    // test's own sees the events, to replay one later.)
    let mut replay = p
        .bus()
        .subscribe(topics::PROGRESS, "journey-replay")
        .await
        .unwrap();
    p.enroll(&ada, &course).await;
    complete(&p, &ada, &lessons[0]).await;
    let activity = xp_becomes(&p, &ada, 10).await;
    assert_eq!(activity["streak"]["current"], 1, "{activity}");
    assert_eq!(activity["streak"]["todayMet"], true, "{activity}");
    let calendar = activity["calendar"].as_array().unwrap();
    assert_eq!(calendar.len(), 30);
    assert_eq!(calendar[29]["date"], activity["today"]);
    assert_eq!(calendar[29]["status"], "met");
    assert_eq!(calendar[29]["lessonsCompleted"], "1");
    assert_eq!(calendar[28]["status"], "missed");
    assert_eq!(activity["weekXp"], "10");

    // Completing it again earns nothing; the next lesson does.
    complete(&p, &ada, &lessons[0]).await;
    complete(&p, &ada, &lessons[1]).await;
    let activity = xp_becomes(&p, &ada, 20).await;
    assert_eq!(activity["totalXp"], "20");

    // A replayed event (the bus delivering the first completion again) changes nothing.
    let first = loop {
        let record = tokio::time::timeout(std::time::Duration::from_secs(10), replay.next())
            .await
            .expect("the progress topic has the completions")
            .unwrap();
        let envelope = Envelope::decode(record.payload.clone()).unwrap();
        if let Ok(done) = decode::<LessonCompleted>(&envelope)
            && done.lesson_id == lessons[0]
            && done.learner_id == ada_id
        {
            assert_eq!(done.lesson_title, "Lesson 0");
            break record;
        }
    };
    p.bus()
        .publish(duovarsity_common::events::Outgoing {
            topic: first.topic.clone(),
            key: first.key.clone(),
            payload: first.payload.clone(),
            headers: first.headers.clone(),
        })
        .await
        .unwrap();
    complete(&p, &ada, &lessons[2]).await;
    xp_becomes(&p, &ada, 30).await;

    // Bob finishes the course: four lessons and the completion bonus.
    p.enroll(&bob, &course).await;
    for lesson in &lessons {
        complete(&p, &bob, lesson).await;
    }
    xp_becomes(&p, &bob, 90).await;

    // The global board: names and XP, never ids; Ada sees herself second.
    let board = until(&p, &ada, "/v1/leaderboards/global", |b| {
        b["learners"] == "2"
    })
    .await;
    assert_eq!(
        names(&board),
        [
            ("1".to_string(), "Bob".to_string(), "90".to_string()),
            ("2".to_string(), "Ada".to_string(), "30".to_string())
        ]
    );
    assert_eq!(board["me"]["rank"], "2", "{board}");
    assert_eq!(board["me"]["you"], true);
    assert_eq!(board["neighbours"].as_array().unwrap().len(), 2);
    let text = board.to_string();
    assert!(
        !text.contains(&bob_id) && !text.contains("@example.com"),
        "{text}"
    );
    // Limits are the contract's: 0 to 100, and a week must be a week.
    let (status, _) = get(&p, Some(&ada), "/v1/leaderboards/global?limit=101").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get(&p, Some(&ada), "/v1/leaderboards/global?week=2026-W60").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, old) = get(
        &p,
        Some(&ada),
        "/v1/leaderboards/global?week=2020-W01&limit=1",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(old["learners"], "0", "{old}");
    let (status, _) = get(&p, None, "/v1/leaderboards/global").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The course's board: for its learners and its instructor, not for a stranger.
    let path = format!("/v1/courses/{course}/leaderboard");
    for token in [&ada, &teacher, &admin] {
        let (status, board) = get(&p, Some(token), &path).await;
        assert_eq!(status, StatusCode::OK, "{board}");
        assert_eq!(board["entries"][0]["displayName"], "Bob");
    }
    let (status, refused) = get(&p, Some(&carol), &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["reason"], "NOT_ENROLLED");

    // Ada asks the tutor for a hint on lesson 1 (the router's ai.usage event names it).
    let hint = duovarsity_common::events::pending_event(
        &ada_id,
        &duovarsity_proto::events::AiUsage {
            request_id: uuid::Uuid::now_v7().to_string(),
            user_id: ada_id.clone(),
            model: "model-a".into(),
            task: "hint".into(),
            cost_nano_usd: 1_500,
            course_id: course.clone(),
            lesson_id: lessons[1].clone(),
            ..Default::default()
        },
    );
    p.bus().publish(hint.record).await.unwrap();

    // The instructor's dashboard.
    let path = format!("/v1/courses/{course}/analytics");
    let dashboard = until(&p, &teacher, &path, |d| {
        d["days"].as_array().is_some_and(|days| {
            let today = days.last().unwrap();
            today["completions"] == "1" && today["aiHintRequests"] == "1"
        })
    })
    .await;
    let today = dashboard["days"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(today["enrollments"], "2", "{dashboard}");
    assert_eq!(today["activeLearners"], "2", "{dashboard}");
    assert_eq!(dashboard["completionsMeasured"], "1");
    // Most started first: three lessons both learners did, then the one only Bob did.
    let funnel = dashboard["lessons"].as_array().unwrap();
    assert_eq!(funnel.len(), 4, "{dashboard}");
    let counts: Vec<(&str, &str)> = funnel
        .iter()
        .map(|l| {
            (
                l["started"].as_str().unwrap(),
                l["completed"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("2", "2"), ("2", "2"), ("2", "2"), ("1", "1")],
        "{dashboard}"
    );
    assert_eq!(funnel[3]["title"], "Lesson 3");
    let hinted: Vec<&Value> = funnel
        .iter()
        .filter(|l| l["aiHintRequests"] == "1")
        .collect();
    assert_eq!(hinted.len(), 1, "{dashboard}");
    assert_eq!(hinted[0]["title"], "Lesson 1");
    // Ada has not completed the course and was last in lesson 2; Bob has, so he stopped
    // nowhere.
    let stopped: Vec<&Value> = funnel.iter().filter(|l| l["stoppedHere"] == "1").collect();
    assert_eq!(stopped.len(), 1, "{dashboard}");
    assert_eq!(stopped[0]["title"], "Lesson 2");
    assert!(!dashboard.to_string().contains(&ada_id));
    for (token, status) in [
        (&admin, StatusCode::OK),
        (&ada, StatusCode::FORBIDDEN),
        (&carol, StatusCode::FORBIDDEN),
    ] {
        assert_eq!(get(&p, Some(token), &path).await.0, status);
    }
    let (status, refused) = get(&p, Some(&ada), &path).await;
    assert_eq!(
        (status, refused["reason"].clone()),
        (StatusCode::FORBIDDEN, json!("NOT_COURSE_INSTRUCTOR"))
    );
    let wide = format!("{path}?from=2026-01-01&to=2026-12-31");
    assert_eq!(
        get(&p, Some(&teacher), &wide).await.0,
        StatusCode::BAD_REQUEST
    );
    let backwards = format!("{path}?from=2026-12-07&to=2026-12-01");
    assert_eq!(
        get(&p, Some(&teacher), &backwards).await.0,
        StatusCode::BAD_REQUEST
    );
    let unknown = "/v1/courses/0190a000-0000-7000-8000-000000000000/analytics";
    assert_eq!(
        get(&p, Some(&teacher), unknown).await.0,
        StatusCode::NOT_FOUND
    );

    // The admin overview.
    let overview = until(&p, &admin, "/v1/admin/analytics", |o| {
        o["days"]
            .as_array()
            .is_some_and(|d| d.last().unwrap()["completions"] == "1")
    })
    .await;
    let today = overview["days"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(today["dailyActive"], "2", "{overview}");
    assert_eq!(today["monthlyActive"], "2", "{overview}");
    assert_eq!(today["enrollments"], "2", "{overview}");
    assert_eq!(today["aiRequests"], "1", "{overview}");
    assert_eq!(today["aiCostNanoUsd"], "1500", "{overview}");
    assert!(
        today["newAccounts"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            >= 5,
        "{overview}"
    );
    assert_eq!(
        get(&p, Some(&teacher), "/v1/admin/analytics").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&p, None, "/v1/admin/analytics").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Ada hides herself: gone from Bob's board, still counted for her.
    let (status, preferences) = p
        .call(
            Method::PATCH,
            "/v1/me/analytics-preferences",
            Some(&ada),
            Some(json!({"leaderboardHidden": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preferences}");
    let (_, board) = get(&p, Some(&bob), "/v1/leaderboards/global").await;
    assert_eq!(
        names(&board),
        [("1".to_string(), "Bob".to_string(), "90".to_string())]
    );
    let (_, mine) = get(&p, Some(&ada), "/v1/leaderboards/global").await;
    assert_eq!(
        (mine["me"]["rank"].clone(), mine["me"]["xp"].clone()),
        (json!("0"), json!("30")),
        "{mine}"
    );
    let (status, _) = p
        .call(
            Method::PATCH,
            "/v1/me/analytics-preferences",
            Some(&ada),
            Some(json!({"dailyGoalXp": 501})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The export: everything about Ada, nothing about Bob.
    let (status, export) = get(&p, Some(&ada), "/v1/me/activity:export").await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(export["userId"], ada_id.as_str());
    assert_eq!(export["timeZone"], "Pacific/Auckland");
    assert_eq!(export["lessons"].as_array().unwrap().len(), 3);
    assert_eq!(export["weeks"].as_array().unwrap().len(), 2, "{export}");
    assert_eq!(export["enrollments"].as_array().unwrap().len(), 1);
    assert_eq!(export["preferences"]["leaderboardHidden"], true);
    assert!(!export.to_string().contains(&bob_id), "{export}");
    assert_eq!(
        get(&p, None, "/v1/me/activity:export").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Every route wants a token; a course id must be a UUID.
    for path in [
        "/v1/me/activity".to_string(),
        "/v1/me/analytics-preferences".to_string(),
        format!("/v1/courses/{course}/leaderboard"),
        format!("/v1/courses/{course}/analytics"),
    ] {
        assert_eq!(
            get(&p, None, &path).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let (status, _) = p
        .call(
            Method::PATCH,
            "/v1/me/analytics-preferences",
            None,
            Some(json!({"dailyGoalXp": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for path in [
        "/v1/courses/not-a-uuid/leaderboard",
        "/v1/courses/not-a-uuid/analytics",
    ] {
        assert_eq!(
            get(&p, Some(&ada), path).await.0,
            StatusCode::BAD_REQUEST,
            "{path}"
        );
    }

    // The routes are in the OpenAPI document.
    let (_, openapi) = get(&p, None, "/openapi.json").await;
    for path in [
        "/v1/me/activity",
        "/v1/me/activity:export",
        "/v1/leaderboards/global",
        "/v1/courses/{course_id}/leaderboard",
        "/v1/courses/{course_id}/analytics",
        "/v1/admin/analytics",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} missing");
    }
    p.stop().await;
}
