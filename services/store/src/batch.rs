//! Group commit, shared by both backends.
//!
//! Appends from concurrent callers queue on one channel. A single committer task takes
//! whatever is queued (up to a bound), opens one transaction, takes the head lock, checks
//! each request on its own (idempotency, expected version, read-condition on a second
//! stream), writes the rows of the requests that passed, moves the head and commits once.
//! Each caller gets its own answer: a version conflict or a failed condition in one request
//! fails that request only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use uuid::Uuid;

use crate::chain::chain_hash;
use crate::clock::Clock;
use crate::{
    AppendObserver, AppendOutcome, EventData, ExpectedVersion, FailPoints, Head, RecordedEvent,
    StoreError, StoreOptions, StreamCondition,
};

/// One caller's append.
pub(crate) struct AppendRequest {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<EventData>,
    /// Written only if this other stream is at this version (read under the head lock).
    pub condition: Option<StreamCondition>,
}

struct Pending {
    request: AppendRequest,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// What a backend does inside one append transaction.
#[async_trait]
pub(crate) trait BatchTx: Send {
    /// Locks the head row for the rest of the transaction and reads it.
    async fn lock_head(&mut self) -> Result<Head, StoreError>;
    /// Stored events having any of these ids.
    async fn existing(&mut self, ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError>;
    /// Current versions of these streams (absent streams may be left out).
    async fn versions(&mut self, streams: &[&str]) -> Result<HashMap<String, u64>, StoreError>;
    async fn insert(&mut self, rows: &[RecordedEvent]) -> Result<(), StoreError>;
    async fn set_head(&mut self, head: &Head) -> Result<(), StoreError>;
    async fn commit(self) -> Result<(), StoreError>;
    async fn rollback(self) -> Result<(), StoreError>;
}

#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    type Tx: BatchTx;
    async fn begin(&self) -> Result<Self::Tx, StoreError>;
}

/// The handle through which a store submits appends to its committer task.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::Sender<Pending>,
    max_event_bytes: usize,
}

