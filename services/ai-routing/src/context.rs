//! The server-side context of a learning task: the lesson it names, read from the course
//! and content services with the caller's own access, and the prompts built from it.
//!
//! Invariants:
//! - A task that names a lesson is answered only for a caller who may read that lesson:
//!   NOT_FOUND for a lesson that does not exist (or that the caller may not even see),
//!   PERMISSION_DENIED `LESSON_NOT_ACCESSIBLE` for a lesson of a course the caller has not
//!   bought. The check runs before the cache, so a cached hint of a paid lesson is no way
//!   around it.
//! - A shared prompt ([`shared_prompt`]) is made of the task's template and the lesson's
//!   published text only: nothing a caller typed reaches it except the task's own fields,
//!   all of which are in the cache key (the key hashes the prompt itself).

use std::time::Duration;

use duovarsity_common::Error;
use duovarsity_common::grpc::{Onward, never_sent};
use duovarsity_common::telemetry::spans::{GrpcClientTrace, TracedChannel};
use duovarsity_proto::ai::Task;
use duovarsity_proto::content::GetLessonContentRequest;
use duovarsity_proto::content::content_service_client::ContentServiceClient;
use duovarsity_proto::course::CheckLessonAccessRequest;
use duovarsity_proto::course::course_service_client::CourseServiceClient;

use crate::providers::Message;

const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
const CALL_DEADLINE: Duration = Duration::from_secs(3);
/// How much of a lesson's text goes into a prompt (a lesson may hold 256 KiB).
pub const MAX_LESSON_CHARS: usize = 12_000;

/// A lesson as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lesson {
    pub id: String,
    pub course_id: String,
    /// The published version (0: nothing published yet).
    pub version: i32,
    pub markdown: String,
}

/// Clients of the course service (who may read a lesson) and the content service (what
/// it says).
#[derive(Clone)]
pub struct Lessons {
    courses: TracedChannel,
    contents: TracedChannel,
}

fn unavailable(service: &str, status: &tonic::Status) -> Error {
    tracing::warn!(%status, "{service} service call failed");
    Error::Unavailable {
        message: format!("the {service} service is unavailable; retry shortly"),
        retry_after: Some(Duration::from_secs(1)),
    }
}

fn configure(endpoint: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    endpoint
        .connect_timeout(CONNECT_DEADLINE)
        .timeout(CALL_DEADLINE)
}

/// Runs `call` until it gets an answer; a call that a replica refused (never sent) is
/// tried again, twice at most.
async fn retrying<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut retries = 2;
    loop {
        match call().await {
            Err(status) if never_sent(&status) && retries > 0 => retries -= 1,
            answer => return answer,
        }
    }
}

impl Lessons {
    pub fn connect(config: &duovarsity_config::Config) -> Result<Self, tonic::transport::Error> {
        Ok(Self {
            courses: GrpcClientTrace::new(config.service_channel("course", configure)?),
            contents: GrpcClientTrace::new(config.service_channel("content", configure)?),
        })
    }

    /// The lesson `lesson_id` as `caller` may read it.
    pub async fn read(&self, caller: &Onward, lesson_id: &str) -> Result<Lesson, Error> {
        // A UUID: ai.proto declares it, and the validation layer refused any other.
        let access = retrying(|| async {
            let ask = caller.request(
                CheckLessonAccessRequest {
                    lesson_id: lesson_id.to_string(),
                },
                CALL_DEADLINE,
            )?;
            CourseServiceClient::new(self.courses.clone())
                .check_lesson_access(ask)
                .await
        })
        .await;
        let access = match access {
            Ok(access) => access.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(Error::not_found(format!("lesson {lesson_id}")));
            }
            Err(status) => return Err(unavailable("course", &status)),
        };
        if !(access.can_read || access.can_edit) {
            return Err(Error::permission_denied(
                "LESSON_NOT_ACCESSIBLE",
                "this lesson belongs to a course you have not enrolled in",
            ));
        }
        let content = retrying(|| async {
            let ask = caller.request(
                GetLessonContentRequest {
                    lesson_id: lesson_id.to_string(),
                },
                CALL_DEADLINE,
            )?;
            ContentServiceClient::new(self.contents.clone())
                .get_lesson_content(ask)
                .await
        })
        .await;
        let (version, markdown) = match content {
            Ok(content) => {
                let content = content.into_inner();
                (content.version, content.markdown)
            }
            // Nothing published yet: the task's template alone.
            Err(status) if status.code() == tonic::Code::NotFound => (0, String::new()),
            Err(status) => return Err(unavailable("content", &status)),
        };
        Ok(Lesson {
            id: lesson_id.to_string(),
            course_id: access.course_id,
            version,
            markdown: truncated(&markdown, MAX_LESSON_CHARS).to_string(),
        })
    }
}

