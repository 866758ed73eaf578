//! The rollout plan: the raw client shape ([`PlanSpec`]) and the validated one ([`Plan`]).
//!
//! `Plan::parse` reports every violation at once, each located by a path such
//! as `plan.stages[2].audience.percentage`. Unknown fields are refused by serde.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::values::{
    Comparator, MetricName, Percentage, ReadinessKey, Role, StageIndex, Threshold,
};

// ---------------------------------------------------------------------------
// Raw client JSON
// ---------------------------------------------------------------------------

/// The `plan` object exactly as a client sends it (see `docs/examples/create-rollout.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub owner: String,
    #[serde(default)]
    pub baseline_metrics: BTreeMap<String, f64>,
    pub stages: Vec<StageSpec>,
    #[serde(default)]
    pub readiness_checklist: Vec<ReadinessItemSpec>,
    #[serde(default)]
    pub contingencies: Vec<ContingencySpec>,
    #[serde(default)]
    pub communications: Option<CommunicationsSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    pub audience: AudienceSpec,
    pub min_soak_seconds: i64,
    #[serde(default)]
    pub success_criteria: Vec<CriterionSpec>,
    #[serde(default)]
    pub rollback_criteria: Vec<CriterionSpec>,
    /// `"rollback"` or `"pause"` (the default).
    #[serde(default)]
    pub on_breach: Option<String>,
    pub approvals: Vec<QuorumRuleSpec>,
    #[serde(default)]
    pub informed: Vec<String>,
    /// How often rollgate evaluates the stage's query criteria (default 60, minimum 5).
    #[serde(default)]
    pub evaluation_interval_seconds: Option<i64>,
    /// Consecutive inconclusive evaluations of a query criterion after which
    /// `on_inconclusive` applies (absent: they are only recorded).
    #[serde(default)]
    pub inconclusive_limit: Option<i64>,
    /// `"pause"` (the default) or `"record"`.
    #[serde(default)]
    pub on_inconclusive: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceSpec {
    pub percentage: f64,
    #[serde(default)]
    pub cohorts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriterionSpec {
    pub metric: String,
    /// Required unless `baseline` is given.
    #[serde(default)]
    pub comparator: Option<String>,
    /// Required unless `baseline` is given.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Absent means 0 (any reading is conclusive).
    #[serde(default)]
    pub min_samples: Option<i64>,
    /// A PromQL instant query rollgate evaluates itself (the canary's value);
    /// `{{stage}}` and `{{feature_key}}` are substituted before it runs.
    #[serde(default)]
    pub query: Option<String>,
    /// A PromQL query for the number of samples behind `query`'s value.
    #[serde(default)]
    pub samples_query: Option<String>,
    /// A PromQL query for the baseline's value (needs `baseline`).
    #[serde(default)]
    pub baseline_query: Option<String>,
    /// Judge the canary against the baseline instead of a threshold.
    #[serde(default)]
    pub baseline: Option<BaselineSpec>,
}

/// `{"relation": "ratio", "max": 1.2}`: the canary's value may be at most 1.2×
/// the baseline's; `{"relation": "difference", "max": 0.05}`: at most 0.05 above it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSpec {
    pub relation: String,
    pub max: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumRuleSpec {
    pub roles: Vec<String>,
    pub count: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessItemSpec {
    pub key: String,
    pub title: String,
    pub owner_role: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContingencySpec {
    pub scenario: String,
    pub action: String,
    pub owner: String,
    pub time_horizon_seconds: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunicationsSpec {
    #[serde(default)]
    pub internal: Option<String>,
    #[serde(default)]
    pub external: Option<String>,
}

// ---------------------------------------------------------------------------
// Validated plan
// ---------------------------------------------------------------------------

/// A validated plan. Only [`Plan::parse`] builds one; it is stored inside
/// events, which were validated when they were written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    owner: String,
    baseline_metrics: BTreeMap<MetricName, f64>,
    stages: Vec<Stage>,
    readiness_checklist: Vec<ReadinessItem>,
    contingencies: Vec<Contingency>,
    communications: Communications,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub audience: Audience,
    pub min_soak_seconds: u64,
    pub success_criteria: Vec<Criterion>,
    pub rollback_criteria: Vec<Criterion>,
    pub on_breach: OnBreach,
    /// Quorum rules for entering this stage (R1): all must be met.
    pub approvals: Vec<QuorumRule>,
    pub informed: Vec<String>,
    /// Absent: [`DEFAULT_EVALUATION_INTERVAL_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_interval_seconds: Option<u64>,
    /// What consecutive inconclusive evaluations do; absent: only recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<InconclusivePolicy>,
}

/// How often query criteria are evaluated when a stage does not say.
pub const DEFAULT_EVALUATION_INTERVAL_SECONDS: u64 = 60;
/// The shortest evaluation interval a stage may ask for.
pub const MIN_EVALUATION_INTERVAL_SECONDS: u64 = 5;

/// After `limit` consecutive inconclusive evaluations of a query criterion, `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InconclusivePolicy {
    pub limit: u32,
    pub action: OnInconclusive,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInconclusive {
    /// Pause a running rollout, with the reason recorded.
    #[default]
    Pause,
    /// Record the evaluations only.
    Record,
}

impl Stage {
    /// Whether one of this stage's criteria judges `metric`.
    pub fn judges_metric(&self, metric: &MetricName) -> bool {
        self.criteria().any(|(_, c)| &c.metric == metric)
    }

    /// Success criteria, then rollback criteria.
    pub fn criteria(&self) -> impl Iterator<Item = (crate::guardrail::CriterionKind, &Criterion)> {
        use crate::guardrail::CriterionKind;
        self.success_criteria
            .iter()
            .map(|c| (CriterionKind::Success, c))
            .chain(
                self.rollback_criteria
                    .iter()
                    .map(|c| (CriterionKind::Rollback, c)),
            )
    }

    /// The queries rollgate evaluates for `metric` at this stage, if its
    /// criteria are query criteria (all criteria naming one metric share them).
    pub fn queries_for(&self, metric: &MetricName) -> Option<&Queries> {
        self.criteria()
            .filter(|(_, c)| &c.metric == metric)
            .find_map(|(_, c)| c.queries.as_ref())
    }

    /// Seconds between evaluations of the query criteria.
    pub fn evaluation_interval(&self) -> u64 {
        self.evaluation_interval_seconds
            .unwrap_or(DEFAULT_EVALUATION_INTERVAL_SECONDS)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Audience {
    pub percentage: Percentage,
    pub cohorts: Vec<String>,
}

/// A guardrail: `metric comparator threshold`, judged once `min_samples` are in.
///
/// With `baseline`, the comparator and threshold judge the canary's relation
/// to the baseline (ratio or difference) instead of its value. With
/// `queries`, the value comes from rollgate's own Prometheus evaluations
/// only, never from posted readings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Criterion {
    pub metric: MetricName,
    pub comparator: Comparator,
    pub threshold: Threshold,
    pub min_samples: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<Queries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Relation>,
    /// The plan's `baseline_metrics` figure for this metric: the baseline
    /// when no baseline query gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_reference: Option<f64>,
}

/// The PromQL a query criterion is evaluated with (templates unexpanded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queries {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_query: Option<String>,
}

/// How a canary's value is related to the baseline's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// canary / baseline (undefined for a baseline of 0 or less: inconclusive).
    Ratio,
    /// canary − baseline.
    Difference,
}

impl Relation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ratio => "ratio",
            Self::Difference => "difference",
        }
    }
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.baseline {
            None => write!(f, "{} {} {}", self.metric, self.comparator, self.threshold),
            Some(rel) => write!(
                f,
                "{} {} to baseline {} {}",
                self.metric,
                rel.as_str(),
                self.comparator,
                self.threshold
            ),
        }
    }
}

