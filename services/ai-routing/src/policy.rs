//! Which models may answer a request, in the order to try them.
//!
//! - An explicit model must exist (404) and be allowed for the caller's tier (403,
//!   `MODEL_NOT_IN_TIER`); it is tried first, then the task's chain.
//! - `"default"` (or no model) is the catalog's default model when the tier allows it.
//! - `"auto"` or a task alias (`"hint"`, ...) picks among the tier's models whose quality
//!   meets the task's floor for the tier: premium learners get the best first, everyone
//!   else the cheapest first. A throttled learner (past `budgets.throttle_at` of the
//!   day's budget) gets the cheapest model the tier allows, floor or not.
//! - Models of providers whose breaker is open go last; the plan is cut at
//!   `policy.max_attempts`, so fallback never loops.

use duovarsity_common::Error;

use crate::catalog::{Catalog, ModelSpec};

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The task the policy applied (hint, explanation, grading or chat).
    pub task: String,
    pub models: Vec<ModelSpec>,
}

fn price(model: &ModelSpec) -> f64 {
    model.input_nano_per_token + model.output_nano_per_token
}

/// The models of `tier` for `task`, best first for the tier.
fn chain(
    catalog: &Catalog,
    tier: &str,
    task: &str,
    throttled: bool,
) -> Result<Vec<ModelSpec>, Error> {
    let floor = catalog
        .tasks
        .get(task)
        .and_then(|policy| policy.floor.get(tier))
        .copied()
        .unwrap_or(100);
    let mut models: Vec<ModelSpec> = catalog
        .models
        .iter()
        .filter(|m| m.allows(tier) && (throttled || m.quality >= floor))
        .cloned()
        .collect();
    if models.is_empty() {
        return Err(Error::FailedPrecondition {
            reason: "NO_MODEL_FOR_TASK",
            message: format!("no model of the {tier} tier meets the quality floor of {task}"),
        });
    }
    if tier == "premium" && !throttled {
        models.sort_by(|a, b| {
            b.quality
                .cmp(&a.quality)
                .then(price(a).total_cmp(&price(b)))
        });
    } else {
        models.sort_by(|a, b| {
            price(a)
                .total_cmp(&price(b))
                .then(b.quality.cmp(&a.quality))
        });
    }
    Ok(models)
}

/// The plan for `requested` (the request's model) and `task_kind` (its task, if any).
pub fn plan(
    catalog: &Catalog,
    tier: &str,
    requested: &str,
    task_kind: Option<&str>,
    throttled: bool,
    healthy: impl Fn(&ModelSpec) -> bool,
) -> Result<Plan, Error> {
    let alias = crate::catalog::TASKS
        .contains(&requested)
        .then_some(requested);
    let task = alias.or(task_kind).unwrap_or("chat").to_string();
    if !crate::catalog::TASKS.contains(&task.as_str()) {
        return Err(Error::invalid(
            "task.kind",
            "must be hint, explanation, grading or chat",
        ));
    }
    let first = match requested {
        "" | "default" => catalog
            .model(&catalog.default_model)
            .filter(|m| m.allows(tier))
            .cloned(),
        "auto" => None,
        _ if alias.is_some() => None,
        name => {
            let model = catalog
                .model(name)
                .ok_or_else(|| Error::not_found(format!("model {name}")))?;
            if !model.allows(tier) {
                return Err(Error::permission_denied(
                    "MODEL_NOT_IN_TIER",
                    format!("the {tier} tier may not use {name}"),
                ));
            }
            Some(model.clone())
        }
    };
    let mut models: Vec<ModelSpec> = first.into_iter().collect();
    if throttled {
        models.clear();
    }
    for model in chain(catalog, tier, &task, throttled)? {
        if !models.iter().any(|m| m.name == model.name) {
            models.push(model);
        }
    }
    // Known-down providers last (a stable sort keeps the policy's order otherwise).
    models.sort_by_key(|m| !healthy(m));
    models.truncate(catalog.max_attempts as usize);
    Ok(Plan { task, models })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BUILT_IN;

    fn names(plan: &Plan) -> Vec<&str> {
        plan.models.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn tiers_tasks_and_floors_pick_the_models() {
        let catalog = Catalog::parse(BUILT_IN, |_| None).unwrap();
        let all = |_: &ModelSpec| true;
        let free_hint = plan(&catalog, "free", "auto", Some("hint"), false, all).unwrap();
        assert_eq!(
            names(&free_hint),
            ["tutor-local", "tutor-fast", "tutor-fallback"],
            "cheapest first"
        );
        let premium = plan(&catalog, "premium", "hint", None, false, all).unwrap();
        assert_eq!(names(&premium)[0], "tutor-premium");
        let grading = plan(&catalog, "free", "auto", Some("grading"), false, all).unwrap();
        assert_eq!(names(&grading), ["tutor-fast", "tutor-fallback"]);
        let throttled = plan(&catalog, "premium", "auto", Some("chat"), true, all).unwrap();
        assert_eq!(names(&throttled)[0], "tutor-local");
        let refused = plan(&catalog, "free", "tutor-premium", None, false, all).unwrap_err();
        assert!(matches!(
            refused,
            Error::PermissionDenied {
                reason: "MODEL_NOT_IN_TIER",
                ..
            }
        ));
        assert!(matches!(
            plan(&catalog, "free", "gpt-9", None, false, all),
            Err(Error::NotFound { .. })
        ));
        let default = plan(&catalog, "standard", "", None, false, all).unwrap();
        assert_eq!(names(&default)[0], "tutor-fast");
        let down = plan(&catalog, "free", "auto", Some("hint"), false, |m| {
            m.name != "tutor-fast"
        })
        .unwrap();
        assert_eq!(
            names(&down),
            ["tutor-local", "tutor-fallback", "tutor-fast"]
        );
    }
}
