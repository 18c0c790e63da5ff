//! `duovarsity seed --demo`: a small, real-looking catalog for a fresh `duovarsity up`.
//! Four instructors, twenty published courses (some paid, some with prerequisites), each
//! with sections, lessons and published Markdown bodies. Runs once: when the demo
//! instructors exist it reports that and changes nothing.

use anyhow::Context as _;
use duovarsity_config::Config;
use duovarsity_content::ContentModule;
use duovarsity_course::CourseModule;
use duovarsity_module::ServiceModule as _;
use duovarsity_proto::course::{Course, CreateLessonRequest, LessonKind, Level, Money};
use duovarsity_proto::user::Role;
use duovarsity_user::UserModule;

use crate::open_alone;

/// The password of the demo instructor accounts (shown by the command).
pub const DEMO_PASSWORD: &str = "demo-password-2026";

/// The password of the load-test learners (`seed --learners N`), whose emails are
/// `learner-<i>@load.duovarsity.test` for i in 0..N: the load test signs in as them.
pub const LEARNER_PASSWORD: &str = "load-test-password-2026";

/// The email of load-test learner `i`.
pub fn learner_email(i: usize) -> String {
    format!("learner-{i}@load.duovarsity.test")
}

/// Creates the load-test learners 0..count that do not exist yet; returns how many were
/// created.
pub async fn learners(config: &Config, count: usize) -> anyhow::Result<usize> {
    let users: UserModule = open_alone(config).await?;
    let accounts: Vec<(String, String)> = (0..count)
        .map(|i| (learner_email(i), format!("Load Learner {i}")))
        .collect();
    let created = users
        .users()
        .create_learners(&accounts, LEARNER_PASSWORD)
        .await
        .map_err(|e| anyhow::anyhow!("creating learners: {e}"));
    users.close().await;
    created
}

const INSTRUCTORS: [(&str, &str); 4] = [
    ("ada@demo.duovarsity.dev", "Ada Okafor"),
    ("grace@demo.duovarsity.dev", "Grace Lindqvist"),
    ("linus@demo.duovarsity.dev", "Linus Oyelaran"),
    ("mei@demo.duovarsity.dev", "Mei Tanaka"),
];

/// (instructor index, slug, title, level, tags, price in cents or 0, prerequisite slug)
type Row = (
    usize,
    &'static str,
    &'static str,
    Level,
    &'static [&'static str],
    i64,
    &'static str,
);

