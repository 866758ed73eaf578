//! The live tail of the log, shared by every event stream of this instance.
//!
//! One task follows the log: on each commit signal it reads the new events once and
//! broadcasts them to every open stream, so an idle stream costs the database nothing and N
//! streams cost one read per commit, not N. When no stream is open it does not read at all.
//! A stream catches up from the database on its own (filtered by team in SQL) and then
//! takes events from the broadcast; one that falls too far behind the broadcast goes back
//! to the database from where it was.
//!
//! Streams are admitted under two limits, per subject and in total, so no caller can hold
//! an unbounded number of connections open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollgate_store::{EventStore, RecordedEvent};
use tokio::sync::broadcast;

/// Events the broadcast keeps for a stream that is slow to take them; a stream further
/// behind reads from the database instead.
const BACKLOG: usize = 1024;

/// Events read from the store at a time (by the shared tail and by a stream catching up).
pub const PAGE: usize = 256;

/// How long a stream refused for the limits is told to wait (`Retry-After`, seconds).
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// How many event streams may be open at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// On this instance, for everyone.
    pub total: usize,
    /// For one token subject (`sub`).
    pub per_subject: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            total: 1000,
            per_subject: 8,
        }
    }
}

/// Why a stream was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Total(usize),
    PerSubject(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Total(n) => write!(f, "this server has its limit of {n} open event streams"),
            Refused::PerSubject(n) => write!(
                f,
                "this token's subject has its limit of {n} open event streams"
            ),
        }
    }
}

#[derive(Default)]
struct Open {
    total: usize,
    by_subject: HashMap<String, usize>,
}

/// The shared tail and the stream limits.
pub struct LiveLog {
    sender: broadcast::Sender<Arc<RecordedEvent>>,
    limits: StreamLimits,
    open: Mutex<Open>,
}

impl LiveLog {
    /// Starts following `store` from its current head. The follower ends when the store's
    /// commit signal closes.
    pub fn start(store: Arc<dyn EventStore>, limits: StreamLimits) -> Arc<Self> {
        let (sender, _) = broadcast::channel(BACKLOG);
        let live = Arc::new(LiveLog {
            sender: sender.clone(),
            limits,
            open: Mutex::new(Open::default()),
        });
        tokio::spawn(follow(store, sender));
        live
    }

    /// Admits one more stream for `subject`, or says which limit it is over. The permit
    /// gives the place back when dropped (when the stream ends or the client goes).
    pub fn admit(self: &Arc<Self>, subject: &str) -> Result<Permit, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.limits.total {
            return Err(Refused::Total(self.limits.total));
        }
        let mine = open.by_subject.get(subject).copied().unwrap_or(0);
        if mine >= self.limits.per_subject {
            return Err(Refused::PerSubject(self.limits.per_subject));
        }
        open.total += 1;
        open.by_subject.insert(subject.to_owned(), mine + 1);
        Ok(Permit {
            live: self.clone(),
            subject: subject.to_owned(),
        })
    }

    /// Events committed from now on, in position order. Subscribe before reading the
    /// database, so nothing committed in between is missed (the reader drops what it has
    /// already seen by position).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RecordedEvent>> {
        self.sender.subscribe()
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// One admitted stream's place; given back on drop.
pub struct Permit {
    live: Arc<LiveLog>,
    subject: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.live.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_subject.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                open.by_subject.remove(&self.subject);
            }
        }
    }
}

/// Reads each commit's events once and broadcasts them.
async fn follow(store: Arc<dyn EventStore>, sender: broadcast::Sender<Arc<RecordedEvent>>) {
    let mut signal = store.subscribe();
    let mut after = loop {
        match store.head().await {
            Ok(head) => break head.position,
            Err(e) => {
                tracing::warn!(error = %e, "live log cannot read the head yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    loop {
        // The committed head this process knows of, read before looking for streams: a
        // stream that subscribes after the check below reads the database from a later
        // point than `known`, so skipping to `known` loses it nothing.
        let known = *signal.borrow_and_update();
        if sender.receiver_count() == 0 {
            after = after.max(known);
        } else {
            match store.read_all(after, PAGE).await {
                Ok(page) if !page.is_empty() => {
                    for e in page {
                        after = e.position;
                        // No receiver left is not an error: the next loop skips ahead.
                        let _ = sender.send(Arc::new(e));
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "live log read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if signal.changed().await.is_err() {
            return;
        }
    }
}
