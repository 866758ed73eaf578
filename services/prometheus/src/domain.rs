//! Between the domain's rollout state and the evaluator: which stage is due for evaluation, and
//! the `RecordEvaluation` command an evaluation becomes.

use std::time::Duration;

use rollgate_domain::guardrail::QueryEvaluation;
use rollgate_domain::rollout::Rollout;
use rollgate_domain::{MetricName, RolloutCommand, RolloutStatus};

use crate::evaluator::{ActiveStage, QueryCriterion, StageEvaluation};
use crate::measure::{CriterionQueries, Measured};

/// The rollout's running stage with its query criteria (one entry per metric), or `None`:
/// not running (draft, ready, paused, rolled back, completed, aborted), or no query criteria.
pub fn active_stage(r: &Rollout) -> Option<ActiveStage> {
    if r.status != RolloutStatus::Running {
        return None;
    }
    let position = r.position?;
    let stage = r.current_stage()?;
    let entered_at = r.stage_entered_at?;
    let mut criteria: Vec<QueryCriterion> = Vec::new();
    for (_, c) in stage.criteria() {
        let Some(q) = &c.queries else { continue };
        if criteria.iter().any(|k| k.metric == c.metric.as_str()) {
            continue;
        }
        criteria.push(QueryCriterion {
            metric: c.metric.as_str().to_owned(),
            queries: CriterionQueries {
                query: q.query.clone(),
                samples_query: q.samples_query.clone(),
                baseline_query: q.baseline_query.clone(),
                baseline_samples_query: None,
            },
        });
    }
    if criteria.is_empty() {
        return None;
    }
    let interval = Duration::from_secs(stage.evaluation_interval());
    // The last interval recorded at this stage: its evaluations carry the scheduled instant
    // they were evaluated at (entered_at + k × interval).
    let step = i64::try_from(interval.as_millis())
        .ok()
        .filter(|s| *s > 0)?;
    let last_interval = r
        .readings
        .evaluations()
        .values()
        .map(|e| (e.latest.evaluated_at - entered_at).num_milliseconds() / step)
        .filter(|k| *k >= 1)
        .max()
        .and_then(|k| u64::try_from(k).ok());
    Some(ActiveStage {
        rollout_id: r.id,
        feature_key: r.feature_key.as_str().to_owned(),
        stage: position.get(),
        stage_name: stage.name.clone(),
        entered_at,
        interval,
        criteria,
        last_interval,
    })
}

/// The facts of one metric's measurement as the domain records them.
pub fn query_evaluation(metric: MetricName, m: &crate::measure::Measurement) -> QueryEvaluation {
    let (value, samples, baseline_value, baseline_samples, inconclusive) = match &m.measured {
        Measured::Observed { canary, baseline } => (
            Some(canary.value),
            canary.samples,
            baseline.map(|b| b.value),
            baseline.and_then(|b| b.samples),
            None,
        ),
        Measured::Inconclusive {
            field,
            code,
            reason,
        } => (
            None,
            None,
            None,
            None,
            Some(format!("{field}: {reason} ({code})")),
        ),
    };
    QueryEvaluation {
        metric,
        query: m.queries.query.clone(),
        samples_query: m.queries.samples_query.clone(),
        baseline_query: m.queries.baseline_query.clone(),
        evaluated_at: m.evaluated_at,
        value,
        samples,
        baseline_value,
        baseline_samples,
        inconclusive,
    }
}

/// The command that records `evaluation` (issued by the system actor only).
pub fn record_command(evaluation: &StageEvaluation) -> RolloutCommand {
    let evaluations = evaluation
        .results
        .iter()
        .filter_map(|r| {
            // Metric names come from the validated plan; a name that no longer parses is
            // skipped rather than recorded under another name.
            MetricName::parse(&r.metric)
                .ok()
                .map(|metric| query_evaluation(metric, &r.measurement))
        })
        .collect();
    RolloutCommand::RecordEvaluation { evaluations }
}