impl Committer {
    pub fn spawn<B: Backend>(
        backend: B,
        options: &StoreOptions,
        head_signal: Arc<watch::Sender<u64>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(options.max_batch_requests * 4);
        let worker = Arc::new(Worker {
            backend,
            clock: options.clock.clone(),
            fail_points: options.fail_points.clone(),
            observer: options.observer.clone(),
            max_requests: options.max_batch_requests.max(1),
            max_events: options.max_batch_events.max(1),
            head_signal,
        });
        // With several committers, batches pipeline: while one holds the head lock and
        // commits, the next is already formed and waiting for the lock.
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..options.committers.max(1) {
            tokio::spawn(worker.clone().run(rx.clone()));
        }
        Self {
            tx,
            max_event_bytes: options.max_event_bytes,
        }
    }

    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        validate(&request, self.max_event_bytes)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { request, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Checks that need no database: nothing is queued when they fail.
fn validate(request: &AppendRequest, max_event_bytes: usize) -> Result<(), StoreError> {
    if request.stream.is_empty() {
        return Err(StoreError::InvalidAppend("stream name is empty".into()));
    }
    if request.events.is_empty() {
        return Err(StoreError::InvalidAppend("no events to append".into()));
    }
    if let Some(c) = &request.condition {
        if c.stream.is_empty() {
            return Err(StoreError::InvalidAppend(
                "condition stream name is empty".into(),
            ));
        }
        if c.stream == request.stream {
            return Err(StoreError::InvalidAppend(
                "a condition on the appended stream itself is its expected version".into(),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for e in &request.events {
        if !seen.insert(e.id) {
            return Err(StoreError::InvalidAppend(format!(
                "event id {} appears twice in one append",
                e.id
            )));
        }
        if e.event_type.is_empty() || e.schema_version == 0 {
            return Err(StoreError::InvalidAppend(format!(
                "event {} needs a type and a schema version >= 1",
                e.id
            )));
        }
        let size = serialized_len(&e.payload) + serialized_len(&e.metadata);
        if size > max_event_bytes {
            return Err(StoreError::EventTooLarge {
                event_id: e.id,
                size,
                limit: max_event_bytes,
            });
        }
    }
    Ok(())
}

fn serialized_len(v: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

struct Worker<B> {
    backend: B,
    clock: Arc<dyn Clock>,
    fail_points: Arc<Mutex<FailPoints>>,
    observer: Option<Arc<dyn AppendObserver>>,
    max_requests: usize,
    max_events: usize,
    head_signal: Arc<watch::Sender<u64>>,
}

impl<B: Backend> Worker<B> {
    async fn run(self: Arc<Self>, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>) {
        loop {
            let (batch, events) = {
                let mut rx = queue.lock().await;
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut events = first.request.events.len();
                let mut batch = vec![first];
                while batch.len() < self.max_requests && events < self.max_events {
                    match rx.try_recv() {
                        Ok(p) => {
                            events += p.request.events.len();
                            batch.push(p);
                        }
                        Err(_) => break,
                    }
                }
                (batch, events)
            };
            let requests: Vec<&AppendRequest> = batch.iter().map(|p| &p.request).collect();
            let span = tracing::debug_span!("append_batch", requests = requests.len(), events);
            let started = std::time::Instant::now();
            match self.commit_batch(&requests).instrument(span).await {
                Ok((results, head)) => {
                    if let Some(o) = &self.observer {
                        let written = requests
                            .iter()
                            .zip(&results)
                            .filter(|(_, r)| r.is_ok())
                            .map(|(q, _)| q.events.len())
                            .sum();
                        o.batch_committed(requests.len(), written, started.elapsed());
                    }
                    self.head_signal.send_if_modified(|known| {
                        let moved = head > *known;
                        if moved {
                            *known = head;
                        }
                        moved
                    });
                    for (p, r) in batch.into_iter().zip(results) {
                        let _ = p.reply.send(r);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "append batch failed");
                    for p in batch {
                        let _ = p.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    async fn commit_batch(
        &self,
        requests: &[&AppendRequest],
    ) -> Result<(Vec<Result<AppendOutcome, StoreError>>, u64), StoreError> {
        let mut tx = self.backend.begin().await?;
        let head = tx.lock_head().await?;
        let ids: Vec<Uuid> = requests
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.id))
            .collect();
        let existing = tx.existing(&ids).await?;
        // The condition streams are read under the same lock as the appended ones.
        let mut streams: Vec<&str> = requests
            .iter()
            .flat_map(|r| {
                std::iter::once(r.stream.as_str())
                    .chain(r.condition.as_ref().map(|c| c.stream.as_str()))
            })
            .collect();
        streams.sort_unstable();
        streams.dedup();
        let versions = tx.versions(&streams).await?;

        let plan = plan_batch(requests, head, existing, versions, &*self.clock);
        if plan.rows.is_empty() {
            tx.rollback().await?;
            return Ok((plan.results, plan.head.position));
        }
        tx.insert(&plan.rows).await?;
        tx.set_head(&plan.head).await?;

        let fail = self
            .fail_points
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        if let Some(d) = fail.sleep_before_commit {
            tokio::time::sleep(d).await;
        }
        if fail.rollback_instead_of_commit {
            tx.rollback().await?;
            return Err(StoreError::Database(
                "append rolled back by fail point".into(),
            ));
        }
        tx.commit().await?;
        Ok((plan.results, plan.head.position))
    }
}

struct BatchPlan {
    rows: Vec<RecordedEvent>,
    results: Vec<Result<AppendOutcome, StoreError>>,
    head: Head,
}

/// Decides, without I/O, what each request of a batch gets and which rows are written.
fn plan_batch(
    requests: &[&AppendRequest],
    mut head: Head,
    existing: Vec<RecordedEvent>,
    mut versions: HashMap<String, u64>,
    clock: &dyn Clock,
) -> BatchPlan {
    let mut known: HashMap<Uuid, RecordedEvent> = existing.into_iter().map(|e| (e.id, e)).collect();
    let mut rows = Vec::new();
    let mut results = Vec::with_capacity(requests.len());
    let recorded_at = clock.now();

    for request in requests {
        if request.events.iter().any(|e| known.contains_key(&e.id)) {
            results.push(replay(request, &known));
            continue;
        }
        let current = versions.get(&request.stream).copied().unwrap_or(0);
        if !request.expected.admits(current) {
            results.push(Err(StoreError::WrongExpectedVersion {
                stream: request.stream.clone(),
                expected: request.expected,
                current,
            }));
            continue;
        }
        // Sees the requests planned before this one in the batch, as a serial order would.
        if let Some(c) = &request.condition {
            let at = versions.get(&c.stream).copied().unwrap_or(0);
            if at != c.version {
                results.push(Err(StoreError::ConditionFailed {
                    stream: c.stream.clone(),
                    expected: c.version,
                    current: at,
                }));
                continue;
            }
        }
        let first_position = head.position + 1;
        let mut version = current;
        for e in &request.events {
            version += 1;
            let mut row = RecordedEvent {
                position: head.position + 1,
                stream: request.stream.clone(),
                version,
                id: e.id,
                event_type: e.event_type.clone(),
                schema_version: e.schema_version,
                payload: e.payload.clone(),
                metadata: e.metadata.clone(),
                recorded_at,
                prev_hash: head.hash.clone(),
                hash: String::new(),
            };
            row.hash = chain_hash(&row.prev_hash, &(&row).into());
            head = Head {
                position: row.position,
                hash: row.hash.clone(),
            };
            known.insert(row.id, row.clone());
            rows.push(row);
        }
        versions.insert(request.stream.clone(), version);
        results.push(Ok(AppendOutcome {
            stream_version: version,
            first_position,
            last_position: head.position,
        }));
    }
    BatchPlan {
        rows,
        results,
        head,
    }
}

/// A retried append: every event must already be stored, identically, consecutively.
fn replay(
    request: &AppendRequest,
    known: &HashMap<Uuid, RecordedEvent>,
) -> Result<AppendOutcome, StoreError> {
    let mut stored = Vec::with_capacity(request.events.len());
    for e in &request.events {
        match known.get(&e.id) {
            Some(s)
                if s.stream == request.stream
                    && s.event_type == e.event_type
                    && s.schema_version == e.schema_version
                    && s.payload == e.payload
                    && s.metadata == e.metadata =>
            {
                stored.push(s)
            }
            _ => return Err(StoreError::IdempotencyMismatch { event_id: e.id }),
        }
    }
    let consecutive = stored.windows(2).all(|w| w[1].version == w[0].version + 1);
    if !consecutive {
        return Err(StoreError::IdempotencyMismatch {
            event_id: request.events[0].id,
        });
    }
    let (first, last) = (stored[0], stored[stored.len() - 1]);
    Ok(AppendOutcome {
        stream_version: last.version,
        first_position: first.position,
        last_position: last.position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::GENESIS_HASH;
    use crate::clock::SystemClock;
    use serde_json::json;

    fn event(n: u128) -> EventData {
        EventData {
            id: Uuid::from_u128(n),
            event_type: "Happened".into(),
            schema_version: 1,
            payload: json!({ "n": n as u64 }),
            metadata: json!({}),
        }
    }

    fn genesis() -> Head {
        Head {
            position: 0,
            hash: GENESIS_HASH.into(),
        }
    }

    #[test]
    fn one_wrong_version_fails_only_its_request() {
        let a = AppendRequest {
            stream: "s-1".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![event(1), event(2)],
            condition: None,
        };
        let b = AppendRequest {
            stream: "s-1".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![event(3)],
            condition: None,
        };
        let c = AppendRequest {
            stream: "s-1".into(),
            expected: ExpectedVersion::Exact(2),
            events: vec![event(4)],
            condition: None,
        };
        let plan = plan_batch(
            &[&a, &b, &c],
            genesis(),
            vec![],
            HashMap::new(),
            &SystemClock,
        );
        assert_eq!(plan.rows.len(), 3);
        assert!(matches!(
            plan.results[1],
            Err(StoreError::WrongExpectedVersion { current: 2, .. })
        ));
        assert_eq!(plan.results[2].as_ref().unwrap().first_position, 3);
        assert_eq!(plan.head.position, 3);
    }

    #[test]
    fn a_condition_sees_earlier_requests_of_the_batch_and_fails_alone() {
        let policy = |n: u128, expected| AppendRequest {
            stream: "policy-web".into(),
            expected,
            events: vec![event(n)],
            condition: None,
        };
        let under = |n: u128, version| AppendRequest {
            stream: format!("rollout-{n}"),
            expected: ExpectedVersion::NoStream,
            events: vec![event(n)],
            condition: Some(StreamCondition::at("policy-web", version)),
        };
        // Decided under policy version 1; the policy moves to 2 earlier in the same batch.
        let (a, b, c, d) = (
            under(10, 1),
            policy(11, ExpectedVersion::Exact(1)),
            under(12, 1),
            under(13, 2),
        );
        let mut versions = HashMap::new();
        versions.insert("policy-web".to_owned(), 1);
        let plan = plan_batch(&[&a, &b, &c, &d], genesis(), vec![], versions, &SystemClock);
        assert!(plan.results[0].is_ok());
        assert!(plan.results[1].is_ok());
        assert!(matches!(
            &plan.results[2],
            Err(StoreError::ConditionFailed { stream, expected: 1, current: 2 }) if stream == "policy-web"
        ));
        assert!(plan.results[3].is_ok());
        assert_eq!(plan.rows.len(), 3);
        assert_eq!(plan.head.position, 3);
    }

    #[test]
    fn oversized_event_is_refused_before_queueing() {
        let mut e = event(1);
        e.payload = json!({ "blob": "x".repeat(100) });
        let r = AppendRequest {
            stream: "s".into(),
            expected: ExpectedVersion::Any,
            events: vec![e],
            condition: None,
        };
        assert!(matches!(
            validate(&r, 50),
            Err(StoreError::EventTooLarge { limit: 50, .. })
        ));
        assert!(validate(&r, 1000).is_ok());
    }
}
