//! The instructor scenario: a draft course with a section, a lesson and its text.

use goose::prelude::*;
use serde_json::json;

use crate::plan::plan;

use crate::requests::*;

pub(crate) async fn sign_in_instructor(user: &mut GooseUser) -> TransactionResult {
    let (email, password) = &plan().instructor;
    sign_in(user, email, password).await
}

/// A draft course with one section, one lesson and its text; left unpublished, so the
/// catalog the other scenarios read stays as it was.
pub(crate) async fn author_course(user: &mut GooseUser) -> TransactionResult {
    let slug = format!("load-{}", uuid::Uuid::now_v7().simple());
    let course = json!({"slug": slug, "title": "A load-test draft", "summary": "Written by the load test.", "level": "LEVEL_BEGINNER", "language": "en"});
    let response = call(
        user,
        GooseMethod::Post,
        "/v1/courses",
        "POST /v1/courses",
        Some(course),
    )
    .await?;
    let course_id = json_of(response).await?["id"]
        .as_str()
        .ok_or("no course id")?
        .to_string();
    let path = format!("/v1/courses/{course_id}/sections");
    let response = call(
        user,
        GooseMethod::Post,
        &path,
        "POST /v1/courses/{id}/sections",
        Some(json!({"title": "Getting started"})),
    )
    .await?;
    let section_id = json_of(response).await?["id"]
        .as_str()
        .ok_or("no section id")?
        .to_string();
    let path = format!("/v1/sections/{section_id}/lessons");
    let lesson = json!({"title": "First steps", "kind": "LESSON_KIND_TEXT", "estimatedMinutes": 10, "required": true});
    let response = call(
        user,
        GooseMethod::Post,
        &path,
        "POST /v1/sections/{id}/lessons",
        Some(lesson),
    )
    .await?;
    let lesson_id = json_of(response).await?["id"]
        .as_str()
        .ok_or("no lesson id")?
        .to_string();
    let path = format!("/v1/lessons/{lesson_id}/draft");
    let draft = json!({"markdown": "# First steps\n\nA lesson written under load.\n"});
    call(
        user,
        GooseMethod::Put,
        &path,
        "PUT /v1/lessons/{id}/draft",
        Some(draft),
    )
    .await?;
    Ok(())
}

/// An announcement to one of the instructor's published courses (the demo catalog's
/// popular free courses are theirs): the learners subscribed to its room hear it.
pub(crate) async fn announce(user: &mut GooseUser) -> TransactionResult {
    let response = call(
        user,
        GooseMethod::Get,
        "/v1/users/me",
        "GET /v1/users/me",
        None,
    )
    .await?;
    let me = json_of(response).await?;
    let id = me["id"].as_str().ok_or("no user id")?;
    let Some(course) = plan()
        .catalog
        .courses
        .iter()
        .find(|c| c.instructor_id == id && !c.paid)
    else {
        return Ok(());
    };
    let path = format!("/v1/courses/{}/announcements", course.id);
    let body = json!({"title": "This week in the course", "body": "Office hours on Thursday; bring your questions."});
    let response = call(
        user,
        GooseMethod::Post,
        &path,
        "POST /v1/courses/{id}/announcements",
        Some(body),
    )
    .await?;
    json_of(response).await?;
    plan()
        .tally
        .announcements_posted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}
