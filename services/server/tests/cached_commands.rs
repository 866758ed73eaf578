//! Commands decide on the cached rollout and policy and read nothing from the store before
//! they append (counted by the state cache, through which every command-path read goes);
//! the policy a decision was taken under is checked inside the append, so with two instances
//! on one PostgreSQL database a command is never committed under a policy the other
//! instance has replaced: it is decided again under the new one, or refused.

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use rollgate_auth::{DevKeys, MintRequest};
use rollgate_server::config::ServeArgs;
use rollgate_server::{AppState, Application};
use rollgate_store::{read_whole_stream, BackendKind, Clock, EventStore, SystemClock};
use rollgate_testkit::TestDb;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

/// One rollgate instance, in this process, with its own store and state cache.
struct Instance {
    base: String,
    state: Arc<AppState>,
    client: reqwest::Client,
}

impl Instance {
    async fn start(url: &str, key_dir: &Path) -> Instance {
        let args = Args::parse_from([
            "rollgate",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            url,
            "--dev-key-dir",
            key_dir.to_str().unwrap(),
        ]);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let app = Application::build(&args.serve, clock).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().into_inner();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .unwrap();
        Instance {
            base,
            state,
            client,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, who: &str, body: Value) -> Reply {
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(who)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        Reply {
            status,
            body: r.json().await.unwrap_or(Value::Null),
        }
    }

    async fn post(&self, path: &str, who: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, who, body).await
    }

    async fn ok(&self, method: reqwest::Method, path: &str, who: &str, body: Value) -> Value {
        let r = self.send(method, path, who, body).await;
        assert!((200..300).contains(&r.status), "{path}: {r:?}");
        r.body
    }

