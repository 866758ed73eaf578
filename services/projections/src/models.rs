//! The read models and how each event changes them.
//!
//! Every function here runs inside the projector's transaction. Rollout summaries are
//! loaded once per batch, changed in memory and written back before the checkpoint, so a
//! batch full of readings costs one write per rollout.

use std::collections::BTreeMap;

use rollgate_domain::binding::{BindingEvent, Target};
use rollgate_domain::plan::{Plan, QuorumRule};
use rollgate_domain::{PolicyEvent, RolloutEvent, RolloutStatus};
use serde::{Deserialize, Serialize};

use crate::db::{Conn, Sql, Ty, Val};
use crate::envelope::{event_stage, Body, Decoded};
use crate::ProjectionError;

/// Rollout summaries (list and filter).
pub const ROLLOUT_SUMMARIES: &str = "rollout_summaries";
/// Audit trail (one row per event).
pub const AUDIT_TRAIL: &str = "audit_trail";
/// Decision log.
pub const DECISION_LOG: &str = "decision_log";
/// Approver inbox (open advance requests).
pub const APPROVER_INBOX: &str = "approver_inbox";
/// Deviation id → rollout.
pub const DEVIATION_INDEX: &str = "deviation_index";
/// GitHub repository and environment → the bound rollout (deployment protection rules).
pub const GITHUB_BINDINGS: &str = "github_bindings";

/// Every read model, by name (the name of its checkpoint row).
pub const READ_MODELS: [&str; 6] = [
    APPROVER_INBOX,
    AUDIT_TRAIL,
    DECISION_LOG,
    DEVIATION_INDEX,
    GITHUB_BINDINGS,
    ROLLOUT_SUMMARIES,
];

/// A table of a read model: name, key order, columns (for dumps and rebuilds).
pub(crate) struct TableDef {
    pub name: &'static str,
    pub order_by: &'static str,
    pub columns: &'static [&'static str],
}

pub(crate) fn tables_of(model: &str) -> &'static [TableDef] {
    match model {
        ROLLOUT_SUMMARIES => &[TableDef {
            name: "rollout_summaries",
            order_by: "rollout_id",
            columns: &[
                "rollout_id",
                "team",
                "feature_key",
                "title",
                "status",
                "stage_index",
                "stage_name",
                "stage_count",
                "exposure",
                "plan_revision",
                "stages",
                "created_by",
                "created_at",
                "updated_at",
                "created_position",
                "last_position",
            ],
        }],
        AUDIT_TRAIL => &[TableDef {
            name: "audit_trail",
            order_by: "position",
            columns: &[
                "position",
                "stream",
                "rollout_id",
                "team",
                "event_type",
                "actor_id",
                "actor_roles",
                "recorded_at",
                "request_id",
                "correlation_id",
                "summary",
                "stage",
            ],
        }],
        DECISION_LOG => &[TableDef {
            name: "decision_log",
            order_by: "position",
            columns: &[
                "position",
                "kind",
                "stream",
                "rollout_id",
                "team",
                "subject_id",
                "stage",
                "actor_id",
                "actor_roles",
                "policy_version",
                "decided_at",
                "recorded_at",
                "summary",
                "title",
                "rationale",
                "alternatives",
                "outcome",
            ],
        }],
        APPROVER_INBOX => &[
            TableDef {
                name: "approver_inbox",
                order_by: "request_id",
                columns: &[
                    "request_id",
                    "rollout_id",
                    "team",
                    "from_stage",
                    "to_stage",
                    "to_stage_name",
                    "plan_revision",
                    "quorum",
                    "quorum_roles",
                    "requested_by",
                    "requested_at",
                    "position",
                ],
            },
            TableDef {
                name: "approver_inbox_approvals",
                order_by: "request_id, approver",
                columns: &[
                    "request_id",
                    "approver",
                    "roles",
                    "approved_at",
                    "expires_at",
                    "position",
                ],
            },
            TableDef {
                name: "approver_inbox_plans",
                order_by: "rollout_id",
                columns: &["rollout_id", "plan_revision", "stages"],
            },
        ],
        DEVIATION_INDEX => &[TableDef {
            name: "deviation_index",
            order_by: "deviation_id",
            columns: &[
                "deviation_id",
                "rollout_id",
                "team",
                "stage",
                "status",
                "requested_by",
                "position",
                "last_position",
            ],
        }],
        GITHUB_BINDINGS => &[TableDef {
            name: "github_bindings",
            order_by: "binding_id",
            columns: &[
                "binding_id",
                "repository",
                "environment",
                "rollout_id",
                "team",
                "status",
                "position",
                "last_position",
            ],
        }],
        _ => &[],
    }
}