/// Checks every query of `plan`: templates (known placeholders, inside double-quoted strings)
/// and, with a Prometheus, its parser, each rendered with the stage's name and `feature_key`.
/// Invalid queries come back with their field paths (`plan.stages[0].rollback_criteria[1].query`);
/// `Err` when Prometheus could not be asked.
pub async fn validate_plan(
    client: Option<&crate::client::Prometheus>,
    plan: &rollgate_domain::Plan,
    feature_key: &str,
) -> Result<Vec<crate::measure::InvalidQuery>, crate::client::QueryError> {
    let mut invalid = Vec::new();
    for (i, stage) in plan.stages().iter().enumerate() {
        let vars = crate::template::TemplateVars {
            stage: &stage.name,
            feature_key,
        };
        for (list, criteria) in [
            ("success_criteria", &stage.success_criteria),
            ("rollback_criteria", &stage.rollback_criteria),
        ] {
            for (j, c) in criteria.iter().enumerate() {
                let Some(q) = &c.queries else { continue };
                let queries = CriterionQueries {
                    query: q.query.clone(),
                    samples_query: q.samples_query.clone(),
                    baseline_query: q.baseline_query.clone(),
                    baseline_samples_query: None,
                };
                let path = format!("plan.stages[{i}].{list}[{j}]");
                invalid.extend(
                    crate::measure::validate_criterion(client, &path, &queries, &vars).await?,
                );
            }
        }
    }
    Ok(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluator::CriterionResult;
    use crate::measure::{Measurement, Side};
    use chrono::{DateTime, TimeZone, Utc};
    use rollgate_domain::{
        decide, evolve, Actor, ActorId, Context, CreateRolloutSpec, PolicySnapshot, Role,
        RolloutId, RolloutState, Team, TeamScope,
    };

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn ctx(actor: Actor, at: DateTime<Utc>) -> Context {
        Context {
            actor,
            now: at,
            policy: PolicySnapshot::default_for(&Team::parse("web").unwrap()),
        }
    }

    fn alice() -> Actor {
        Actor::new(
            ActorId::parse("alice").unwrap(),
            [Role::ReleaseManager],
            TeamScope::parse(["web"]).unwrap(),
        )
    }

    fn run(state: RolloutState, cmd: RolloutCommand, c: &Context) -> RolloutState {
        let events = decide(&state, cmd, c).expect("decided");
        events.iter().fold(state, evolve)
    }

    /// A running rollout at stage `canary` (entered at t(0)) with one query criterion.
    fn running() -> RolloutState {
        let spec: CreateRolloutSpec = serde_json::from_value(serde_json::json!({
            "feature_key": "checkout",
            "title": "t",
            "team": "web",
            "plan": {"owner": "alice", "stages": [{
                "name": "canary",
                "audience": {"percentage": 10},
                "min_soak_seconds": 0,
                "evaluation_interval_seconds": 5,
                "rollback_criteria": [{
                    "metric": "error_rate",
                    "query": "sum(x{stage=\"{{stage}}\"})",
                    "samples_query": "sum(y)",
                    "comparator": "gt", "threshold": 0.05
                }],
                "approvals": [{"roles": ["approver"], "count": 1}]
            }]}
        }))
        .unwrap();
        let id = RolloutId::new(uuid::Uuid::from_u128(9));
        let create = spec.parse(id).unwrap();
        let state = run(RolloutState::default(), create, &ctx(alice(), t(-10)));
        run(state, RolloutCommand::Start, &ctx(alice(), t(0)))
    }

    fn evaluation(k: u64, value: Option<f64>) -> StageEvaluation {
        let measured = match value {
            Some(v) => Measured::Observed {
                canary: Side {
                    value: v,
                    samples: Some(500),
                },
                baseline: None,
            },
            None => Measured::Inconclusive {
                field: "query".into(),
                code: "unreachable".into(),
                reason: "cannot reach Prometheus: connection refused".into(),
            },
        };
        StageEvaluation {
            stage: 0,
            interval_index: k,
            scheduled_at: t(5 * k as i64),
            evaluated_at: t(5 * k as i64),
            results: vec![CriterionResult {
                metric: "error_rate".into(),
                measurement: Measurement {
                    queries: CriterionQueries {
                        query: "sum(x{stage=\"canary\"})".into(),
                        samples_query: Some("sum(y)".into()),
                        baseline_query: None,
                        baseline_samples_query: None,
                    },
                    evaluated_at: t(5 * k as i64),
                    measured,
                },
            }],
        }
    }

    fn system() -> Actor {
        Actor::system(ActorId::parse("rollgate-evaluator").unwrap())
    }

    #[test]
    fn the_active_stage_comes_from_the_running_rollout() {
        let state = running();
        let stage = active_stage(state.rollout().unwrap()).expect("running with a query");
        assert_eq!(stage.stage_name, "canary");
        assert_eq!(stage.entered_at, t(0));
        assert_eq!(stage.interval, Duration::from_secs(5));
        assert_eq!(stage.criteria.len(), 1);
        assert_eq!(
            stage.criteria[0].queries.query,
            "sum(x{stage=\"{{stage}}\"})"
        );
        assert_eq!(stage.last_interval, None);
    }

    #[test]
    fn a_recorded_interval_is_remembered_by_the_state() {
        let state = running();
        let state = run(
            state,
            record_command(&evaluation(2, Some(0.01))),
            &ctx(system(), t(11)),
        );
        let stage = active_stage(state.rollout().unwrap()).unwrap();
        assert_eq!(stage.last_interval, Some(2), "a restart resumes after it");
    }

    #[test]
    fn inconclusive_measurements_carry_their_reason_and_no_value() {
        let cmd = record_command(&evaluation(1, None));
        let RolloutCommand::RecordEvaluation { evaluations } = &cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(evaluations[0].value, None);
        let why = evaluations[0].inconclusive.as_deref().unwrap();
        assert!(
            why.contains("cannot reach Prometheus") && why.contains("unreachable"),
            "{why}"
        );
        // The domain accepts it from the system actor, never from a caller.
        let state = run(running(), cmd.clone(), &ctx(system(), t(6)));
        assert!(active_stage(state.rollout().unwrap()).is_some());
        assert!(decide(&running(), cmd, &ctx(alice(), t(6))).is_err());
    }

    #[test]
    fn a_breach_stops_the_evaluations() {
        let state = run(
            running(),
            record_command(&evaluation(1, Some(0.5))),
            &ctx(system(), t(6)),
        );
        let r = state.rollout().unwrap();
        assert_ne!(r.status, RolloutStatus::Running, "paused by the breach");
        assert_eq!(active_stage(r), None);
    }
}