    /// Stream reads the instance's state cache made so far.
    fn reads(&self) -> u64 {
        self.state.cache.store_reads()
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

struct Tokens {
    alice: String,
    sam: String,
    gina: String,
}

fn tokens(key_dir: &Path) -> Tokens {
    let keys = DevKeys::load_or_create(key_dir).unwrap();
    let mint = |sub: &str, role: &str| {
        keys.mint(MintRequest {
            sub: sub.into(),
            roles: vec![role.into()],
            teams: vec!["web".into()],
            ttl_seconds: 3600,
            now: SystemClock.now().timestamp(),
            issuer: "rollgate".into(),
            audience: "rollgate".into(),
        })
        .unwrap()
    };
    Tokens {
        alice: mint("alice", "release_manager"),
        sam: mint("sam", "sre"),
        gina: mint("gina", "governance_admin"),
    }
}

fn create_body() -> Value {
    serde_json::from_str(include_str!("../../../tests/fixtures/create-rollout.json")).unwrap()
}

/// Creates a rollout on `on` with its readiness signed off (ready to start); its id.
async fn ready_rollout(on: &Instance, t: &Tokens) -> String {
    let created = on
        .ok(
            reqwest::Method::POST,
            "/v1/rollouts",
            &t.alice,
            create_body(),
        )
        .await;
    let id = created["rollout_id"].as_str().unwrap().to_owned();
    for (item, who) in [
        ("qa-signoff", &t.alice),
        ("runbook", &t.sam),
        ("support-faq", &t.alice),
    ] {
        on.ok(
            reqwest::Method::POST,
            &format!("/v1/rollouts/{id}/readiness/{item}/sign-off"),
            who,
            json!({}),
        )
        .await;
    }
    id
}

fn note(text: &str) -> Value {
    json!({ "audience": "internal", "text": text })
}

async fn last_event(store: &dyn EventStore, stream: &str) -> rollgate_store::RecordedEvent {
    read_whole_stream(store, stream)
        .await
        .unwrap()
        .pop()
        .expect("an event")
}

async fn steady_state_commands_read_nothing_before_appending(kind: BackendKind) {
    let db = TestDb::new(kind).await;
    let keys = tempfile::tempdir().unwrap();
    let a = Instance::start(&db.url, keys.path()).await;
    let t = tokens(keys.path());

    // Creating a rollout under a team policy this instance has not seen reads the policy's
    // tail once; the new rollout's stream is not read (a new id).
    let before = a.reads();
    let id = ready_rollout(&a, &t).await;
    let cold = a.reads() - before;
    println!("store reads to create and sign off a rollout: {cold}");
    assert!(cold <= 1, "{cold} reads to create and sign off a rollout");

    // Steady state: notes, a start, more notes; no stream read at all.
    let before = a.reads();
    const COMMANDS: u64 = 20;
    for i in 0..COMMANDS {
        if i == 10 {
            a.ok(
                reqwest::Method::POST,
                &format!("/v1/rollouts/{id}/start"),
                &t.alice,
                json!({}),
            )
            .await;
        } else {
            a.ok(
                reqwest::Method::POST,
                &format!("/v1/rollouts/{id}/notes"),
                &t.alice,
                note(&format!("note {i}")),
            )
            .await;
        }
    }
    let steady = a.reads() - before;
    println!("store reads for {COMMANDS} steady-state commands: {steady}");
    assert_eq!(steady, 0, "steady-state commands read the store");
    // The same count is on /metrics.
    let exposed = a
        .state
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("rollgate_state_cache_stream_reads_total "))
        .map(|v| v.trim().parse::<u64>().unwrap());
    assert_eq!(exposed, Some(a.reads()));

    // The cached state is the stored one: a read folds the same version and status.
    let store = db.store(Default::default()).await;
    let stream = format!("rollout-{id}");
    let version = store.stream_version(&stream).await.unwrap();
    let rid = rollgate_domain::RolloutId::parse(&id).unwrap();
    let (cached, cached_version) = a.state.cache.cached_rollout(&rid).unwrap();
    assert_eq!(cached_version, version);
    let stored = read_whole_stream(&*store, &stream).await.unwrap();
    let folded = stored.iter().fold(Default::default(), |s, e| {
        rollgate_domain::evolve(s, &rollgate_server::events::decode_rollout(e).unwrap())
    });
    assert_eq!(cached, folded, "the cache drifted from the stored stream");

    // A refusal on cached state is confirmed on the stored state (one read of each stream)
    // before it is answered; nothing is written.
    let before = a.reads();
    let r = a
        .post(&format!("/v1/rollouts/{id}/start"), &t.alice, json!({}))
        .await;
    assert!((400..500).contains(&r.status), "{r:?}");
    assert_eq!(store.stream_version(&stream).await.unwrap(), version);
    assert_eq!(a.reads() - before, 2);
}

/// Two instances on one database: A has the policy cached, B publishes a new version.
async fn a_policy_changed_elsewhere_is_never_decided_under(kind: BackendKind) {
    assert_eq!(kind, BackendKind::Postgres);
    let db = TestDb::postgres().await;
    let keys = tempfile::tempdir().unwrap();
    let a = Instance::start(&db.url, keys.path()).await;
    let b = Instance::start(&db.url, keys.path()).await;
    let t = tokens(keys.path());
    let store = db.store(Default::default()).await;

    b.ok(
        reqwest::Method::PUT,
        "/v1/policies/web",
        &t.gina,
        json!({ "approval_validity_seconds": 3600 }),
    )
    .await;
    let id = ready_rollout(&a, &t).await;
    let stream = format!("rollout-{id}");
    a.ok(
        reqwest::Method::POST,
        &format!("/v1/rollouts/{id}/notes"),
        &t.alice,
        note("under version 1"),
    )
    .await;
    assert_eq!(
        last_event(&*store, &stream).await.metadata["policy_version"],
        1
    );

    // B publishes version 2 behind A's back; A's cache still holds version 1.
    b.ok(
        reqwest::Method::PUT,
        "/v1/policies/web",
        &t.gina,
        json!({ "approval_validity_seconds": 7200 }),
    )
    .await;
    let team = rollgate_domain::Team::parse("web").unwrap();
    let (cached, _) = a.state.cache.cached_policy(&team).unwrap();
    assert_eq!(
        cached.snapshot().version,
        1,
        "A's cache is stale, as intended"
    );

    // A's command is decided under version 2, never appended under version 1.
    let before = a.reads();
    a.ok(
        reqwest::Method::POST,
        &format!("/v1/rollouts/{id}/notes"),
        &t.alice,
        note("after the change"),
    )
    .await;
    let e = last_event(&*store, &stream).await;
    assert_eq!(e.payload["text"], "after the change");
    assert_eq!(e.metadata["policy_version"], 2, "{}", e.metadata);
    assert_eq!(
        a.reads() - before,
        1,
        "one read: the policy's tail, on the conflict"
    );

    // B declares a freeze: A's start (which a freeze forbids, R9) is refused, not
    // appended under the policy without the freeze.
    let now = chrono::Utc::now();
    b.ok(
        reqwest::Method::POST,
        "/v1/policies/web/freezes",
        &t.gina,
        json!({
            "starts_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
            "ends_at": (now + chrono::Duration::days(2)).to_rfc3339(),
            "reason": "end-of-quarter freeze",
        }),
    )
    .await;
    let version = store.stream_version(&stream).await.unwrap();
    let r = a
        .post(&format!("/v1/rollouts/{id}/start"), &t.alice, json!({}))
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.body["rule"], "R9", "{r:?}");
    assert_eq!(store.stream_version(&stream).await.unwrap(), version);

    // Many commands on A while B keeps publishing: every event carries the policy version
    // in force when it was committed (the last PolicyPublished before it in the log).
    let writer = async {
        for i in 0..15 {
            a.ok(
                reqwest::Method::POST,
                &format!("/v1/rollouts/{id}/notes"),
                &t.alice,
                note(&format!("race {i}")),
            )
            .await;
        }
    };
    let publisher = async {
        for i in 0..5 {
            b.ok(
                reqwest::Method::PUT,
                "/v1/policies/web",
                &t.gina,
                json!({ "approval_validity_seconds": 3600 + i }),
            )
            .await;
        }
    };
    tokio::join!(writer, publisher);
    let mut in_force = 0;
    let mut checked = 0;
    let mut after = 0;
    loop {
        let page = store.read_all(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            if e.stream == "policy-web" && e.event_type == "PolicyPublished" {
                in_force = e.payload["version"].as_u64().unwrap();
            } else if e.stream == stream {
                assert_eq!(
                    e.metadata["policy_version"].as_u64().unwrap(),
                    in_force,
                    "event at {} decided under another policy than the one in force",
                    e.position
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked}");
    assert_eq!(in_force, 7);
}

rollgate_testkit::both_backends!(steady_state_commands_read_nothing_before_appending);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_policy_changed_elsewhere_is_never_decided_under() {
        super::a_policy_changed_elsewhere_is_never_decided_under(
            rollgate_store::BackendKind::Postgres,
        )
        .await;
    }
}
