//! Outbound webhook targets (stream `webhook-{uuid}`): what a team's governance admin
//! registers, pauses, resumes, rotates and removes, and what the delivery engine finds out
//! about a target (failing, recovered, disabled by a `410 Gone`).
//!
//! Pure like the rest of the domain: the signing secret arrives already generated and sealed
//! (encrypted) by the caller, so the log never holds it in plain text, and the time arrives in
//! [`WebhookContext::now`].
//!
//! | command | who may issue it |
//! |---|---|
//! | `Register`, `Pause`, `Resume`, `RotateSecret`, `Remove`, `Redeliver` | governance_admin of the team |
//! | `MarkFailing`, `MarkRecovered`, `Disable` | the delivery engine (`service` role) |
//!
//! Outside the actor's teams an existing webhook is [`WebhookError::NotFound`] (R11: 404,
//! never leaking existence); a removed webhook is not found either.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DomainError, ErrorKind, Rule, ValidationErrors};
use crate::stored::{self, DecodeError};
use crate::values::{Actor, ActorId, Role, Team};

/// Schema version of every webhook event type.
pub const SCHEMA_VERSION: u32 = 1;

/// Stream names of webhook targets start with this.
pub const STREAM_PREFIX: &str = "webhook-";

/// Longest accepted target URL.
pub const MAX_URL_LEN: usize = 2048;

/// Longest recorded delivery error.
pub const MAX_ERROR_LEN: usize = 1024;

/// How long a rotated-out secret still signs (beside the new one) when the caller names no
/// overlap: one day.
pub const DEFAULT_ROTATION_OVERLAP_SECONDS: i64 = 24 * 3600;

/// The events a webhook may subscribe to: stored event type and CloudEvents `type`.
pub const DELIVERABLE_EVENT_TYPES: &[(&str, &str)] = &[
    ("RolloutCreated", "dev.rollgate.rollout.created"),
    ("PlanRevised", "dev.rollgate.rollout.plan_revised"),
    (
        "ReadinessSignedOff",
        "dev.rollgate.rollout.readiness_signed_off",
    ),
    ("RolloutReady", "dev.rollgate.rollout.ready"),
    ("RolloutStarted", "dev.rollgate.rollout.started"),
    ("AdvanceRequested", "dev.rollgate.rollout.advance_requested"),
    ("AdvanceApproved", "dev.rollgate.rollout.advance_approved"),
    ("AdvanceRejected", "dev.rollgate.rollout.advance_rejected"),
    (
        "AdvanceRequestWithdrawn",
        "dev.rollgate.rollout.advance_request_withdrawn",
    ),
    ("Advanced", "dev.rollgate.rollout.stage_advanced"),
    ("ReadingsRecorded", "dev.rollgate.rollout.readings_recorded"),
    (
        "GuardrailBreached",
        "dev.rollgate.rollout.guardrail_breached",
    ),
    ("Paused", "dev.rollgate.rollout.paused"),
    ("Resumed", "dev.rollgate.rollout.resumed"),
    ("RolledBack", "dev.rollgate.rollout.rolled_back"),
    ("RolloutCompleted", "dev.rollgate.rollout.completed"),
    ("RolloutAborted", "dev.rollgate.rollout.aborted"),
    (
        "DeviationRequested",
        "dev.rollgate.rollout.deviation_requested",
    ),
    ("DeviationGranted", "dev.rollgate.rollout.deviation_granted"),
    ("DeviationDenied", "dev.rollgate.rollout.deviation_denied"),
    ("DecisionRecorded", "dev.rollgate.rollout.decision_recorded"),
    ("NoteAdded", "dev.rollgate.rollout.note_added"),
    ("Annotated", "dev.rollgate.rollout.annotated"),
    ("PolicyPublished", "dev.rollgate.policy.published"),
    ("FreezeDeclared", "dev.rollgate.policy.freeze_declared"),
    ("FreezeLifted", "dev.rollgate.policy.freeze_lifted"),
];

/// The CloudEvents `type` of a stored event type, when webhooks can carry it.
pub fn cloudevent_type(stored_event_type: &str) -> Option<&'static str> {
    DELIVERABLE_EVENT_TYPES
        .iter()
        .find(|(stored, _)| *stored == stored_event_type)
        .map(|(_, ce)| *ce)
}

