//! A real Prometheus for tests, scraping a small exporter the test drives.
//!
//! [`Exporter`] serves text exposition (the `prometheus` crate's encoder) on 127.0.0.1 from
//! counters the test increments. [`PrometheusProcess`] starts the distribution's `prometheus`
//! binary on a free loopback port with a generated config (1 s scrape interval) and kills it
//! when dropped. Every wait polls against a deadline.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};

/// The prometheus binary (`ROLLGATE_PROMETHEUS_BIN`, PATH, /usr/bin; one clear line if missing).
pub fn prometheus_bin() -> PathBuf {
    rollgate_testkit::tools::prometheus()
}

pub fn free_port() -> u16 {
    rollgate_testkit::tools::free_port()
}

/// Polls `check` every 100 ms until it answers `Some` or `limit` passes.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `requests_total{track, stage, code}` counters served for scraping.
pub struct Exporter {
    pub requests: IntCounterVec,
    pub port: u16,
    handle: actix_web::dev::ServerHandle,
}

impl Exporter {
    pub async fn start() -> Exporter {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests served, by track, stage and code",
            ),
            &["track", "stage", "code"],
        )
        .expect("metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("register");
        let server = HttpServer::new(move || {
            let registry = registry.clone();
            App::new().route(
                "/metrics",
                web::get().to(move || {
                    let registry = registry.clone();
                    async move {
                        let mut body = Vec::new();
                        TextEncoder::new()
                            .encode(&registry.gather(), &mut body)
                            .expect("encode");
                        HttpResponse::Ok()
                            .content_type("text/plain; version=0.0.4")
                            .body(body)
                    }
                }),
            )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind exporter");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Exporter {
            requests,
            port,
            handle,
        }
    }

    /// Adds `n` requests with `code` to one series.
    pub fn add(&self, track: &str, stage: &str, code: &str, n: u64) {
        self.requests
            .with_label_values(&[track, stage, code])
            .inc_by(n);
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Stops accepting at once; the future completes in the background.
        drop(self.handle.stop(false));
    }
}

/// A running Prometheus, killed on drop.
pub struct PrometheusProcess {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    dir: tempfile::TempDir,
    targets: Vec<u16>,
}

impl PrometheusProcess {
    /// Starts Prometheus scraping `targets` (exporter ports) every second, and waits until it
    /// is ready and has scraped every target once.
    pub async fn start(targets: &[u16]) -> PrometheusProcess {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut p = PrometheusProcess {
            child: None,
            port: free_port(),
            url: String::new(),
            dir,
            targets: targets.to_vec(),
        };
        p.url = format!("http://127.0.0.1:{}", p.port);
        p.spawn().await;
        p
    }

    fn config(&self) -> String {
        let targets = self
            .targets
            .iter()
            .map(|t| format!("'127.0.0.1:{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: app\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             static_configs:\n      - targets: [{targets}]\n"
        )
    }

    async fn spawn(&mut self) {
        let config = self.dir.path().join("prometheus.yml");
        std::fs::write(&config, self.config()).expect("write config");
        let log = std::fs::File::create(self.dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        self.child = Some(child);
        let http = reqwest::Client::new();
        let ready = format!("{}/-/ready", self.url);
        let log_path = self.dir.path().join("prometheus.log");
        eventually("prometheus to be ready", Duration::from_secs(30), || {
            let http = http.clone();
            let ready = ready.clone();
            let log_path = log_path.clone();
            async move {
                match http.get(&ready).send().await {
                    Ok(r) if r.status().is_success() => Some(()),
                    _ => {
                        if let Ok(log) = std::fs::read_to_string(&log_path) {
                            assert!(
                                !log.contains("level=error")
                                    || !log.contains("err=\"opening storage"),
                                "prometheus failed: {log}"
                            );
                        }
                        None
                    }
                }
            }
        })
        .await;
        // Wait for a first successful scrape of each target.
        let targets = self.targets.len();
        let query = format!("{}/api/v1/query", self.url);
        eventually(
            "a first scrape of every target",
            Duration::from_secs(30),
            || {
                let http = http.clone();
                let query = query.clone();
                async move {
                    let body: serde_json::Value = http
                        .post(&query)
                        .form(&[("query", "sum(up{job=\"app\"})")])
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    let v = body["data"]["result"][0]["value"][1].as_str()?;
                    (v.parse::<f64>().ok()? as usize == targets).then_some(())
                }
            },
        )
        .await;
    }

    /// Stops Prometheus (the port stops answering).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
