//! Helpers shared by the tests that run the real `rollgate serve` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rollgate_auth::{DevKeys, MintRequest};
use rollgate_testkit::tools::{free_port, ChildGuard};

pub const BIN: &str = env!("CARGO_BIN_EXE_rollgate");

/// A small deterministic generator (the seed is printed so a failing run can be repeated).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

pub struct Server {
    pub child: ChildGuard,
    pub base: String,
}

pub fn spawn_server(url: &str, key_dir: &Path, log_file: &Path) -> Server {
    spawn_server_with(url, key_dir, log_file, &[])
}

/// [`spawn_server`] with more `rollgate serve` flags.
pub fn spawn_server_with(url: &str, key_dir: &Path, log_file: &Path, extra: &[&str]) -> Server {
    let port = free_port();
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .expect("server log file");
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("ROLLGATE_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", url, "--dev-keys", "--dev-key-dir"])
        .arg(key_dir)
        .args(["--read-wait-ms", "2000", "--db-max-connections", "8"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out));
    Server {
        child: ChildGuard::spawn(&mut cmd),
        base: format!("http://127.0.0.1:{port}"),
    }
}

pub async fn wait_ready(client: &reqwest::Client, server: &mut Server, log_file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "rollgate serve exited ({status}): {}",
                std::fs::read_to_string(log_file).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "rollgate serve not ready in 30 s: {}",
            std::fs::read_to_string(log_file).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn token(keys: &DevKeys, sub: &str, roles: &[&str], teams: &[&str]) -> String {
    keys.mint(MintRequest {
        sub: sub.into(),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        teams: teams.iter().map(|s| s.to_string()).collect(),
        ttl_seconds: 3600,
        now: chrono::Utc::now().timestamp(),
        issuer: "rollgate".into(),
        audience: "rollgate".into(),
    })
    .expect("mint")
}

/// An HTTP client for the tests, with a bound on every request.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("an HTTP client")
}

/// The example create body (tests/fixtures/create-rollout.json) with its own feature key.
pub fn create_body(feature_key: &str) -> serde_json::Value {
    let mut body: serde_json::Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/create-rollout.json"
    ))
    .expect("the example create body");
    body["feature_key"] = serde_json::json!(feature_key);
    body
}

/// Creates a rollout from the example body and answers its id.
pub async fn create_rollout(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    feature_key: &str,
) -> String {
    let r = client
        .post(format!("{base}/v1/rollouts"))
        .bearer_auth(token)
        .json(&create_body(feature_key))
        .send()
        .await
        .expect("create rollout");
    assert_eq!(r.status().as_u16(), 201);
    let body: serde_json::Value = r.json().await.expect("a JSON answer");
    body["rollout_id"].as_str().expect("rollout_id").to_owned()
}

/// Waits (at most 20 s) until the read models have applied the log up to `head`.
pub async fn wait_projected(pool: &rollgate_store::DatabasePool, head: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while rollgate_projections::projected_position(pool)
        .await
        .expect("the projected position")
        < head
    {
        assert!(
            Instant::now() < deadline,
            "projections never reached {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rebuilds every read model from position 0 and checks the rows equal `incremental`.
pub async fn assert_rebuild_equals(
    store: std::sync::Arc<dyn rollgate_store::EventStore>,
    incremental: &[(String, Vec<Vec<Option<String>>>)],
    head: u64,
) {
    let pool = store.pool();
    let rebuilt_to = rollgate_projections::rebuild(store, None)
        .await
        .expect("rebuild");
    assert_eq!(rebuilt_to, head);
    let rebuilt = rollgate_projections::dump_read_models(&pool, None)
        .await
        .expect("read models");
    assert!(incremental == rebuilt, "read models differ from a rebuild");
}
