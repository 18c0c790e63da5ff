//! Keeps one replica's index in step with the discovery database: at start it builds the
//! index from every row, then follows the rows by `changed_at`.
//!
//! Every replica reads the same database (written once, by whichever replica's consumer
//! took an event), so all of them converge on the same index. A poll asks for rows changed
//! since `OVERLAP` before the last poll began, which covers a write whose transaction
//! began before that poll and committed after it (and clock skew between replicas);
//! rows already applied at the same `changed_at` are skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use duovarsity_common::backoff::Backoff;
use duovarsity_common::cache::Cache;
use duovarsity_common::db::Database;
use duovarsity_common::error::Error;
use duovarsity_common::time::now_millis;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Changed, CourseEntry, LessonEntry};
use crate::index::{Edit, SearchIndex};
use crate::store;

/// What an answer shows of a course (related courses, cards): a change of any of it
/// drops the answers cached with its tag.
fn shown(course: &CourseEntry) -> (&str, &str, &str, &str, &str, bool, &str) {
    (
        course.status.as_str(),
        course.title.as_str(),
        course.slug.as_str(),
        course.level.as_str(),
        course.language.as_str(),
        course.is_free(),
        course.instructor_id.as_str(),
    )
}

/// How often a replica looks for changes another replica's consumer wrote.
pub const POLL: Duration = Duration::from_millis(250);
/// How far back each poll looks before the previous one began.
const OVERLAP_MS: i64 = 5_000;
/// Lessons read and indexed per step of a build.
const BUILD_PAGE: i64 = 5_000;

/// Every course as this replica's follower last applied it (recommendations read titles,
/// levels and whether a course is listed from it).
pub type Courses = Arc<RwLock<HashMap<String, CourseEntry>>>;

pub struct Follower {
    db: Database,
    index: Arc<SearchIndex>,
    shared: Courses,
    /// Answers naming a changed course (related courses at the edge) are dropped through it.
    answers: Option<Cache>,
    ready: Arc<AtomicBool>,
    changed: Arc<Notify>,
    courses: HashMap<String, CourseEntry>,
    /// Rows applied in the overlap window: id to the `changed_at` applied.
    seen: HashMap<String, i64>,
    /// When the last poll (or the build) began.
    watermark: i64,
}

/// What a build read and made.
#[derive(Debug, Clone, Copy, Default)]
pub struct Built {
    pub courses: usize,
    pub lessons: usize,
}

impl Follower {
    pub fn new(
        db: Database,
        index: Arc<SearchIndex>,
        shared: Courses,
        ready: Arc<AtomicBool>,
        changed: Arc<Notify>,
    ) -> Self {
        Self {
            db,
            index,
            shared,
            answers: None,
            ready,
            changed,
            courses: HashMap::new(),
            seen: HashMap::new(),
            watermark: 0,
        }
    }

    /// Drops the cached answers that name a course once this replica applied its change.
    pub fn invalidating(mut self, answers: Cache) -> Self {
        self.answers = Some(answers);
        self
    }

    /// Builds the index from every row of the database.
    pub async fn build(&mut self) -> Result<Built, Error> {
        let started = now_millis();
        let mut built = Built::default();
        let courses = store::all_courses(&self.db).await?;
        let listed: Vec<&CourseEntry> = courses
            .iter()
            .map(|c| &c.entry)
            .filter(|c| c.is_listed())
            .collect();
        built.courses = listed.len();
        let edits: Vec<Edit<'_>> = listed.iter().map(|c| Edit::PutCourse(c)).collect();
        self.index.stage(&edits)?;
        self.courses = courses
            .into_iter()
            .map(|c| (c.entry.id.clone(), c.entry))
            .collect();
        let mut after = String::new();
        loop {
            let page = store::lessons_after(&self.db, &after, BUILD_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.entry.id.clone();
            let edits: Vec<Edit<'_>> = page
                .iter()
                .filter_map(|lesson| self.put_lesson(&lesson.entry))
                .collect();
            built.lessons += edits.len();
            self.index.stage(&edits)?;
        }
        self.index.commit()?;
        self.share(self.courses.values());
        self.watermark = started;
        Ok(built)
    }

    /// Publishes `courses` to the shared map.
    fn share<'a>(&self, courses: impl Iterator<Item = &'a CourseEntry>) {
        if let Ok(mut shared) = self.shared.write() {
            for course in courses {
                shared.insert(course.id.clone(), course.clone());
            }
        }
    }

