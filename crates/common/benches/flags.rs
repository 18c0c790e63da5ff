//! Flag evaluation on the hot path (`cargo bench -p duovarsity-common --bench flags`, part
//! of `make bench`): a static flag, a rule chain by tier and role, and a percentage
//! rollout, beside the simplest possible flag store (a `HashMap<String, bool>` lookup)
//! measured in the same run. Before measuring, it checks that an evaluation allocates
//! nothing (`stats_alloc`'s counting allocator around the system one) and fails otherwise.

use std::alloc::System;
use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use duovarsity_common::flags::{Document, FlagContext, FlagSet, Flags};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn flags() -> Flags {
    let document: Document = serde_json::from_value(json!({"version": 1, "flags": {
        "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
        "by-tier": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [
                {"==": [{"var": "role"}, "admin"]}, "on",
                {"in": [{"var": "tier"}, ["standard", "premium"]]}, "on",
                {"and": [{"==": [{"var": "tier"}, "free"]}, {"!=": [{"var": "courseId"}, "c-1"]}]}, "off"
            ]}},
        "rollout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [{"==": [{"var": "tier"}, "free"]},
                {"fractional": [["on", 10], ["off", 90]]}, "on"]}}
    }}))
    .unwrap();
    let flags = Flags::new();
    flags.replace(FlagSet::compile(&document).unwrap());
    flags
}

fn evaluation(c: &mut Criterion) {
    let flags = flags();
    let context = FlagContext {
        user_id: Some("0193a5c2-7d1e-7b3a-9f00-5e6d7c8b9a01"),
        tier: Some("free"),
        role: Some("learner"),
        course_id: Some("c-2"),
    };
    // Warm (the per-variant counters are made on first use), then count.
    for key in ["static", "by-tier", "rollout"] {
        flags.enabled(key, &context);
    }
    let region = Region::new(ALLOCATOR);
    for _ in 0..1000 {
        for key in ["static", "by-tier", "rollout"] {
            black_box(flags.enabled(black_box(key), black_box(&context)));
        }
    }
    let allocations = region.change().allocations;
    assert_eq!(
        allocations, 0,
        "3000 evaluations allocated {allocations} times"
    );
    println!("allocations in 3000 evaluations: {allocations}");

    let mut baseline: HashMap<String, bool> = HashMap::new();
    baseline.insert("static".into(), true);
    let mut group = c.benchmark_group("flags");
    group.bench_function("baseline_hashmap_lookup", |b| {
        b.iter(|| black_box(baseline.get(black_box("static")).copied()))
    });
    for key in ["static", "by-tier", "rollout"] {
        group.bench_function(key, |b| {
            b.iter(|| black_box(flags.enabled(black_box(key), black_box(&context))))
        });
    }
    group.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
