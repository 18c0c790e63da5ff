//! `duovarsity ai warm --course <id>`: pre-generates the shared AI answers of a course's
//! lessons (hints at three levels and an explanation per lesson, for every tier), so the
//! first learners stuck on a lesson already find them in the cache.
//!
//! It talks to the running platform over gRPC (the configured course and AI-routing
//! service URLs, `grpc_addr` in embedded mode) with short-lived tokens it signs with the
//! platform's own keys (`jwt_keys_dir`), one per tier, since each tier's answers come from
//! its own models. The tokens carry the admin role, so that lessons of paid courses are
//! warmed too (learners still pass their own access check before a cached answer is
//! theirs). Their spend counts against the `ai-warm-<tier>` users' budgets.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use duovarsity_common::auth::{KeyRing, TokenIssuer};
use duovarsity_config::Config;
use duovarsity_proto::ai::ai_routing_service_client::AiRoutingServiceClient;
use duovarsity_proto::ai::{ChatCompletionRequest, Task};
use duovarsity_proto::course::GetCourseRequest;
use duovarsity_proto::course::course_service_client::CourseServiceClient;

/// What one warm-up did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WarmReport {
    pub lessons: usize,
    /// Answers generated now.
    pub generated: usize,
    /// Answers that were cached already.
    pub cached: usize,
    pub failed: usize,
}

/// The tasks warmed per lesson: (task, hint level).
const TASKS: [(&str, i32); 4] = [("hint", 1), ("hint", 2), ("hint", 3), ("explanation", 0)];

pub async fn warm(config: &Config, course: &str) -> anyhow::Result<WarmReport> {
    let ring = KeyRing::load(&config.jwt_keys_dir(), false)
        .context("reading the platform's signing keys (DUOVARSITY_JWT_KEYS_DIR)")?;
    let issuer = TokenIssuer::new(Arc::new(ring), Duration::from_secs(600));
    let channel = |service: &str| {
        config
            .service_channel(service, |endpoint| {
                endpoint.connect_timeout(Duration::from_secs(3))
            })
            .with_context(|| format!("the {service} service URL"))
    };
    let mut courses = CourseServiceClient::new(channel("course")?);
    let mut ai = AiRoutingServiceClient::new(channel("ai-routing")?);
    let outline = courses
        .get_course(GetCourseRequest {
            id: course.to_string(),
        })
        .await
        .with_context(|| format!("reading course {course}"))?
        .into_inner();
    let lessons: Vec<_> = outline
        .sections
        .into_iter()
        .flat_map(|s| s.lessons)
        .collect();
    let mut report = WarmReport {
        lessons: lessons.len(),
        ..WarmReport::default()
    };
    for tier in ["free", "standard", "premium"] {
        let token = issuer
            .issue(&format!("ai-warm-{tier}"), "admin", tier)
            .map_err(|error| anyhow::anyhow!("signing a token: {error}"))?;
        for lesson in &lessons {
            for (task, level) in TASKS {
                let mut request = tonic::Request::new(ChatCompletionRequest {
                    model: task.to_string(),
                    // No messages: the router builds the shared prompt from the task and
                    // the lesson, which is what learners asking without words of their
                    // own are answered from.
                    messages: Vec::new(),
                    task: Some(Task {
                        kind: task.to_string(),
                        lesson_id: lesson.id.clone(),
                        exercise_id: String::new(),
                        hint_level: level,
                    }),
                    ..ChatCompletionRequest::default()
                });
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse()?);
                match ai.complete(request).await {
                    Ok(answer) if answer.get_ref().cached => report.cached += 1,
                    Ok(_) => report.generated += 1,
                    Err(status) => {
                        tracing::warn!(lesson = %lesson.id, task, %status, "warming failed");
                        report.failed += 1;
                    }
                }
            }
        }
    }
    Ok(report)
}
