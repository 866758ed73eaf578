//! Running a command: fold the stream (from the state cache), decide under the policy in
//! force, append the events with the metadata rule R12 asks for, retry on a concurrent write
//! while the command is still valid. Side effects happen only after the events are stored.
//! This is the only place that appends to the log.

use rollgate_domain::{
    decide, decide_policy, Actor, Context, PolicyCommand, PolicyContext, PolicyEvent,
    PolicySnapshot, RolloutCommand, RolloutId, Team,
};
use rollgate_store::{EventData, ExpectedVersion, StoreError};
use serde_json::{json, Value};

use crate::command::ids::Ids;
use crate::events::{policy_stream, rollout_stream};
use crate::http::problem::{Problem, ProblemType};
use crate::state::AppState;

/// How many times a command is re-decided after losing a race to another writer.
const MAX_ATTEMPTS: usize = 5;

/// What a successful write answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub stream_version: u64,
    pub first_position: u64,
    pub last_position: u64,
    pub event_types: Vec<String>,
}

impl Written {
    fn new(o: rollgate_store::AppendOutcome, event_types: Vec<String>) -> Self {
        Written {
            stream_version: o.stream_version,
            first_position: o.first_position,
            last_position: o.last_position,
            event_types,
        }
    }

    pub fn etag(&self) -> String {
        format!("\"{}\"", self.stream_version)
    }
}

/// The request facts every event records (R12). `request_id` is the server's own id of the
/// request; what the client sent as `X-Request-Id` is kept apart as `client_request_id`.
#[derive(Clone, Debug)]
pub struct RequestMeta {
    pub request_id: String,
    pub client_request_id: Option<String>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
}

/// Who issues a command, and how: everything a command needs besides itself.
pub struct Issuer<'a> {
    pub state: &'a AppState,
    pub actor: &'a Actor,
    pub meta: &'a RequestMeta,
    pub ids: &'a Ids,
}

