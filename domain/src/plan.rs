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

/// The `plan` object exactly as a client sends it (see `examples/create-rollout.json`).
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
    pub comparator: String,
    pub threshold: f64,
    /// Absent means 0 (any reading is conclusive).
    #[serde(default)]
    pub min_samples: Option<i64>,
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
}

impl Stage {
    /// Whether one of this stage's criteria judges `metric`.
    pub fn judges_metric(&self, metric: &MetricName) -> bool {
        self.success_criteria
            .iter()
            .chain(&self.rollback_criteria)
            .any(|c| &c.metric == metric)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Audience {
    pub percentage: Percentage,
    pub cohorts: Vec<String>,
}

/// A guardrail: `metric comparator threshold`, judged once `min_samples` are in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Criterion {
    pub metric: MetricName,
    pub comparator: Comparator,
    pub threshold: Threshold,
    pub min_samples: u64,
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.metric, self.comparator, self.threshold)
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

fn criterion(errors: &mut ValidationErrors, path: &str, spec: &CriterionSpec) -> Option<Criterion> {
    let metric = MetricName::parse(&spec.metric)
        .map_err(|e| errors.0.push(e.at(format!("{path}.metric"))))
        .ok();
    let comparator = Comparator::parse(&spec.comparator)
        .map_err(|e| errors.0.push(e.at(format!("{path}.comparator"))))
        .ok();
    let threshold = Threshold::parse(spec.threshold)
        .map_err(|e| errors.0.push(e.at(format!("{path}.threshold"))))
        .ok();
    let min_samples = non_negative(
        errors,
        &format!("{path}.min_samples"),
        spec.min_samples.unwrap_or(0),
    );
    Some(Criterion {
        metric: metric?,
        comparator: comparator?,
        threshold: threshold?,
        min_samples,
    })
}

fn stage(errors: &mut ValidationErrors, path: &str, spec: &StageSpec) -> Option<Stage> {
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
        .map(|(i, c)| criterion(errors, &format!("{path}.success_criteria[{i}]"), c))
        .collect();
    let rollback: Vec<_> = spec
        .rollback_criteria
        .iter()
        .enumerate()
        .map(|(i, c)| criterion(errors, &format!("{path}.rollback_criteria[{i}]"), c))
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
            stages.push(stage(&mut errors, &path, s));
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
