//! Folded stream states kept in memory, so that a command reads nothing before it decides,
//! and `as_of` replays from the nearest checkpoint instead of from the first event.
//!
//! A command decides on the cached rollout and policy ([`StateCache::cached_rollout`],
//! [`StateCache::cached_policy`]) and appends with the cached rollout version as its expected
//! version and the cached policy version as a read-condition checked in the append's
//! transaction; a conflict (another instance wrote) makes it read the tail and decide again
//! (`command::execute`). So the cache is never what keeps several instances correct: the
//! store refuses a decision taken on a stale entry, and a lost entry only costs a replay.
//! After its own appends an instance advances its entries without reading them back.
//! Reads (`as_of`, gates, views) still read the tail first. Evicted least-recently-used.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use lru::LruCache;
use rollgate_domain::{evolve, evolve_policy, PolicyState, RolloutId, RolloutState, Team};
use rollgate_store::EventStore;

use crate::events::{decode_policy, decode_rollout, policy_stream, rollout_stream};
use crate::http::problem::Problem;

/// A checkpoint is kept every this many events of a stream.
pub const CHECKPOINT_EVERY: u64 = 64;

const PAGE: usize = 1000;

/// The state of a stream after its event at `version`.
#[derive(Clone, Debug)]
struct Checkpoint {
    version: u64,
    position: u64,
    recorded_at: Option<DateTime<Utc>>,
    state: RolloutState,
}

#[derive(Clone, Debug)]
struct RolloutEntry {
    /// Folded from stored events (positions and recorded times known).
    current: Arc<Checkpoint>,
    /// Ascending by version, one every `CHECKPOINT_EVERY` events.
    checkpoints: Vec<Arc<Checkpoint>>,
    /// The state after this instance's own appends beyond `current` (with its version),
    /// folded from the decided events, not read back: what commands decide on.
    ahead: Option<Arc<(RolloutState, u64)>>,
}

impl RolloutEntry {
    fn empty() -> Self {
        RolloutEntry {
            current: Arc::new(Checkpoint {
                version: 0,
                position: 0,
                recorded_at: None,
                state: RolloutState::default(),
            }),
            checkpoints: Vec::new(),
            ahead: None,
        }
    }

    /// The newest known state and its version.
    fn newest(&self) -> (RolloutState, u64) {
        match &self.ahead {
            Some(a) if a.1 > self.current.version => (a.0.clone(), a.1),
            _ => (self.current.state.clone(), self.current.version),
        }
    }
}

/// Which prefix of a stream a time-travel read wants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AsOf {
    Position(u64),
    Time(DateTime<Utc>),
}

impl AsOf {
    fn keeps(&self, position: u64, recorded_at: Option<DateTime<Utc>>) -> bool {
        match (self, recorded_at) {
            (AsOf::Position(p), _) => position <= *p,
            (AsOf::Time(t), Some(at)) => at <= *t,
            (AsOf::Time(_), None) => true,
        }
    }
}

pub struct StateCache {
    rollouts: Mutex<LruCache<RolloutId, RolloutEntry>>,
    policies: Mutex<LruCache<Team, (PolicyState, u64)>>,
    /// Stream reads made to fold entries (each `read_stream` call):
    /// `rollgate_state_cache_stream_reads_total` once registered.
    reads: prometheus::IntCounter,
}

