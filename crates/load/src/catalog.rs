//! What the load test reads and buys: the published catalog with each course's lessons,
//! fetched once before the attack, and a Zipf draw over it (a few courses take most of
//! the traffic, as on any catalog).

use anyhow::Context as _;
use rand::Rng as _;
use serde_json::Value;

/// One published course.
#[derive(Debug, Clone)]
pub struct Course {
    pub id: String,
    pub slug: String,
    pub title: String,
    pub paid: bool,
    pub instructor_id: String,
    /// Whether a new learner may enroll (no prerequisite courses).
    pub open: bool,
    pub lessons: Vec<String>,
}

#[derive(Debug)]
pub struct Catalog {
    /// In the catalog's order, which is also popularity rank for the Zipf draw.
    pub courses: Vec<Course>,
    /// Cumulative Zipf weights (exponent 1) over `courses`.
    cumulative: Vec<f64>,
}

impl Catalog {
    /// Reads every published course and its outline through the public API.
    pub async fn fetch(client: &reqwest13::Client, base: &str) -> anyhow::Result<Catalog> {
        let mut courses = Vec::new();
        let mut page_token = String::new();
        loop {
            let page: Value = get(
                client,
                &format!("{base}/v1/courses?pageSize=100&pageToken={page_token}"),
            )
            .await?;
            for course in page["courses"].as_array().into_iter().flatten() {
                let id = text(course, "id")?;
                let outline = get(client, &format!("{base}/v1/courses/{id}")).await?;
                let lessons = outline["sections"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|section| section["lessons"].as_array().into_iter().flatten())
                    .map(|lesson| text(lesson, "id"))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                courses.push(Course {
                    slug: text(course, "slug")?,
                    title: text(course, "title")?,
                    paid: !course["price"].is_null(),
                    instructor_id: text(course, "instructorId")?,
                    open: course["prerequisiteIds"]
                        .as_array()
                        .is_none_or(|ids| ids.is_empty()),
                    lessons,
                    id,
                });
            }
            match page["nextPageToken"].as_str() {
                Some(next) if !next.is_empty() => page_token = next.to_string(),
                _ => break,
            }
        }
        anyhow::ensure!(
            courses
                .iter()
                .any(|c| !c.paid && c.open && !c.lessons.is_empty()),
            "{base} has no free course with lessons and no prerequisites: seed one (`duovarsity seed --demo`)"
        );
        let mut total = 0.0;
        let cumulative = (1..=courses.len())
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Ok(Catalog {
            courses,
            cumulative,
        })
    }

    /// A course drawn by popularity.
    pub fn popular(&self) -> &Course {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let draw = rand::thread_rng().gen_range(0.0..total);
        let rank = self.cumulative.partition_point(|&c| c <= draw);
        &self.courses[rank.min(self.courses.len() - 1)]
    }

    /// A free course with lessons that a new learner may enroll in, drawn by popularity.
    pub fn popular_free(&self) -> &Course {
        loop {
            let course = self.popular();
            if !course.paid && course.open && !course.lessons.is_empty() {
                return course;
            }
        }
    }

    /// Paid courses a new learner may enroll in.
    pub fn paid(&self) -> impl Iterator<Item = &Course> {
        self.courses.iter().filter(|c| c.paid && c.open)
    }
}

async fn get(client: &reqwest13::Client, url: &str) -> anyhow::Result<Value> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    Ok(response.json().await?)
}

fn text(value: &Value, field: &str) -> anyhow::Result<String> {
    value[field]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no {field} in {value}"))
}
