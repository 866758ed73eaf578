//! Guardrail evaluation: a criterion against the latest reading of its metric.
//!
//! A success criterion passes when its comparator holds. A rollback criterion
//! describes the bad condition (`error_rate gt 0.02`): it is breached when its
//! comparator holds. Too few samples (or no reading) is inconclusive.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::plan::Criterion;
use crate::values::{Comparator, MetricName, Threshold};

/// One metric observation pushed by automation or a person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    pub metric: MetricName,
    pub value: f64,
    pub samples: u64,
    pub observed_at: DateTime<Utc>,
}

impl Reading {
    /// A reading with a finite value.
    pub fn parse(
        metric: MetricName,
        value: f64,
        samples: u64,
        observed_at: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        if !value.is_finite() {
            return Err(ValidationError::new("value", "must be a finite number"));
        }
        Ok(Self {
            metric,
            value,
            samples,
            observed_at,
        })
    }
}

/// Which way a criterion is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriterionKind {
    /// Pass when the comparator holds.
    Success,
    /// Fail (= breached) when the comparator holds.
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// For a rollback criterion: breached.
    Fail,
    /// No reading, or fewer samples than the criterion's `min_samples`.
    Inconclusive,
}

/// A verdict with the facts it was reached on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub kind: CriterionKind,
    pub metric: MetricName,
    pub comparator: Comparator,
    pub threshold: Threshold,
    pub min_samples: u64,
    /// The latest reading's value, if there was one.
    pub value: Option<f64>,
    pub samples: u64,
    pub verdict: Verdict,
}

impl Evaluation {
    /// A rollback criterion whose bad condition holds.
    pub fn is_breach(&self) -> bool {
        self.kind == CriterionKind::Rollback && self.verdict == Verdict::Fail
    }

    /// `error_rate gt 0.02: value 0.05 over 1000 samples`
    pub fn describe(&self) -> String {
        let facts = match self.value {
            Some(v) => format!("value {v} over {} samples", self.samples),
            None => "no reading".to_owned(),
        };
        format!(
            "{} {} {}: {facts} (min {} samples)",
            self.metric, self.comparator, self.threshold, self.min_samples
        )
    }
}

/// The latest reading of `metric` (by `observed_at`; the later-recorded wins ties).
pub fn latest<'a>(metric: &MetricName, readings: &'a [Reading]) -> Option<&'a Reading> {
    readings
        .iter()
        .filter(|r| &r.metric == metric)
        .fold(None, |best: Option<&Reading>, r| match best {
            Some(b) if b.observed_at > r.observed_at => Some(b),
            _ => Some(r),
        })
}

/// Judges `criterion` on the latest reading of its metric in `readings`.
pub fn evaluate(criterion: &Criterion, kind: CriterionKind, readings: &[Reading]) -> Evaluation {
    let reading = latest(&criterion.metric, readings);
    let (value, samples) = reading.map_or((None, 0), |r| (Some(r.value), r.samples));
    let verdict = match reading {
        None => Verdict::Inconclusive,
        Some(r) if r.samples < criterion.min_samples => Verdict::Inconclusive,
        Some(r) => {
            let holds = criterion.comparator.holds(r.value, criterion.threshold);
            match (kind, holds) {
                (CriterionKind::Success, true) | (CriterionKind::Rollback, false) => Verdict::Pass,
                (CriterionKind::Success, false) | (CriterionKind::Rollback, true) => Verdict::Fail,
            }
        }
    };
    Evaluation {
        kind,
        metric: criterion.metric.clone(),
        comparator: criterion.comparator,
        threshold: criterion.threshold,
        min_samples: criterion.min_samples,
        value,
        samples,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn crit(c: Comparator, t: f64, min: u64) -> Criterion {
        Criterion {
            metric: MetricName::parse("error_rate").unwrap(),
            comparator: c,
            threshold: Threshold::parse(t).unwrap(),
            min_samples: min,
        }
    }

    fn reading(v: f64, n: u64, secs: i64) -> Reading {
        Reading {
            metric: MetricName::parse("error_rate").unwrap(),
            value: v,
            samples: n,
            observed_at: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
        }
    }

    #[test]
    fn success_and_rollback_semantics() {
        let ok = crit(Comparator::Lte, 0.005, 500);
        let bad = crit(Comparator::Gt, 0.02, 200);
        let good = [reading(0.004, 1000, 0)];
        let awful = [reading(0.05, 1000, 0)];
        assert_eq!(
            evaluate(&ok, CriterionKind::Success, &good).verdict,
            Verdict::Pass
        );
        assert_eq!(
            evaluate(&ok, CriterionKind::Success, &awful).verdict,
            Verdict::Fail
        );
        assert_eq!(
            evaluate(&bad, CriterionKind::Rollback, &good).verdict,
            Verdict::Pass
        );
        let e = evaluate(&bad, CriterionKind::Rollback, &awful);
        assert!(e.is_breach());
        assert_eq!(e.value, Some(0.05));
        assert_eq!(e.samples, 1000);
    }

    #[test]
    fn too_few_samples_or_none_is_inconclusive() {
        let ok = crit(Comparator::Lte, 0.005, 500);
        assert_eq!(
            evaluate(&ok, CriterionKind::Success, &[reading(0.001, 499, 0)]).verdict,
            Verdict::Inconclusive
        );
        let none = evaluate(&ok, CriterionKind::Success, &[]);
        assert_eq!(none.verdict, Verdict::Inconclusive);
        assert_eq!(none.value, None);
    }

    #[test]
    fn latest_reading_wins_by_observation_time() {
        let ok = crit(Comparator::Lte, 0.005, 0);
        // recorded out of order: the later observation is the good one
        let readings = [reading(0.001, 10, 60), reading(0.9, 10, 0)];
        assert_eq!(
            evaluate(&ok, CriterionKind::Success, &readings).verdict,
            Verdict::Pass
        );
    }
}
