//! The projector: follows the global log from the read models' checkpoints.
//!
//! One batch = one transaction: lock the checkpoint rows (PostgreSQL `FOR UPDATE`; SQLite
//! `BEGIN IMMEDIATE`), read the events after the lowest checkpoint, apply each event to the
//! read models whose checkpoint is behind it, move the checkpoints, commit. A crash before
//! the commit leaves rows and checkpoints as they were; a second instance waits on the lock
//! and then sees the moved checkpoints, so no event is ever applied twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollgate_store::{DatabasePool, EventStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::{Conn, Sql, Tx, Ty, Val};
use crate::envelope::Decoded;
use crate::models::{tables_of, Batch, Targets, READ_MODELS};
use crate::ProjectionError;

/// Tunables of a projector.
#[derive(Clone, Debug)]
pub struct ProjectorOptions {
    /// Most events applied in one transaction.
    pub batch_size: usize,
    /// How often a spawned projector looks at the log without a wake-up (other instances'
    /// commits on SQLite, missed notifications).
    pub poll_interval: Duration,
    /// Pause after a failed batch before retrying.
    pub retry_delay: Duration,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// Test hooks; empty in production.
#[derive(Clone, Debug, Default)]
pub struct ProjectorFailPoints {
    /// Fail the next batch after applying this many of its events, before commit (as a
    /// crash would). A number at least the batch's length fails after every row and the
    /// checkpoint are written, just before commit. Cleared when it fires.
    pub fail_after_events: Option<usize>,
}

/// What one batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events read and applied.
    pub applied: usize,
    /// The lowest checkpoint after the batch: every read model reflects the log up to here.
    pub position: u64,
}

/// Follows the log and keeps the read models current.
#[derive(Clone)]
pub struct Projector {
    store: Arc<dyn EventStore>,
    options: ProjectorOptions,
    fail_points: Arc<Mutex<ProjectorFailPoints>>,
}

impl Projector {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self::with_options(store, ProjectorOptions::default())
    }

    pub fn with_options(store: Arc<dyn EventStore>, options: ProjectorOptions) -> Self {
        Self {
            store,
            options,
            fail_points: Arc::default(),
        }
    }

    /// The test hooks of this projector.
    pub fn fail_points(&self) -> Arc<Mutex<ProjectorFailPoints>> {
        self.fail_points.clone()
    }

    /// The position every read model has reached (the lowest checkpoint; 0 before any).
    pub async fn position(&self) -> Result<u64, ProjectionError> {
        projected_position(&self.store.pool()).await
    }

    /// Applies batches until the read models have reached the end of the log; answers the
    /// position reached.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        loop {
            let outcome = self.apply_batch().await?;
            if outcome.applied < self.options.batch_size {
                return Ok(outcome.position);
            }
        }
    }

    /// Applies at most one batch, in one transaction.
    pub async fn apply_batch(&self) -> Result<BatchOutcome, ProjectionError> {
        let pool = self.store.pool();
        let mut tx = Tx::begin(&pool).await?;
        let mut conn = tx.conn();
        let checkpoints = lock_checkpoints(&mut conn).await?;
        let from = checkpoints.values().copied().min().unwrap_or(0);
        let events = self
            .store
            .read_all(from, self.options.batch_size.max(1))
            .await?;
        let Some(last) = events.last().map(|e| e.position) else {
            tx.commit().await?;
            return Ok(BatchOutcome {
                applied: 0,
                position: from,
            });
        };
        let fail_after = self
            .fail_points
            .lock()
            .expect("fail points lock")
            .fail_after_events
            .take();
        let mut batch = Batch::default();
        for (i, event) in events.iter().enumerate() {
            if fail_after == Some(i) {
                return Err(ProjectionError::FailPoint(i));
            }
            let decoded = Decoded::new(event);
            if let crate::envelope::Body::Undecodable(why) = &decoded.body {
                tracing::warn!(
                    position = event.position,
                    event_type = %event.event_type,
                    "event not readable; audited only: {why}"
                );
            }
            let targets = Targets::for_position(&checkpoints, event.position);
            batch.apply(&mut conn, &decoded, targets).await?;
        }
        batch.flush(&mut conn).await?;
        let mut sql = Sql::new("UPDATE projection_checkpoints SET position = ");
        sql.arg(Val::int(last as i64))
            .push(" WHERE position < ")
            .arg(Val::int(last as i64))
            .push(" AND name IN ")
            .list(READ_MODELS.iter().map(|m| Val::text(*m)));
        conn.exec(&sql.text, &sql.args).await?;
        if fail_after.is_some_and(|n| n >= events.len()) {
            // Everything is written; only the commit is missing.
            return Err(ProjectionError::FailPoint(events.len()));
        }
        tx.commit().await?;
        Ok(BatchOutcome {
            applied: events.len(),
            position: last,
        })
    }

    /// Runs the projector in the background: catches up at once, then whenever the store
    /// signals a commit (or every `poll_interval`). Errors are logged and retried.
    pub fn spawn(self) -> ProjectorHandle {
        let (tx, rx) = watch::channel(0u64);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut wake = self.store.subscribe();
            loop {
                let before = *tx.borrow();
                match self.catch_up().await {
                    Ok(position) => {
                        tx.send_if_modified(|p| {
                            if *p != position {
                                *p = position;
                                true
                            } else {
                                false
                            }
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "projection batch failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(self.options.retry_delay) => {}
                            _ = stop_rx.changed() => return,
                        }
                        continue;
                    }
                }
                // Commits signalled while catching up: go again at once, as long as that
                // makes progress (never spin on a signal the log does not show yet).
                let head = *wake.borrow_and_update();
                let now = *tx.borrow();
                if head > now && now > before {
                    continue;
                }
                tokio::select! {
                    r = wake.changed() => {
                        if r.is_err() {
                            // The store is gone: keep polling.
                            tokio::time::sleep(self.options.poll_interval).await;
                        }
                    }
                    _ = tokio::time::sleep(self.options.poll_interval) => {}
                    _ = stop_rx.changed() => return,
                }
            }
        });
        ProjectorHandle {
            position: rx,
            stop: stop_tx,
            task,
        }
    }
}

