//! Recommendations: "continue" from the learner's active enrollments and the course
//! outlines (asked of the course service, cached briefly), then new courses ranked by
//! [`crate::model`] from the learner's rows and the item-to-item model; and the courses
//! related to one course, the same for every caller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use duovarsity_common::error::Error;
use duovarsity_common::grpc::Onward;
use duovarsity_proto::course::CourseOutline;
use duovarsity_proto::discovery::{CourseCard, Recommendation, Recommendations};

use crate::catalog::CourseEntry;
use crate::model::{self, Evidence, Learner, NEIGHBOURS, RECENT_COURSES, Why};
use crate::{Discovery, store};

/// "Continue" items at most.
const CONTINUE: usize = 5;
/// New courses unless asked.
const LIMIT: usize = 10;

fn limit(asked: i32) -> usize {
    match asked {
        0 => LIMIT,
        n => usize::try_from(n).unwrap_or(LIMIT),
    }
}

fn card(course: &CourseEntry) -> CourseCard {
    CourseCard {
        id: course.id.clone(),
        slug: course.slug.clone(),
        title: course.title.clone(),
        level: course.level.clone(),
        language: course.language.clone(),
        free: course.is_free(),
        instructor_id: course.instructor_id.clone(),
    }
}

/// The first lesson of `outline`, in order, that is not in `done`.
fn next_lesson<'a>(
    outline: &'a CourseOutline,
    done: &HashSet<String>,
) -> Option<(&'a str, &'a str)> {
    let mut sections: Vec<_> = outline.sections.iter().collect();
    sections.sort_by_key(|s| s.position);
    sections.into_iter().find_map(|section| {
        let mut lessons: Vec<_> = section.lessons.iter().collect();
        lessons.sort_by_key(|l| l.position);
        lessons
            .into_iter()
            .find(|l| !done.contains(&l.id))
            .map(|l| (l.id.as_str(), l.title.as_str()))
    })
}