    /// The edit that puts `lesson` in the index, if its course is listed.
    fn put_lesson<'a>(&'a self, lesson: &'a LessonEntry) -> Option<Edit<'a>> {
        let course = self.courses.get(&lesson.course_id)?;
        (course.is_listed() && !lesson.deleted).then_some(Edit::PutLesson(lesson, course))
    }

    /// Whether `row` was applied already at this `changed_at`.
    fn is_new<T>(&self, id: &str, row: &Changed<T>) -> bool {
        self.seen.get(id) != Some(&row.changed_at)
    }

    /// Applies the rows changed since the previous poll.
    pub async fn poll(&mut self) -> Result<usize, Error> {
        let started = now_millis();
        let since = self.watermark - OVERLAP_MS;
        let courses: Vec<_> = store::courses_changed_since(&self.db, since)
            .await?
            .into_iter()
            .filter(|c| self.is_new(&c.entry.id, c))
            .collect();
        let lessons: Vec<_> = store::lessons_changed_since(&self.db, since)
            .await?
            .into_iter()
            .filter(|l| self.is_new(&l.entry.id, l))
            .collect();
        // Courses that were listed and changed what an answer shows of them (listing,
        // price, title...): cached answers naming them are dropped once applied here.
        // Other changes drop nothing, since every invalidation also voids the edge
        // cache's answers in flight.
        let shown_changed: Vec<String> = courses
            .iter()
            .filter(|c| {
                self.courses
                    .get(&c.entry.id)
                    .is_some_and(|old| old.is_listed() && shown(old) != shown(&c.entry))
            })
            .map(|c| c.entry.id.clone())
            .collect();
        // Each changed course with its live lessons (re-indexed with it: level, price and
        // the rest are facets of theirs too), or None when it left the catalog.
        let mut course_lessons = Vec::with_capacity(courses.len());
        for course in &courses {
            self.seen.insert(course.entry.id.clone(), course.changed_at);
            course_lessons.push(if course.entry.is_listed() {
                Some(store::lessons_of(&self.db, &course.entry.id).await?)
            } else {
                None
            });
            self.courses
                .insert(course.entry.id.clone(), course.entry.clone());
        }
        for lesson in &lessons {
            self.seen.insert(lesson.entry.id.clone(), lesson.changed_at);
        }
        let mut edits = Vec::new();
        for (course, lessons) in courses.iter().zip(&course_lessons) {
            match lessons {
                None => edits.push(Edit::RemoveCourse(&course.entry.id)),
                Some(lessons) => {
                    edits.push(Edit::PutCourse(&course.entry));
                    edits.extend(lessons.iter().filter_map(|l| self.put_lesson(l)));
                }
            }
        }
        for lesson in &lessons {
            edits.push(
                self.put_lesson(&lesson.entry)
                    .unwrap_or(Edit::RemoveDocument(&lesson.entry.id)),
            );
        }
        self.share(courses.iter().map(|c| &c.entry));
        let applied = courses.len() + lessons.len();
        self.index.apply(&edits)?;
        drop(edits);
        if let Some(answers) = &self.answers {
            for id in &shown_changed {
                answers.invalidate(id).await;
            }
        }
        // How long after the database took each change it became searchable here.
        let now = now_millis();
        for changed_at in courses
            .iter()
            .map(|c| c.changed_at)
            .chain(lessons.iter().map(|l| l.changed_at))
        {
            metrics::histogram!("discovery_index_delay_seconds")
                .record((now - changed_at).max(0) as f64 / 1000.0);
        }
        if applied > 0 {
            metrics::gauge!("discovery_index_documents").set(self.index.documents() as f64);
        }
        self.watermark = started;
        self.seen
            .retain(|_, changed_at| *changed_at >= started - OVERLAP_MS);
        Ok(applied)
    }

    /// Builds the index (retrying until the database answers), marks the replica ready,
    /// then follows changes until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let began = std::time::Instant::now();
            match self.build().await {
                Ok(built) => {
                    metrics::gauge!("discovery_index_build_seconds")
                        .set(began.elapsed().as_secs_f64());
                    if let Ok(bytes) = self.index.size_bytes() {
                        metrics::gauge!("discovery_index_bytes").set(bytes as f64);
                    }
                    tracing::info!(
                        courses = built.courses,
                        lessons = built.lessons,
                        millis = began.elapsed().as_millis() as u64,
                        "search index built"
                    );
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "building the search index failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_pause()) => {}
                    }
                }
            }
        }
        metrics::gauge!("discovery_index_documents").set(self.index.documents() as f64);
        self.ready.store(true, Ordering::Release);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            if let Err(error) = self.poll().await {
                tracing::warn!(%error, "following catalog changes failed; retrying");
            }
        }
    }
}
