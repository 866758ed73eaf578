//! A team's governance policy (stream `policy-{team}`): versioned publications
//! and freeze windows. Only governance admins of the team change it.
//!
//! | command | who may issue it |
//! |---|---|
//! | `Publish` | governance_admin of the team |
//! | `DeclareFreeze` | governance_admin of the team |
//! | `LiftFreeze` | governance_admin of the team |

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::context::{FreezeWindow, PolicySnapshot, DEFAULT_APPROVAL_VALIDITY_SECONDS};
use crate::error::{DomainError, ValidationErrors};
use crate::stored::{self, DecodeError};
use crate::values::{Actor, ActorId, FreezeId, Role, Team};

/// Schema version of every policy event type.
pub const SCHEMA_VERSION: u32 = 1;

/// Inputs of one policy decision.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyContext {
    pub actor: Actor,
    pub now: DateTime<Utc>,
    pub team: Team,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum PolicyCommand {
    /// Publishes a new policy version (replacing the previous settings).
    Publish {
        approval_validity_seconds: i64,
        deviation_granter_roles: BTreeSet<Role>,
    },
    DeclareFreeze {
        freeze_id: FreezeId,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        reason: String,
    },
    LiftFreeze {
        freeze_id: FreezeId,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum PolicyEvent {
    PolicyPublished {
        team: Team,
        version: u64,
        approval_validity_seconds: i64,
        deviation_granter_roles: BTreeSet<Role>,
        published_by: ActorId,
        at: DateTime<Utc>,
    },
    FreezeDeclared {
        team: Team,
        freeze_id: FreezeId,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        reason: String,
        /// The policy version in force when the freeze was declared.
        policy_version: u64,
        declared_by: ActorId,
        at: DateTime<Utc>,
    },
    FreezeLifted {
        team: Team,
        freeze_id: FreezeId,
        policy_version: u64,
        lifted_by: ActorId,
        at: DateTime<Utc>,
    },
}

/// The folded policy stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    pub team: Option<Team>,
    /// 0 until the first publication.
    pub version: u64,
    pub approval_validity_seconds: Option<i64>,
    pub deviation_granter_roles: Option<BTreeSet<Role>>,
    /// Declared freezes; lifted ones are removed.
    pub freezes: BTreeMap<FreezeId, FreezeWindow>,
    /// Every freeze id ever declared (ids are never reused).
    pub known_freeze_ids: BTreeSet<FreezeId>,
}

impl PolicyState {
    /// The policy in force, defaults filled in for anything not yet published.
    pub fn snapshot(&self) -> PolicySnapshot {
        let defaults = PolicySnapshot {
            version: 0,
            approval_validity_seconds: DEFAULT_APPROVAL_VALIDITY_SECONDS,
            deviation_granter_roles: BTreeSet::from([Role::GovernanceAdmin]),
            freezes: Vec::new(),
        };
        PolicySnapshot {
            version: self.version,
            approval_validity_seconds: self
                .approval_validity_seconds
                .unwrap_or(defaults.approval_validity_seconds),
            deviation_granter_roles: self
                .deviation_granter_roles
                .clone()
                .unwrap_or(defaults.deviation_granter_roles),
            freezes: self.freezes.values().cloned().collect(),
        }
    }
}

fn authorize(ctx: &PolicyContext, action: &str) -> Result<(), DomainError> {
    if !ctx.actor.may_access(&ctx.team) {
        return Err(DomainError::TeamNotAllowed {
            actor: ctx.actor.id.clone(),
            team: ctx.team.clone(),
        });
    }
    if ctx.actor.is_read_only() {
        return Err(DomainError::ReadOnly {
            actor: ctx.actor.id.clone(),
        });
    }
    if !ctx.actor.has_role(Role::GovernanceAdmin) {
        return Err(DomainError::Permission {
            actor: ctx.actor.id.clone(),
            action: action.to_owned(),
            needed: vec![Role::GovernanceAdmin],
        });
    }
    Ok(())
}

/// Decides one policy command.
pub fn decide_policy(
    state: &PolicyState,
    cmd: PolicyCommand,
    ctx: &PolicyContext,
) -> Result<Vec<PolicyEvent>, DomainError> {
    if let Some(team) = &state.team {
        if team != &ctx.team {
            return Err(DomainError::PolicyConflict(format!(
                "this policy stream belongs to team {team}"
            )));
        }
    }
    let team = ctx.team.clone();
    let by = ctx.actor.id.clone();
    match cmd {
        PolicyCommand::Publish {
            approval_validity_seconds,
            deviation_granter_roles,
        } => {
            authorize(ctx, "publish a policy")?;
            let mut errors = ValidationErrors::default();
            if !(60..=366 * 24 * 3600).contains(&approval_validity_seconds) {
                errors.push(
                    "approval_validity_seconds",
                    "must be between 60 seconds and 366 days",
                );
            }
            if deviation_granter_roles.is_empty() {
                errors.push("deviation_granter_roles", "at least one role is required");
            }
            for r in &deviation_granter_roles {
                if r.is_read_only() || *r == Role::Service {
                    errors.push(
                        "deviation_granter_roles",
                        format!("{r} cannot grant deviations"),
                    );
                }
            }
            errors.into_result(())?;
            Ok(vec![PolicyEvent::PolicyPublished {
                team,
                version: state.version + 1,
                approval_validity_seconds,
                deviation_granter_roles,
                published_by: by,
                at: ctx.now,
            }])
        }
        PolicyCommand::DeclareFreeze {
            freeze_id,
            starts_at,
            ends_at,
            reason,
        } => {
            authorize(ctx, "declare a freeze")?;
            let mut errors = ValidationErrors::default();
            if ends_at <= starts_at {
                errors.push("ends_at", "must be after starts_at");
            }
            if ends_at <= ctx.now {
                errors.push("ends_at", "must be in the future");
            }
            if reason.trim().is_empty() {
                errors.push("reason", "must not be empty");
            }
            errors.into_result(())?;
            if state.known_freeze_ids.contains(&freeze_id) {
                return Err(DomainError::DuplicateId(freeze_id.to_string()));
            }
            Ok(vec![PolicyEvent::FreezeDeclared {
                team,
                freeze_id,
                starts_at,
                ends_at,
                reason,
                policy_version: state.version,
                declared_by: by,
                at: ctx.now,
            }])
        }
        PolicyCommand::LiftFreeze { freeze_id } => {
            authorize(ctx, "lift a freeze")?;
            if !state.freezes.contains_key(&freeze_id) {
                return Err(DomainError::PolicyConflict(format!(
                    "no active freeze {freeze_id}"
                )));
            }
            Ok(vec![PolicyEvent::FreezeLifted {
                team,
                freeze_id,
                policy_version: state.version,
                lifted_by: by,
                at: ctx.now,
            }])
        }
    }
}

/// Folds one policy event.
pub fn evolve_policy(mut state: PolicyState, event: &PolicyEvent) -> PolicyState {
    match event {
        PolicyEvent::PolicyPublished {
            team,
            version,
            approval_validity_seconds,
            deviation_granter_roles,
            ..
        } => {
            state.team = Some(team.clone());
            state.version = *version;
            state.approval_validity_seconds = Some(*approval_validity_seconds);
            state.deviation_granter_roles = Some(deviation_granter_roles.clone());
        }
        PolicyEvent::FreezeDeclared {
            team,
            freeze_id,
            starts_at,
            ends_at,
            reason,
            ..
        } => {
            state.team = Some(team.clone());
            state.known_freeze_ids.insert(*freeze_id);
            state.freezes.insert(
                *freeze_id,
                FreezeWindow {
                    id: *freeze_id,
                    starts_at: *starts_at,
                    ends_at: *ends_at,
                    reason: reason.clone(),
                },
            );
        }
        PolicyEvent::FreezeLifted { freeze_id, .. } => {
            state.freezes.remove(freeze_id);
        }
    }
    state
}

const EVENT_TYPES: [&str; 3] = ["PolicyPublished", "FreezeDeclared", "FreezeLifted"];

impl PolicyEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::PolicyPublished { .. } => "PolicyPublished",
            Self::FreezeDeclared { .. } => "FreezeDeclared",
            Self::FreezeLifted { .. } => "FreezeLifted",
        }
    }

    pub fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    /// Every stored type name of the policy stream.
    pub const fn event_types() -> &'static [&'static str] {
        &EVENT_TYPES
    }

    /// The schema version this build writes for `event_type`, if it is one.
    pub fn schema_version_of(event_type: &str) -> Option<u32> {
        EVENT_TYPES.contains(&event_type).then_some(SCHEMA_VERSION)
    }

    /// The variant's fields only.
    pub fn payload(&self) -> serde_json::Value {
        stored::payload_of(self)
    }

    pub fn from_stored(
        event_type: &str,
        schema_version: u32,
        payload: serde_json::Value,
    ) -> Result<Self, DecodeError> {
        if !EVENT_TYPES.contains(&event_type) {
            return Err(DecodeError::UnknownEventType(event_type.to_owned()));
        }
        if schema_version == 0 || schema_version > SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedSchemaVersion {
                event_type: event_type.to_owned(),
                schema_version,
            });
        }
        stored::decode(event_type, payload)
    }

    pub fn summary(&self) -> String {
        match self {
            Self::PolicyPublished {
                team,
                version,
                approval_validity_seconds,
                deviation_granter_roles,
                published_by,
                ..
            } => format!(
                "{published_by} published policy v{version} for team {team}: approvals valid {approval_validity_seconds}s, deviations granted by {}",
                deviation_granter_roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::FreezeDeclared {
                team,
                starts_at,
                ends_at,
                reason,
                declared_by,
                ..
            } => format!(
                "{declared_by} declared a freeze for team {team} from {} to {}: {reason}",
                starts_at.to_rfc3339(),
                ends_at.to_rfc3339()
            ),
            Self::FreezeLifted {
                team,
                freeze_id,
                lifted_by,
                ..
            } => format!("{lifted_by} lifted freeze {freeze_id} for team {team}"),
        }
    }
}
