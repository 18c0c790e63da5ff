//! The instructor's course dashboard and the admin's platform overview: counts per UTC day
//! of a bounded range, never a learner's identity beyond what the counts are of.

use std::collections::BTreeMap;

use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::time::now_millis;
use duovarsity_proto::analytics::{
    ActiveWeek, CourseAnalytics, CourseDay, LessonFunnel, Money, PlatformAnalytics, PlatformDay,
};
use jiff::ToSpan as _;
use jiff::civil::Date;

use crate::Analytics;
use crate::store::dashboards as store;
use crate::xp;

/// The widest range a dashboard reads, in days.
pub const MAX_RANGE_DAYS: i64 = 92;
/// The range when none is asked for: the 30 days ending today.
const DEFAULT_RANGE_DAYS: i64 = 30;

fn date(field: &str, text: &str) -> Result<Date, Error> {
    text.parse()
        .map_err(|_| Error::invalid(field, format!("{text:?} is not a date (YYYY-MM-DD)")))
}

/// The inclusive UTC range asked for, checked.
pub fn range(from: &str, to: &str) -> Result<(Date, Date), Error> {
    let to = if to.is_empty() {
        xp::utc_day(now_millis())
    } else {
        date("to", to)?
    };
    let from = if from.is_empty() {
        to.checked_sub((DEFAULT_RANGE_DAYS - 1).days())
            .map_err(|e| Error::invalid("to", e.to_string()))?
    } else {
        date("from", from)?
    };
    if from > to {
        return Err(Error::invalid("from", format!("{from} is after to ({to})")));
    }
    let days = i64::from(
        to.since(from)
            .map_err(|e| Error::invalid("to", e.to_string()))?
            .get_days(),
    ) + 1;
    if days > MAX_RANGE_DAYS {
        return Err(Error::invalid(
            "to",
            format!("the range spans {days} days; at most {MAX_RANGE_DAYS}"),
        ));
    }
    Ok((from, to))
}

/// Every date of the range.
fn dates(from: Date, to: Date) -> Vec<Date> {
    let mut all = Vec::new();
    let mut date = from;
    while date <= to {
        all.push(date);
        match date.tomorrow() {
            Ok(next) => date = next,
            Err(_) => break,
        }
    }
    all
}

/// Revenue rows as money per day and currency.
fn money_by_day(rows: Vec<(String, String, i64, i64)>) -> BTreeMap<String, Vec<Money>> {
    let mut by_day: BTreeMap<String, Vec<Money>> = BTreeMap::new();
    for (day, currency, captured, refunded) in rows {
        by_day.entry(day).or_default().push(Money {
            currency,
            captured_minor: captured,
            refunded_minor: refunded,
            net_minor: captured - refunded,
        });
    }
    by_day
}

/// The range's totals per currency.
fn totals(by_day: &BTreeMap<String, Vec<Money>>) -> Vec<Money> {
    let mut total: BTreeMap<&str, Money> = BTreeMap::new();
    for money in by_day.values().flatten() {
        let entry = total.entry(&money.currency).or_insert_with(|| Money {
            currency: money.currency.clone(),
            ..Money::default()
        });
        entry.captured_minor += money.captured_minor;
        entry.refunded_minor += money.refunded_minor;
        entry.net_minor += money.net_minor;
    }
    total.into_values().collect()
}

fn millis_at_start(date: Date) -> i64 {
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .map_or(0, |zoned| zoned.timestamp().as_millisecond())
}