const COURSES: [Row; 20] = [
    (
        0,
        "rust-fundamentals",
        "Rust Fundamentals",
        Level::Beginner,
        &["rust", "programming"],
        0,
        "",
    ),
    (
        0,
        "ownership-in-depth",
        "Ownership and Borrowing in Depth",
        Level::Intermediate,
        &["rust"],
        2900,
        "rust-fundamentals",
    ),
    (
        0,
        "async-rust",
        "Async Rust in Practice",
        Level::Advanced,
        &["rust", "async"],
        4900,
        "ownership-in-depth",
    ),
    (
        0,
        "rust-web-services",
        "Building Web Services in Rust",
        Level::Intermediate,
        &["rust", "web"],
        3900,
        "rust-fundamentals",
    ),
    (
        1,
        "sql-basics",
        "SQL Basics",
        Level::Beginner,
        &["databases", "sql"],
        0,
        "",
    ),
    (
        1,
        "postgres-performance",
        "PostgreSQL Performance Tuning",
        Level::Advanced,
        &["databases", "postgres"],
        5900,
        "sql-basics",
    ),
    (
        1,
        "data-modeling",
        "Data Modeling for Applications",
        Level::Intermediate,
        &["databases"],
        1900,
        "sql-basics",
    ),
    (
        1,
        "distributed-systems-101",
        "Distributed Systems 101",
        Level::Intermediate,
        &["systems"],
        0,
        "",
    ),
    (
        1,
        "event-driven-architecture",
        "Event-Driven Architecture with Kafka",
        Level::Advanced,
        &["systems", "kafka"],
        4900,
        "distributed-systems-101",
    ),
    (
        2,
        "linux-command-line",
        "The Linux Command Line",
        Level::Beginner,
        &["linux", "tools"],
        0,
        "",
    ),
    (
        2,
        "git-for-teams",
        "Git for Teams",
        Level::Beginner,
        &["git", "tools"],
        0,
        "",
    ),
    (
        2,
        "kubernetes-essentials",
        "Kubernetes Essentials",
        Level::Intermediate,
        &["kubernetes", "cloud"],
        3900,
        "linux-command-line",
    ),
    (
        2,
        "observability",
        "Observability: Logs, Metrics, Traces",
        Level::Intermediate,
        &["cloud", "operations"],
        2900,
        "",
    ),
    (
        2,
        "networking-for-developers",
        "Networking for Developers",
        Level::Beginner,
        &["networking"],
        0,
        "",
    ),
    (
        3,
        "python-for-data",
        "Python for Data Analysis",
        Level::Beginner,
        &["python", "data"],
        0,
        "",
    ),
    (
        3,
        "statistics-essentials",
        "Statistics Essentials",
        Level::Beginner,
        &["data", "math"],
        1900,
        "",
    ),
    (
        3,
        "machine-learning-intro",
        "Introduction to Machine Learning",
        Level::Intermediate,
        &["data", "ml"],
        4900,
        "python-for-data",
    ),
    (
        3,
        "llm-applications",
        "Building Applications with Language Models",
        Level::Advanced,
        &["ml", "ai"],
        5900,
        "machine-learning-intro",
    ),
    (
        3,
        "data-visualization",
        "Data Visualization that Works",
        Level::Intermediate,
        &["data", "design"],
        0,
        "python-for-data",
    ),
    (
        3,
        "technical-writing",
        "Technical Writing for Engineers",
        Level::Beginner,
        &["writing"],
        0,
        "",
    ),
];

const SECTIONS: [&str; 3] = ["Getting started", "Core ideas", "Putting it together"];

/// What seeding did.
pub struct SeedReport {
    pub courses: usize,
    pub lessons: usize,
    pub already_present: bool,
}

pub async fn demo(config: &Config) -> anyhow::Result<SeedReport> {
    let users: UserModule = open_alone(config).await?;
    let courses: CourseModule = open_alone(config).await?;
    let content: ContentModule = open_alone(config).await?;
    let result = seed(&users, &courses, &content).await;
    users.close().await;
    courses.close().await;
    content.close().await;
    result
}

async fn seed(
    users: &UserModule,
    courses: &CourseModule,
    content: &ContentModule,
) -> anyhow::Result<SeedReport> {
    let mut instructor_ids = Vec::new();
    for (email, name) in INSTRUCTORS {
        match users
            .users()
            .create_account(email, DEMO_PASSWORD, name, Role::Instructor, false)
            .await
        {
            Ok(user) => instructor_ids.push(user.id),
            Err(duovarsity_common::Error::AlreadyExists { .. }) => {
                return Ok(SeedReport {
                    courses: 0,
                    lessons: 0,
                    already_present: true,
                });
            }
            Err(error) => return Err(anyhow::anyhow!("creating {email}: {error}")),
        }
    }
    let mut ids_by_slug = std::collections::HashMap::new();
    let mut lesson_count = 0;
    for (n, (instructor, slug, title, level, tags, price, prerequisite)) in
        COURSES.iter().enumerate()
    {
        let course = Course {
            slug: slug.to_string(),
            title: title.to_string(),
            summary: summary(title, tags),
            level: *level as i32,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            language: "en".into(),
            price: (*price > 0).then(|| Money {
                currency: "USD".into(),
                amount_minor: *price,
            }),
            ..Default::default()
        };
        let sections: Vec<SectionPlan> = SECTIONS
            .iter()
            .enumerate()
            .take(2 + n % 2)
            .map(|(s, section_title)| SectionPlan {
                title: section_title.to_string(),
                lessons: (0..(2 + (n + s) % 2))
                    .map(|l| {
                        let lesson_title = format!("{section_title}: part {}", l + 1);
                        LessonPlan {
                            body: markdown(title, &lesson_title, tags),
                            title: lesson_title,
                            video: l == 1,
                            minutes: 8 + ((n + l) % 4) as i32 * 5,
                            required: !(s == 2 && l == 1),
                        }
                    })
                    .collect(),
            })
            .collect();
        let prerequisites: Vec<String> = if prerequisite.is_empty() {
            Vec::new()
        } else {
            vec![
                ids_by_slug
                    .get(prerequisite)
                    .cloned()
                    .context("prerequisites come first in the table")?,
            ]
        };
        let owner = &instructor_ids[*instructor];
        let (id, lessons) =
            publish_course(courses, content, owner, &course, &sections, &prerequisites).await?;
        lesson_count += lessons;
        ids_by_slug.insert(*slug, id);
    }
    Ok(SeedReport {
        courses: COURSES.len(),
        lessons: lesson_count,
        already_present: false,
    })
}