/// What a breached rollback criterion does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBreach {
    Rollback,
    #[default]
    Pause,
}

/// `count` distinct people holding any of `roles` (R1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumRule {
    pub roles: BTreeSet<Role>,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessItem {
    pub key: ReadinessKey,
    pub title: String,
    pub owner_role: Role,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contingency {
    pub scenario: String,
    pub action: String,
    pub owner: String,
    pub time_horizon_seconds: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Communications {
    pub internal: Option<String>,
    pub external: Option<String>,
}

const MAX_TEXT: usize = 10_000;

fn non_empty(errors: &mut ValidationErrors, field: &str, value: &str) -> String {
    if value.trim().is_empty() {
        errors.push(field, "must not be empty");
    } else if value.len() > MAX_TEXT {
        errors.push(field, format!("must be at most {MAX_TEXT} bytes"));
    }
    value.to_owned()
}

fn non_negative(errors: &mut ValidationErrors, field: &str, value: i64) -> u64 {
    u64::try_from(value).unwrap_or_else(|_| {
        errors.push(field, format!("{value} must be zero or more"));
        0
    })
}

/// The longest PromQL text a criterion may carry.
const MAX_QUERY: usize = 10_000;

fn query_text(
    errors: &mut ValidationErrors,
    field: &str,
    value: Option<&String>,
) -> Option<String> {
    let q = value?;
    if q.trim().is_empty() {
        errors.push(field, "must not be empty");
    } else if q.len() > MAX_QUERY {
        errors.push(field, format!("must be at most {MAX_QUERY} bytes"));
    } else if q.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        errors.push(field, "must not contain control characters");
    }
    Some(q.clone())
}

fn criterion(
    errors: &mut ValidationErrors,
    path: &str,
    kind: crate::guardrail::CriterionKind,
    spec: &CriterionSpec,
    baseline_metrics: &BTreeMap<String, f64>,
) -> Option<Criterion> {
    use crate::guardrail::CriterionKind;
    let metric = MetricName::parse(&spec.metric)
        .map_err(|e| errors.0.push(e.at(format!("{path}.metric"))))
        .ok();
    let min_samples = non_negative(
        errors,
        &format!("{path}.min_samples"),
        spec.min_samples.unwrap_or(0),
    );
    let query = query_text(errors, &format!("{path}.query"), spec.query.as_ref());
    let samples_query = query_text(
        errors,
        &format!("{path}.samples_query"),
        spec.samples_query.as_ref(),
    );
    let baseline_query = query_text(
        errors,
        &format!("{path}.baseline_query"),
        spec.baseline_query.as_ref(),
    );
    if query.is_none() {
        for (field, given) in [
            ("samples_query", samples_query.is_some()),
            ("baseline_query", baseline_query.is_some()),
        ] {
            if given {
                errors.push(
                    format!("{path}.query"),
                    format!("is required when {field} is given"),
                );
            }
        }
    }
    if baseline_query.is_some() && spec.baseline.is_none() {
        errors.push(
            format!("{path}.baseline"),
            "is required with a baseline_query (how the canary relates to the baseline)",
        );
    }
    let queries = query.map(|query| Queries {
        query,
        samples_query,
        baseline_query,
    });
    let (comparator, threshold, baseline) = match &spec.baseline {
        None => {
            let comparator = match &spec.comparator {
                Some(c) => Comparator::parse(c)
                    .map_err(|e| errors.0.push(e.at(format!("{path}.comparator"))))
                    .ok(),
                None => {
                    errors.push(
                        format!("{path}.comparator"),
                        "is required without a baseline",
                    );
                    None
                }
            };
            let threshold = match spec.threshold {
                Some(t) => Threshold::parse(t)
                    .map_err(|e| errors.0.push(e.at(format!("{path}.threshold"))))
                    .ok(),
                None => {
                    errors.push(
                        format!("{path}.threshold"),
                        "is required without a baseline",
                    );
                    None
                }
            };
            (comparator, threshold, None)
        }
        Some(b) => {
            for (field, given) in [
                ("comparator", spec.comparator.is_some()),
                ("threshold", spec.threshold.is_some()),
            ] {
                if given {
                    errors.push(
                        format!("{path}.{field}"),
                        "must be absent with a baseline (its max is the limit)",
                    );
                }
            }
            let relation = match b.relation.as_str() {
                "ratio" => Some(Relation::Ratio),
                "difference" => Some(Relation::Difference),
                other => {
                    errors.push(
                        format!("{path}.baseline.relation"),
                        format!("{other:?} must be \"ratio\" or \"difference\""),
                    );
                    None
                }
            };
            let max = if b.max.is_finite() && b.max > 0.0 {
                Threshold::parse(b.max).ok()
            } else {
                errors.push(
                    format!("{path}.baseline.max"),
                    format!("{} must be a finite number above 0", b.max),
                );
                None
            };
            if spec.baseline_query.is_none() && !baseline_metrics.contains_key(&spec.metric) {
                errors.push(
                    format!("{path}.baseline"),
                    format!(
                        "needs a baseline_query or plan.baseline_metrics.{} to compare with",
                        spec.metric
                    ),
                );
            }
            // The relation may be at most `max`: a rollback criterion is
            // breached above it, a success criterion passes up to it.
            let comparator = match kind {
                CriterionKind::Rollback => Comparator::Gt,
                CriterionKind::Success => Comparator::Lte,
            };
            (Some(comparator), max, relation)
        }
    };
    if spec.baseline.is_some() && baseline.is_none() {
        return None;
    }
    Some(Criterion {
        metric: metric?,
        comparator: comparator?,
        threshold: threshold?,
        min_samples,
        queries,
        baseline,
        baseline_reference: baseline
            .and_then(|_| baseline_metrics.get(&spec.metric))
            .copied()
            .filter(|v| v.is_finite()),
    })
}

fn stage(
    errors: &mut ValidationErrors,
    path: &str,
    spec: &StageSpec,
    baseline_metrics: &BTreeMap<String, f64>,
) -> Option<Stage> {
    use crate::guardrail::CriterionKind;
    let name = non_empty(errors, &format!("{path}.name"), &spec.name);
    if name.len() > 200 {
        errors.push(format!("{path}.name"), "must be at most 200 bytes");
    }
    let percentage = Percentage::parse(spec.audience.percentage)
        .map_err(|e| errors.0.push(e.at(format!("{path}.audience.percentage"))))
        .ok();
    for (i, c) in spec.audience.cohorts.iter().enumerate() {
        non_empty(errors, &format!("{path}.audience.cohorts[{i}]"), c);
    }
    let min_soak_seconds = non_negative(
        errors,
        &format!("{path}.min_soak_seconds"),
        spec.min_soak_seconds,
    );
    let success: Vec<_> = spec
        .success_criteria
        .iter()
        .enumerate()
        .map(|(i, c)| {
            criterion(
                errors,
                &format!("{path}.success_criteria[{i}]"),
                CriterionKind::Success,
                c,
                baseline_metrics,
            )
        })
        .collect();
    let rollback: Vec<_> = spec
        .rollback_criteria
        .iter()
        .enumerate()
        .map(|(i, c)| {
            criterion(
                errors,
                &format!("{path}.rollback_criteria[{i}]"),
                CriterionKind::Rollback,
                c,
                baseline_metrics,
            )
        })
        .collect();
    let on_breach = match spec.on_breach.as_deref() {
        None | Some("pause") => Some(OnBreach::Pause),
        Some("rollback") => Some(OnBreach::Rollback),
        Some(other) => {
            errors.push(
                format!("{path}.on_breach"),
                format!("{other:?} must be \"rollback\" or \"pause\""),
            );
            None
        }
    };
    if spec.approvals.is_empty() {
        errors.push(
            format!("{path}.approvals"),
            "at least one quorum rule is required",
        );
    }
    let mut approvals = Vec::new();
    for (i, rule) in spec.approvals.iter().enumerate() {
        let rpath = format!("{path}.approvals[{i}]");
        let mut roles = BTreeSet::new();
        if rule.roles.is_empty() {
            errors.push(format!("{rpath}.roles"), "at least one role is required");
        }
        for (j, r) in rule.roles.iter().enumerate() {
            match Role::parse(r) {
                Ok(role) if role.is_read_only() || role == Role::Service => errors.push(
                    format!("{rpath}.roles[{j}]"),
                    format!("{role} cannot approve advances"),
                ),
                Ok(role) => {
                    roles.insert(role);
                }
                Err(e) => errors.0.push(e.at(format!("{rpath}.roles[{j}]"))),
            }
        }
        let count = match u32::try_from(rule.count) {
            Ok(c) if (1..=100).contains(&c) => c,
            _ => {
                errors.push(
                    format!("{rpath}.count"),
                    format!("{} must be between 1 and 100", rule.count),
                );
                1
            }
        };
        approvals.push(QuorumRule { roles, count });
    }
    for (i, who) in spec.informed.iter().enumerate() {
        non_empty(errors, &format!("{path}.informed[{i}]"), who);
    }
    let evaluation_interval_seconds =
        spec.evaluation_interval_seconds
            .map(|secs| match u64::try_from(secs) {
                Ok(s) if (MIN_EVALUATION_INTERVAL_SECONDS..=86_400).contains(&s) => s,
                _ => {
                    errors.push(
                        format!("{path}.evaluation_interval_seconds"),
                        format!(
                        "{secs} must be between {MIN_EVALUATION_INTERVAL_SECONDS} and 86400 seconds"
                    ),
                    );
                    DEFAULT_EVALUATION_INTERVAL_SECONDS
                }
            });
    let action = match spec.on_inconclusive.as_deref() {
        None | Some("pause") => OnInconclusive::Pause,
        Some("record") => OnInconclusive::Record,
        Some(other) => {
            errors.push(
                format!("{path}.on_inconclusive"),
                format!("{other:?} must be \"pause\" or \"record\""),
            );
            OnInconclusive::Pause
        }
    };
    if spec.on_inconclusive.is_some() && spec.inconclusive_limit.is_none() {
        errors.push(
            format!("{path}.inconclusive_limit"),
            "is required with on_inconclusive",
        );
    }
    let inconclusive = spec.inconclusive_limit.map(|limit| {
        let limit = match u32::try_from(limit) {
            Ok(l) if (1..=1000).contains(&l) => l,
            _ => {
                errors.push(
                    format!("{path}.inconclusive_limit"),
                    format!("{limit} must be between 1 and 1000"),
                );
                1
            }
        };
        InconclusivePolicy { limit, action }
    });
    let query_criteria = spec
        .success_criteria
        .iter()
        .chain(&spec.rollback_criteria)
        .any(|c| c.query.is_some());
    if !query_criteria {
        for (field, given) in [
            (
                "evaluation_interval_seconds",
                spec.evaluation_interval_seconds.is_some(),
            ),
            ("inconclusive_limit", spec.inconclusive_limit.is_some()),
        ] {
            if given {
                errors.push(
                    format!("{path}.{field}"),
                    "applies only to a stage with query criteria",
                );
            }
        }
    }
    // One metric, one measurement: criteria of a stage that name the same
    // metric are all fed by readings, or all by the same queries.
    type QueryTexts<'a> = [&'a Option<String>; 3];
    let mut fed: BTreeMap<&str, QueryTexts<'_>> = BTreeMap::new();
    for (list, specs) in [
        ("success_criteria", &spec.success_criteria),
        ("rollback_criteria", &spec.rollback_criteria),
    ] {
        for (i, c) in specs.iter().enumerate() {
            let q = [&c.query, &c.samples_query, &c.baseline_query];
            if let Some(first) = fed.insert(c.metric.as_str(), q) {
                if first != q {
                    errors.push(
                        format!("{path}.{list}[{i}].query"),
                        format!(
                            "criteria of one stage naming {} must share their queries",
                            c.metric
                        ),
                    );
                }
            }
        }
    }
    Some(Stage {
        name,
        audience: Audience {
            percentage: percentage?,
            cohorts: spec.audience.cohorts.clone(),
        },
        min_soak_seconds,
        success_criteria: success.into_iter().collect::<Option<_>>()?,
        rollback_criteria: rollback.into_iter().collect::<Option<_>>()?,
        on_breach: on_breach?,
        approvals,
        informed: spec.informed.clone(),
        evaluation_interval_seconds,
        inconclusive,
    })
}