crate::values::uuid_id!(
    /// A webhook target's id (stream `webhook-{uuid}`).
    WebhookId,
    "webhook_id"
);

impl WebhookId {
    /// The stream holding this webhook's events.
    pub fn stream(self) -> String {
        format!("{STREAM_PREFIX}{}", self.0)
    }

    /// The webhook whose stream this is, if it is a webhook stream.
    pub fn of_stream(stream: &str) -> Option<Self> {
        stream
            .strip_prefix(STREAM_PREFIX)
            .and_then(|s| Uuid::parse_str(s).ok())
            .map(Self)
    }
}

/// A signing secret sealed (authenticated encryption) under the key from configuration. The
/// domain never sees the plain secret; it only stores and hands back this sealed form.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// The cipher, e.g. `A256GCM`.
    pub alg: String,
    /// Which configured key sealed it (a fingerprint, not the key).
    pub key_id: String,
    /// Base64 nonce.
    pub nonce: String,
    /// Base64 ciphertext with its tag.
    pub ciphertext: String,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("alg", &self.alg)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Inputs of one webhook decision besides state and command.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookContext {
    pub actor: Actor,
    pub now: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum WebhookCommand {
    /// `url` has passed the caller's address policy (scheme, forbidden ranges); the domain
    /// checks its shape again.
    Register {
        webhook_id: WebhookId,
        team: Team,
        url: String,
        event_types: BTreeSet<String>,
        description: Option<String>,
        secret: SealedSecret,
    },
    Pause,
    Resume,
    /// The previous secret keeps signing beside the new one for `overlap_seconds`.
    RotateSecret {
        secret: SealedSecret,
        overlap_seconds: i64,
    },
    Remove,
    /// Deliver again every event after `after_position` (0 = from the start of the log).
    Redeliver {
        after_position: u64,
    },
    /// The delivery engine gave up its attempt budget on the event at `position`.
    MarkFailing {
        position: u64,
        attempts: u32,
        last_error: String,
    },
    /// A failing target accepted a delivery again.
    MarkRecovered {
        position: u64,
    },
    /// The receiver answered `410 Gone`.
    Disable {
        position: u64,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum WebhookEvent {
    WebhookRegistered {
        webhook_id: WebhookId,
        team: Team,
        url: String,
        event_types: BTreeSet<String>,
        description: Option<String>,
        secret: SealedSecret,
        registered_by: ActorId,
        at: DateTime<Utc>,
    },
    WebhookPaused {
        webhook_id: WebhookId,
        team: Team,
        paused_by: ActorId,
        at: DateTime<Utc>,
    },
    WebhookResumed {
        webhook_id: WebhookId,
        team: Team,
        resumed_by: ActorId,
        at: DateTime<Utc>,
    },
    WebhookSecretRotated {
        webhook_id: WebhookId,
        team: Team,
        secret: SealedSecret,
        /// The secret it replaces, still signing until `previous_valid_until`.
        previous_secret: SealedSecret,
        previous_valid_until: DateTime<Utc>,
        rotated_by: ActorId,
        at: DateTime<Utc>,
    },
    WebhookRemoved {
        webhook_id: WebhookId,
        team: Team,
        removed_by: ActorId,
        at: DateTime<Utc>,
    },
    WebhookRedeliveryRequested {
        webhook_id: WebhookId,
        team: Team,
        after_position: u64,
        requested_by: ActorId,
        at: DateTime<Utc>,
    },
    WebhookFailing {
        webhook_id: WebhookId,
        team: Team,
        position: u64,
        attempts: u32,
        last_error: String,
        at: DateTime<Utc>,
    },
    WebhookRecovered {
        webhook_id: WebhookId,
        team: Team,
        position: u64,
        at: DateTime<Utc>,
    },
    WebhookDisabled {
        webhook_id: WebhookId,
        team: Team,
        position: u64,
        reason: String,
        at: DateTime<Utc>,
    },
}

/// Whether a webhook is being delivered to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    Active,
    Paused,
    /// The receiver answered `410 Gone`; a resume enables it again.
    Disabled,
    Removed,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
            Self::Removed => "removed",
        }
    }
}

impl fmt::Display for WebhookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The delivery engine's latest finding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub failing: bool,
    pub last_error: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    /// The position whose delivery failed (or that made the target recover).
    pub position: Option<u64>,
}

