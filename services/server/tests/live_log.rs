//! The live tail shared by event streams: one database read per commit for every open
//! stream, none while no stream is open, every subscriber gets every event in order; and
//! the stream limits. A counting wrapper around a real store counts the reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rollgate_server::live::{LiveLog, Refused, StreamLimits};
use rollgate_store::{
    AppendOutcome, BackendKind, DatabasePool, EventData, EventStore, ExpectedVersion, Head,
    RecordedEvent, StoreError, StoreOptions,
};
use rollgate_testkit::TestDb;
use serde_json::json;
use tokio::sync::watch;

/// A real store that counts the global-log reads made through it.
struct Counting {
    inner: Arc<dyn EventStore>,
    reads: AtomicU64,
}

#[async_trait]
impl EventStore for Counting {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome, StoreError> {
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from_version, limit).await
    }
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_all(after, limit).await
    }
    async fn read_all_of_teams(
        &self,
        after: u64,
        limit: usize,
        teams: &[String],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_all_of_teams(after, limit, teams).await
    }
    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        self.inner.stream_version(stream).await
    }
    async fn head(&self) -> Result<Head, StoreError> {
        self.inner.head().await
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.subscribe()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn pool(&self) -> DatabasePool {
        self.inner.pool()
    }
    fn max_event_bytes(&self) -> usize {
        self.inner.max_event_bytes()
    }
}

fn event(n: u64) -> EventData {
    EventData {
        id: uuid::Uuid::new_v4(),
        event_type: "Happened".into(),
        schema_version: 1,
        payload: json!({ "n": n }),
        metadata: json!({ "team": "web" }),
    }
}

async fn counting_store() -> (TestDb, Arc<Counting>) {
    let db = TestDb::new(BackendKind::Sqlite).await;
    let inner = db.store(StoreOptions::default()).await;
    let store = Arc::new(Counting {
        inner,
        reads: AtomicU64::new(0),
    });
    (db, store)
}

#[tokio::test]
async fn many_streams_cost_one_read_per_commit_and_none_while_idle() {
    let (_db, store) = counting_store().await;
    let live = LiveLog::start(store.clone(), StreamLimits::default());
    tokio::time::sleep(Duration::from_millis(100)).await;

    // No stream open: commits cause no reads.
    let base = store.reads.load(Ordering::SeqCst);
    for n in 0..10 {
        store
            .append("s", ExpectedVersion::Any, vec![event(n)])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        base,
        "reads with no stream"
    );

    // Fifty streams, twenty commits one after the other.
    let mut receivers: Vec<_> = (0..50).map(|_| live.subscribe()).collect();
    let base = store.reads.load(Ordering::SeqCst);
    const COMMITS: u64 = 20;
    for n in 0..COMMITS {
        store
            .append("s", ExpectedVersion::Any, vec![event(100 + n)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for rx in &mut receivers {
        let mut positions = Vec::new();
        while positions.len() < COMMITS as usize {
            let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an event within 5 s")
                .expect("the broadcast stays open");
            positions.push(e.position);
        }
        assert_eq!(positions, (11..=10 + COMMITS).collect::<Vec<_>>());
    }
    let reads = store.reads.load(Ordering::SeqCst) - base;
    // At most one read finding events and one finding none per wake-up: never one per
    // stream (that would be 50 × 20).
    assert!(
        reads <= 2 * COMMITS + 2,
        "{reads} reads for {COMMITS} commits"
    );
}

#[tokio::test]
async fn streams_are_admitted_per_subject_and_in_total() {
    let (_db, store) = counting_store().await;
    let live = LiveLog::start(
        store,
        StreamLimits {
            total: 3,
            per_subject: 2,
        },
    );
    let a1 = live.admit("ada").unwrap();
    let a2 = live.admit("ada").unwrap();
    assert_eq!(live.admit("ada").err(), Some(Refused::PerSubject(2)));
    let v1 = live.admit("vic").unwrap();
    assert_eq!(live.admit("otto").err(), Some(Refused::Total(3)));
    assert_eq!(live.open_streams(), 3);
    // A closed stream gives its place back.
    drop(a1);
    let a3 = live.admit("ada").unwrap();
    drop((a2, a3, v1));
    assert_eq!(live.open_streams(), 0);
}