impl Plan {
    /// Validates a client plan, reporting every violation with its path
    /// (paths start with `plan.`).
    pub fn parse(spec: PlanSpec) -> Result<Plan, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let owner = non_empty(&mut errors, "plan.owner", &spec.owner);

        let mut baseline_metrics = BTreeMap::new();
        for (name, value) in &spec.baseline_metrics {
            let path = format!("plan.baseline_metrics.{name}");
            match MetricName::parse(name) {
                Ok(m) if value.is_finite() => {
                    baseline_metrics.insert(m, *value);
                }
                Ok(_) => errors.push(path, "must be a finite number"),
                Err(e) => errors.0.push(e.at(path)),
            }
        }

        if spec.stages.is_empty() {
            errors.push("plan.stages", "at least one stage is required");
        }
        if spec.stages.len() > 1000 {
            errors.push("plan.stages", "at most 1000 stages");
        }
        let mut names = BTreeSet::new();
        let mut previous: Option<f64> = None;
        let mut stages = Vec::new();
        for (i, s) in spec.stages.iter().enumerate() {
            let path = format!("plan.stages[{i}]");
            if !names.insert(s.name.as_str()) {
                errors.push(
                    format!("{path}.name"),
                    format!("duplicate stage name {:?}", s.name),
                );
            }
            let pct = s.audience.percentage;
            if let Some(prev) = previous {
                if pct.is_finite() && pct < prev {
                    errors.push(
                        format!("{path}.audience.percentage"),
                        format!("{pct} is lower than the previous stage's {prev}: percentages never decrease"),
                    );
                }
            }
            if pct.is_finite() {
                previous = Some(previous.map_or(pct, |p: f64| p.max(pct)));
            }
            stages.push(stage(&mut errors, &path, s, &spec.baseline_metrics));
        }

