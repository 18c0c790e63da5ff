//! The report of a run: `report.md` (per-endpoint latency against the seeds' SLOs, error
//! rates, live frames received against expected, AI cache hits, purchases),
//! `timeline.svg` (throughput and latency per second), and `summary.json` (the same
//! figures for the capacity model). Goose writes its own HTML report beside them.

use std::fmt::Write as _;
use std::path::Path;

use std::sync::atomic::Ordering;

use goose::metrics::{GooseMetrics, GooseRequestMetricTimingData};
use serde_json::json;

use crate::plan::Plan;

/// The seeds' latency objectives for a request, in milliseconds: p50, p95, p99.
pub const SLO_MS: [(f64, f64); 3] = [(0.50, 50.0), (0.95, 200.0), (0.99, 500.0)];

/// The `p` quantile of goose's bucketed timings, in milliseconds.
fn quantile(data: &GooseRequestMetricTimingData, p: f64) -> f64 {
    let mut buckets: Vec<(u64, usize)> = data.times_us.iter().map(|(b, c)| (*b, *c)).collect();
    buckets.sort_unstable();
    let total: usize = buckets.iter().map(|(_, c)| c).sum();
    let wanted = ((total as f64) * p).ceil().max(1.0) as usize;
    let mut seen = 0;
    for (bucket, count) in buckets {
        seen += count;
        if seen >= wanted {
            return bucket as f64 / 1000.0;
        }
    }
    data.maximum_time_us as f64 / 1000.0
}

/// What the run was asked to do.
#[derive(Debug)]
pub struct Setup {
    pub base: String,
    pub target_rps: usize,
    pub users: usize,
}

