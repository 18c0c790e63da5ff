//! What search finds, in what order, and what it shows to whom: typo and prefix rules,
//! title above text, facets and filters, highlights, keyset pages, the text of paid lessons
//! for its owners only, and refusals of bad input.

use duovarsity::Component;
use duovarsity_testkit::{TEST_ADMIN, TestPlatform};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Spec, course, facet, ok, search, titles, total, until};

async fn found(p: &TestPlatform, token: Option<&str>, params: &[(&str, &str)]) -> Value {
    let (status, found) = search(p, token, params).await;
    assert_eq!(status, StatusCode::OK, "{params:?}: {found}");
    found
}

/// (kind, title) of the first hit of `q`.
async fn top(p: &TestPlatform, q: &str) -> (String, String) {
    let answer = found(p, None, &[("q", q)]).await;
    titles(&answer)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{q:?} found nothing: {answer}"))
}

async fn instructor(p: &TestPlatform, admin: &str, email: &str) -> (String, String) {
    let (id, _) = p.sign_up(email).await;
    ok(
        p,
        admin,
        Method::POST,
        &format!("/v1/users/{id}:setRole"),
        json!({"role": "ROLE_INSTRUCTOR"}),
    )
    .await;
    p.sign_in(email).await
}

/// Enrolls the holder of `token` in the paid `course` and pays in the sandbox.
async fn buy(p: &TestPlatform, token: &str, course: &str) {
    let enrollment = p.enroll(token, course).await;
    assert_eq!(enrollment["status"], "ENROLLMENT_STATUS_PENDING_PAYMENT");
    let order = ok(
        p,
        token,
        Method::POST,
        &format!("/v1/courses/{course}/checkout"),
        json!({}),
    )
    .await;
    let page = order["payWith"]["razorpay"]["checkoutUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("{order}"))
        .to_string();
    let paid = reqwest::Client::new()
        .post(format!("{page}/pay"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success(), "{}", paid.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_forgives_typos_completes_prefixes_counts_facets_and_pages() {
    let p = TestPlatform::start_with_admin(Component::All, &[]).await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (grace_id, grace) = instructor(&p, &admin, "grace@example.com").await;
    let (_, linus) = instructor(&p, &admin, "linus@example.com").await;
    course(
        &p,
        &grace,
        &Spec {
            slug: "python-beginners",
            title: "Python for Beginners",
            summary: "Learn programming from the first line.",
            level: "LEVEL_BEGINNER",
            language: "en",
            price: 0,
            lessons: &[(
                "Variables and types",
                "A variable names a value. Lists and dictionaries hold collections.",
            )],
        },
    )
    .await;
    course(
        &p,
        &grace,
        &Spec {
            slug: "machine-learning",
            title: "Advanced Machine Learning",
            summary: "Models that learn from data.",
            level: "LEVEL_ADVANCED",
            language: "en",
            price: 4900,
            lessons: &[(
                "Gradient descent",
                "Follow the slope downhill, one step at a time.",
            )],
        },
    )
    .await;
    course(
        &p,
        &linus,
        &Spec {
            slug: "data-toolkit",
            title: "Data Science Toolkit",
            summary: "Notebooks, tables and charts.",
            level: "LEVEL_INTERMEDIATE",
            language: "en",
            price: 0,
            lessons: &[(
                "Notebooks",
                "We use python notebooks to explore a table of weather data.",
            )],
        },
    )
    .await;
    course(
        &p,
        &linus,
        &Spec {
            slug: "cocina",
            title: "Cocina para principiantes",
            summary: "Recetas sencillas para cada día.",
            level: "LEVEL_BEGINNER",
            language: "es",
            price: 0,
            lessons: &[("Tortilla", "Huevos, patatas y paciencia.")],
        },
    )
    .await;
    // A draft is never found.
    let draft = json!({"slug": "zeppelin-draft", "title": "Zeppelin Flying", "level": "LEVEL_BEGINNER", "language": "en"});
    ok(&p, &grace, Method::POST, "/v1/courses", draft).await;
    // Everything published is indexed (4 courses and 4 lessons).
    until(&p, None, &[("q", "")], |f| total(f) == 8).await;
    assert_eq!(total(&found(&p, None, &[("q", "zeppelin")]).await), 0);

    // Typos: one in a word of 5 to 8 letters, two from 9 letters, none up to 4.
    let python = ("course".to_string(), "Python for Beginners".to_string());
    assert_eq!(top(&p, "pyhton ").await, python, "one transposition");
    assert_eq!(top(&p, "pythn ").await, python, "one deletion");
    assert_eq!(
        total(&found(&p, None, &[("q", "pyhtno ")]).await),
        0,
        "two typos in 6 letters"
    );
    assert_eq!(
        top(&p, "dictonaris ").await,
        ("lesson".to_string(), "Variables and types".to_string()),
        "two typos in 12 letters"
    );
    assert_eq!(
        total(&found(&p, None, &[("q", "dxctxonarxes ")]).await),
        0,
        "three typos"
    );
    assert_eq!(
        total(&found(&p, None, &[("q", "dtaa ")]).await),
        0,
        "no typo in 4 letters"
    );

    // Prefixes: the last word as it is being typed, with its typo allowance.
    assert_eq!(top(&p, "pyth").await, python);
    let ml = (
        "course".to_string(),
        "Advanced Machine Learning".to_string(),
    );
    assert_eq!(top(&p, "machine lea").await, ml);
    assert_eq!(
        top(&p, "machne lerni").await,
        ml,
        "typos in both words, the last a prefix"
    );
    // A finished word is not a prefix.
    assert_eq!(total(&found(&p, None, &[("q", "pyth ")]).await), 0);

    // A title match ranks above a match in a lesson's text; both are found.
    let python_hits = titles(&found(&p, None, &[("q", "python ")]).await);
    assert_eq!(python_hits[0], python, "{python_hits:?}");
    assert!(
        python_hits.contains(&("lesson".to_string(), "Notebooks".to_string())),
        "{python_hits:?}"
    );

    // Highlights mark the words as matched (typos too), escaped; snippets of free text.
    let hit = &found(&p, None, &[("q", "pyhton begin")]).await["hits"][0];
    assert_eq!(
        hit["titleHighlight"],
        "<mark>Python</mark> for <mark>Beginners</mark>"
    );
    let hit = &found(&p, None, &[("q", "weathr")]).await["hits"][0];
    assert_eq!(hit["kind"], "lesson");
    assert!(
        hit["snippet"]
            .as_str()
            .unwrap()
            .contains("<mark>weather</mark>"),
        "{hit}"
    );
    assert_eq!(hit["courseTitle"], "Data Science Toolkit");
    assert_eq!(hit["free"], true);

    // Facets count every match; filters narrow them.
    let all = found(&p, None, &[("q", "")]).await;
    assert_eq!(
        facet(&all, "level"),
        [("advanced", 2), ("beginner", 4), ("intermediate", 2)]
            .map(|(v, c)| (v.to_string(), c))
            .into()
    );
    assert_eq!(
        facet(&all, "price"),
        [("free", 6), ("paid", 2)]
            .map(|(v, c)| (v.to_string(), c))
            .into()
    );
    assert_eq!(
        facet(&all, "language"),
        [("en", 6), ("es", 2)]
            .map(|(v, c)| (v.to_string(), c))
            .into()
    );
    assert_eq!(facet(&all, "instructor").get(&grace_id), Some(&4));
    let spanish = found(&p, None, &[("q", ""), ("language", "es")]).await;
    assert_eq!(total(&spanish), 2);
    assert!(
        titles(&spanish)
            .iter()
            .all(|(_, t)| t == "Cocina para principiantes" || t == "Tortilla")
    );
    let paid_beginner = found(
        &p,
        None,
        &[("q", ""), ("price", "paid"), ("level", "beginner")],
    )
    .await;
    assert_eq!(total(&paid_beginner), 0);
    let graces = found(&p, None, &[("q", ""), ("instructorId", &grace_id)]).await;
    assert_eq!(total(&graces), 4);

    // Keyset pages: every document once, in one order, and a token only for its search.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let mut params = vec![("q", ""), ("pageSize", "3")];
        if !token.is_empty() {
            params.push(("pageToken", &token));
        }
        let page = found(&p, None, &params).await;
        seen.extend(page["hits"].as_array().unwrap().iter().map(|h| {
            format!(
                "{}{}",
                h["courseId"].as_str().unwrap(),
                h["lessonId"].as_str().unwrap()
            )
        }));
        token = page["nextPageToken"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if token.is_empty() {
            break;
        }
        let (status, problem) = search(&p, None, &[("q", "python"), ("pageToken", &token)]).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "another search's token: {problem}"
        );
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (8, 8), "{seen:?}");

    // Bad input is refused with the field named.
    let long = "a".repeat(201);
    let eleven = "one two three four five six seven eight nine ten eleven";
    for (params, field) in [
        (vec![("q", "x"), ("level", "expert")], "level"),
        (vec![("q", "x"), ("price", "cheap")], "price"),
        (vec![("q", "x"), ("language", "en US")], "language"),
        (vec![("q", "x"), ("instructorId", "grace")], "instructor_id"),
        (vec![("q", eleven)], "q"),
        (vec![("q", long.as_str())], "q"),
        (vec![("q", "x"), ("pageSize", "51")], "page_size"),
        (vec![("q", "x"), ("pageToken", "not-a-token")], "page_token"),
    ] {
        let (status, problem) = search(&p, None, &params).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params:?}: {problem}");
        assert!(problem.to_string().contains(field), "{params:?}: {problem}");
    }

    // The route is in the OpenAPI document, with its parameters.
    let (_, openapi) = p.call(Method::GET, "/openapi.json", None, None).await;
    let route = &openapi["paths"]["/v1/search"]["get"];
    assert!(route.is_object(), "/v1/search is documented");
    assert!(route.to_string().contains("pageToken"), "{route}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_of_a_paid_lesson_is_found_and_shown_only_to_those_who_may_read_it() {
    let p = TestPlatform::start_with_admin(Component::All, &[]).await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (_, grace) = instructor(&p, &admin, "grace@example.com").await;
    let (_, linus) = instructor(&p, &admin, "linus@example.com").await;
    let (paid, _) = course(
        &p,
        &grace,
        &Spec {
            slug: "secrets",
            title: "Cryptography Course",
            summary: "Ciphers and keys.",
            level: "LEVEL_ADVANCED",
            language: "en",
            price: 4900,
            lessons: &[("Elliptic curves", "The answer key is quaternion rotation.")],
        },
    )
    .await;
    until(&p, Some(&grace), &[("q", "quaternion")], |f| total(f) == 1).await;

    // Strangers cannot find it by its text, nor see it: no hit, no facet count.
    let (_, stranger) = p.sign_up("stranger@example.com").await;
    for token in [None, Some(stranger.as_str()), Some(linus.as_str())] {
        let none = found(&p, token, &[("q", "quaternion")]).await;
        assert_eq!(total(&none), 0, "{none}");
        assert!(facet(&none, "price").is_empty(), "{none}");
        // Found by its title, with no text shown.
        let by_title = found(&p, token, &[("q", "elliptic")]).await;
        assert_eq!(
            by_title["hits"][0]["title"], "Elliptic curves",
            "{by_title}"
        );
        assert_eq!(by_title["hits"][0]["snippet"], "", "{by_title}");
        assert_eq!(by_title["hits"][0]["free"], false);
    }
    // Its instructor and admins can.
    for token in [&grace, &admin] {
        let hit = &found(&p, Some(token), &[("q", "quaternion")]).await["hits"][0];
        assert!(
            hit["snippet"]
                .as_str()
                .unwrap()
                .contains("<mark>quaternion</mark>"),
            "{hit}"
        );
    }
    // An enrollment waiting for payment is not ownership; a paid one is.
    let (_, buyer) = p.sign_up("buyer@example.com").await;
    buy(&p, &buyer, &paid).await;
    let (owned, _) = until(&p, Some(&buyer), &[("q", "quaternion")], |f| total(f) == 1).await;
    assert!(
        owned["hits"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("<mark>quaternion</mark>"),
        "{owned}"
    );
    let (_, pending) = p.sign_up("pending@example.com").await;
    p.enroll(&pending, &paid).await;
    // (The pending enrollment's event has arrived once the buyer's later one has: wait
    // for a later event of the same learner topic to be safe.)
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        total(&found(&p, Some(&pending), &[("q", "quaternion")]).await),
        0
    );
    p.stop().await;
}