        let mut keys = BTreeSet::new();
        let mut readiness_checklist = Vec::new();
        for (i, item) in spec.readiness_checklist.iter().enumerate() {
            let path = format!("plan.readiness_checklist[{i}]");
            let key = ReadinessKey::parse(&item.key)
                .map_err(|e| errors.0.push(e.at(format!("{path}.key"))))
                .ok();
            if !keys.insert(item.key.as_str()) {
                errors.push(
                    format!("{path}.key"),
                    format!("duplicate readiness key {:?}", item.key),
                );
            }
            let title = non_empty(&mut errors, &format!("{path}.title"), &item.title);
            let owner_role = Role::parse(&item.owner_role)
                .map_err(|e| errors.0.push(e.at(format!("{path}.owner_role"))))
                .ok();
            if let (Some(key), Some(owner_role)) = (key, owner_role) {
                readiness_checklist.push(ReadinessItem {
                    key,
                    title,
                    owner_role,
                });
            }
        }

        let mut contingencies = Vec::new();
        for (i, c) in spec.contingencies.iter().enumerate() {
            let path = format!("plan.contingencies[{i}]");
            contingencies.push(Contingency {
                scenario: non_empty(&mut errors, &format!("{path}.scenario"), &c.scenario),
                action: non_empty(&mut errors, &format!("{path}.action"), &c.action),
                owner: non_empty(&mut errors, &format!("{path}.owner"), &c.owner),
                time_horizon_seconds: non_negative(
                    &mut errors,
                    &format!("{path}.time_horizon_seconds"),
                    c.time_horizon_seconds,
                ),
            });
        }

