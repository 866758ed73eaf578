//! Test harness: [`TestApp::spawn`] starts the real server on port 0 against a fresh
//! database (PostgreSQL or SQLite), with a manual clock and its own development key.

pub mod flow;

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use clap::Parser;
use reqwest::{Method, StatusCode};
use rollgate_auth::DevKeys;
use rollgate_server::config::ServeArgs;
use rollgate_server::Application;
use rollgate_store::{BackendKind, Clock, EventStore, ManualClock};
use rollgate_testkit::TestDb;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

pub struct TestApp {
    pub address: String,
    pub clock: Arc<ManualClock>,
    /// A store of its own on the test database, opened on first use by [`TestApp::event_count`]
    /// (declared before `db` so that it closes before the database is dropped).
    store: tokio::sync::OnceCell<Arc<dyn EventStore>>,
    pub db: TestDb,
    pub client: reqwest::Client,
    keys: DevKeys,
    _key_dir: tempfile::TempDir,
}

/// A reply: status, headers, JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json answer with this status (and rule, if given).
    pub fn assert_problem(&self, status: u16, rule: Option<&str>) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "not problem+json: {}",
            self.body
        );
        assert!(self.body["type"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(self.body["status"].as_u64(), Some(status as u64));
        if let Some(rule) = rule {
            assert_eq!(
                self.body["rule"].as_str(),
                Some(rule),
                "body: {}",
                self.body
            );
        }
        self
    }

    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }
}

pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

impl TestApp {
    pub async fn spawn(kind: BackendKind) -> TestApp {
        Self::spawn_with(kind, &[]).await
    }

    /// [`TestApp::spawn`] with more `rollgate serve` flags. Webhooks are on (a fresh secrets
    /// key, loopback targets allowed) so that their routes answer.
    pub async fn spawn_with(kind: BackendKind, extra: &[&str]) -> TestApp {
        let db = TestDb::new(kind).await;
        let key_dir = tempfile::tempdir().expect("key dir");
        let secrets_key = key_dir.path().join("secrets.key");
        std::fs::write(
            &secrets_key,
            uuid::Uuid::new_v4().simple().to_string().repeat(2),
        )
        .expect("secrets key");
        let mut argv = vec![
            "rollgate",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--dev-key-dir",
            key_dir.path().to_str().unwrap(),
            "--max-body-bytes",
            "65536",
            "--read-wait-ms",
            "2000",
            "--secrets-key-file",
            secrets_key.to_str().unwrap(),
            "--webhooks-allow-loopback",
        ];
        argv.extend_from_slice(extra);
        let args = Args::parse_from(argv);
        let clock = Arc::new(ManualClock::new(start_time()));
        let app = Application::build(&args.serve, clock.clone() as Arc<dyn Clock>)
            .await
            .expect("server starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        let keys = DevKeys::load_or_create(key_dir.path()).expect("dev keys");
        TestApp {
            address,
            clock,
            store: tokio::sync::OnceCell::new(),
            db,
            client: reqwest::Client::new(),
            keys,
            _key_dir: key_dir,
        }
    }

    /// A token for `sub` with these roles and teams, valid for an hour from the clock's now.
    pub fn token(&self, sub: &str, roles: &[&str], teams: &[&str]) -> String {
        self.keys
            .mint(MintRequest {
                sub: sub.to_owned(),
                roles: roles.iter().map(|s| s.to_string()).collect(),
                teams: teams.iter().map(|s| s.to_string()).collect(),
                ttl_seconds: 3600,
                now: self.clock.now().timestamp(),
                issuer: "rollgate".into(),
                audience: "rollgate".into(),
            })
            .expect("mint")
    }

    /// A token from the server's development key with every claim chosen by the caller
    /// (expired, not yet valid, another audience or issuer...).
    pub fn mint(&self, request: MintRequest) -> String {
        self.keys.mint(request).expect("mint")
    }

    /// The claims [`TestApp::token`] would mint, to alter one of them before [`TestApp::mint`].
    pub fn mint_request(&self, sub: &str, roles: &[&str], teams: &[&str]) -> MintRequest {
        MintRequest {
            sub: sub.to_owned(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            teams: teams.iter().map(|s| s.to_string()).collect(),
            ttl_seconds: 3600,
            now: self.clock.now().timestamp(),
            issuer: "rollgate".into(),
            audience: "rollgate".into(),
        }
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut rb = self
            .client
            .request(method, format!("{}{}", self.address, path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        Self::reply(rb.send().await.expect("request sent")).await
    }

    /// A request with a raw body and an explicit (or no) Content-Type.
    pub async fn request_bytes(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut rb = self
            .client
            .request(method, format!("{}{}", self.address, path))
            .body(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        Self::reply(rb.send().await.expect("request sent")).await
    }

    async fn reply(res: reqwest::Response) -> Reply {
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body read");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends a request that must be refused with this status (and rule), as
    /// problem+json, without writing any event. Returns the refusal.
    pub async fn refused(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        status: u16,
        rule: Option<&str>,
    ) -> Reply {
        let before = self.event_count().await;
        let reply = self.request(method, path, token, body, &[]).await;
        reply.assert_problem(status, rule);
        assert_eq!(
            self.event_count().await,
            before,
            "a refused request wrote events: {}",
            reply.body
        );
        reply
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.request(Method::GET, path, Some(token), None, &[])
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(token), Some(&body), &[])
            .await
    }

    /// The number of events in the log (to prove that refused requests wrote nothing).
    pub async fn event_count(&self) -> u64 {
        // One store for the whole test: every store opened on PostgreSQL holds connections
        // (a LISTEN among them) for a while after it is dropped.
        let store = self
            .store
            .get_or_init(|| self.db.store(Default::default()))
            .await;
        store.head().await.expect("head").position
    }
}

pub use rollgate_auth::MintRequest;
pub use rollgate_store::BackendKind as Backend;
/// Runs a test body against both backends (one macro, in the testkit).
pub use rollgate_testkit::both_backends;
pub use serde_json::json;

/// The example plan of the product brief, as a create body.
pub fn example_create_body() -> Value {
    serde_json::from_str(include_str!("../fixtures/create-rollout.json")).expect("fixture")
}
