//! A real webhook receiver for tests: services/delivery/tests/support/receiver.py, which
//! verifies every request with the independent Python `standardwebhooks` package (PyPI),
//! records what arrived and answers as scripted. Shared by the delivery crate's tests, the
//! end-to-end tests and the server's crash test (`#[path]`-included, so all start it alike).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

/// The python holding `standardwebhooks`: `ROLLGATE_PYTHON`, else the virtualenv that
/// `cargo xtask setup` made (target/xtask/venv).
pub fn python() -> PathBuf {
    let candidate = rollgate_testkit::tools::python();
    let ok = Command::new(&candidate)
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} lacks the standardwebhooks package (set ROLLGATE_PYTHON; `cargo xtask setup` installs it)",
        candidate.display()
    );
    candidate
}

/// The receiver script.
pub fn script() -> PathBuf {
    rollgate_testkit::tools::workspace_root().join("services/delivery/tests/support/receiver.py")
}

/// A running receiver on 127.0.0.1, ended when dropped.
pub struct Receiver {
    child: Child,
    pub port: u16,
    http: reqwest::Client,
}

impl Receiver {
    /// Starts a receiver on `port` (0 = any free port).
    pub fn start(port: u16) -> Receiver {
        Self::start_with(port, json!({}))
    }

    /// Starts a receiver already configured (secrets, script, default answer) before it
    /// accepts a request.
    pub fn start_with(port: u16, control: Value) -> Receiver {
        let mut child = Command::new(python())
            .arg(script())
            .args([port.to_string(), control.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("receiver says where it listens");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected receiver output {line:?}"));
        Receiver {
            child,
            port,
            http: reqwest::Client::new(),
        }
    }

    /// The URL deliveries go to (`/hook`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Changes the secrets it verifies with, its scripted answers or its default answer.
    pub async fn control(&self, cfg: Value) {
        self.http
            .post(format!("http://127.0.0.1:{}/_control", self.port))
            .json(&cfg)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("receiver control");
    }

    /// Every request it received, in arrival order.
    pub async fn log(&self) -> Vec<Value> {
        self.http
            .get(format!("http://127.0.0.1:{}/_log", self.port))
            .send()
            .await
            .expect("receiver log")
            .json()
            .await
            .expect("receiver log json")
    }

    /// How many requests it received (cheaper than the whole log).
    pub async fn count(&self) -> usize {
        let v: Value = self
            .http
            .get(format!("http://127.0.0.1:{}/_count", self.port))
            .send()
            .await
            .expect("receiver count")
            .json()
            .await
            .expect("receiver count json");
        v["count"].as_u64().expect("count") as usize
    }

    /// Ends the receiver (its port then refuses connections).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