impl StateCache {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("non-zero");
        StateCache {
            rollouts: Mutex::new(LruCache::new(cap)),
            policies: Mutex::new(LruCache::new(cap)),
            reads: prometheus::IntCounter::new(
                "state_cache_stream_reads_total",
                "Stream reads made to fold cached rollouts and policies (commands make none \
                 in the steady state; reads such as as_of, gates and views read the tail)",
            )
            .expect("metric"),
        }
    }

    /// [`StateCache::new`], its read counter registered in `registry` (`/metrics`).
    pub fn with_registry(capacity: usize, registry: &prometheus::Registry) -> Self {
        let cache = Self::new(capacity);
        if let Err(e) = registry.register(Box::new(cache.reads.clone())) {
            tracing::warn!(error = %e, "state cache metric not registered");
        }
        cache
    }

    /// How many stream reads the cache has made to fold its entries.
    pub fn store_reads(&self) -> u64 {
        self.reads.get()
    }

    async fn read_stream(
        &self,
        store: &dyn EventStore,
        stream: &str,
        from_version: u64,
    ) -> Result<Vec<rollgate_store::RecordedEvent>, Problem> {
        self.reads.inc();
        Ok(store.read_stream(stream, from_version, PAGE).await?)
    }

    fn entry(&self, id: &RolloutId) -> Option<RolloutEntry> {
        self.rollouts.lock().ok()?.get(id).cloned()
    }

    /// The rollout's current state (and its version), folding only what is new.
    pub async fn rollout(
        &self,
        store: &dyn EventStore,
        id: &RolloutId,
    ) -> Result<(RolloutState, u64), Problem> {
        Ok(self.refresh(store, id).await?.newest())
    }

    /// The rollout as this instance last knew it, without reading the store: possibly
    /// behind the stream (another instance wrote), never ahead of it. `None` when the
    /// rollout is not cached or not created.
    pub fn cached_rollout(&self, id: &RolloutId) -> Option<(RolloutState, u64)> {
        let (state, version) = self.entry(id)?.newest();
        state.is_created().then_some((state, version))
    }

    /// The team of a rollout: from the cache when the rollout is known (a rollout's team never
    /// changes), else read. `None` when there is no such rollout.
    pub async fn rollout_team(
        &self,
        store: &dyn EventStore,
        id: &RolloutId,
    ) -> Result<Option<Team>, Problem> {
        if let Some((state, _)) = self.cached_rollout(id) {
            return Ok(state.rollout().map(|r| r.team.clone()));
        }
        let (state, _) = self.rollout(store, id).await?;
        Ok(state.rollout().map(|r| r.team.clone()))
    }

    /// Records the rollout's state after this instance appended the events that lead to it
    /// (`version` is the stream's version after the append).
    pub fn advance_rollout(&self, id: &RolloutId, state: RolloutState, version: u64) {
        let Ok(mut cache) = self.rollouts.lock() else {
            return;
        };
        if cache.peek(id).is_none() {
            cache.put(*id, RolloutEntry::empty());
        }
        if let Some(entry) = cache.get_mut(id) {
            if version > entry.newest().1 {
                entry.ahead = Some(Arc::new((state, version)));
            }
        }
    }

    /// The rollout now, and as it was after the last event `as_of` keeps (replayed from the
    /// nearest checkpoint) with the position of that event.
    pub async fn rollout_as_of(
        &self,
        store: &dyn EventStore,
        id: &RolloutId,
        as_of: AsOf,
    ) -> Result<(RolloutState, RolloutState, Option<u64>), Problem> {
        let entry = self.refresh(store, id).await?;
        let now = entry.current.state.clone();
        if as_of.keeps(entry.current.position, entry.current.recorded_at) {
            let c = &entry.current;
            return Ok((now, c.state.clone(), (c.version > 0).then_some(c.position)));
        }
        let start = entry
            .checkpoints
            .iter()
            .rev()
            .find(|c| as_of.keeps(c.position, c.recorded_at))
            .cloned();
        let (mut state, mut version, mut position) = match &start {
            Some(c) => (c.state.clone(), c.version, Some(c.position)),
            None => (RolloutState::default(), 0, None),
        };
        let stream = rollout_stream(id);
        'pages: loop {
            let page = self.read_stream(store, &stream, version + 1).await?;
            for e in &page {
                if !as_of.keeps(e.position, Some(e.recorded_at)) {
                    break 'pages;
                }
                state = evolve(state, &decode_rollout(e)?);
                version = e.version;
                position = Some(e.position);
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok((now, state, position))
    }

    /// Brings the entry of `id` up to the stream's head.
    async fn refresh(
        &self,
        store: &dyn EventStore,
        id: &RolloutId,
    ) -> Result<RolloutEntry, Problem> {
        let mut entry = self.entry(id).unwrap_or_else(RolloutEntry::empty);
        let stream = rollout_stream(id);
        let mut changed = false;
        loop {
            let page = self
                .read_stream(store, &stream, entry.current.version + 1)
                .await?;
            if page.is_empty() {
                break;
            }
            let mut current = (*entry.current).clone();
            for e in &page {
                current.state = evolve(current.state, &decode_rollout(e)?);
                current.version = e.version;
                current.position = e.position;
                current.recorded_at = Some(e.recorded_at);
                if current.version.is_multiple_of(CHECKPOINT_EVERY) {
                    entry.checkpoints.push(Arc::new(current.clone()));
                }
            }
            entry.current = Arc::new(current);
            changed = true;
            if page.len() < PAGE {
                break;
            }
        }
        if changed {
            if let Ok(mut cache) = self.rollouts.lock() {
                match cache.get_mut(id) {
                    Some(held) => {
                        if held.current.version < entry.current.version {
                            held.current = entry.current.clone();
                            held.checkpoints = entry.checkpoints.clone();
                        }
                        // Keep the newest state this instance appended, if still ahead.
                        if held
                            .ahead
                            .as_ref()
                            .is_some_and(|a| a.1 <= held.current.version)
                        {
                            held.ahead = None;
                        }
                        entry.ahead = held.ahead.clone();
                    }
                    None => {
                        entry.ahead = None;
                        cache.put(*id, entry.clone());
                    }
                }
            }
        }
        Ok(entry)
    }

    /// The team's policy state and its stream version, folding only what is new.
    pub async fn policy(
        &self,
        store: &dyn EventStore,
        team: &Team,
    ) -> Result<(PolicyState, u64), Problem> {
        let cached = self.cached_policy(team);
        let known = cached.is_some();
        let (mut state, mut version) = cached.unwrap_or_default();
        let stream = policy_stream(team);
        let before = version;
        loop {
            let page = self.read_stream(store, &stream, version + 1).await?;
            for e in &page {
                state = evolve_policy(state, &decode_policy(e)?);
                version = e.version;
            }
            if page.len() < PAGE {
                break;
            }
        }
        // Cached even at version 0 (no policy published yet): commands then read nothing.
        if version > before || !known {
            self.advance_policy(team, state.clone(), version);
        }
        Ok((state, version))
    }

    /// The team's policy as this instance last knew it, without reading the store (possibly
    /// behind the stream). `None` when it is not cached.
    pub fn cached_policy(&self, team: &Team) -> Option<(PolicyState, u64)> {
        self.policies.lock().ok()?.get(team).cloned()
    }

    /// Records the team's policy state at stream version `version` (folded from the store,
    /// or after this instance appended the events that lead to it).
    pub fn advance_policy(&self, team: &Team, state: PolicyState, version: u64) {
        if let Ok(mut cache) = self.policies.lock() {
            let newer = cache.peek(team).is_none_or(|(_, v)| *v <= version);
            if newer {
                cache.put(team.clone(), (state, version));
            }
        }
    }
}