/// Which read models an event is applied to (those whose checkpoint is behind it).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Targets {
    pub summaries: bool,
    pub audit: bool,
    pub decisions: bool,
    pub inbox: bool,
    pub deviations: bool,
    pub github_bindings: bool,
}

impl Targets {
    pub(crate) fn for_position(checkpoints: &BTreeMap<String, u64>, position: u64) -> Self {
        let behind = |m: &str| checkpoints.get(m).is_none_or(|cp| *cp < position);
        Targets {
            summaries: behind(ROLLOUT_SUMMARIES),
            audit: behind(AUDIT_TRAIL),
            decisions: behind(DECISION_LOG),
            inbox: behind(APPROVER_INBOX),
            deviations: behind(DEVIATION_INDEX),
            github_bindings: behind(GITHUB_BINDINGS),
        }
    }
}

/// State carried across the events of one batch.
#[derive(Default)]
pub(crate) struct Batch {
    /// Summaries loaded (or created) during this batch; `None` = no such rollout.
    summaries: BTreeMap<String, Option<SummaryRow>>,
    /// Audit rows to insert, written in multi-row statements at the end of the batch.
    audit: Vec<Vec<Val>>,
}

impl Batch {
    /// Applies one event to the targeted read models.
    pub(crate) async fn apply(
        &mut self,
        conn: &mut Conn<'_>,
        d: &Decoded<'_>,
        targets: Targets,
    ) -> Result<(), ProjectionError> {
        if targets.audit {
            self.audit.push(audit_row(d));
        }
        if targets.decisions {
            if let Some(entry) = decision_of(d) {
                insert_decision(conn, d, entry).await?;
            }
        }
        if let Body::Rollout(e) = &d.body {
            if let Some(rollout_id) = &d.rollout_id {
                if targets.summaries {
                    self.apply_summary(conn, d, rollout_id, e).await?;
                }
                if targets.inbox {
                    apply_inbox(conn, d, rollout_id, e).await?;
                }
                if targets.deviations {
                    apply_deviation(conn, d, rollout_id, e).await?;
                }
            }
        }
        if let Body::Binding(e) = &d.body {
            if targets.github_bindings {
                apply_github_binding(conn, d, e).await?;
            }
        }
        Ok(())
    }

