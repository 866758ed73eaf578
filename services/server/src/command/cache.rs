//! Folded stream states kept in memory, so that a command reads only the events appended
//! since the stream was last folded, and `as_of` replays from the nearest checkpoint instead
//! of from the first event.
//!
//! A cache entry is never trusted on its own: every use first reads the stream's tail from
//! the store, so several instances sharing one database stay correct, and a lost entry only
//! costs a full replay. Evicted least-recently-used.

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
    current: Arc<Checkpoint>,
    /// Ascending by version, one every `CHECKPOINT_EVERY` events.
    checkpoints: Vec<Arc<Checkpoint>>,
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
}

impl StateCache {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("non-zero");
        StateCache {
            rollouts: Mutex::new(LruCache::new(cap)),
            policies: Mutex::new(LruCache::new(cap)),
        }
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
        let entry = self.refresh(store, id).await?;
        Ok((entry.current.state.clone(), entry.current.version))
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
            let page = store.read_stream(&stream, version + 1, PAGE).await?;
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
        let mut entry = self.entry(id).unwrap_or_else(|| RolloutEntry {
            current: Arc::new(Checkpoint {
                version: 0,
                position: 0,
                recorded_at: None,
                state: RolloutState::default(),
            }),
            checkpoints: Vec::new(),
        });
        let stream = rollout_stream(id);
        let mut changed = false;
        loop {
            let page = store
                .read_stream(&stream, entry.current.version + 1, PAGE)
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
                let newer = cache
                    .peek(id)
                    .is_none_or(|held| held.current.version < entry.current.version);
                if newer {
                    cache.put(*id, entry.clone());
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
        let (mut state, mut version) = self
            .policies
            .lock()
            .ok()
            .and_then(|mut c| c.get(team).cloned())
            .unwrap_or_default();
        let stream = policy_stream(team);
        let before = version;
        loop {
            let page = store.read_stream(&stream, version + 1, PAGE).await?;
            for e in &page {
                state = evolve_policy(state, &decode_policy(e)?);
                version = e.version;
            }
            if page.len() < PAGE {
                break;
            }
        }
        if version > before {
            if let Ok(mut cache) = self.policies.lock() {
                let newer = cache.peek(team).is_none_or(|(_, v)| *v < version);
                if newer {
                    cache.put(team.clone(), (state.clone(), version));
                }
            }
        }
        Ok((state, version))
    }
}
