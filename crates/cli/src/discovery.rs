//! `duovarsity discovery` commands. [`reindex`] reads the catalog from its owning services
//! over gRPC (every published course of the course service with its outline, and each
//! lesson's published text from the content service) and replaces the discovery
//! database's catalog rows with it ([`duovarsity_discovery::reindex`]); every discovery
//! replica's index follows within a poll. [`evaluate`] measures the recommender.
//!
//! Like `ai warm`, it calls the configured service URLs (`grpc_addr` in embedded mode) with
//! a short-lived admin token signed with the platform's own keys (`jwt_keys_dir`), so that
//! the text of paid lessons is read too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use duovarsity_common::auth::{KeyRing, TokenIssuer};
use duovarsity_common::enums::StoredName;
use duovarsity_config::Config;
use duovarsity_discovery::DiscoveryModule;
use duovarsity_discovery::catalog::{CourseEntry, LessonEntry};
use duovarsity_discovery::reindex::{Reindexed, Snapshot, replace};
use duovarsity_module::ServiceModule;
use duovarsity_proto::content::GetLessonContentRequest;
use duovarsity_proto::content::content_service_client::ContentServiceClient;
use duovarsity_proto::course::course_service_client::CourseServiceClient;
use duovarsity_proto::course::{Course, GetCourseRequest, Level, ListCoursesRequest};
use futures::{StreamExt as _, TryStreamExt as _};
use tonic::transport::Channel;

/// Courses per catalog page, and lesson texts read at once.
const PAGE: i32 = 100;
const CONCURRENCY: usize = 8;

/// What a reindex read and wrote, and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub written: Reindexed,
    pub took: Duration,
}

fn entry(course: Course) -> CourseEntry {
    let (price_currency, price_minor) = course
        .price
        .map_or((String::new(), 0), |p| (p.currency, p.amount_minor));
    CourseEntry {
        level: Level::try_from(course.level)
            .ok()
            .and_then(StoredName::stored_name)
            .unwrap_or_default(),
        id: course.id,
        slug: course.slug,
        title: course.title,
        summary: course.summary,
        language: course.language,
        tags: course.tags,
        price_currency,
        price_minor,
        instructor_id: course.instructor_id,
        status: "published".into(),
        prerequisite_ids: course.prerequisite_ids,
    }
}

fn authorized<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// Every published course and its published lessons, as the owners list them.
async fn snapshot(
    mut courses: CourseServiceClient<Channel>,
    content: ContentServiceClient<Channel>,
    token: &str,
) -> anyhow::Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    let mut page_token = String::new();
    loop {
        let page = courses
            .list_courses(ListCoursesRequest {
                page_size: PAGE,
                page_token: page_token.clone(),
                ..ListCoursesRequest::default()
            })
            .await
            .context("listing the catalog")?
            .into_inner();
        snapshot.courses.extend(page.courses.into_iter().map(entry));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut lessons = Vec::new();
    for course in &snapshot.courses {
        let outline = courses
            .get_course(GetCourseRequest {
                id: course.id.clone(),
            })
            .await
            .with_context(|| format!("reading course {}", course.id))?
            .into_inner();
        lessons.extend(outline.sections.into_iter().flat_map(|s| s.lessons));
    }
    snapshot.lessons = futures::stream::iter(lessons)
        .map(|lesson| {
            let mut content = content.clone();
            async move {
                let request = authorized(
                    GetLessonContentRequest {
                        lesson_id: lesson.id.clone(),
                    },
                    token,
                )?;
                match content.get_lesson_content(request).await {
                    Ok(text) => {
                        let text = text.into_inner();
                        Ok(Some(LessonEntry {
                            id: lesson.id,
                            course_id: lesson.course_id,
                            title: lesson.title,
                            markdown: text.markdown,
                            version: i64::from(text.version),
                            deleted: false,
                        }))
                    }
                    // Never published: nothing to search yet.
                    Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                    Err(status) => Err(anyhow::anyhow!(
                        "reading the text of lesson {}: {status}",
                        lesson.id
                    )),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_filter_map(|lesson| async move { Ok(lesson) })
        .try_collect()
        .await?;
    Ok(snapshot)
}

/// `duovarsity discovery evaluate`: the hold-out evaluation over the discovery database.
pub async fn evaluate(
    config: &Config,
    k: usize,
) -> anyhow::Result<duovarsity_discovery::evaluate::Evaluation> {
    anyhow::ensure!((1..=50).contains(&k), "--k must be 1 to 50");
    let discovery: DiscoveryModule = crate::open_alone(config).await?;
    let found = duovarsity_discovery::evaluate::evaluate(discovery.discovery().database(), k).await;
    ServiceModule::close(&discovery).await;
    found.map_err(|error| anyhow::anyhow!("{error}"))
}

pub async fn reindex(config: &Config) -> anyhow::Result<Report> {
    let began = Instant::now();
    let ring = KeyRing::load(&config.jwt_keys_dir(), false)
        .context("reading the platform's signing keys (DUOVARSITY_JWT_KEYS_DIR)")?;
    let token = TokenIssuer::new(Arc::new(ring), Duration::from_secs(600))
        .issue("discovery-reindex", "admin", "premium")
        .map_err(|error| anyhow::anyhow!("signing a token: {error}"))?;
    let channel = |service: &str| {
        config
            .service_channel(service, |endpoint| {
                endpoint.connect_timeout(Duration::from_secs(3))
            })
            .with_context(|| format!("the {service} service URL"))
    };
    let snapshot = snapshot(
        CourseServiceClient::new(channel("course")?),
        ContentServiceClient::new(channel("content")?),
        &token,
    )
    .await?;
    let discovery: DiscoveryModule = crate::open_alone(config).await?;
    let written = replace(discovery.discovery().database(), &snapshot).await;
    ServiceModule::close(&discovery).await;
    Ok(Report {
        written: written.map_err(|error| anyhow::anyhow!("{error}"))?,
        took: began.elapsed(),
    })
}
