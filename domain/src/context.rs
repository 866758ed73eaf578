//! What a decision is taken under: who acts, when, and which policy is in force.
//!
//! The clock is injected here: the domain never reads the time itself.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::values::{Actor, FreezeId, Role, Team};

/// Seven days: how long an approval stays valid when no policy was published.
pub const DEFAULT_APPROVAL_VALIDITY_SECONDS: i64 = 7 * 24 * 3600;

/// The inputs of one `decide` call besides state and command.
#[derive(Clone, Debug, PartialEq)]
pub struct Context {
    pub actor: Actor,
    pub now: DateTime<Utc>,
    pub policy: PolicySnapshot,
}

/// A declared freeze window: transitions that raise exposure (start, resume,
/// advance) are blocked while `starts_at <= now < ends_at` (R9); pause and
/// rollback never are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeWindow {
    pub id: FreezeId,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: String,
}

impl FreezeWindow {
    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
}

/// The team's policy as of the decision (see `policy::PolicyState::snapshot`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySnapshot {
    /// 0 = no policy published yet: defaults apply.
    pub version: u64,
    /// How long an approval counts (R6).
    pub approval_validity_seconds: i64,
    /// Roles that may grant or deny deviations (R8).
    pub deviation_granter_roles: BTreeSet<Role>,
    /// Declared and not lifted freeze windows (past, present and future).
    pub freezes: Vec<FreezeWindow>,
}

impl PolicySnapshot {
    /// The defaults in force before a team publishes a policy: version 0,
    /// approvals valid for 7 days, deviations granted by governance admins,
    /// no freezes. Every team gets the same defaults today.
    pub fn default_for(team: &Team) -> Self {
        let _ = team;
        Self {
            version: 0,
            approval_validity_seconds: DEFAULT_APPROVAL_VALIDITY_SECONDS,
            deviation_granter_roles: BTreeSet::from([Role::GovernanceAdmin]),
            freezes: Vec::new(),
        }
    }

    /// The freeze window active at `now`, if any (R9).
    pub fn is_frozen_at(&self, now: DateTime<Utc>) -> Option<&FreezeWindow> {
        self.freezes.iter().find(|f| f.is_active_at(now))
    }
}