impl Issuer<'_> {
    pub(super) fn metadata(&self, team: &Team, policy_version: u64) -> Value {
        let mut md = json!({
            "actor": { "id": self.actor.id.as_str(), "roles": self.actor.roles },
            "team": team.as_str(),
            "request_id": self.meta.request_id,
            "correlation_id": self.meta.correlation_id,
            "causation_id": self.meta.causation_id,
            "policy_version": policy_version,
        });
        if let Some(client) = &self.meta.client_request_id {
            md["client_request_id"] = json!(client);
        }
        md
    }

    /// Stored form of decided events (ids from [`Ids`], shared metadata), and their types.
    fn event_data(
        &self,
        events: impl Iterator<Item = (&'static str, u32, Value)>,
        metadata: &Value,
    ) -> (Vec<EventData>, Vec<String>) {
        events
            .enumerate()
            .map(|(i, (event_type, schema_version, payload))| {
                let data = EventData {
                    id: self.ids.event(i),
                    event_type: event_type.to_owned(),
                    schema_version,
                    payload,
                    metadata: metadata.clone(),
                };
                (data, event_type.to_owned())
            })
            .unzip()
    }

    /// With ids derived from an Idempotency-Key: the outcome of this very command if an
    /// earlier run of it was committed (its reply was lost), found by its first event id.
    async fn committed(&self, stream: &str) -> Result<Option<Written>, Problem> {
        if !self.ids.is_derived() {
            return Ok(None);
        }
        // A command writes a handful of events; ask for more ids than any writes.
        let ids: Vec<_> = (0..16).map(|i| self.ids.event(i)).collect();
        let found = rollgate_projections::events_by_id(&self.state.store.pool(), &ids).await?;
        let (Some(first), Some(last)) = (found.first(), found.last()) else {
            return Ok(None);
        };
        if first.stream != stream {
            return Err(Problem::new(
                ProblemType::IdempotencyKeyReused,
                "this Idempotency-Key was already used for a different request",
            ));
        }
        Ok(Some(Written {
            stream_version: last.version,
            first_position: first.position,
            last_position: last.position,
            event_types: found.iter().map(|p| p.event_type.clone()).collect(),
        }))
    }

    /// Appends decided events; `None` when the command must be decided again (a lost race,
    /// or a run of the same command under the same key that was not committed after all).
    pub(super) async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl Iterator<Item = (&'static str, u32, Value)>,
        metadata: &Value,
        if_match: Option<u64>,
    ) -> Result<Option<Written>, Problem> {
        let (data, types) = self.event_data(events, metadata);
        match self.state.store.append(stream, expected, data).await {
            Ok(o) => return Ok(Some(Written::new(o, types))),
            Err(StoreError::WrongExpectedVersion { current, .. }) => {
                if let Some(expected) = if_match {
                    return Err(precondition_failed(expected, current));
                }
            }
            // Another run of this command (same key) may have committed first.
            Err(StoreError::IdempotencyMismatch { .. }) if self.ids.is_derived() => {}
            Err(e) => return Err(e.into()),
        }
        self.committed(stream).await
    }

    /// Decides and appends one rollout command. `if_match` pins the stream version the
    /// client saw (plan revisions); without it a lost race is re-decided on the new state.
    pub async fn rollout(
        &self,
        id: &RolloutId,
        if_match: Option<u64>,
        command: RolloutCommand,
    ) -> Result<Written, Problem> {
        self.rollout_with(id, if_match, command, &Value::Null).await
    }

    /// [`Self::rollout`] with more metadata fields (`{"via": "slack"}`) beside the R12 ones,
    /// which they never replace.
    pub async fn rollout_with(
        &self,
        id: &RolloutId,
        if_match: Option<u64>,
        command: RolloutCommand,
        extra_metadata: &Value,
    ) -> Result<Written, Problem> {
        let stream = rollout_stream(id);
        if let Some(done) = self.committed(&stream).await? {
            return Ok(done);
        }
        let creating = matches!(command, RolloutCommand::Create { .. });
        let state = self.state;
        for _ in 0..MAX_ATTEMPTS {
            let (current, version) = state.cache.rollout(&*state.store, id).await?;
            if let Some(expected) = if_match {
                if current.is_created() && expected != version {
                    return Err(precondition_failed(expected, version));
                }
            }
            let team = match (&command, current.rollout()) {
                (_, Some(r)) => r.team.clone(),
                (RolloutCommand::Create { team, .. }, None) => team.clone(),
                (_, None) => return Err(Problem::rollout_not_found()),
            };
            let ctx = Context {
                actor: self.actor.clone(),
                now: state.clock.now(),
                policy: policy_snapshot(state, &team).await?,
            };
            let events = decide(&current, command.clone(), &ctx)?;
            let mut md = self.metadata(&team, ctx.policy.version);
            if let (Some(extra), Some(md)) = (extra_metadata.as_object(), md.as_object_mut()) {
                for (k, v) in extra {
                    md.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            let stored = events
                .iter()
                .map(|e| (e.event_type(), e.schema_version(), e.payload()));
            let expected = if creating {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            };
            if let Some(w) = self
                .append(&stream, expected, stored, &md, if_match)
                .await?
            {
                return Ok(w);
            }
        }
        Err(Problem::new(
            ProblemType::VersionConflict,
            "the rollout kept changing while this command was decided; retry",
        ))
    }

    /// Decides and appends one policy command for `team`.
    pub async fn policy(&self, team: &Team, command: PolicyCommand) -> Result<Written, Problem> {
        let stream = policy_stream(team);
        if let Some(done) = self.committed(&stream).await? {
            return Ok(done);
        }
        let state = self.state;
        for _ in 0..MAX_ATTEMPTS {
            let (current, version) = state.cache.policy(&*state.store, team).await?;
            let ctx = PolicyContext {
                actor: self.actor.clone(),
                now: state.clock.now(),
                team: team.clone(),
            };
            let events = decide_policy(&current, command.clone(), &ctx)?;
            let policy_version = events
                .iter()
                .find_map(|e| match e {
                    PolicyEvent::PolicyPublished { version, .. } => Some(*version),
                    _ => None,
                })
                .unwrap_or_else(|| current.snapshot().version);
            let md = self.metadata(team, policy_version);
            let stored = events
                .iter()
                .map(|e| (e.event_type(), e.schema_version(), e.payload()));
            let expected = ExpectedVersion::Exact(version);
            if let Some(w) = self.append(&stream, expected, stored, &md, None).await? {
                return Ok(w);
            }
        }
        Err(Problem::new(
            ProblemType::VersionConflict,
            "the policy kept changing while this command was decided; retry",
        ))
    }
}

/// The policy in force for `team` (defaults until one is published).
pub(crate) async fn policy_snapshot(
    state: &AppState,
    team: &Team,
) -> Result<PolicySnapshot, Problem> {
    Ok(state.cache.policy(&*state.store, team).await?.0.snapshot())
}

fn precondition_failed(expected: u64, current: u64) -> Problem {
    Problem::new(
        ProblemType::PreconditionFailed,
        format!("If-Match names version {expected} but the rollout is at version {current}"),
    )
    .with_current_version(current)
}
