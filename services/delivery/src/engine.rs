//! The delivery engine: the event log is the outbox.
//!
//! - A registry task follows the log for webhook streams (`webhook-{uuid}`) and keeps every
//!   target's state in memory; a registration creates the target's checkpoint at the
//!   registration's position (events after it are delivered), a redelivery request rewinds it
//!   (exactly once across instances, through the shared registry position).
//! - One worker task per target delivers the events after its durable checkpoint, in log
//!   order, one request at a time, at least once: the checkpoint moves only after a `2xx`.
//!   A worker first takes the target's lease (owner = this instance, expiry); a crashed
//!   instance's lease expires and another instance's worker takes over. The checkpoint moves
//!   only while the lease is held and only from the position the worker read (compare and
//!   set), so neither a lost lease nor a concurrent redelivery is overwritten.
//! - Failures back off exponentially with jitter, honour `Retry-After`, and after
//!   `max_attempts` the target is marked failing (an event with the last error) and retried
//!   at the ceiling interval; the next success records it recovered. `410 Gone` disables the
//!   target (an event). Pausing or removing the target stops its worker between attempts.
//! - Each request has a timeout; a global semaphore bounds concurrent requests; the engine
//!   only reads the log and writes its own small tables, so a slow receiver slows nothing
//!   but its own target.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use rollgate_domain::webhook::{
    decide_webhook, evolve_webhook, Webhook, WebhookCommand, WebhookContext, WebhookEvent,
    WebhookId, WebhookState, WebhookStatus, STREAM_PREFIX,
};
use rollgate_domain::{Actor, ActorId, Role, TeamScope};
use rollgate_store::{
    read_whole_stream, EventData, EventStore, ExpectedVersion, RecordedEvent, StoreError,
};
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::cloudevent::{self, team_of, RolloutCache};
use crate::db::{self, Attempt};
use crate::secrets::{signing_key, SecretsKey};
use crate::signature::standard_webhooks_header;
use crate::url_policy::{PolicyResolver, UrlPolicy};

/// The id the engine records its own events under.
pub const ENGINE_ACTOR: &str = "rollgate-delivery";

/// Tunables of the delivery engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Names this instance as a lease owner (unique per process).
    pub instance_id: String,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// First retry delay; doubled per attempt up to `max_backoff`, with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts at one event before the target is marked failing.
    pub max_attempts: u32,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// Requests in flight across all targets of this instance.
    pub max_concurrent_requests: usize,
    pub lease_ttl: Duration,
    /// How often an idle worker looks at the log without a wake-up.
    pub poll_interval: Duration,
    /// Events read per batch.
    pub batch_size: usize,
    pub url_policy: UrlPolicy,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            instance_id: format!("rollgate-{}", Uuid::new_v4().simple()),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            max_attempts: 8,
            max_retry_after: Duration::from_secs(3600),
            max_concurrent_requests: 32,
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            batch_size: 200,
            url_policy: UrlPolicy::default(),
        }
    }
}

/// The delay before retry number `attempt` (1 = the first retry): exponential, capped, with
/// "equal jitter" (half fixed, half random), so retries of many targets spread out.
pub fn backoff(options: &EngineOptions, attempt: u32) -> Duration {
    let exp = options
        .initial_backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
    let capped = exp.min(options.max_backoff);
    let half = capped / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Why delivering one event stopped short of success.
enum Outcome {
    Delivered,
    Gone {
        status: u16,
    },
    /// Paused, removed, lease lost or engine stopping: start again from the checkpoint.
    Interrupted,
}

struct Inner {
    store: Arc<dyn EventStore>,
    key: SecretsKey,
    options: EngineOptions,
    client: reqwest::Client,
    targets: RwLock<HashMap<WebhookId, Webhook>>,
    workers: std::sync::Mutex<HashMap<WebhookId, JoinHandle<()>>>,
    permits: Semaphore,
    cache: RolloutCache,
    /// Bumped on every registry change (pause, resume, rotation, redelivery…).
    changed: watch::Sender<u64>,
    /// How far the registry has read the log: workers deliver only events up to here, so a
    /// pause, rotation or removal takes effect exactly at its place in the log.
    registry_at: watch::Sender<u64>,
    stop: watch::Sender<bool>,
}

/// The engine, before it runs.
pub struct DeliveryEngine {
    inner: Arc<Inner>,
}

/// A running engine.
pub struct EngineHandle {
    inner: Arc<Inner>,
    registry: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("http client: {0}")]
    Client(String),
}