/// A running projector.
pub struct ProjectorHandle {
    position: watch::Receiver<u64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ProjectorHandle {
    /// The position every read model has reached, as last seen by this projector.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// Follows the projected position.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.position.clone()
    }

    /// Waits until the read models reflect `position` (read-your-writes); false on timeout.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        wait_for_position(self.position.clone(), position, timeout).await
    }

    /// Stops the projector after its current batch and waits until it has, through a shared
    /// reference (a handle kept in shared server state cannot be moved out for
    /// [`ProjectorHandle::shutdown`]). The task ends by dropping its position sender.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let mut rx = self.position.clone();
        while rx.changed().await.is_ok() {}
    }

    /// Stops the projector after its current batch.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Waits until `rx` reaches `position`; false on timeout.
pub async fn wait_for_position(
    mut rx: watch::Receiver<u64>,
    position: u64,
    timeout: Duration,
) -> bool {
    tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// The lowest checkpoint of all read models (0 when a model has none yet).
pub async fn projected_position(pool: &DatabasePool) -> Result<u64, ProjectionError> {
    crate::db::with_conn!(pool, |conn| {
        let mut sql = Sql::new("SELECT name, position FROM projection_checkpoints WHERE name IN ");
        sql.list(READ_MODELS.iter().map(|m| Val::text(*m)));
        let rows = conn.fetch(&sql.text, &sql.args, &[Ty::T, Ty::I]).await?;
        if rows.len() < READ_MODELS.len() {
            return Ok(0);
        }
        Ok(rows
            .iter()
            .filter_map(|r| r[1].as_i64())
            .min()
            .unwrap_or(0)
            .max(0) as u64)
    })
}

/// Creates missing checkpoint rows and locks them all (in name order); answers them.
async fn lock_checkpoints(conn: &mut Conn<'_>) -> Result<BTreeMap<String, u64>, ProjectionError> {
    for model in READ_MODELS {
        conn.exec(
            "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) \
             ON CONFLICT (name) DO NOTHING",
            &[Val::text(model)],
        )
        .await?;
    }
    let mut sql = Sql::new("SELECT name, position FROM projection_checkpoints WHERE name IN ");
    sql.list(READ_MODELS.iter().map(|m| Val::text(*m)));
    sql.push(" ORDER BY name");
    if conn.is_postgres() {
        sql.push(" FOR UPDATE");
    }
    let rows = conn.fetch(&sql.text, &sql.args, &[Ty::T, Ty::I]).await?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            let position = r[1].as_i64().unwrap_or(0).max(0) as u64;
            (r.swap_remove(0).into_text().unwrap_or_default(), position)
        })
        .collect())
}

/// Drops one read model (`Some(name)`) or all of them (`None`) with their checkpoints and
/// replays the log from position 0. Answers the position reached.
pub async fn rebuild(
    store: Arc<dyn EventStore>,
    name: Option<&str>,
) -> Result<u64, ProjectionError> {
    let models: Vec<&str> = match name {
        None => READ_MODELS.to_vec(),
        Some(n) => match READ_MODELS.iter().find(|m| **m == n) {
            Some(m) => vec![*m],
            None => return Err(ProjectionError::UnknownReadModel(n.to_owned())),
        },
    };
    let pool = store.pool();
    let mut tx = Tx::begin(&pool).await?;
    let mut conn = tx.conn();
    lock_checkpoints(&mut conn).await?;
    for model in &models {
        for table in tables_of(model) {
            conn.exec(&format!("DELETE FROM {}", table.name), &[])
                .await?;
        }
        conn.exec(
            "UPDATE projection_checkpoints SET position = 0 WHERE name = $1",
            &[Val::text(*model)],
        )
        .await?;
    }
    tx.commit().await?;
    // Replaying history: larger batches, fewer transactions.
    let options = ProjectorOptions {
        batch_size: REBUILD_BATCH_SIZE,
        ..Default::default()
    };
    Projector::with_options(store, options).catch_up().await
}

/// Events per transaction when rebuilding from position 0.
pub const REBUILD_BATCH_SIZE: usize = 5000;

/// Every row of every read-model table (or of one model), each value as text, in key order:
/// `(table, rows)`. Used to check that a rebuild reproduces the incremental projection.
pub async fn dump_read_models(
    pool: &DatabasePool,
    name: Option<&str>,
) -> Result<Vec<(String, Vec<Vec<Option<String>>>)>, ProjectionError> {
    let models: Vec<&str> = match name {
        None => READ_MODELS.to_vec(),
        Some(n) => vec![n],
    };
    let mut out = Vec::new();
    for model in models {
        for table in tables_of(model) {
            let cols: Vec<String> = table
                .columns
                .iter()
                .map(|c| format!("CAST({c} AS TEXT)"))
                .collect();
            let sql = format!(
                "SELECT {} FROM {} ORDER BY {}",
                cols.join(", "),
                table.name,
                table.order_by
            );
            let tys = vec![Ty::T; table.columns.len()];
            let rows = crate::db::with_conn!(pool, |conn| conn.fetch(&sql, &[], &tys).await?);
            out.push((
                table.name.to_owned(),
                rows.into_iter()
                    .map(|r| r.into_iter().map(Val::into_text).collect())
                    .collect(),
            ));
        }
    }
    Ok(out)
}
