//! Running a command: decide on the cached rollout under the cached policy (no read in the
//! steady state), append the events with the metadata rule R12 asks for, at the cached
//! rollout version and on the condition that the team's policy stream is still at the cached
//! policy version (checked in the append's transaction, so a decision is never committed
//! under a policy no longer in force, whatever the cache holds). A conflict on either stream
//! (another instance wrote) reads that stream's tail and decides again while the command is
//! still valid; a refusal decided on cached state is confirmed on fresh state before it is
//! answered. Side effects happen only after the events are stored. This is the only place
//! that appends to the log.

use rollgate_domain::{
    decide, decide_policy, evolve, evolve_policy, Actor, Context, PolicyCommand, PolicyContext,
    PolicyEvent, PolicySnapshot, PolicyState, RolloutCommand, RolloutId, RolloutState, Team,
};
use rollgate_store::{EventData, ExpectedVersion, StoreError, StreamCondition};
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

    /// Appends decided events (on `condition`, if any).
    pub(super) async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl Iterator<Item = (&'static str, u32, Value)>,
        metadata: &Value,
        if_match: Option<u64>,
    ) -> Result<Option<Written>, Problem> {
        match self
            .append_on(stream, expected, events, metadata, if_match, None)
            .await?
        {
            Appended::Written(w) => Ok(Some(w)),
            Appended::StreamMoved | Appended::ConditionFailed => Ok(None),
        }
    }

    /// Appends decided events on an optional read-condition; tells which stream moved when
    /// the command must be decided again (a lost race, or a run of the same command under
    /// the same key that was not committed after all).
    async fn append_on(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl Iterator<Item = (&'static str, u32, Value)>,
        metadata: &Value,
        if_match: Option<u64>,
        condition: Option<StreamCondition>,
    ) -> Result<Appended, Problem> {
        let (data, types) = self.event_data(events, metadata);
        match self
            .state
            .store
            .append_with(stream, expected, data, condition)
            .await
        {
            Ok(o) => return Ok(Appended::Written(Written::new(o, types))),
            Err(StoreError::WrongExpectedVersion { current, .. }) => {
                if let Some(expected) = if_match {
                    return Err(precondition_failed(expected, current));
                }
            }
            Err(StoreError::ConditionFailed { .. }) => return Ok(Appended::ConditionFailed),
            // Another run of this command (same key) may have committed first.
            Err(StoreError::IdempotencyMismatch { .. }) if self.ids.is_derived() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(match self.committed(stream).await? {
            Some(w) => Appended::Written(w),
            None => Appended::StreamMoved,
        })
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
        // Whether the next attempt reads the rollout's (the policy's) tail first: only when
        // the cache has nothing, after a conflict, or to confirm a refusal.
        let (mut read_rollout, mut read_policy) = (false, false);
        // Whether this command has read the rollout's (the policy's) tail: the cache then
        // holds what the store held at that read, or newer.
        let (mut rollout_fresh, mut policy_fresh) = (false, false);
        for _ in 0..MAX_ATTEMPTS {
            let cached = if read_rollout {
                None
            } else if creating {
                // A new id: nothing to read (an existing stream fails the append).
                Some(
                    state
                        .cache
                        .cached_rollout(id)
                        .unwrap_or((RolloutState::default(), 0)),
                )
            } else {
                state.cache.cached_rollout(id)
            };
            rollout_fresh |= cached.is_none();
            let (current, version) = match cached {
                Some(c) => c,
                None => state.cache.rollout(&*state.store, id).await?,
            };
            read_rollout = false;
            if let Some(expected) = if_match {
                if current.is_created() && expected != version {
                    if !rollout_fresh {
                        read_rollout = true;
                        continue;
                    }
                    return Err(precondition_failed(expected, version));
                }
            }
            let team = match (&command, current.rollout()) {
                (_, Some(r)) => r.team.clone(),
                (RolloutCommand::Create { team, .. }, None) => team.clone(),
                (_, None) => return Err(Problem::rollout_not_found()),
            };
            let (policy, policy_version, read) =
                policy_for_command(state, &team, read_policy).await?;
            policy_fresh |= read;
            read_policy = false;
            let ctx = Context {
                actor: self.actor.clone(),
                now: state.clock.now(),
                policy: policy.snapshot(),
            };
            let events = match decide(&current, command.clone(), &ctx) {
                Ok(events) => events,
                // Refused on what this instance had cached: confirm on the stored state.
                Err(_) if !(rollout_fresh && policy_fresh) => {
                    read_rollout = !rollout_fresh;
                    read_policy = !policy_fresh;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
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
            // The policy decided under must still be the one in force at commit.
            let condition = StreamCondition::at(policy_stream(&team), policy_version);
            match self
                .append_on(&stream, expected, stored, &md, if_match, Some(condition))
                .await?
            {
                Appended::Written(w) => {
                    if w.stream_version == version + events.len() as u64 {
                        let after = events.iter().fold(current, evolve);
                        state.cache.advance_rollout(id, after, w.stream_version);
                    }
                    return Ok(w);
                }
                Appended::StreamMoved => read_rollout = true,
                Appended::ConditionFailed => read_policy = true,
            }
        }
        Err(Problem::new(
            ProblemType::VersionConflict,
            "the rollout kept changing while this command was decided; retry",
        ))
    }

    /// Decides and appends one policy command for `team`, on the cached policy (its tail
    /// read only when not cached, after a conflict, or to confirm a refusal).
    pub async fn policy(&self, team: &Team, command: PolicyCommand) -> Result<Written, Problem> {
        let stream = policy_stream(team);
        if let Some(done) = self.committed(&stream).await? {
            return Ok(done);
        }
        let state = self.state;
        let mut read = false;
        for _ in 0..MAX_ATTEMPTS {
            let (current, version, fresh) = policy_for_command(state, team, read).await?;
            let ctx = PolicyContext {
                actor: self.actor.clone(),
                now: state.clock.now(),
                team: team.clone(),
            };
            let events = match decide_policy(&current, command.clone(), &ctx) {
                Ok(events) => events,
                Err(_) if !fresh => {
                    read = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
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
            match self
                .append_on(&stream, expected, stored, &md, None, None)
                .await?
            {
                Appended::Written(w) => {
                    if w.stream_version == version + events.len() as u64 {
                        let after = events.iter().fold(current, evolve_policy);
                        state.cache.advance_policy(team, after, w.stream_version);
                    }
                    return Ok(w);
                }
                Appended::StreamMoved | Appended::ConditionFailed => read = true,
            }
        }
        Err(Problem::new(
            ProblemType::VersionConflict,
            "the policy kept changing while this command was decided; retry",
        ))
    }
}

/// What an append came to.
enum Appended {
    Written(Written),
    /// The appended stream moved (or a same-key run was not committed): decide again.
    StreamMoved,
    /// The read-condition's stream (the policy) moved: decide again under the new one.
    ConditionFailed,
}

/// The team's policy and its stream version for a command: the cached one unless `read`
/// (or nothing is cached), and whether it was read from the store just now.
async fn policy_for_command(
    state: &AppState,
    team: &Team,
    read: bool,
) -> Result<(PolicyState, u64, bool), Problem> {
    if !read {
        if let Some((policy, version)) = state.cache.cached_policy(team) {
            return Ok((policy, version, false));
        }
    }
    let (policy, version) = state.cache.policy(&*state.store, team).await?;
    Ok((policy, version, true))
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