/// The median of `values` (sorting them); 0 for none.
pub fn median(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    match values.len() {
        0 => 0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

impl Analytics {
    pub async fn course_analytics(
        &self,
        claims: &Claims,
        course_id: &str,
        from: &str,
        to: &str,
    ) -> Result<CourseAnalytics, Error> {
        let (title, instructor) = store::course(&self.db, course_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("course {course_id}")))?;
        if instructor != claims.sub && !claims.is_admin() {
            return Err(Error::permission_denied(
                "NOT_COURSE_INSTRUCTOR",
                "a course's analytics are for its instructor and admins",
            ));
        }
        let (from, to) = range(from, to)?;
        let (first, last) = (from.to_string(), to.to_string());
        let counts: BTreeMap<String, [i64; 3]> =
            store::course_days(&self.db, course_id, &first, &last)
                .await?
                .into_iter()
                .collect();
        let active: BTreeMap<String, i64> =
            store::course_active_per_day(&self.db, course_id, &first, &last)
                .await?
                .into_iter()
                .collect();
        let revenue = money_by_day(store::revenue(&self.db, Some(course_id), &first, &last).await?);
        let days = dates(from, to)
            .into_iter()
            .map(|date| {
                let day = date.to_string();
                let [enrollments, completions, ai_hint_requests] =
                    counts.get(&day).copied().unwrap_or_default();
                CourseDay {
                    enrollments,
                    completions,
                    ai_hint_requests,
                    active_learners: active.get(&day).copied().unwrap_or(0),
                    revenue: revenue.get(&day).cloned().unwrap_or_default(),
                    date: day,
                }
            })
            .collect();
        let mut weeks = Vec::new();
        let mut monday = xp::week_start(&xp::iso_week(from)).unwrap_or(from);
        while monday <= to {
            let sunday = monday.checked_add(6.days()).unwrap_or(monday);
            let (start, end) = (monday.max(from), sunday.min(to));
            weeks.push(ActiveWeek {
                week: xp::iso_week(monday),
                active_learners: store::distinct_active(
                    &self.db,
                    Some(course_id),
                    &start.to_string(),
                    &end.to_string(),
                )
                .await?,
            });
            monday = monday
                .checked_add(7.days())
                .unwrap_or(to.tomorrow().unwrap_or(to));
        }
        let end_ms = to.tomorrow().map_or(i64::MAX, millis_at_start);
        let mut times =
            store::completion_times(&self.db, course_id, millis_at_start(from), end_ms).await?;
        Ok(CourseAnalytics {
            course_id: course_id.to_string(),
            title,
            from: first,
            to: last,
            days,
            weeks,
            lessons: store::funnel(&self.db, course_id)
                .await?
                .into_iter()
                .map(|l| LessonFunnel {
                    lesson_id: l.lesson_id,
                    title: l.title,
                    started: l.started,
                    completed: l.completed,
                    stopped_here: l.stopped_here,
                    ai_hint_requests: l.ai_hint_requests,
                })
                .collect(),
            median_seconds_to_complete: median(&mut times) / 1000,
            completions_measured: times.len() as i64,
            revenue: totals(&revenue),
        })
    }

    /// The platform per day (admins; the contract says so, the auth layer enforces it).
    pub async fn platform_analytics(
        &self,
        from: &str,
        to: &str,
    ) -> Result<PlatformAnalytics, Error> {
        let (from, to) = range(from, to)?;
        let (first, last) = (from.to_string(), to.to_string());
        let counts: BTreeMap<String, [i64; 5]> = store::platform_days(&self.db, &first, &last)
            .await?
            .into_iter()
            .collect();
        let revenue = money_by_day(store::revenue(&self.db, None, &first, &last).await?);
        let mut days = Vec::new();
        for date in dates(from, to) {
            let day = date.to_string();
            let window = |span: i64| {
                date.checked_sub((span - 1).days())
                    .unwrap_or(date)
                    .to_string()
            };
            let [
                new_accounts,
                enrollments,
                completions,
                ai_requests,
                ai_cost_nano_usd,
            ] = counts.get(&day).copied().unwrap_or_default();
            days.push(PlatformDay {
                daily_active: store::distinct_active(&self.db, None, &day, &day).await?,
                weekly_active: store::distinct_active(&self.db, None, &window(7), &day).await?,
                monthly_active: store::distinct_active(&self.db, None, &window(30), &day).await?,
                new_accounts,
                enrollments,
                completions,
                revenue: revenue.get(&day).cloned().unwrap_or_default(),
                ai_requests,
                ai_cost_nano_usd,
                date: day,
            });
        }
        Ok(PlatformAnalytics {
            from: first,
            to: last,
            days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_default_to_thirty_days_and_refuse_wide_or_backward_ones() {
        let (from, to) = range("", "2026-12-07").unwrap();
        assert_eq!(
            (from.to_string(), to.to_string()),
            ("2026-11-08".into(), "2026-12-07".into())
        );
        assert!(range("2026-01-01", "2026-04-02").is_ok()); // 92 days
        assert!(range("2026-01-01", "2026-04-03").is_err()); // 93
        assert!(range("2026-12-08", "2026-12-07").is_err());
        assert!(range("2026-02-30", "").is_err());
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&mut []), 0);
        assert_eq!(median(&mut [5, 1, 3]), 3);
        assert_eq!(median(&mut [4, 1, 3, 2]), 2);
    }
}
