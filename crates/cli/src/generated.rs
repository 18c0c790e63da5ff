//! `duovarsity seed --courses N`: a large generated catalog for benchmarks (the demo catalog
//! stays `seed --demo`). Course `i` is "<adjective> <topic> <kind>" (every triple once,
//! then numbered), one section of ten lessons with ~1 KB of Markdown each, a third of the
//! courses paid, levels and languages in rotation, owned by twenty instructors
//! `instructor-<n>@load.duovarsity.test` (password as the load-test learners'). Slugs are
//! `gen-<i>`: running it again adds only the courses not there yet.

use duovarsity_config::Config;
use duovarsity_content::ContentModule;
use duovarsity_course::CourseModule;
use duovarsity_module::ServiceModule as _;
use duovarsity_proto::course::{Course, Level, Money};
use duovarsity_proto::user::Role;
use duovarsity_user::UserModule;

use crate::open_alone;
use crate::seed::{LEARNER_PASSWORD, LessonPlan, SectionPlan, publish_course};

const INSTRUCTORS: usize = 20;
const LESSONS: usize = 10;
const ADJECTIVES: [&str; 12] = [
    "Practical",
    "Modern",
    "Applied",
    "Essential",
    "Advanced",
    "Hands-on",
    "Complete",
    "Gentle",
    "Professional",
    "Creative",
    "Effective",
    "Visual",
];
const TOPICS: [&str; 84] = [
    "Rust",
    "Python",
    "Kubernetes",
    "Postgres",
    "Kafka",
    "Linux",
    "React",
    "Typescript",
    "Docker",
    "Terraform",
    "Graphql",
    "Redis",
    "Statistics",
    "Algebra",
    "Calculus",
    "Photography",
    "Guitar",
    "Spanish",
    "French",
    "German",
    "Marketing",
    "Accounting",
    "Design",
    "Writing",
    "Nutrition",
    "Yoga",
    "Chess",
    "Astronomy",
    "Biology",
    "Chemistry",
    "Physics",
    "History",
    "Economics",
    "Painting",
    "Drawing",
    "Cooking",
    "Baking",
    "Gardening",
    "Robotics",
    "Electronics",
    "Networking",
    "Security",
    "Cryptography",
    "Compilers",
    "Databases",
    "Testing",
    "Devops",
    "Cloud",
    "Android",
    "Swift",
    "Kotlin",
    "Java",
    "Scala",
    "Haskell",
    "Elixir",
    "Golang",
    "Ruby",
    "Excel",
    "Finance",
    "Investing",
    "Leadership",
    "Negotiation",
    "Podcasting",
    "Animation",
    "Piano",
    "Drums",
    "Singing",
    "Meditation",
    "Psychology",
    "Philosophy",
    "Ethics",
    "Geography",
    "Geology",
    "Oceanography",
    "Climate",
    "Ecology",
    "Genetics",
    "Neuroscience",
    "Anatomy",
    "Sculpture",
    "Ceramics",
    "Calligraphy",
    "Typography",
    "Journalism",
];
const KINDS: [&str; 10] = [
    "Foundations",
    "in Depth",
    "for Beginners",
    "Workshop",
    "Bootcamp",
    "Masterclass",
    "Crash Course",
    "Patterns",
    "Recipes",
    "Projects",
];
const LESSON_TITLES: [&str; LESSONS] = [
    "Getting started",
    "Core concepts",
    "A first project",
    "Common mistakes",
    "Tools of the trade",
    "Working with real examples",
    "Checking your work",
    "Going faster",
    "Habits of experts",
    "Where to go next",
];
const WORDS: [&str; 24] = [
    "practice",
    "example",
    "exercise",
    "principle",
    "technique",
    "mistake",
    "pattern",
    "project",
    "result",
    "question",
    "habit",
    "detail",
    "method",
    "problem",
    "solution",
    "idea",
    "step",
    "review",
    "feedback",
    "goal",
    "skill",
    "concept",
    "tool",
    "workflow",
];
const LANGUAGES: [&str; 5] = ["en", "en", "en", "es", "de"];