/// A lesson to create and publish.
pub(crate) struct LessonPlan {
    pub title: String,
    pub body: String,
    pub video: bool,
    pub minutes: i32,
    pub required: bool,
}

/// A section to create, with its lessons.
pub(crate) struct SectionPlan {
    pub title: String,
    pub lessons: Vec<LessonPlan>,
}

/// Creates `course` for `owner` with its sections and lessons, publishes every lesson's
/// body and then the course (with `prerequisites`); (course id, lessons made).
pub(crate) async fn publish_course(
    courses: &CourseModule,
    content: &ContentModule,
    owner: &str,
    course: &Course,
    sections: &[SectionPlan],
    prerequisites: &[String],
) -> anyhow::Result<(String, usize)> {
    let domain = courses.courses();
    let created = domain
        .create_course(owner, course)
        .await
        .map_err(|e| anyhow::anyhow!("course {}: {e}", course.slug))?;
    let mut made = 0;
    for plan in sections {
        let section = domain
            .add_section(&created.id, &plan.title)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let section_row = domain
            .section_row(&section.id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for lesson in &plan.lessons {
            let kind = if lesson.video {
                LessonKind::Video
            } else {
                LessonKind::Text
            };
            let made_lesson = domain
                .add_lesson(
                    &section_row,
                    &CreateLessonRequest {
                        section_id: section.id.clone(),
                        title: lesson.title.clone(),
                        kind: kind as i32,
                        estimated_minutes: lesson.minutes,
                        required: lesson.required,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let contents = content.contents();
            contents
                .save_draft(&made_lesson.id, &lesson.body, &[], owner)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            contents
                .publish(&made_lesson.id, &created.id, &lesson.title, owner)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            made += 1;
        }
    }
    let row = domain
        .course_by_id(&created.id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !prerequisites.is_empty() {
        domain
            .replace_prerequisites(&row, prerequisites)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let row = domain
        .course_by_id(&created.id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    domain
        .publish(&row)
        .await
        .map_err(|e| anyhow::anyhow!("publishing {}: {e}", course.slug))?;
    Ok((created.id, made))
}

fn summary(title: &str, tags: &[&str]) -> String {
    format!(
        "{title} takes you from first principles to confident practice, with short lessons, worked examples and exercises on {}.",
        tags.join(" and ")
    )
}

fn markdown(course: &str, lesson: &str, tags: &[&str]) -> String {
    format!(
        "# {lesson}\n\n\
         Welcome to **{course}**. In this lesson we look at one idea closely and practise it.\n\n\
         ## What you will learn\n\n\
         - Why this part of {topic} matters in real projects\n\
         - The two or three rules that cover most everyday cases\n\
         - How to spot the common mistakes before they reach production\n\n\
         ## Worked example\n\n\
         ```text\n\
         step 1: state the problem in one sentence\n\
         step 2: write the smallest example that shows it\n\
         step 3: change one thing and observe the result\n\
         ```\n\n\
         > Tip: keep notes as you go; the exercise at the end of the section builds on them.\n\n\
         ## Exercise\n\n\
         Apply the idea to a small project of your own and write down what surprised you.\n",
        topic = tags.first().copied().unwrap_or("the subject"),
    )
}