impl Discovery {
    fn catalog(&self) -> HashMap<String, CourseEntry> {
        self.courses.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// The outline of a course as `caller` may see it, cached for a few seconds.
    async fn outline(&self, caller: &Onward, course_id: &str) -> Result<Arc<CourseOutline>, Error> {
        if let Some(outline) = self.outlines.get(course_id).await {
            return Ok(outline);
        }
        let outline = Arc::new(self.course_service.outline(caller, course_id).await?);
        self.outlines
            .insert(course_id.to_string(), outline.clone())
            .await;
        Ok(outline)
    }

    /// What `learner` could learn next.
    pub async fn recommendations(
        &self,
        caller: &Onward,
        learner: &str,
        asked: i32,
    ) -> Result<Recommendations, Error> {
        let catalog = self.catalog();
        let enrollments = store::enrollments_of(&self.db, learner).await?;
        let mut items = Vec::new();
        for enrollment in enrollments
            .iter()
            .filter(|e| e.status == "active")
            .take(CONTINUE)
        {
            let Some(course) = catalog.get(&enrollment.course_id) else {
                continue;
            };
            let outline = match self.outline(caller, &course.id).await {
                Ok(outline) => outline,
                Err(error) => {
                    tracing::warn!(%error, course = %course.id, "no outline for \"continue\"");
                    continue;
                }
            };
            let done: HashSet<String> = store::completed_lessons(&self.db, learner, &course.id)
                .await?
                .into_iter()
                .collect();
            if let Some((lesson_id, lesson_title)) = next_lesson(&outline, &done) {
                items.push(Recommendation {
                    reason: "continue".into(),
                    reason_text: format!("Continue {}: {lesson_title}", course.title),
                    course: Some(card(course)),
                    lesson_id: lesson_id.to_string(),
                    lesson_title: lesson_title.to_string(),
                    because_course_id: String::new(),
                    score: enrollment.active_at as f64,
                });
            }
        }

        let mut holding: Vec<&store::EnrollmentRow> =
            enrollments.iter().filter(|e| e.holds()).collect();
        holding.sort_by_key(|e| std::cmp::Reverse(e.enrolled_at));
        let holds: Vec<String> = holding.iter().map(|e| e.course_id.clone()).collect();
        let completed: Vec<String> = enrollments
            .iter()
            .filter(|e| e.status == "completed")
            .map(|e| e.course_id.clone())
            .collect();
        let profile = Learner {
            level: holds
                .first()
                .and_then(|id| catalog.get(id))
                .map_or_else(|| "beginner".to_string(), |c| c.level.clone()),
            has: enrollments
                .iter()
                .filter(|e| e.status != "revoked")
                .map(|e| e.course_id.clone())
                .collect(),
            holds,
        };
        let mut evidence = Evidence::default();
        for taken in profile.holds.iter().take(RECENT_COURSES) {
            evidence.taken_with.insert(
                taken.clone(),
                store::taken_with(&self.db, taken, NEIGHBOURS).await?,
            );
        }
        let done: HashSet<&String> = completed.iter().collect();
        evidence.ready = store::requiring(&self.db, &completed)
            .await?
            .into_iter()
            .filter(|(_, required)| required.iter().all(|r| done.contains(r)))
            .map(|(course, _)| course)
            .collect();
        evidence.popular = store::most_learners(&self.db, NEIGHBOURS).await?;
        let mut asked_for: Vec<String> = profile.holds.clone();
        asked_for.extend(
            evidence
                .taken_with
                .values()
                .flatten()
                .map(|(id, _)| id.clone()),
        );
        asked_for.extend(evidence.ready.iter().cloned());
        asked_for.sort();
        asked_for.dedup();
        evidence.learners = store::learners_of(&self.db, &asked_for).await?;
        evidence.learners.extend(evidence.popular.iter().cloned());

        for (id, why, score) in model::rank(&profile, &evidence, &catalog, limit(asked)) {
            let Some(course) = catalog.get(&id) else {
                continue;
            };
            let (reason, reason_text, because) = match why {
                Why::ReadyFor => (
                    "ready_for",
                    format!("You completed what {} requires", course.title),
                    String::new(),
                ),
                Why::BecauseYouTook(taken) => {
                    let title = catalog
                        .get(&taken)
                        .map(|c| c.title.as_str())
                        .unwrap_or("a course of yours");
                    (
                        "because_you_took",
                        format!("Because you took {title}"),
                        taken,
                    )
                }
                Why::PopularAtLevel(level) => (
                    "popular_at_your_level",
                    format!("Popular with {level} learners"),
                    String::new(),
                ),
            };
            items.push(Recommendation {
                reason: reason.into(),
                reason_text,
                course: Some(card(course)),
                lesson_id: String::new(),
                lesson_title: String::new(),
                because_course_id: because,
                score,
            });
        }
        Ok(Recommendations { items })
    }

    /// Courses learners of `course_id` also took (NOT_FOUND unless it is listed).
    pub async fn related(&self, course_id: &str, asked: i32) -> Result<Recommendations, Error> {
        let catalog = self.catalog();
        let subject = catalog
            .get(course_id)
            .filter(|c| c.is_listed())
            .ok_or_else(|| Error::not_found(format!("course {course_id}")))?;
        let neighbours = store::taken_with(&self.db, course_id, NEIGHBOURS).await?;
        let mut asked_for: Vec<String> = neighbours.iter().map(|(id, _)| id.clone()).collect();
        asked_for.push(course_id.to_string());
        let learners = store::learners_of(&self.db, &asked_for).await?;
        let items = model::related(course_id, &neighbours, &learners, &catalog, limit(asked))
            .into_iter()
            .filter_map(|(id, score)| {
                let course = catalog.get(&id)?;
                Some(Recommendation {
                    reason: "taken_together".into(),
                    reason_text: format!("Learners of {} also took this", subject.title),
                    course: Some(card(course)),
                    lesson_id: String::new(),
                    lesson_title: String::new(),
                    because_course_id: course_id.to_string(),
                    score,
                })
            })
            .collect();
        Ok(Recommendations { items })
    }
}