/// The title of generated course `i`.
pub fn title(i: usize) -> String {
    let triples = ADJECTIVES.len() * TOPICS.len() * KINDS.len();
    // A stride coprime with the count spreads neighbours over topics.
    let n = (i * 7919) % triples;
    let adjective = ADJECTIVES[n % ADJECTIVES.len()];
    let topic = TOPICS[(n / ADJECTIVES.len()) % TOPICS.len()];
    let kind = KINDS[n / (ADJECTIVES.len() * TOPICS.len())];
    match i / triples {
        0 => format!("{adjective} {topic} {kind}"),
        round => format!("{adjective} {topic} {kind} {}", round + 1),
    }
}

fn topic_of(title: &str) -> &str {
    title.split(' ').nth(1).unwrap_or("the subject")
}

fn body(course: &str, lesson: &str, seed: usize) -> String {
    let topic = topic_of(course);
    let mut text = format!("# {lesson}\n\nIn this lesson of **{course}** we work on {topic}.\n\n");
    for sentence in 0..12 {
        let a = WORDS[(seed + sentence * 5) % WORDS.len()];
        let b = WORDS[(seed * 3 + sentence * 11) % WORDS.len()];
        text.push_str(&format!(
            "Each {a} in {topic} builds on a {b}; try it on a small {a} before you move on. "
        ));
    }
    text
}

fn course(i: usize) -> Course {
    let title = title(i);
    Course {
        slug: format!("gen-{i}"),
        summary: format!(
            "{title}: a course on {} with {LESSONS} short lessons, worked examples and exercises.",
            topic_of(&title).to_lowercase()
        ),
        level: [Level::Beginner, Level::Intermediate, Level::Advanced][i % 3] as i32,
        tags: vec![topic_of(&title).to_lowercase()],
        language: LANGUAGES[i % LANGUAGES.len()].into(),
        price: (i % 3 == 1).then(|| Money {
            currency: "USD".into(),
            amount_minor: 1900 + (i % 5) as i64 * 1000,
        }),
        title,
        ..Default::default()
    }
}

/// What generating did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Generated {
    pub courses: usize,
    pub lessons: usize,
    pub existed: usize,
}

/// Generates courses 0..count that are not there yet.
pub async fn seed(config: &Config, count: usize) -> anyhow::Result<Generated> {
    let users: UserModule = open_alone(config).await?;
    let courses: CourseModule = open_alone(config).await?;
    let content: ContentModule = open_alone(config).await?;
    let result = generate(&users, &courses, &content, count).await;
    users.close().await;
    courses.close().await;
    content.close().await;
    result
}

async fn generate(
    users: &UserModule,
    courses: &CourseModule,
    content: &ContentModule,
    count: usize,
) -> anyhow::Result<Generated> {
    let mut owners = Vec::with_capacity(INSTRUCTORS);
    for n in 0..INSTRUCTORS {
        let email = format!("instructor-{n}@load.duovarsity.test");
        let id = match users
            .users()
            .id_of(&email)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            Some(id) => id,
            None => {
                users
                    .users()
                    .create_account(
                        &email,
                        LEARNER_PASSWORD,
                        &format!("Instructor {n}"),
                        Role::Instructor,
                        false,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("creating {email}: {e}"))?
                    .id
            }
        };
        owners.push(id);
    }
    let mut made = Generated::default();
    for i in 0..count {
        let course = course(i);
        match courses.courses().course_by_id(&course.slug).await {
            Ok(_) => {
                made.existed += 1;
                continue;
            }
            Err(duovarsity_common::Error::NotFound { .. }) => {}
            Err(error) => anyhow::bail!("reading {}: {error}", course.slug),
        }
        let lessons = LESSON_TITLES
            .iter()
            .enumerate()
            .map(|(l, lesson)| LessonPlan {
                title: format!("{}: {lesson}", topic_of(&course.title)),
                body: body(&course.title, lesson, i + l),
                video: false,
                minutes: 10,
                required: true,
            })
            .collect();
        let sections = [SectionPlan {
            title: "Lessons".into(),
            lessons,
        }];
        let (_, lessons) = publish_course(
            courses,
            content,
            &owners[i % INSTRUCTORS],
            &course,
            &sections,
            &[],
        )
        .await?;
        made.courses += 1;
        made.lessons += lessons;
    }
    Ok(made)
}