/// A registered webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub team: Team,
    pub url: String,
    pub event_types: BTreeSet<String>,
    pub description: Option<String>,
    pub status: WebhookStatus,
    pub health: Health,
    pub secret: SealedSecret,
    /// The rotated-out secret and until when it still signs.
    pub previous_secret: Option<(SealedSecret, DateTime<Utc>)>,
    pub disabled_reason: Option<String>,
    pub registered_by: ActorId,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Events folded (the stream version).
    pub version: u64,
}

impl Webhook {
    /// Does this webhook want events of this stored type?
    pub fn subscribes_to(&self, stored_event_type: &str) -> bool {
        cloudevent_type(stored_event_type).is_some_and(|ce| self.event_types.contains(ce))
    }

    /// The secrets that sign a delivery at `now`: the current one, then the previous one
    /// while its overlap lasts.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&SealedSecret> {
        let mut out = vec![&self.secret];
        if let Some((previous, until)) = &self.previous_secret {
            if now < *until {
                out.push(previous);
            }
        }
        out
    }
}

/// The folded webhook stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookState {
    webhook: Option<Webhook>,
}

impl WebhookState {
    /// The state of a webhook already folded (to fold further events into it).
    pub fn of(webhook: Webhook) -> Self {
        Self {
            webhook: Some(webhook),
        }
    }

    pub fn webhook(&self) -> Option<&Webhook> {
        self.webhook.as_ref()
    }

    /// The stream version folded so far (0 before registration).
    pub fn version(&self) -> u64 {
        self.webhook.as_ref().map_or(0, |w| w.version)
    }
}

/// A refused webhook command.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum WebhookError {
    /// R11: no such webhook, one outside the actor's teams, or a removed one.
    #[error("webhook not found")]
    NotFound,
    #[error(transparent)]
    Refused(#[from] DomainError),
}

impl WebhookError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::Refused(e) => e.kind(),
        }
    }

    pub fn rule(&self) -> Option<Rule> {
        match self {
            Self::NotFound => Some(Rule::R11),
            Self::Refused(e) => e.rule(),
        }
    }
}

impl From<ValidationErrors> for WebhookError {
    fn from(e: ValidationErrors) -> Self {
        Self::Refused(DomainError::Validation(e))
    }
}

fn conflict(message: impl Into<String>) -> WebhookError {
    WebhookError::Refused(DomainError::PolicyConflict(message.into()))
}

/// Governance admins of the team (R10, R11, permission).
fn authorize_admin(actor: &Actor, action: &str) -> Result<(), WebhookError> {
    if actor.is_read_only() {
        return Err(DomainError::ReadOnly {
            actor: actor.id.clone(),
        }
        .into());
    }
    if !actor.has_role(Role::GovernanceAdmin) {
        return Err(DomainError::Permission {
            actor: actor.id.clone(),
            action: action.to_owned(),
            needed: vec![Role::GovernanceAdmin],
        }
        .into());
    }
    Ok(())
}

/// The delivery engine: the `service` role.
fn authorize_engine(actor: &Actor, team: &Team, action: &str) -> Result<(), WebhookError> {
    if !actor.may_access(team) {
        return Err(WebhookError::NotFound);
    }
    if !actor.has_role(Role::Service) {
        return Err(DomainError::Permission {
            actor: actor.id.clone(),
            action: action.to_owned(),
            needed: vec![Role::Service],
        }
        .into());
    }
    Ok(())
}