impl DeliveryEngine {
    pub fn new(
        store: Arc<dyn EventStore>,
        key: SecretsKey,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
        let client = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PolicyResolver {
                policy: options.url_policy,
            }))
            .user_agent(concat!("rollgate-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EngineError::Client(e.to_string()))?;
        let (changed, _) = watch::channel(0);
        let (stop, _) = watch::channel(false);
        let (registry_at, _) = watch::channel(0);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                key,
                permits: Semaphore::new(options.max_concurrent_requests.max(1)),
                options,
                client,
                targets: RwLock::default(),
                workers: std::sync::Mutex::default(),
                cache: RolloutCache::default(),
                changed,
                registry_at,
                stop,
            }),
        })
    }

    /// Starts the registry task (which starts one worker per target).
    pub fn spawn(self) -> EngineHandle {
        let inner = self.inner.clone();
        let registry = tokio::spawn(async move { registry_loop(inner).await });
        EngineHandle {
            inner: self.inner,
            registry,
        }
    }
}

impl EngineHandle {
    /// Stops every task after its current request and gives up the leases.
    pub async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        let _ = self.registry.await;
        let workers: Vec<JoinHandle<()>> = self
            .inner
            .workers
            .lock()
            .expect("workers lock")
            .drain()
            .map(|(_, h)| h)
            .collect();
        for w in workers {
            let _ = w.await;
        }
    }

    /// Ends every task at once without releasing leases, as a crash would (tests).
    pub fn abort(self) {
        self.registry.abort();
        for (_, w) in self.inner.workers.lock().expect("workers lock").drain() {
            w.abort();
        }
    }

    /// The target as this instance last saw it.
    pub fn webhook(&self, id: WebhookId) -> Option<Webhook> {
        self.inner.webhook(id)
    }
}

impl Inner {
    fn webhook(&self, id: WebhookId) -> Option<Webhook> {
        self.targets.read().expect("targets lock").get(&id).cloned()
    }

