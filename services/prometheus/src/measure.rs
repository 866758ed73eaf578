//! Measuring one query criterion: the canary's value and samples, and the baseline's when the
//! criterion compares against one, all evaluated at the same instant.
//!
//! The result is facts, not a verdict: the domain judges them (threshold or baseline
//! relation, `min_samples` on both sides) in the same code path as posted readings. Anything
//! that cannot be measured is [`Measured::Inconclusive`] with its reason.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::client::{Prometheus, QueryError};
use crate::template::{render, TemplateError, TemplateVars};

/// The queries of one criterion, as written in the plan (templates).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriterionQueries {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_samples_query: Option<String>,
}

impl CriterionQueries {
    pub fn new(query: impl Into<String>) -> Self {
        CriterionQueries {
            query: query.into(),
            samples_query: None,
            baseline_query: None,
            baseline_samples_query: None,
        }
    }

    /// `(field, template)` for each query present, `field` as named in the plan.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![("query", self.query.as_str())];
        for (name, q) in [
            ("samples_query", &self.samples_query),
            ("baseline_query", &self.baseline_query),
            ("baseline_samples_query", &self.baseline_samples_query),
        ] {
            if let Some(q) = q {
                out.push((name, q.as_str()));
            }
        }
        out
    }

    /// The same queries with the placeholders filled in.
    pub fn render(&self, vars: &TemplateVars<'_>) -> Result<CriterionQueries, TemplateError> {
        let opt = |q: &Option<String>| q.as_deref().map(|q| render(q, vars)).transpose();
        Ok(CriterionQueries {
            query: render(&self.query, vars)?,
            samples_query: opt(&self.samples_query)?,
            baseline_query: opt(&self.baseline_query)?,
            baseline_samples_query: opt(&self.baseline_samples_query)?,
        })
    }
}

/// One side (canary or baseline) as measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub value: f64,
    /// `None` when the criterion has no samples query for this side.
    pub samples: Option<u64>,
}

/// What one evaluation of a criterion found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Measured {
    Observed {
        canary: Side,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        baseline: Option<Side>,
    },
    Inconclusive {
        /// Which query failed: `query`, `samples_query`, `baseline_query`, …
        field: String,
        /// A stable short code (`timeout`, `no_data`, `unreachable`, …).
        code: String,
        reason: String,
    },
}

impl Measured {
    pub fn is_inconclusive(&self) -> bool {
        matches!(self, Self::Inconclusive { .. })
    }
}

/// One measurement: the rendered queries, the instant they were evaluated at, and the facts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub queries: CriterionQueries,
    pub evaluated_at: DateTime<Utc>,
    pub measured: Measured,
}

fn inconclusive(field: &str, e: &QueryError) -> Measured {
    Measured::Inconclusive {
        field: field.to_owned(),
        code: e.code().to_owned(),
        reason: e.to_string(),
    }
}

/// A sample count from a float (`increase()` extrapolates): rounded down, never negative.
fn count(field: &str, value: f64) -> Result<u64, Measured> {
    if value < 0.0 {
        return Err(Measured::Inconclusive {
            field: field.to_owned(),
            code: "negative_samples".into(),
            reason: format!("the samples query returned {value}, a negative count"),
        });
    }
    Ok(value.floor().min(u64::MAX as f64) as u64)
}

async fn optional(
    client: &Prometheus,
    query: Option<&str>,
    at: DateTime<Utc>,
) -> Option<Result<f64, QueryError>> {
    match query {
        Some(q) => Some(client.value(q, at).await.map(|s| s.value)),
        None => None,
    }
}

/// Evaluates a criterion's (already rendered) queries at `at`, concurrently.
pub async fn measure(
    client: &Prometheus,
    queries: &CriterionQueries,
    at: DateTime<Utc>,
) -> Measurement {
    let (canary, samples, baseline, baseline_samples) = tokio::join!(
        client.value(&queries.query, at),
        optional(client, queries.samples_query.as_deref(), at),
        optional(client, queries.baseline_query.as_deref(), at),
        optional(client, queries.baseline_samples_query.as_deref(), at),
    );
    let measured = (|| {
        let canary = canary.map_err(|e| inconclusive("query", &e))?.value;
        let samples = match samples {
            Some(s) => Some(count(
                "samples_query",
                s.map_err(|e| inconclusive("samples_query", &e))?,
            )?),
            None => None,
        };
        let baseline = match baseline {
            Some(b) => {
                let value = b.map_err(|e| inconclusive("baseline_query", &e))?;
                let samples = match baseline_samples {
                    Some(s) => Some(count(
                        "baseline_samples_query",
                        s.map_err(|e| inconclusive("baseline_samples_query", &e))?,
                    )?),
                    None => None,
                };
                Some(Side { value, samples })
            }
            None => None,
        };
        Ok::<_, Measured>(Measured::Observed {
            canary: Side {
                value: canary,
                samples,
            },
            baseline,
        })
    })()
    .unwrap_or_else(|m| m);
    Measurement {
        queries: queries.clone(),
        evaluated_at: at,
        measured,
    }
}

/// A query that failed validation, located by its field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidQuery {
    pub field: String,
    pub message: String,
}

/// Checks one criterion's query templates: placeholders first (no Prometheus needed), then
/// Prometheus' parser on the query rendered with the rollout's own values. `path` is the
/// criterion's path, e.g. `plan.stages[0].rollback_criteria[1]`.
///
/// `Err(Unavailable)` when Prometheus could not be asked; the caller decides what that means
/// (the server answers 503 rather than accept an unchecked query).
pub async fn validate_criterion(
    client: Option<&Prometheus>,
    path: &str,
    queries: &CriterionQueries,
    vars: &TemplateVars<'_>,
) -> Result<Vec<InvalidQuery>, QueryError> {
    let mut invalid = Vec::new();
    for (field, template) in queries.fields() {
        let rendered = match render(template, vars) {
            Ok(r) => r,
            Err(e) => {
                invalid.push(InvalidQuery {
                    field: format!("{path}.{field}"),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let Some(client) = client else { continue };
        match client.validate(&rendered).await {
            Ok(()) => {}
            Err(crate::client::ValidationFailure::Invalid(message)) => invalid.push(InvalidQuery {
                field: format!("{path}.{field}"),
                message,
            }),
            Err(crate::client::ValidationFailure::Unavailable(e)) => return Err(e),
        }
    }
    Ok(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_counts_round_down_and_refuse_negatives() {
        assert_eq!(count("samples_query", 199.9), Ok(199));
        assert_eq!(count("samples_query", 0.0), Ok(0));
        assert!(count("samples_query", -1.0).is_err());
    }

    #[test]
    fn fields_name_each_present_query() {
        let mut q = CriterionQueries::new("a");
        q.baseline_query = Some("b".into());
        assert_eq!(q.fields(), vec![("query", "a"), ("baseline_query", "b")]);
    }
}