/// Writes the report files into `out`; returns the Markdown and the summary.
pub fn write(
    out: &Path,
    setup: &Setup,
    metrics: &GooseMetrics,
    plan: &Plan,
) -> anyhow::Result<(String, serde_json::Value)> {
    std::fs::create_dir_all(out)?;
    let duration = metrics.duration.max(1) as f64;
    let mut rows: Vec<_> = metrics.requests.values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.success_count + r.fail_count));
    let total: usize = rows.iter().map(|r| r.success_count + r.fail_count).sum();
    let failed: usize = rows.iter().map(|r| r.fail_count).sum();
    let failed_reads: usize = rows
        .iter()
        .filter(|r| r.method.to_string() == "GET")
        .map(|r| r.fail_count)
        .sum();

    let mut md = String::new();
    let _ = writeln!(md, "# Load test report\n");
    let _ = writeln!(
        md,
        "Target `{}`, {} users (goose) offering {} requests/s (each pauses users/rate \
         seconds between requests), latency corrected for coordinated omission (goose's \
         average-cadence backfill). Figures are of the \
         {:.0} s after the ramp (goose resets its metrics once every user runs); the chart \
         covers the whole run.\n",
        setup.base, setup.users, setup.target_rps, duration
    );
    let achieved = total as f64 / duration;
    let _ = writeln!(
        md,
        "- **Throughput:** {achieved:.1} requests/s ({:.0} % of the target){}",
        100.0 * achieved / setup.target_rps.max(1) as f64,
        if achieved < 0.95 * setup.target_rps as f64 {
            ": the rate was not held (too few users for the latency, or the platform is saturated)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "- **Errors:** {failed} of {total} requests failed ({:.2} %); failed idempotent reads (GET): {failed_reads}",
        100.0 * failed as f64 / total.max(1) as f64
    );
    let slo_text = SLO_MS
        .iter()
        .map(|(p, ms)| format!("p{:.0} ≤ {ms:.0} ms", p * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(md, "- **SLO (seeds):** {slo_text}\n");
    let _ = writeln!(
        md,
        "| endpoint | requests | failed | p50 ms | p95 ms | p99 ms | p99 uncorrected | SLO |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---|");
    let mut endpoints = Vec::new();
    let mut slo_met = true;
    for row in &rows {
        let corrected = row
            .coordinated_omission_data
            .as_ref()
            .unwrap_or(&row.raw_data);
        let q: Vec<f64> = SLO_MS
            .iter()
            .map(|(p, _)| quantile(corrected, *p))
            .collect();
        let met = SLO_MS.iter().zip(&q).all(|((_, limit), got)| got <= limit);
        slo_met &= met;
        let count = row.success_count + row.fail_count;
        let _ = writeln!(
            md,
            "| `{} {}` | {count} | {} ({:.2} %) | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            row.method,
            row.path.trim_start_matches(&format!("{} ", row.method)),
            row.fail_count,
            100.0 * row.fail_count as f64 / count.max(1) as f64,
            q[0],
            q[1],
            q[2],
            quantile(&row.raw_data, 0.99),
            if met { "met" } else { "**missed**" }
        );
        endpoints.push(json!({
            "name": row.path, "method": row.method.to_string(), "requests": count,
            "failed": row.fail_count, "per_second": count as f64 / duration,
            "p50_ms": q[0], "p95_ms": q[1], "p99_ms": q[2],
        }));
    }

    let live = &plan.live;
    let expected = live.expected.load(Ordering::Relaxed);
    let received = live.received.load(Ordering::Relaxed);
    let mut delivery = live.delivery_us.lock().expect("delivery").clone();
    delivery.sort_unstable();
    let at = |p: f64| {
        delivery
            .get(((delivery.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    let _ = writeln!(md, "\n## Live connections\n");
    let _ = writeln!(
        md,
        "- WebSockets opened: {} (attempts refused: {}; closed by the server before the end: {}, opened again: {})",
        live.opened.load(Ordering::Relaxed),
        live.refused.load(Ordering::Relaxed),
        live.dropped.load(Ordering::Relaxed),
        live.reopened.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        md,
        "- Course rooms: subscriptions answered {} (refused {}), presence frames {}, announcements posted {} and heard {}",
        live.subscribed.load(Ordering::Relaxed),
        live.subscribe_errors.load(Ordering::Relaxed),
        live.presence_frames.load(Ordering::Relaxed),
        plan.tally.announcements_posted.load(Ordering::Relaxed),
        live.announcements_heard.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        md,
        "- Progress frames received / expected: **{received} / {expected}** ({:.2} %)",
        100.0 * received as f64 / expected.max(1) as f64
    );
    let _ = writeln!(
        md,
        "- From the progress request to its frame: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );

    let tally = &plan.tally;
    let hints = tally.hints.load(Ordering::Relaxed);
    let hits = tally.hint_cache_hits.load(Ordering::Relaxed);
    let _ = writeln!(md, "\n## AI, purchases, progress\n");
    let _ = writeln!(
        md,
        "- AI hints answered: {hints}, from the cache: {hits} ({:.1} %)",
        100.0 * hits as f64 / hints.max(1) as f64
    );
    let _ = writeln!(
        md,
        "- Purchases captured: {}, not captured within 5 s: {}",
        tally.purchases.load(Ordering::Relaxed),
        tally.purchases_not_captured.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        md,
        "- Progress changes recorded: {}",
        tally.progress_writes.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        md,
        "\n## Over time\n\n![throughput and latency per second](timeline.svg)\n\n\
         Goose's own report, with per-transaction and per-scenario figures: [goose.html](goose.html).\n"
    );
    let _ = writeln!(
        md,
        "**Verdict:** {}",
        if slo_met && failed_reads == 0 && received >= expected {
            "every endpoint within the SLO, no failed read, every live frame delivered."
        } else {
            "see the rows marked missed, the failed reads and the live frames above."
        }
    );

    let series = plan.timeline.series();
    std::fs::write(out.join("timeline.svg"), svg(&series))?;
    std::fs::write(out.join("report.md"), &md)?;
    let summary = json!({
        "base": setup.base, "users": setup.users, "target_rps": setup.target_rps,
        "duration_s": duration, "achieved_rps": achieved, "requests": total, "failed": failed,
        "failed_reads": failed_reads, "slo_met": slo_met, "endpoints": endpoints,
        "live": {"opened": live.opened.load(Ordering::Relaxed),
                 "dropped": live.dropped.load(Ordering::Relaxed), "expected": expected,
                 "received": received, "delivery_p50_ms": at(0.5), "delivery_p99_ms": at(0.99),
                 "subscribed": live.subscribed.load(Ordering::Relaxed),
                 "subscribe_errors": live.subscribe_errors.load(Ordering::Relaxed),
                 "presence_frames": live.presence_frames.load(Ordering::Relaxed),
                 "announcements_posted": plan.tally.announcements_posted.load(Ordering::Relaxed),
                 "announcements_heard": live.announcements_heard.load(Ordering::Relaxed)},
        "ai": {"hints": hints, "cache_hits": hits,
               "hit_rate": hits as f64 / hints.max(1) as f64},
        "purchases": tally.purchases.load(Ordering::Relaxed),
        "progress_writes": tally.progress_writes.load(Ordering::Relaxed),
    });
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok((md, summary))
}

/// Two stacked charts: requests per second (completed, failed), and p50/p99 latency per
/// second.
fn svg(series: &[(u64, u64, f64, f64)]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 60.0;
    let n = series.len().max(2) as f64;
    let x = |i: usize| LEFT + (W - LEFT - 20.0) * i as f64 / (n - 1.0);
    let line = |top: f64, max: f64, values: &mut dyn Iterator<Item = f64>, color: &str| {
        let points: Vec<String> = values
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), top + H - H * v / max))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        )
    };
    let max_rps = series
        .iter()
        .map(|s| (s.0 + s.1) as f64)
        .fold(1.0, f64::max);
    let max_ms = series.iter().map(|s| s.3).fold(1.0, f64::max);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
        2.0 * H + 110.0
    );
    for (top, title, max, unit) in [
        (
            30.0,
            "requests per second: completed (blue), failed (red)",
            max_rps,
            "",
        ),
        (
            H + 80.0,
            "latency per second: p50 (green), p99 (orange)",
            max_ms,
            " ms",
        ),
    ] {
        let _ = write!(
            out,
            "<text x=\"{LEFT}\" y=\"{}\">{title}</text>\
             <line x1=\"{LEFT}\" y1=\"{top}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"#888\"/>\
             <line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max:.0}{unit}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} s</text>",
            top - 10.0,
            top + H,
            top + H,
            W - 20.0,
            top + H,
            LEFT - 5.0,
            top + 10.0,
            LEFT - 5.0,
            top + H,
            W - 20.0,
            top + H + 15.0,
            series.len(),
        );
    }
    out.push_str(&line(
        30.0,
        max_rps,
        &mut series.iter().map(|s| s.0 as f64),
        "#1f77b4",
    ));
    out.push_str(&line(
        30.0,
        max_rps,
        &mut series.iter().map(|s| s.1 as f64),
        "#d62728",
    ));
    out.push_str(&line(
        H + 80.0,
        max_ms,
        &mut series.iter().map(|s| s.2),
        "#2ca02c",
    ));
    out.push_str(&line(
        H + 80.0,
        max_ms,
        &mut series.iter().map(|s| s.3),
        "#ff7f0e",
    ));
    out.push_str("</svg>\n");
    out
}