/// At most `chars` characters of `text`.
fn truncated(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// What the task asks of the model, in the platform's words.
fn instruction(task: &Task) -> String {
    let exercise = if task.exercise_id.is_empty() {
        "the lesson's exercise".to_string()
    } else {
        format!("the exercise {:?} of the lesson", task.exercise_id)
    };
    match task.kind.as_str() {
        "hint" => format!(
            "Give a level-{} hint for {exercise}: level 1 is a gentle nudge and each level \
             says a little more. Never give the whole solution.",
            task.hint_level.max(1)
        ),
        "explanation" => format!(
            "Explain the main idea behind {exercise} in plain words, with one small example."
        ),
        "grading" => format!("Say what a correct answer to {exercise} must contain."),
        _ => "Answer the learner's questions about this lesson.".to_string(),
    }
}

fn system(task: &Task, lesson: &Lesson) -> Message {
    let text = if lesson.markdown.is_empty() {
        "(the lesson has no published text yet)"
    } else {
        lesson.markdown.as_str()
    };
    Message {
        role: "system".into(),
        content: format!(
            "You are Duovarsity's tutor. {} The lesson (version {}) follows.\n\n{text}",
            instruction(task),
            lesson.version
        ),
    }
}

/// The prompt of an answer shared by every learner of the lesson: built from the task
/// and the lesson alone.
pub fn shared_prompt(task: &Task, lesson: &Lesson) -> Vec<Message> {
    vec![
        system(task, lesson),
        Message {
            role: "user".into(),
            content: instruction(task),
        },
    ]
}

/// The caller's own messages, after the lesson as context.
pub fn private_prompt(task: &Task, lesson: &Lesson, own: Vec<Message>) -> Vec<Message> {
    std::iter::once(system(task, lesson)).chain(own).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lesson() -> Lesson {
        Lesson {
            id: "l".into(),
            course_id: "c".into(),
            version: 3,
            markdown: "Loops repeat a block.".into(),
        }
    }

    fn hint(level: i32) -> Task {
        Task {
            kind: "hint".into(),
            lesson_id: "l".into(),
            exercise_id: "ex-2".into(),
            hint_level: level,
        }
    }

    #[test]
    fn a_shared_prompt_is_the_task_and_the_lesson_only() {
        let prompt = shared_prompt(&hint(2), &lesson());
        let text: String = prompt.iter().map(|m| m.content.as_str()).collect();
        assert!(text.contains("level-2 hint"), "{text}");
        assert!(text.contains("\"ex-2\""), "{text}");
        assert!(text.contains("Loops repeat a block."), "{text}");
        assert!(text.contains("version 3"), "{text}");
        assert_ne!(prompt, shared_prompt(&hint(3), &lesson()));
    }

    #[test]
    fn a_private_prompt_keeps_the_callers_words_after_the_lesson() {
        let own = vec![Message {
            role: "user".into(),
            content: "my code: while true {}".into(),
        }];
        let prompt = private_prompt(&hint(1), &lesson(), own.clone());
        assert_eq!(prompt.len(), 2);
        assert_eq!(prompt[0].role, "system");
        assert_eq!(prompt[1], own[0]);
    }

    #[test]
    fn long_lessons_are_cut_on_a_character_boundary() {
        assert_eq!(truncated("héllo", 2), "hé");
        assert_eq!(truncated("hi", 10), "hi");
    }
}