    /// Keeps the newer of the known and the given state of a webhook.
    fn put(&self, w: Webhook) {
        let mut targets = self.targets.write().expect("targets lock");
        if targets
            .get(&w.id)
            .is_none_or(|known| known.version <= w.version)
        {
            targets.insert(w.id, w);
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn engine_actor() -> Actor {
        Actor::new(
            ActorId::parse(ENGINE_ACTOR).expect("valid actor id"),
            [Role::Service],
            TeamScope::All,
        )
    }

    /// Records an engine finding about a target (failing, recovered, disabled) through the
    /// domain, retrying on a concurrent write.
    async fn record(
        &self,
        id: WebhookId,
        cmd: WebhookCommand,
        causation: Uuid,
    ) -> Result<(), EngineError> {
        let stream = id.stream();
        for _ in 0..5 {
            let state = fold_stream(self.store.as_ref(), &stream).await?;
            let ctx = WebhookContext {
                actor: Self::engine_actor(),
                now: chrono::Utc::now(),
            };
            let events = match decide_webhook(&state, cmd.clone(), &ctx) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(webhook = %id, error = %e, "engine finding refused");
                    return Ok(());
                }
            };
            if events.is_empty() {
                return Ok(());
            }
            let team = state.webhook().map(|w| w.team.to_string());
            let data = events
                .iter()
                .map(|e| EventData {
                    id: Uuid::new_v4(),
                    event_type: e.event_type().to_owned(),
                    schema_version: e.schema_version(),
                    payload: e.payload(),
                    metadata: json!({
                        "actor": { "id": ENGINE_ACTOR, "roles": ["service"] },
                        "team": team,
                        "request_id": Uuid::new_v4().to_string(),
                        "correlation_id": causation.to_string(),
                        "causation_id": causation.to_string(),
                        "policy_version": null,
                    }),
                })
                .collect();
            match self
                .store
                .append(&stream, ExpectedVersion::Exact(state.version()), data)
                .await
            {
                Ok(_) => {
                    // Known at once here, before the registry reads it back from the log.
                    let state = events.iter().fold(state, evolve_webhook);
                    if let Some(w) = state.webhook() {
                        self.put(w.clone());
                    }
                    return Ok(());
                }
                Err(StoreError::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Folds a webhook stream.
pub async fn fold_stream(store: &dyn EventStore, stream: &str) -> Result<WebhookState, StoreError> {
    let mut state = WebhookState::default();
    for e in read_whole_stream(store, stream).await? {
        match WebhookEvent::from_stored(&e.event_type, e.schema_version, e.payload) {
            Ok(event) => state = evolve_webhook(state, &event),
            Err(err) => tracing::warn!(
                stream,
                position = e.position,
                "unreadable webhook event: {err}"
            ),
        }
    }
    Ok(state)
}

async fn registry_loop(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let mut wake = inner.store.subscribe();
    let mut position = loop {
        match load_registry(&inner).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::error!(error = %e, "delivery registry cannot load; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(inner.options.poll_interval) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    loop {
        if inner.stopping() {
            return;
        }
        match follow_registry(&inner, position).await {
            Ok((p, more)) => {
                position = p;
                inner.registry_at.send_if_modified(|at| {
                    let moved = *at != p;
                    *at = p;
                    moved
                });
                if more {
                    continue;
                }
            }
            Err(e) => tracing::error!(error = %e, "delivery registry read failed; retrying"),
        }
        tokio::select! {
            r = wake.changed() => { if r.is_err() { tokio::time::sleep(inner.options.poll_interval).await; } }
            _ = tokio::time::sleep(inner.options.poll_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Loads every known target (from the checkpoints) and answers where to follow the log from.
async fn load_registry(inner: &Arc<Inner>) -> Result<u64, EngineError> {
    let pool = inner.store.pool();
    let position = db::registry_position(&pool).await?;
    for target in db::targets(&pool, STREAM_PREFIX).await? {
        let Some(id) = WebhookId::of_stream(&target) else {
            continue;
        };
        let state = fold_stream(inner.store.as_ref(), &target).await?;
        if let Some(w) = state.webhook() {
            inner.put(w.clone());
            ensure_worker(inner, id);
        }
    }
    Ok(position)
}

/// Applies the webhook events after `position`; answers the new position and whether a full
/// batch was read (more may follow at once).
async fn follow_registry(inner: &Arc<Inner>, position: u64) -> Result<(u64, bool), EngineError> {
    let batch = 1000;
    let events = inner.store.read_all(position, batch).await?;
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok((position, false));
    };
    let pool = inner.store.pool();
    let mut changed = false;
    for e in &events {
        let Some(id) = WebhookId::of_stream(&e.stream) else {
            continue;
        };
        let event =
            match WebhookEvent::from_stored(&e.event_type, e.schema_version, e.payload.clone()) {
                Ok(ev) => ev,
                Err(err) => {
                    tracing::warn!(position = e.position, "unreadable webhook event: {err}");
                    continue;
                }
            };
        let known = inner.webhook(id).map_or(0, |w| w.version);
        if e.version <= known {
            // Already folded (loaded from the stream, or recorded by this instance).
        } else if e.version != known + 1 {
            // A gap in what this instance saw: fold the stream afresh.
            let state = fold_stream(inner.store.as_ref(), &e.stream).await?;
            if let Some(w) = state.webhook() {
                inner.put(w.clone());
            }
        } else {
            let state = WebhookState::default();
            let current = inner.webhook(id);
            let next = match current {
                Some(w) => evolve_existing(w, &event),
                None => evolve_webhook(state, &event).webhook().cloned(),
            };
            if let Some(w) = next {
                inner.put(w);
            }
        }
        match &event {
            WebhookEvent::WebhookRegistered { .. } => {
                db::ensure_checkpoint(&pool, &e.stream, e.position).await?;
            }
            WebhookEvent::WebhookRedeliveryRequested { after_position, .. } => {
                db::ensure_checkpoint(&pool, &e.stream, e.position).await?;
                if db::redeliver_once(&pool, e.position, &e.stream, *after_position).await? {
                    tracing::info!(webhook = %id, after_position, "redelivery requested");
                }
            }
            _ => {}
        }
        ensure_worker(inner, id);
        changed = true;
    }
    db::claim_registry(&pool, last).await?;
    if changed {
        inner.changed.send_modify(|v| *v += 1);
    }
    Ok((last, events.len() == batch))
}

/// Folds one more event into a known webhook (the domain folds from a state).
fn evolve_existing(w: Webhook, event: &WebhookEvent) -> Option<Webhook> {
    evolve_webhook(WebhookState::of(w), event)
        .webhook()
        .cloned()
}

fn ensure_worker(inner: &Arc<Inner>, id: WebhookId) {
    let mut workers = inner.workers.lock().expect("workers lock");
    if workers.get(&id).is_some_and(|h| !h.is_finished()) {
        return;
    }
    if inner
        .webhook(id)
        .is_none_or(|w| w.status == WebhookStatus::Removed)
    {
        return;
    }
    let inner2 = inner.clone();
    workers.insert(id, tokio::spawn(async move { worker(inner2, id).await }));
}

/// The lease as this worker holds it.
struct Lease {
    target: String,
    held_until: Option<Instant>,
}

impl Lease {
    /// Makes sure the lease is held for at least half its time to live; false if another
    /// instance holds it.
    async fn ensure(&mut self, inner: &Inner) -> Result<bool, EngineError> {
        let ttl = inner.options.lease_ttl;
        if let Some(until) = self.held_until {
            if until > Instant::now() + ttl / 2 {
                return Ok(true);
            }
        }
        let started = Instant::now();
        let held = db::acquire_lease(
            &inner.store.pool(),
            &self.target,
            &inner.options.instance_id,
            ttl.as_millis() as i64,
        )
        .await?;
        self.held_until = held.then(|| started + ttl);
        Ok(held)
    }

    async fn release(&mut self, inner: &Inner) {
        if self.held_until.take().is_some() {
            let _ = db::release_lease(
                &inner.store.pool(),
                &self.target,
                &inner.options.instance_id,
            )
            .await;
        }
    }
}

async fn worker(inner: Arc<Inner>, id: WebhookId) {
    let target = id.stream();
    let mut lease = Lease {
        target: target.clone(),
        held_until: None,
    };
    let mut changed = inner.changed.subscribe();
    let mut wake = inner.store.subscribe();
    let mut stop = inner.stop.subscribe();
    let mut registry = inner.registry_at.subscribe();
    loop {
        if inner.stopping() {
            lease.release(&inner).await;
            return;
        }
        let Some(webhook) = inner.webhook(id) else {
            return;
        };
        if webhook.status == WebhookStatus::Removed {
            lease.release(&inner).await;
            return;
        }
        let idle = match run_once(&inner, &webhook, &mut lease).await {
            Ok(idle) => idle,
            Err(e) => {
                tracing::warn!(webhook = %id, error = %e, "delivery round failed; retrying");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = changed.changed() => {}
                _ = registry.changed() => {}
                r = wake.changed() => { if r.is_err() { tokio::time::sleep(inner.options.poll_interval).await; } }
                _ = tokio::time::sleep(inner.options.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// One round: take the lease, read a batch after the checkpoint, deliver what concerns the
/// target, move the checkpoint. Answers true when there was nothing to do (wait for news).
async fn run_once(
    inner: &Inner,
    webhook: &Webhook,
    lease: &mut Lease,
) -> Result<bool, EngineError> {
    // The registry position first, then the state: the state then reflects at least every
    // registry event up to that position.
    let registry_at = *inner.registry_at.borrow();
    let Some(webhook) = inner.webhook(webhook.id) else {
        return Ok(true);
    };
    let webhook = &webhook;
    if webhook.status != WebhookStatus::Active {
        lease.release(inner).await;
        return Ok(true);
    }
    if !lease.ensure(inner).await? {
        return Ok(true);
    }
    let pool = inner.store.pool();
    let target = webhook.id.stream();
    let Some(start) = db::checkpoint(&pool, &target).await? else {
        return Ok(true);
    };
    if registry_at <= start {
        return Ok(true);
    }
    let limit = (registry_at - start).min(inner.options.batch_size.max(1) as u64) as usize;
    let events = inner.store.read_all(start, limit).await?;
    let events: Vec<RecordedEvent> = events
        .into_iter()
        .filter(|e| e.position <= registry_at)
        .collect();
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(true);
    };
    let mut at = start;
    for event in &events {
        if !concerns(webhook, event) {
            continue;
        }
        match deliver(inner, webhook.id, event, lease).await? {
            Outcome::Delivered => {
                if !db::advance(
                    &pool,
                    &target,
                    at,
                    event.position,
                    &inner.options.instance_id,
                )
                .await?
                {
                    return Ok(false);
                }
                at = event.position;
            }
            Outcome::Gone { status } => {
                inner
                    .record(
                        webhook.id,
                        WebhookCommand::Disable {
                            position: event.position,
                            reason: format!("receiver answered {status} Gone"),
                        },
                        event.id,
                    )
                    .await?;
                lease.release(inner).await;
                return Ok(true);
            }
            Outcome::Interrupted => return Ok(false),
        }
    }
    db::advance(&pool, &target, at, last, &inner.options.instance_id).await?;
    Ok(false)
}

/// Does this event go to this target? Its team's events of the subscribed types; never the
/// webhook streams themselves.
fn concerns(webhook: &Webhook, event: &RecordedEvent) -> bool {
    !event.stream.starts_with(STREAM_PREFIX)
        && webhook.subscribes_to(&event.event_type)
        && team_of(event).as_deref() == Some(webhook.team.as_str())
}

/// Delivers one event until it succeeds, the receiver says it is gone, or the round is
/// interrupted.
async fn deliver(
    inner: &Inner,
    id: WebhookId,
    event: &RecordedEvent,
    lease: &mut Lease,
) -> Result<Outcome, EngineError> {
    let Some(body) = cloudevent::build(inner.store.as_ref(), &inner.cache, event).await? else {
        return Ok(Outcome::Delivered);
    };
    let body = serde_json::to_vec(&body).expect("JSON serializes");
    let target = id.stream();
    let msg_id = event.id.to_string();
    let mut attempt: u32 = 0;
    let mut marked_failing = false;
    let mut changed = inner.changed.subscribe();
    loop {
        attempt = attempt.saturating_add(1);
        let Some(webhook) = inner.webhook(id) else {
            return Ok(Outcome::Interrupted);
        };
        if webhook.status != WebhookStatus::Active || inner.stopping() {
            return Ok(Outcome::Interrupted);
        }
        if !lease.ensure(inner).await? {
            return Ok(Outcome::Interrupted);
        }
        let now = chrono::Utc::now();
        let mut keys = Vec::new();
        for sealed in webhook.signing_secrets(now) {
            match inner
                .key
                .open(sealed, &target)
                .map_err(|e| e.to_string())
                .and_then(|s| signing_key(&s).map_err(|e| e.to_string()))
            {
                Ok(k) => keys.push(k),
                Err(e) => tracing::error!(webhook = %id, "signing secret unusable: {e}"),
            }
        }
        let (status, error, retry_after) = if keys.is_empty() {
            (
                None,
                Some("no usable signing secret (check --secrets-key-file)".to_owned()),
                None,
            )
        } else if let Err(e) = inner.options.url_policy.check_url(&webhook.url) {
            (None, Some(format!("target URL refused: {e}")), None)
        } else {
            let timestamp = now.timestamp();
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(cloudevent::CONTENT_TYPE),
            );
            headers.insert(
                "webhook-id",
                HeaderValue::from_str(&msg_id).expect("uuid header"),
            );
            headers.insert(
                "webhook-timestamp",
                HeaderValue::from_str(&timestamp.to_string()).expect("digits"),
            );
            headers.insert(
                "webhook-signature",
                HeaderValue::from_str(&standard_webhooks_header(&keys, &msg_id, timestamp, &body))
                    .expect("base64 header"),
            );
            let started = Instant::now();
            let result = {
                let _permit = inner.permits.acquire().await.expect("semaphore open");
                inner
                    .client
                    .post(&webhook.url)
                    .headers(headers)
                    .body(body.clone())
                    .send()
                    .await
            };
            let elapsed = started.elapsed();
            let (status, error, retry_after) = match result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                    let error = (!resp.status().is_success()).then(|| format!("HTTP {status}"));
                    (Some(status), error, retry_after)
                }
                Err(e) => (None, Some(describe(&e)), None),
            };
            db::record_attempt(
                &inner.store.pool(),
                &Attempt {
                    target: target.clone(),
                    position: event.position,
                    event_id: msg_id.clone(),
                    attempt,
                    status,
                    error: error.clone(),
                    owner: inner.options.instance_id.clone(),
                    attempted_at_ms: now.timestamp_millis(),
                    duration_ms: elapsed.as_millis() as i64,
                },
            )
            .await?;
            (status, error, retry_after)
        };
        match (status, error) {
            (Some(s), None) => {
                tracing::debug!(webhook = %id, position = event.position, status = s, attempt, "delivered");
                if marked_failing || webhook.health.failing {
                    inner
                        .record(
                            id,
                            WebhookCommand::MarkRecovered {
                                position: event.position,
                            },
                            event.id,
                        )
                        .await?;
                }
                return Ok(Outcome::Delivered);
            }
            (Some(410), _) => return Ok(Outcome::Gone { status: 410 }),
            (_, error) => {
                let error = error.unwrap_or_else(|| "unknown failure".to_owned());
                tracing::info!(webhook = %id, position = event.position, attempt, %error, "delivery failed");
                if attempt >= inner.options.max_attempts && !marked_failing {
                    marked_failing = true;
                    inner
                        .record(
                            id,
                            WebhookCommand::MarkFailing {
                                position: event.position,
                                attempts: attempt,
                                last_error: error,
                            },
                            event.id,
                        )
                        .await?;
                }
                let delay = match retry_after {
                    Some(d) => d.min(inner.options.max_retry_after),
                    None => backoff(&inner.options, attempt),
                };
                if !wait(inner, id, delay, lease, &mut changed).await? {
                    return Ok(Outcome::Interrupted);
                }
            }
        }
    }
}

/// Sleeps `delay`, renewing the lease; false when the wait was cut short by a change that
/// ends the round (stop, pause, removal, lost lease).
async fn wait(
    inner: &Inner,
    id: WebhookId,
    delay: Duration,
    lease: &mut Lease,
    changed: &mut watch::Receiver<u64>,
) -> Result<bool, EngineError> {
    let deadline = tokio::time::Instant::now() + delay;
    let mut stop = inner.stop.subscribe();
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(true);
        }
        let step = (deadline - now).min(inner.options.lease_ttl / 3);
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = stop.changed() => return Ok(false),
            r = changed.changed() => {
                if r.is_err() {
                    return Ok(false);
                }
            }
        }
        // Registry news may be a pause or a removal of this target: that ends the wait.
        if inner
            .webhook(id)
            .is_none_or(|w| w.status != WebhookStatus::Active)
        {
            return Ok(false);
        }
        if !lease.ensure(inner).await? {
            return Ok(false);
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let o = EngineOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..Default::default()
        };
        for attempt in 1..40 {
            let d = backoff(&o, attempt);
            let full = (Duration::from_millis(100) * 2u32.pow((attempt - 1).min(10)))
                .min(Duration::from_millis(1000));
            assert!(
                d >= full / 2 && d <= full + Duration::from_millis(1),
                "{attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
