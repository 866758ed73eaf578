//! The flagd export: a team's rollouts as one flagd flag-definition file.
//!
//! Format: flagd's `https://flagd.dev/schema/v0/flags.json` (open-feature/flagd
//! `docs/reference/flag-definitions.md`, `docs/reference/custom-operations/fractional-operation.md`).
//! One boolean flag per rollout, keyed by the rollout's `feature_key`:
//!
//! ```json
//! "checkout-one-click": {
//!   "state": "ENABLED",
//!   "variants": { "on": true, "off": false },
//!   "defaultVariant": "off",
//!   "targeting": {
//!     "if": [
//!       { "in": [ { "var": "cohort" }, ["beta", "employees"] ] },
//!       "on",
//!       { "fractional": [
//!           { "cat": [ { "var": "$flagd.flagKey" }, { "var": "targetingKey" } ] },
//!           ["on", 10], ["off", 90] ] }
//!     ]
//!   },
//!   "metadata": { "rollout_id": "...", "status": "running", "stage": 1, "exposure": 10, ... }
//! }
//! ```
//!
//! - Exposure follows [`Rollout::exposure`]: 0 before start, after a rollback
//!   to 0 % and after an abort; the current stage's percentage while running,
//!   paused or rolled back to an earlier stage; 100 once completed (a
//!   completed feature is everyone's, whatever the last stage's audience).
//! - Weights are integers summing to 100. A fractional stage percentage
//!   (0.5 %) rounds *down*: the file never exposes more than was approved.
//! - Cohorts: the evaluation-context attribute [`COHORT_ATTRIBUTE`] (`cohort`,
//!   one string per evaluation) names the caller's cohort; members of the
//!   cohorts of every stage entered so far (stages only widen) get `on`
//!   whatever their bucket. No cohort is on at 0 %.
//! - Bucketing is on `$flagd.flagKey` + `targetingKey`, so each flag buckets
//!   independently and a user keeps their bucket as the percentage grows.
//! - When several rollouts of the team share a feature key, the live one
//!   wins (draft, ready, running, paused, rolled back), then the one created
//!   last: a finished rollout never shadows a newer one.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::rollout::{Rollout, RolloutStatus};
use crate::values::Team;

/// The `$schema` of the file.
pub const SCHEMA: &str = "https://flagd.dev/schema/v0/flags.json";

/// The evaluation-context attribute that carries the caller's cohort.
pub const COHORT_ATTRIBUTE: &str = "cohort";

/// What one rollout exposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagExposure {
    /// Integer share of targeting keys that get `on`, 0..=100.
    pub on_percent: u8,
    /// Cohorts that always get `on`.
    pub cohorts: BTreeSet<String>,
}

/// The exposure the flag file gives `r` now.
pub fn exposure(r: &Rollout) -> FlagExposure {
    let percentage = if r.status == RolloutStatus::Completed {
        100.0
    } else {
        r.exposure().get()
    };
    // floor: never more than the approved share (the value is within 0..=100)
    let on_percent = percentage.floor().clamp(0.0, 100.0) as u8;
    let cohorts = match (r.status, r.position) {
        (RolloutStatus::Draft | RolloutStatus::Ready | RolloutStatus::Aborted, _) | (_, None) => {
            BTreeSet::new()
        }
        (_, Some(position)) => r
            .plan
            .stages()
            .iter()
            .take(position.as_usize() + 1)
            .flat_map(|s| s.audience.cohorts.iter().cloned())
            .collect(),
    };
    FlagExposure {
        on_percent,
        cohorts,
    }
}

/// The targeting rule for `e`.
pub fn targeting(e: &FlagExposure) -> Value {
    let fractional = json!({
        "fractional": [
            { "cat": [ { "var": "$flagd.flagKey" }, { "var": "targetingKey" } ] },
            ["on", e.on_percent],
            ["off", 100 - e.on_percent]
        ]
    });
    if e.cohorts.is_empty() {
        fractional
    } else {
        let cohorts: Vec<&str> = e.cohorts.iter().map(String::as_str).collect();
        json!({
            "if": [
                { "in": [ { "var": COHORT_ATTRIBUTE }, cohorts ] },
                "on",
                fractional
            ]
        })
    }
}

/// One flag definition for `r`.
pub fn flag(r: &Rollout) -> Value {
    let e = exposure(r);
    let mut metadata = Map::new();
    metadata.insert("rollout_id".into(), json!(r.id.to_string()));
    metadata.insert("team".into(), json!(r.team.as_str()));
    metadata.insert("status".into(), json!(r.status.as_str()));
    if let Some(p) = r.position {
        metadata.insert("stage".into(), json!(p.get()));
        if let Some(s) = r.current_stage() {
            metadata.insert("stage_name".into(), json!(s.name));
        }
    }
    metadata.insert("exposure".into(), json!(e.on_percent));
    metadata.insert("plan_revision".into(), json!(r.plan_revision));
    metadata.insert("version".into(), json!(r.version));
    json!({
        "state": "ENABLED",
        "variants": { "on": true, "off": false },
        "defaultVariant": "off",
        "targeting": targeting(&e),
        "metadata": Value::Object(metadata),
    })
}

fn precedence(r: &Rollout) -> (bool, chrono::DateTime<chrono::Utc>, String) {
    (!r.status.is_terminal(), r.created_at, r.id.to_string())
}

/// The whole file for `team`: one flag per feature key (see the module
/// documentation for which rollout wins a shared key). Rollouts of other
/// teams are ignored.
pub fn flag_file<'a>(team: &Team, rollouts: impl IntoIterator<Item = &'a Rollout>) -> Value {
    let mut chosen: BTreeMap<&str, &Rollout> = BTreeMap::new();
    for r in rollouts.into_iter().filter(|r| &r.team == team) {
        let key = r.feature_key.as_str();
        match chosen.get(key) {
            Some(other) if precedence(other) >= precedence(r) => {}
            _ => {
                chosen.insert(key, r);
            }
        }
    }
    let mut flags = Map::new();
    for (key, r) in chosen {
        flags.insert(key.to_owned(), flag(r));
    }
    json!({
        "$schema": SCHEMA,
        "metadata": { "flagSetId": format!("rollgate/{}", team.as_str()), "team": team.as_str() },
        "flags": Value::Object(flags),
    })
}
