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