        let communications = spec
            .communications
            .map(|c| Communications {
                internal: c.internal,
                external: c.external,
            })
            .unwrap_or_default();

        if !errors.is_empty() {
            return Err(errors);
        }
        let stages = stages.into_iter().collect::<Option<Vec<_>>>();
        match stages {
            Some(stages) => Ok(Plan {
                owner,
                baseline_metrics,
                stages,
                readiness_checklist,
                contingencies,
                communications,
            }),
            // A stage failed without recording why: cannot happen, but never panic.
            None => Err(ValidationErrors::from(crate::error::ValidationError::new(
                "plan.stages",
                "invalid stage",
            ))),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn baseline_metrics(&self) -> &BTreeMap<MetricName, f64> {
        &self.baseline_metrics
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    pub fn stage(&self, index: StageIndex) -> Option<&Stage> {
        self.stages.get(index.as_usize())
    }

    /// The index of the last stage (a plan has at least one).
    pub fn last_stage(&self) -> StageIndex {
        StageIndex::new(u32::try_from(self.stages.len().saturating_sub(1)).unwrap_or(u32::MAX))
    }

    pub fn readiness_checklist(&self) -> &[ReadinessItem] {
        &self.readiness_checklist
    }

    pub fn readiness_item(&self, key: &str) -> Option<&ReadinessItem> {
        self.readiness_checklist
            .iter()
            .find(|i| i.key.as_str() == key)
    }

    pub fn contingencies(&self) -> &[Contingency] {
        &self.contingencies
    }

    pub fn communications(&self) -> &Communications {
        &self.communications
    }
}
