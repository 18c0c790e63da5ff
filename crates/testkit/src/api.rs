//! A client of one gateway's REST API, with the calls tests make over and over.

use super::*;

/// A client of one gateway's REST API (in this process or another).
pub struct Api {
    base: String,
    /// The process's admin listener (`/metrics`, `/status`), when known.
    admin: Option<String>,
    pub client: reqwest::Client,
}

impl Api {
    /// A client of the gateway at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Self {
            base: base.trim_end_matches('/').to_string(),
            admin: None,
            client,
        }
    }

    /// The same client, knowing the process's admin listener at `admin`.
    pub fn with_admin(mut self, admin: &str) -> Self {
        self.admin = Some(admin.trim_end_matches('/').to_string());
        self
    }

    /// The admin listener's base URL + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self
            .admin
            .as_ref()
            .expect("this client knows no admin listener");
        format!("{admin}{path}")
    }

    /// A GET of the admin listener's `path`: the status and the parsed body.
    pub async fn admin(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self
            .client
            .get(self.admin_url(path))
            .send()
            .await
            .expect("the admin listener answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The gateway's base URL + `path`.
    pub fn url(&self, path: &str) -> String {
        assert!(!self.base.is_empty(), "this platform runs no gateway");
        format!("{}{path}", self.base)
    }

    /// The process's `/metrics` (Prometheus text), from its admin listener.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics has a body")
    }

    /// One JSON call through the gateway: the status and the parsed body (Null if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.call_with(method, path, token, &[], body).await
    }

    /// [`Self::call`] with extra request headers (`Idempotency-Key`, ...).
    pub async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Registers and signs in `email`; returns (user id, access token).
    pub async fn sign_up(&self, email: &str) -> (String, String) {
        let body =
            serde_json::json!({"email": email, "password": TEST_PASSWORD, "displayName": email});
        let (status, created) = self
            .call(reqwest::Method::POST, "/v1/auth/register", None, Some(body))
            .await;
        assert!(status.is_success(), "register {email}: {created}");
        self.sign_in(email).await
    }

    /// Puts `user_id` in `tier` (`TIER_PREMIUM`, `TIER_THROTTLED`, ...) as the bootstrap
    /// admin [`TEST_ADMIN`]; the user as it is now. Tokens issued afterwards carry it.
    pub async fn set_tier(&self, user_id: &str, tier: &str) -> serde_json::Value {
        let (_, admin) = self.sign_in(TEST_ADMIN).await;
        let (status, user) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/users/{user_id}:setTier"),
                Some(&admin),
                Some(serde_json::json!({ "tier": tier })),
            )
            .await;
        assert!(status.is_success(), "set tier {tier}: {user}");
        user
    }

    /// Signs in `email` (password [`TEST_PASSWORD`]); returns (user id, access token).
    pub async fn sign_in(&self, email: &str) -> (String, String) {
        let body = serde_json::json!({"email": email, "password": TEST_PASSWORD});
        let (status, tokens) = self
            .call(reqwest::Method::POST, "/v1/auth/login", None, Some(body))
            .await;
        assert!(status.is_success(), "login {email}: {tokens}");
        (
            tokens["user"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            tokens["accessToken"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }

    /// A draft course owned by the holder of `token`, with one section of one lesson;
    /// returns (course id, lesson id).
    pub async fn course_with_lesson(&self, token: &str, slug: &str) -> (String, String) {
        let (course_id, mut lessons) = self.course_with_lessons(token, slug, 1).await;
        (course_id, lessons.remove(0))
    }

    /// A draft course owned by the holder of `token`, with one section of `count` required
    /// text lessons (`Lesson 0`, `Lesson 1`, ...); returns (course id, lesson ids).
    pub async fn course_with_lessons(
        &self,
        token: &str,
        slug: &str,
        count: usize,
    ) -> (String, Vec<String>) {
        use reqwest::Method;
        let course = serde_json::json!({"slug": slug, "title": slug, "level": "LEVEL_BEGINNER", "language": "en"});
        let (status, course) = self
            .call(Method::POST, "/v1/courses", Some(token), Some(course))
            .await;
        assert!(status.is_success(), "create course: {course}");
        let course_id = course["id"].as_str().unwrap_or_default().to_string();
        let (status, section) = self
            .call(
                Method::POST,
                &format!("/v1/courses/{course_id}/sections"),
                Some(token),
                Some(serde_json::json!({"title": "S"})),
            )
            .await;
        assert!(status.is_success(), "create section: {section}");
        let section_id = section["id"].as_str().unwrap_or_default().to_string();
        let mut lessons = Vec::with_capacity(count);
        for n in 0..count {
            let lesson = serde_json::json!({"title": format!("Lesson {n}"), "kind": "LESSON_KIND_TEXT", "required": true});
            let (status, lesson) = self
                .call(
                    Method::POST,
                    &format!("/v1/sections/{section_id}/lessons"),
                    Some(token),
                    Some(lesson),
                )
                .await;
            assert!(status.is_success(), "create lesson: {lesson}");
            lessons.push(lesson["id"].as_str().unwrap_or_default().to_string());
        }
        (course_id, lessons)
    }

    /// A published course priced `price_minor` of `currency`, owned by the holder of
    /// `token`, whose one lesson has published content; returns (course id, lesson id).
    pub async fn paid_course_with_lesson(
        &self,
        token: &str,
        slug: &str,
        price_minor: i64,
        currency: &str,
    ) -> (String, String) {
        use reqwest::Method;
        let (course_id, lesson_id) = self.course_with_lesson(token, slug).await;
        let price =
            serde_json::json!({"price": {"currency": currency, "amountMinor": price_minor}});
        let steps = [
            (Method::PATCH, format!("/v1/courses/{course_id}"), price),
            (
                Method::PUT,
                format!("/v1/lessons/{lesson_id}/draft"),
                serde_json::json!({"markdown": format!("# {slug}\n\nWhat the price pays for.")}),
            ),
            (
                Method::POST,
                format!("/v1/lessons/{lesson_id}/content:publish"),
                serde_json::json!({}),
            ),
        ];
        for (method, path, body) in steps {
            let (status, answer) = self.call(method, &path, Some(token), Some(body)).await;
            assert!(status.is_success(), "{path}: {answer}");
        }
        self.publish(token, &course_id).await;
        (course_id, lesson_id)
    }

    /// Publishes a course as the holder of `token`, failing the test otherwise.
    pub async fn publish(&self, token: &str, course_id: &str) {
        self.post_ok(token, &format!("/v1/courses/{course_id}:publish"))
            .await;
    }

    /// Enrolls the holder of `token` in a course; returns the enrollment.
    pub async fn enroll(&self, token: &str, course_id: &str) -> serde_json::Value {
        self.post_ok(token, &format!("/v1/courses/{course_id}/enrollments"))
            .await
    }

    /// Records `percent` of a lesson as the holder of `token`
    /// (`PUT /v1/lessons/{lesson}/progress`).
    pub async fn progress(
        &self,
        token: &str,
        lesson: &str,
        percent: i32,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/lessons/{lesson}/progress"),
            Some(token),
            Some(serde_json::json!({ "percent": percent })),
        )
        .await
    }

    /// Saves a lesson's draft (`PUT /v1/lessons/{lesson}/draft`) as the holder of `token`.
    pub async fn save_draft(
        &self,
        token: &str,
        lesson: &str,
        draft: serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/lessons/{lesson}/draft"),
            Some(token),
            Some(draft),
        )
        .await
    }

    /// `GET /v1/media/{id}` as the holder of `token`, answered as it comes.
    pub async fn media(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/media/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("the gateway answers")
    }

    /// A POST of `{}` to `path` as the holder of `token` that must succeed; its answer.
    async fn post_ok(&self, token: &str, path: &str) -> serde_json::Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                path,
                Some(token),
                Some(serde_json::json!({})),
            )
            .await;
        assert!(status.is_success(), "POST {path}: {body}");
        body
    }
}
