//! Guardrails judged against a real Prometheus.
//!
//! - [`client`]: the HTTP API client (`/api/v1/query`, query validation), typed results and
//!   typed errors; an error is never a pass.
//! - [`template`]: `{{stage}}` and `{{feature_key}}` filled into queries with escaping, so a
//!   value cannot leave its label matcher.
//! - [`measure`]: one criterion's canary (and baseline) values and sample counts at one instant.
//! - [`domain`]: the rollout's active stage for the evaluator, and the `RecordEvaluation`
//!   command an evaluation becomes.
//! - [`lease`]: one evaluator per rollout across instances (a lease row in the database).
//! - [`evaluator`]: the loop inside `rollgate serve`, scheduled from the stage's entry time.
//!
//! This crate does no decision of its own: it measures, and the domain judges the
//! measurement in the same code path as posted readings.

pub mod args;
pub mod client;
pub mod domain;
pub mod evaluator;
pub mod lease;
pub mod measure;
pub mod template;

pub use args::PrometheusArgs;
pub use client::{Auth, Prometheus, PrometheusConfig, QueryError, Sample, ValidationFailure};
pub use evaluator::{
    running_rollouts, ActiveStage, CriterionResult, Evaluator, EvaluatorConfig, EvaluatorHandle,
    EvaluatorMetrics, PortError, QueryCriterion, Recorded, RolloutPort, StageEvaluation,
};
pub use lease::Leases;
pub use measure::{measure, validate_criterion, CriterionQueries, Measured, Measurement, Side};
pub use template::{render, TemplateError, TemplateVars};