    /// Writes back every summary changed in this batch.
    pub(crate) async fn flush(self, conn: &mut Conn<'_>) -> Result<(), ProjectionError> {
        for chunk in self.audit.chunks(AUDIT_ROWS_PER_INSERT) {
            let mut sql = Sql::new(AUDIT_INSERT);
            for (i, row) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.list(row.iter().cloned());
            }
            conn.exec(&sql.text, &sql.args).await?;
        }
        for row in self.summaries.into_values().flatten() {
            if row.dirty {
                row.save(conn).await?;
            }
        }
        Ok(())
    }

    async fn apply_summary(
        &mut self,
        conn: &mut Conn<'_>,
        d: &Decoded<'_>,
        rollout_id: &str,
        e: &RolloutEvent,
    ) -> Result<(), ProjectionError> {
        if !self.summaries.contains_key(rollout_id) {
            let loaded = SummaryRow::load(conn, rollout_id).await?;
            self.summaries.insert(rollout_id.to_owned(), loaded);
        }
        let slot = self.summaries.get_mut(rollout_id).expect("inserted above");
        let position = d.event.position as i64;
        match (slot.as_mut(), e) {
            (
                None,
                RolloutEvent::RolloutCreated {
                    feature_key,
                    title,
                    team,
                    plan,
                    plan_revision,
                    created_by,
                    at,
                    ..
                },
            ) => {
                let mut row = SummaryRow {
                    rollout_id: rollout_id.to_owned(),
                    team: team.to_string(),
                    feature_key: feature_key.to_string(),
                    title: title.clone(),
                    status: RolloutStatus::Draft,
                    stage_index: None,
                    stages: StageBrief::of(plan),
                    plan_revision: i64::from(*plan_revision),
                    created_by: created_by.to_string(),
                    created_at: *at,
                    updated_at: *at,
                    created_position: position,
                    last_position: position,
                    dirty: true,
                };
                row.touch(position, *at);
                *slot = Some(row);
            }
            (None, _) | (Some(_), RolloutEvent::RolloutCreated { .. }) => {}
            (Some(row), e) => {
                row.evolve(e);
                row.touch(position, e.at());
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Rollout summaries
// ---------------------------------------------------------------------------

/// What the summary keeps of each stage of the current plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StageBrief {
    pub name: String,
    pub percentage: f64,
}

impl StageBrief {
    fn of(plan: &Plan) -> Vec<StageBrief> {
        plan.stages()
            .iter()
            .map(|s| StageBrief {
                name: s.name.clone(),
                percentage: s.audience.percentage.get(),
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
struct SummaryRow {
    rollout_id: String,
    team: String,
    feature_key: String,
    title: String,
    status: RolloutStatus,
    stage_index: Option<u32>,
    stages: Vec<StageBrief>,
    plan_revision: i64,
    created_by: String,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    created_position: i64,
    last_position: i64,
    dirty: bool,
}

pub(crate) fn parse_status(s: &str) -> Option<RolloutStatus> {
    [
        RolloutStatus::Draft,
        RolloutStatus::Ready,
        RolloutStatus::Running,
        RolloutStatus::Paused,
        RolloutStatus::RolledBack,
        RolloutStatus::Completed,
        RolloutStatus::Aborted,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
}

impl SummaryRow {
    /// The same transitions as the domain's `evolve`, restricted to what a summary shows.
    fn evolve(&mut self, e: &RolloutEvent) {
        match e {
            RolloutEvent::PlanRevised {
                plan,
                plan_revision,
                ..
            } => {
                self.stages = StageBrief::of(plan);
                self.plan_revision = i64::from(*plan_revision);
                if self.status == RolloutStatus::Ready {
                    self.status = RolloutStatus::Draft;
                }
            }
            RolloutEvent::RolloutReady { .. } => self.status = RolloutStatus::Ready,
            RolloutEvent::RolloutStarted { stage, .. } => {
                self.status = RolloutStatus::Running;
                self.stage_index = Some(stage.get());
            }
            RolloutEvent::Advanced { to_stage, .. } => self.stage_index = Some(to_stage.get()),
            RolloutEvent::Paused { .. } => self.status = RolloutStatus::Paused,
            RolloutEvent::Resumed { .. } => self.status = RolloutStatus::Running,
            RolloutEvent::RolledBack { to_stage, .. } => {
                self.status = RolloutStatus::RolledBack;
                self.stage_index = to_stage.map(|s| s.get());
            }
            RolloutEvent::RolloutCompleted { .. } => self.status = RolloutStatus::Completed,
            RolloutEvent::RolloutAborted { .. } => self.status = RolloutStatus::Aborted,
            _ => {}
        }
    }

    fn touch(&mut self, position: i64, at: chrono::DateTime<chrono::Utc>) {
        self.last_position = position;
        self.updated_at = at;
        self.dirty = true;
    }

    fn stage_name(&self) -> Option<String> {
        self.stage_index
            .and_then(|i| self.stages.get(i as usize))
            .map(|s| s.name.clone())
    }

    /// Exposed audience: 0 before start, after an abort, and at 0 % after a rollback.
    fn exposure(&self) -> f64 {
        match self.status {
            RolloutStatus::Draft | RolloutStatus::Ready | RolloutStatus::Aborted => 0.0,
            _ => self
                .stage_index
                .and_then(|i| self.stages.get(i as usize))
                .map_or(0.0, |s| s.percentage),
        }
    }

    async fn load(conn: &mut Conn<'_>, rollout_id: &str) -> Result<Option<Self>, ProjectionError> {
        let row = conn
            .fetch_optional(
                "SELECT team, feature_key, title, status, stage_index, plan_revision, stages, \
                 created_by, created_at, updated_at, created_position, last_position \
                 FROM rollout_summaries WHERE rollout_id = $1",
                &[Val::text(rollout_id)],
                &[
                    Ty::T,
                    Ty::T,
                    Ty::T,
                    Ty::T,
                    Ty::I,
                    Ty::I,
                    Ty::T,
                    Ty::T,
                    Ty::Ts,
                    Ty::Ts,
                    Ty::I,
                    Ty::I,
                ],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut it = row.into_iter();
        let mut next = || it.next().expect("selected column");
        let team = next().into_text().unwrap_or_default();
        let feature_key = next().into_text().unwrap_or_default();
        let title = next().into_text().unwrap_or_default();
        let status_text = next().into_text().unwrap_or_default();
        let status = parse_status(&status_text).ok_or_else(|| {
            ProjectionError::Corrupt(format!("rollout {rollout_id}: status {status_text:?}"))
        })?;
        let stage_index = next().as_i64().map(|i| i as u32);
        let plan_revision = next().as_i64().unwrap_or_default();
        let stages: Vec<StageBrief> = serde_json::from_str(&next().into_text().unwrap_or_default())
            .map_err(|e| ProjectionError::Corrupt(format!("rollout {rollout_id}: stages: {e}")))?;
        let created_by = next().into_text().unwrap_or_default();
        let created_at = next().as_time().unwrap_or_default();
        let updated_at = next().as_time().unwrap_or_default();
        let created_position = next().as_i64().unwrap_or_default();
        let last_position = next().as_i64().unwrap_or_default();
        Ok(Some(SummaryRow {
            rollout_id: rollout_id.to_owned(),
            team,
            feature_key,
            title,
            status,
            stage_index,
            stages,
            plan_revision,
            created_by,
            created_at,
            updated_at,
            created_position,
            last_position,
            dirty: false,
        }))
    }

    async fn save(&self, conn: &mut Conn<'_>) -> Result<(), ProjectionError> {
        let stages = serde_json::to_string(&self.stages).expect("stages serialize");
        conn.exec(
            "INSERT INTO rollout_summaries (rollout_id, team, feature_key, title, status, \
             stage_index, stage_name, stage_count, exposure, plan_revision, stages, created_by, \
             created_at, updated_at, created_position, last_position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (rollout_id) DO UPDATE SET status = excluded.status, \
             stage_index = excluded.stage_index, stage_name = excluded.stage_name, \
             stage_count = excluded.stage_count, exposure = excluded.exposure, \
             plan_revision = excluded.plan_revision, stages = excluded.stages, \
             updated_at = excluded.updated_at, last_position = excluded.last_position",
            &[
                Val::text(&self.rollout_id),
                Val::text(&self.team),
                Val::text(&self.feature_key),
                Val::text(&self.title),
                Val::text(self.status.as_str()),
                Val::I(self.stage_index.map(i64::from)),
                Val::opt_text(self.stage_name()),
                Val::int(self.stages.len() as i64),
                Val::F(Some(self.exposure())),
                Val::int(self.plan_revision),
                Val::text(stages),
                Val::text(&self.created_by),
                Val::time(self.created_at),
                Val::time(self.updated_at),
                Val::int(self.created_position),
                Val::int(self.last_position),
            ],
        )
        .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Audit trail
// ---------------------------------------------------------------------------

/// Rows per audit INSERT (12 parameters each: well under both backends' limits).
const AUDIT_ROWS_PER_INSERT: usize = 200;

const AUDIT_INSERT: &str = "INSERT INTO audit_trail (position, stream, rollout_id, team, \
     event_type, actor_id, actor_roles, recorded_at, request_id, correlation_id, summary, stage) \
     VALUES ";

fn audit_row(d: &Decoded<'_>) -> Vec<Val> {
    let stage = d
        .rollout_event()
        .and_then(event_stage)
        .map(|s| i64::from(s.get()));
    vec![
        Val::int(d.event.position as i64),
        Val::text(&d.event.stream),
        Val::opt_text(d.rollout_id.clone()),
        Val::opt_text(d.team.clone()),
        Val::text(&d.event.event_type),
        Val::opt_text(d.actor.id.clone()),
        Val::text(d.roles_json()),
        Val::time(d.event.recorded_at),
        Val::opt_text(d.request_id.clone()),
        Val::opt_text(d.correlation_id.clone()),
        Val::text(d.summary()),
        Val::I(stage),
    ]
}

// ---------------------------------------------------------------------------
// Decision log
// ---------------------------------------------------------------------------

/// The kinds of decision-log entries.
pub mod kind {
    pub const APPROVAL: &str = "approval";
    pub const REJECTION: &str = "rejection";
    pub const ADVANCE_OVERRIDE: &str = "advance_override";
    pub const DEVIATION_REQUESTED: &str = "deviation_requested";
    pub const DEVIATION_GRANTED: &str = "deviation_granted";
    pub const DEVIATION_DENIED: &str = "deviation_denied";
    pub const ROLLBACK: &str = "rollback";
    pub const ABORT: &str = "abort";
    pub const DECISION: &str = "decision";
    pub const FREEZE_DECLARED: &str = "freeze_declared";
    pub const FREEZE_LIFTED: &str = "freeze_lifted";
    pub const POLICY_PUBLISHED: &str = "policy_published";
}

pub(crate) struct DecisionFields {
    kind: &'static str,
    subject_id: Option<String>,
    stage: Option<i64>,
    at: chrono::DateTime<chrono::Utc>,
    title: Option<String>,
    rationale: Option<String>,
    alternatives: Vec<String>,
    outcome: Option<String>,
}

fn stage_text(s: Option<rollgate_domain::StageIndex>) -> String {
    s.map_or_else(|| "0 %".to_owned(), |s| format!("stage {s}"))
}

pub(crate) fn decision_of(d: &Decoded<'_>) -> Option<DecisionFields> {
    let base = |kind, at| DecisionFields {
        kind,
        subject_id: None,
        stage: None,
        at,
        title: None,
        rationale: None,
        alternatives: Vec::new(),
        outcome: None,
    };
    let stage = |s: Option<rollgate_domain::StageIndex>| s.map(|s| i64::from(s.get()));
    Some(match &d.body {
        Body::Rollout(e) => match e.as_ref() {
            RolloutEvent::AdvanceApproved {
                request_id,
                comment,
                at,
                ..
            } => DecisionFields {
                subject_id: Some(request_id.to_string()),
                rationale: comment.clone(),
                outcome: Some("approved".to_owned()),
                ..base(kind::APPROVAL, *at)
            },
            RolloutEvent::AdvanceRejected {
                request_id,
                comment,
                at,
                ..
            } => DecisionFields {
                subject_id: Some(request_id.to_string()),
                rationale: Some(comment.clone()),
                outcome: Some("rejected".to_owned()),
                ..base(kind::REJECTION, *at)
            },
            RolloutEvent::Advanced {
                request_id,
                to_stage,
                waived,
                deviations_used,
                inconclusive_override,
                at,
                ..
            } if inconclusive_override.is_some() || !deviations_used.is_empty() => DecisionFields {
                subject_id: Some(request_id.to_string()),
                stage: stage(Some(*to_stage)),
                title: Some(format!(
                    "advance to stage {to_stage} despite unmet conditions"
                )),
                rationale: inconclusive_override.clone(),
                outcome: Some(format!(
                    "advanced; waived {} condition(s) under {} deviation(s)",
                    waived.len(),
                    deviations_used.len()
                )),
                ..base(kind::ADVANCE_OVERRIDE, *at)
            },
            RolloutEvent::DeviationRequested {
                deviation_id,
                rules,
                justification,
                stage: s,
                expires_at,
                at,
                ..
            } => DecisionFields {
                subject_id: Some(deviation_id.to_string()),
                stage: stage(*s),
                title: Some(format!(
                    "deviation from {}",
                    rules.iter().map(|r| r.id()).collect::<Vec<_>>().join(", ")
                )),
                rationale: Some(justification.clone()),
                outcome: Some(format!("requested until {}", expires_at.to_rfc3339())),
                ..base(kind::DEVIATION_REQUESTED, *at)
            },
            RolloutEvent::DeviationGranted {
                deviation_id,
                comment,
                at,
                ..
            } => DecisionFields {
                subject_id: Some(deviation_id.to_string()),
                rationale: Some(comment.clone()),
                outcome: Some("granted".to_owned()),
                ..base(kind::DEVIATION_GRANTED, *at)
            },
            RolloutEvent::DeviationDenied {
                deviation_id,
                comment,
                at,
                ..
            } => DecisionFields {
                subject_id: Some(deviation_id.to_string()),
                rationale: Some(comment.clone()),
                outcome: Some("denied".to_owned()),
                ..base(kind::DEVIATION_DENIED, *at)
            },
            RolloutEvent::RolledBack {
                from_stage,
                to_stage,
                reason,
                automatic,
                at,
                ..
            } => DecisionFields {
                stage: stage(*from_stage),
                title: Some(if *automatic {
                    "automatic rollback".to_owned()
                } else {
                    "rollback".to_owned()
                }),
                rationale: Some(reason.clone()),
                outcome: Some(format!(
                    "rolled back from {} to {}",
                    stage_text(*from_stage),
                    stage_text(*to_stage)
                )),
                ..base(kind::ROLLBACK, *at)
            },
            RolloutEvent::RolloutAborted { reason, at, .. } => DecisionFields {
                rationale: Some(reason.clone()),
                outcome: Some("aborted".to_owned()),
                ..base(kind::ABORT, *at)
            },
            RolloutEvent::DecisionRecorded {
                decision_id,
                title,
                rationale,
                alternatives,
                outcome,
                stage: s,
                at,
                ..
            } => DecisionFields {
                subject_id: Some(decision_id.to_string()),
                stage: stage(*s),
                title: Some(title.clone()),
                rationale: Some(rationale.clone()),
                alternatives: alternatives.clone(),
                outcome: Some(outcome.clone()),
                ..base(kind::DECISION, *at)
            },
            _ => return None,
        },
        Body::Policy(p) => match p {
            PolicyEvent::PolicyPublished { version, at, .. } => DecisionFields {
                title: Some(format!("policy v{version}")),
                outcome: Some("published".to_owned()),
                ..base(kind::POLICY_PUBLISHED, *at)
            },
            PolicyEvent::FreezeDeclared {
                freeze_id,
                starts_at,
                ends_at,
                reason,
                at,
                ..
            } => DecisionFields {
                subject_id: Some(freeze_id.to_string()),
                title: Some(format!(
                    "freeze from {} to {}",
                    starts_at.to_rfc3339(),
                    ends_at.to_rfc3339()
                )),
                rationale: Some(reason.clone()),
                outcome: Some("declared".to_owned()),
                ..base(kind::FREEZE_DECLARED, *at)
            },
            PolicyEvent::FreezeLifted { freeze_id, at, .. } => DecisionFields {
                subject_id: Some(freeze_id.to_string()),
                outcome: Some("lifted".to_owned()),
                ..base(kind::FREEZE_LIFTED, *at)
            },
        },
        Body::Binding(_) | Body::Webhook(_) | Body::Integration(_) | Body::Undecodable(_) => {
            return None
        }
    })
}

async fn insert_decision(
    conn: &mut Conn<'_>,
    d: &Decoded<'_>,
    f: DecisionFields,
) -> Result<(), ProjectionError> {
    conn.exec(
        "INSERT INTO decision_log (position, kind, stream, rollout_id, team, subject_id, stage, \
         actor_id, actor_roles, policy_version, decided_at, recorded_at, summary, title, \
         rationale, alternatives, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        &[
            Val::int(d.event.position as i64),
            Val::text(f.kind),
            Val::text(&d.event.stream),
            Val::opt_text(d.rollout_id.clone()),
            Val::opt_text(d.team.clone()),
            Val::opt_text(f.subject_id),
            Val::I(f.stage),
            Val::opt_text(d.actor.id.clone()),
            Val::text(d.roles_json()),
            Val::I(d.policy_version),
            Val::time(f.at),
            Val::time(d.event.recorded_at),
            Val::text(d.summary()),
            Val::opt_text(f.title),
            Val::opt_text(f.rationale),
            Val::text(serde_json::to_string(&f.alternatives).expect("strings serialize")),
            Val::opt_text(f.outcome),
        ],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Approver inbox
// ---------------------------------------------------------------------------

/// What the inbox keeps of each stage of a rollout's current plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct InboxStage {
    name: String,
    approvals: Vec<QuorumRule>,
}

fn inbox_stages(plan: &Plan) -> String {
    let stages: Vec<InboxStage> = plan
        .stages()
        .iter()
        .map(|s| InboxStage {
            name: s.name.clone(),
            approvals: s.approvals.clone(),
        })
        .collect();
    serde_json::to_string(&stages).expect("stages serialize")
}

/// `(quorum JSON, ",role,role,")` of a stage.
fn quorum_of(stage: &InboxStage) -> (String, String) {
    let mut roles: Vec<&str> = stage
        .approvals
        .iter()
        .flat_map(|q| q.roles.iter().map(|r| r.as_str()))
        .collect();
    roles.sort_unstable();
    roles.dedup();
    (
        serde_json::to_string(&stage.approvals).expect("quorum serializes"),
        format!(",{},", roles.join(",")),
    )
}

async fn load_inbox_stages(
    conn: &mut Conn<'_>,
    rollout_id: &str,
) -> Result<Option<Vec<InboxStage>>, ProjectionError> {
    let row = conn
        .fetch_optional(
            "SELECT stages FROM approver_inbox_plans WHERE rollout_id = $1",
            &[Val::text(rollout_id)],
            &[Ty::T],
        )
        .await?;
    match row
        .and_then(|r| r.into_iter().next())
        .and_then(Val::into_text)
    {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ProjectionError::Corrupt(format!("inbox plan of {rollout_id}: {e}"))),
    }
}

async fn close_request(conn: &mut Conn<'_>, request_id: &str) -> Result<(), ProjectionError> {
    let id = [Val::text(request_id)];
    conn.exec(
        "DELETE FROM approver_inbox_approvals WHERE request_id = $1",
        &id,
    )
    .await?;
    conn.exec("DELETE FROM approver_inbox WHERE request_id = $1", &id)
        .await?;
    Ok(())
}

async fn close_rollout_requests(
    conn: &mut Conn<'_>,
    rollout_id: &str,
) -> Result<(), ProjectionError> {
    let id = [Val::text(rollout_id)];
    conn.exec(
        "DELETE FROM approver_inbox_approvals WHERE request_id IN \
         (SELECT request_id FROM approver_inbox WHERE rollout_id = $1)",
        &id,
    )
    .await?;
    conn.exec("DELETE FROM approver_inbox WHERE rollout_id = $1", &id)
        .await?;
    Ok(())
}

async fn apply_inbox(
    conn: &mut Conn<'_>,
    d: &Decoded<'_>,
    rollout_id: &str,
    e: &RolloutEvent,
) -> Result<(), ProjectionError> {
    let position = d.event.position as i64;
    match e {
        RolloutEvent::RolloutCreated {
            plan,
            plan_revision,
            ..
        } => {
            conn.exec(
                "INSERT INTO approver_inbox_plans (rollout_id, plan_revision, stages) \
                 VALUES ($1, $2, $3) ON CONFLICT (rollout_id) DO NOTHING",
                &[
                    Val::text(rollout_id),
                    Val::int(i64::from(*plan_revision)),
                    Val::text(inbox_stages(plan)),
                ],
            )
            .await?;
        }
        RolloutEvent::PlanRevised {
            plan,
            plan_revision,
            ..
        } => {
            conn.exec(
                "UPDATE approver_inbox_plans SET plan_revision = $2, stages = $3 \
                 WHERE rollout_id = $1",
                &[
                    Val::text(rollout_id),
                    Val::int(i64::from(*plan_revision)),
                    Val::text(inbox_stages(plan)),
                ],
            )
            .await?;
            // Approvals given under the earlier revision no longer count (R6); the open
            // request is now judged against the revised plan's quorum.
            conn.exec(
                "DELETE FROM approver_inbox_approvals WHERE request_id IN \
                 (SELECT request_id FROM approver_inbox WHERE rollout_id = $1)",
                &[Val::text(rollout_id)],
            )
            .await?;
            let stages = load_inbox_stages(conn, rollout_id)
                .await?
                .unwrap_or_default();
            let open = conn
                .fetch(
                    "SELECT request_id, to_stage FROM approver_inbox WHERE rollout_id = $1",
                    &[Val::text(rollout_id)],
                    &[Ty::T, Ty::I],
                )
                .await?;
            for row in open {
                let request_id = row[0].clone().into_text().unwrap_or_default();
                let to_stage = row[1].as_i64().unwrap_or_default();
                match stages.get(to_stage as usize) {
                    Some(stage) => {
                        let (quorum, roles) = quorum_of(stage);
                        conn.exec(
                            "UPDATE approver_inbox SET plan_revision = $2, to_stage_name = $3, \
                             quorum = $4, quorum_roles = $5 WHERE request_id = $1",
                            &[
                                Val::text(&request_id),
                                Val::int(i64::from(*plan_revision)),
                                Val::text(&stage.name),
                                Val::text(quorum),
                                Val::text(roles),
                            ],
                        )
                        .await?;
                    }
                    None => close_request(conn, &request_id).await?,
                }
            }
        }
        RolloutEvent::AdvanceRequested {
            request_id,
            from_stage,
            to_stage,
            plan_revision,
            requested_by,
            at,
            ..
        } => {
            let stages = load_inbox_stages(conn, rollout_id)
                .await?
                .unwrap_or_default();
            let stage = stages.get(to_stage.as_usize());
            let (quorum, roles) = stage
                .map(quorum_of)
                .unwrap_or_else(|| ("[]".to_owned(), ",".to_owned()));
            conn.exec(
                "INSERT INTO approver_inbox (request_id, rollout_id, team, from_stage, to_stage, \
                 to_stage_name, plan_revision, quorum, quorum_roles, requested_by, requested_at, \
                 position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (request_id) DO NOTHING",
                &[
                    Val::text(request_id.to_string()),
                    Val::text(rollout_id),
                    Val::text(d.team.clone().unwrap_or_default()),
                    Val::I(from_stage.map(|s| i64::from(s.get()))),
                    Val::int(i64::from(to_stage.get())),
                    Val::opt_text(stage.map(|s| s.name.clone())),
                    Val::int(i64::from(*plan_revision)),
                    Val::text(quorum),
                    Val::text(roles),
                    Val::text(requested_by.to_string()),
                    Val::time(*at),
                    Val::int(position),
                ],
            )
            .await?;
        }
        RolloutEvent::AdvanceApproved {
            request_id,
            approver,
            roles,
            expires_at,
            at,
            ..
        } => {
            let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            conn.exec(
                "INSERT INTO approver_inbox_approvals (request_id, approver, roles, approved_at, \
                 expires_at, position) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS \
                 (SELECT 1 FROM approver_inbox WHERE request_id = $1) \
                 ON CONFLICT (request_id, approver) DO UPDATE SET roles = excluded.roles, \
                 approved_at = excluded.approved_at, expires_at = excluded.expires_at, \
                 position = excluded.position",
                &[
                    Val::text(request_id.to_string()),
                    Val::text(approver.to_string()),
                    Val::text(serde_json::to_string(&roles).expect("roles serialize")),
                    Val::time(*at),
                    Val::time(*expires_at),
                    Val::int(position),
                ],
            )
            .await?;
        }
        RolloutEvent::AdvanceRejected { request_id, .. }
        | RolloutEvent::AdvanceRequestWithdrawn { request_id, .. }
        | RolloutEvent::Advanced { request_id, .. } => {
            close_request(conn, &request_id.to_string()).await?;
        }
        RolloutEvent::RolledBack { .. }
        | RolloutEvent::RolloutCompleted { .. }
        | RolloutEvent::RolloutAborted { .. } => {
            close_rollout_requests(conn, rollout_id).await?;
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Deviation index
// ---------------------------------------------------------------------------

async fn apply_deviation(
    conn: &mut Conn<'_>,
    d: &Decoded<'_>,
    rollout_id: &str,
    e: &RolloutEvent,
) -> Result<(), ProjectionError> {
    let position = d.event.position as i64;
    let set_status =
        |id: String, status: &'static str| [Val::text(id), Val::text(status), Val::int(position)];
    const UPDATE: &str =
        "UPDATE deviation_index SET status = $2, last_position = $3 WHERE deviation_id = $1";
    match e {
        RolloutEvent::DeviationRequested {
            deviation_id,
            stage,
            requested_by,
            ..
        } => {
            conn.exec(
                "INSERT INTO deviation_index (deviation_id, rollout_id, team, stage, status, \
                 requested_by, position, last_position) \
                 VALUES ($1, $2, $3, $4, 'requested', $5, $6, $6) \
                 ON CONFLICT (deviation_id) DO NOTHING",
                &[
                    Val::text(deviation_id.to_string()),
                    Val::text(rollout_id),
                    Val::text(d.team.clone().unwrap_or_default()),
                    Val::I(stage.map(|s| i64::from(s.get()))),
                    Val::text(requested_by.to_string()),
                    Val::int(position),
                ],
            )
            .await?;
        }
        RolloutEvent::DeviationGranted { deviation_id, .. } => {
            conn.exec(UPDATE, &set_status(deviation_id.to_string(), "granted"))
                .await?;
        }
        RolloutEvent::DeviationDenied { deviation_id, .. } => {
            conn.exec(UPDATE, &set_status(deviation_id.to_string(), "denied"))
                .await?;
        }
        RolloutEvent::Advanced {
            deviations_used, ..
        } => {
            for id in deviations_used {
                conn.exec(UPDATE, &set_status(id.to_string(), "used"))
                    .await?;
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// GitHub bindings
// ---------------------------------------------------------------------------

async fn apply_github_binding(
    conn: &mut Conn<'_>,
    d: &Decoded<'_>,
    e: &BindingEvent,
) -> Result<(), ProjectionError> {
    let position = d.event.position as i64;
    match e {
        BindingEvent::BindingCreated {
            binding_id,
            team,
            rollout_id,
            target:
                Target::GithubEnvironment {
                    repository,
                    environment,
                },
            ..
        } => {
            conn.exec(
                "INSERT INTO github_bindings (binding_id, repository, environment, rollout_id, \
                 team, status, position, last_position) \
                 VALUES ($1, $2, $3, $4, $5, 'active', $6, $6) \
                 ON CONFLICT (binding_id) DO NOTHING",
                &[
                    Val::text(binding_id.to_string()),
                    Val::text(repository.to_ascii_lowercase()),
                    Val::text(environment.as_str()),
                    Val::text(rollout_id.to_string()),
                    Val::text(team.as_str()),
                    Val::int(position),
                ],
            )
            .await?;
        }
        BindingEvent::BindingRevoked { binding_id, .. } => {
            conn.exec(
                "UPDATE github_bindings SET status = 'revoked', last_position = $2 \
                 WHERE binding_id = $1",
                &[Val::text(binding_id.to_string()), Val::int(position)],
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}