fn validate_url(errors: &mut ValidationErrors, url: &str) {
    let lower = url.to_ascii_lowercase();
    if url.len() > MAX_URL_LEN {
        errors.push("url", format!("must be at most {MAX_URL_LEN} characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.push("url", "must not contain whitespace or control characters");
    }
    let rest = if let Some(r) = lower.strip_prefix("https://") {
        r
    } else if let Some(r) = lower.strip_prefix("http://") {
        r
    } else {
        errors.push("url", "must be an http:// or https:// URL");
        return;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        errors.push("url", "must name a host");
    }
    if authority.contains('@') {
        errors.push("url", "must not carry credentials");
    }
}

fn validate_event_types(errors: &mut ValidationErrors, event_types: &BTreeSet<String>) {
    if event_types.is_empty() {
        errors.push("event_types", "at least one event type is required");
    }
    for t in event_types {
        if !DELIVERABLE_EVENT_TYPES.iter().any(|(_, ce)| ce == t) {
            errors.push(
                "event_types",
                format!("{t:?} is not a deliverable event type"),
            );
        }
    }
}

fn validate_secret(errors: &mut ValidationErrors, secret: &SealedSecret) {
    if secret.alg.is_empty() || secret.nonce.is_empty() || secret.ciphertext.is_empty() {
        errors.push("secret", "must be sealed");
    }
}

/// Decides one webhook command.
pub fn decide_webhook(
    state: &WebhookState,
    cmd: WebhookCommand,
    ctx: &WebhookContext,
) -> Result<Vec<WebhookEvent>, WebhookError> {
    let by = ctx.actor.id.clone();
    let at = ctx.now;
    if let WebhookCommand::Register {
        webhook_id,
        team,
        url,
        event_types,
        description,
        secret,
    } = cmd
    {
        if !ctx.actor.may_access(&team) {
            return Err(DomainError::TeamNotAllowed {
                actor: by,
                team: team.clone(),
            }
            .into());
        }
        authorize_admin(&ctx.actor, "register a webhook")?;
        if state.webhook.is_some() {
            return Err(DomainError::DuplicateId(webhook_id.to_string()).into());
        }
        let mut errors = ValidationErrors::default();
        validate_url(&mut errors, &url);
        validate_event_types(&mut errors, &event_types);
        validate_secret(&mut errors, &secret);
        if description.as_ref().is_some_and(|d| d.len() > 1024) {
            errors.push("description", "must be at most 1024 characters");
        }
        errors.into_result(())?;
        return Ok(vec![WebhookEvent::WebhookRegistered {
            webhook_id,
            team,
            url,
            event_types,
            description,
            secret,
            registered_by: by,
            at,
        }]);
    }
    let webhook = match &state.webhook {
        Some(w) if w.status != WebhookStatus::Removed => w,
        _ => return Err(WebhookError::NotFound),
    };
    let webhook_id = webhook.id;
    let team = webhook.team.clone();
    let is_engine_command = matches!(
        cmd,
        WebhookCommand::MarkFailing { .. }
            | WebhookCommand::MarkRecovered { .. }
            | WebhookCommand::Disable { .. }
    );
    if !is_engine_command && !ctx.actor.may_access(&team) {
        return Err(WebhookError::NotFound);
    }
    match cmd {
        WebhookCommand::Register { .. } => unreachable!("handled above"),
        WebhookCommand::Pause => {
            authorize_admin(&ctx.actor, "pause a webhook")?;
            if webhook.status != WebhookStatus::Active {
                return Err(conflict(format!(
                    "webhook is {}: only an active webhook can be paused",
                    webhook.status
                )));
            }
            Ok(vec![WebhookEvent::WebhookPaused {
                webhook_id,
                team,
                paused_by: by,
                at,
            }])
        }
        WebhookCommand::Resume => {
            authorize_admin(&ctx.actor, "resume a webhook")?;
            if webhook.status == WebhookStatus::Active {
                return Err(conflict("webhook is already active"));
            }
            Ok(vec![WebhookEvent::WebhookResumed {
                webhook_id,
                team,
                resumed_by: by,
                at,
            }])
        }
        WebhookCommand::RotateSecret {
            secret,
            overlap_seconds,
        } => {
            authorize_admin(&ctx.actor, "rotate a webhook secret")?;
            let mut errors = ValidationErrors::default();
            validate_secret(&mut errors, &secret);
            if !(0..=7 * 24 * 3600).contains(&overlap_seconds) {
                errors.push("overlap_seconds", "must be between 0 and 7 days");
            }
            errors.into_result(())?;
            Ok(vec![WebhookEvent::WebhookSecretRotated {
                webhook_id,
                team,
                secret,
                previous_secret: webhook.secret.clone(),
                previous_valid_until: at + Duration::seconds(overlap_seconds),
                rotated_by: by,
                at,
            }])
        }
        WebhookCommand::Remove => {
            authorize_admin(&ctx.actor, "remove a webhook")?;
            Ok(vec![WebhookEvent::WebhookRemoved {
                webhook_id,
                team,
                removed_by: by,
                at,
            }])
        }
        WebhookCommand::Redeliver { after_position } => {
            authorize_admin(&ctx.actor, "redeliver to a webhook")?;
            Ok(vec![WebhookEvent::WebhookRedeliveryRequested {
                webhook_id,
                team,
                after_position,
                requested_by: by,
                at,
            }])
        }
        WebhookCommand::MarkFailing {
            position,
            attempts,
            last_error,
        } => {
            authorize_engine(&ctx.actor, &team, "mark a webhook failing")?;
            if webhook.status != WebhookStatus::Active || webhook.health.failing {
                return Ok(vec![]);
            }
            let last_error = truncate(last_error, MAX_ERROR_LEN);
            Ok(vec![WebhookEvent::WebhookFailing {
                webhook_id,
                team,
                position,
                attempts,
                last_error,
                at,
            }])
        }
        WebhookCommand::MarkRecovered { position } => {
            authorize_engine(&ctx.actor, &team, "mark a webhook recovered")?;
            if !webhook.health.failing {
                return Ok(vec![]);
            }
            Ok(vec![WebhookEvent::WebhookRecovered {
                webhook_id,
                team,
                position,
                at,
            }])
        }
        WebhookCommand::Disable { position, reason } => {
            authorize_engine(&ctx.actor, &team, "disable a webhook")?;
            if webhook.status == WebhookStatus::Disabled {
                return Ok(vec![]);
            }
            Ok(vec![WebhookEvent::WebhookDisabled {
                webhook_id,
                team,
                position,
                reason: truncate(reason, MAX_ERROR_LEN),
                at,
            }])
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Folds one webhook event.
pub fn evolve_webhook(mut state: WebhookState, event: &WebhookEvent) -> WebhookState {
    if let WebhookEvent::WebhookRegistered {
        webhook_id,
        team,
        url,
        event_types,
        description,
        secret,
        registered_by,
        at,
    } = event
    {
        state.webhook = Some(Webhook {
            id: *webhook_id,
            team: team.clone(),
            url: url.clone(),
            event_types: event_types.clone(),
            description: description.clone(),
            status: WebhookStatus::Active,
            health: Health::default(),
            secret: secret.clone(),
            previous_secret: None,
            disabled_reason: None,
            registered_by: registered_by.clone(),
            registered_at: *at,
            updated_at: *at,
            version: 1,
        });
        return state;
    }
    let Some(w) = state.webhook.as_mut() else {
        return state;
    };
    w.version += 1;
    match event {
        WebhookEvent::WebhookRegistered { .. } => {}
        WebhookEvent::WebhookPaused { at, .. } => {
            w.status = WebhookStatus::Paused;
            w.updated_at = *at;
        }
        WebhookEvent::WebhookResumed { at, .. } => {
            w.status = WebhookStatus::Active;
            w.health = Health::default();
            w.disabled_reason = None;
            w.updated_at = *at;
        }
        WebhookEvent::WebhookSecretRotated {
            secret,
            previous_secret,
            previous_valid_until,
            at,
            ..
        } => {
            w.secret = secret.clone();
            w.previous_secret = Some((previous_secret.clone(), *previous_valid_until));
            w.updated_at = *at;
        }
        WebhookEvent::WebhookRemoved { at, .. } => {
            w.status = WebhookStatus::Removed;
            w.updated_at = *at;
        }
        WebhookEvent::WebhookRedeliveryRequested { at, .. } => {
            w.updated_at = *at;
        }
        WebhookEvent::WebhookFailing {
            position,
            last_error,
            at,
            ..
        } => {
            w.health = Health {
                failing: true,
                last_error: Some(last_error.clone()),
                failing_since: Some(*at),
                position: Some(*position),
            };
            w.updated_at = *at;
        }
        WebhookEvent::WebhookRecovered { position, at, .. } => {
            w.health = Health {
                failing: false,
                last_error: w.health.last_error.take(),
                failing_since: None,
                position: Some(*position),
            };
            w.updated_at = *at;
        }
        WebhookEvent::WebhookDisabled {
            position,
            reason,
            at,
            ..
        } => {
            w.status = WebhookStatus::Disabled;
            w.disabled_reason = Some(reason.clone());
            w.health.position = Some(*position);
            w.updated_at = *at;
        }
    }
    state
}

impl WebhookEvent {
    pub const EVENT_TYPES: [&'static str; 9] = [
        "WebhookRegistered",
        "WebhookPaused",
        "WebhookResumed",
        "WebhookSecretRotated",
        "WebhookRemoved",
        "WebhookRedeliveryRequested",
        "WebhookFailing",
        "WebhookRecovered",
        "WebhookDisabled",
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            Self::WebhookRegistered { .. } => "WebhookRegistered",
            Self::WebhookPaused { .. } => "WebhookPaused",
            Self::WebhookResumed { .. } => "WebhookResumed",
            Self::WebhookSecretRotated { .. } => "WebhookSecretRotated",
            Self::WebhookRemoved { .. } => "WebhookRemoved",
            Self::WebhookRedeliveryRequested { .. } => "WebhookRedeliveryRequested",
            Self::WebhookFailing { .. } => "WebhookFailing",
            Self::WebhookRecovered { .. } => "WebhookRecovered",
            Self::WebhookDisabled { .. } => "WebhookDisabled",
        }
    }

    pub fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    pub fn webhook_id(&self) -> WebhookId {
        match self {
            Self::WebhookRegistered { webhook_id, .. }
            | Self::WebhookPaused { webhook_id, .. }
            | Self::WebhookResumed { webhook_id, .. }
            | Self::WebhookSecretRotated { webhook_id, .. }
            | Self::WebhookRemoved { webhook_id, .. }
            | Self::WebhookRedeliveryRequested { webhook_id, .. }
            | Self::WebhookFailing { webhook_id, .. }
            | Self::WebhookRecovered { webhook_id, .. }
            | Self::WebhookDisabled { webhook_id, .. } => *webhook_id,
        }
    }

    pub fn team(&self) -> &Team {
        match self {
            Self::WebhookRegistered { team, .. }
            | Self::WebhookPaused { team, .. }
            | Self::WebhookResumed { team, .. }
            | Self::WebhookSecretRotated { team, .. }
            | Self::WebhookRemoved { team, .. }
            | Self::WebhookRedeliveryRequested { team, .. }
            | Self::WebhookFailing { team, .. }
            | Self::WebhookRecovered { team, .. }
            | Self::WebhookDisabled { team, .. } => team,
        }
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
        if !Self::EVENT_TYPES.contains(&event_type) {
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

    /// The audit line (never a secret).
    pub fn summary(&self) -> String {
        match self {
            Self::WebhookRegistered {
                webhook_id,
                team,
                url,
                event_types,
                registered_by,
                ..
            } => format!(
                "{registered_by} registered webhook {webhook_id} for team {team} to {url} ({} event types)",
                event_types.len()
            ),
            Self::WebhookPaused {
                webhook_id,
                paused_by,
                ..
            } => format!("{paused_by} paused webhook {webhook_id}"),
            Self::WebhookResumed {
                webhook_id,
                resumed_by,
                ..
            } => format!("{resumed_by} resumed webhook {webhook_id}"),
            Self::WebhookSecretRotated {
                webhook_id,
                rotated_by,
                previous_valid_until,
                ..
            } => format!(
                "{rotated_by} rotated the secret of webhook {webhook_id}; the previous one signs until {}",
                previous_valid_until.to_rfc3339()
            ),
            Self::WebhookRemoved {
                webhook_id,
                removed_by,
                ..
            } => format!("{removed_by} removed webhook {webhook_id}"),
            Self::WebhookRedeliveryRequested {
                webhook_id,
                after_position,
                requested_by,
                ..
            } => format!(
                "{requested_by} asked webhook {webhook_id} to redeliver events after position {after_position}"
            ),
            Self::WebhookFailing {
                webhook_id,
                position,
                attempts,
                last_error,
                ..
            } => format!(
                "webhook {webhook_id} is failing: position {position} not delivered after {attempts} attempts: {last_error}"
            ),
            Self::WebhookRecovered {
                webhook_id,
                position,
                ..
            } => format!("webhook {webhook_id} recovered at position {position}"),
            Self::WebhookDisabled {
                webhook_id,
                reason,
                ..
            } => format!("webhook {webhook_id} disabled: {reason}"),
        }
    }
}
