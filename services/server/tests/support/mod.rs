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
