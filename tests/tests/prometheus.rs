//! Guardrails evaluated against a real Prometheus, end to end: the real server (`rollgate
//! serve` with `--prometheus-url`, the real clock), the distribution's Prometheus on a free
//! loopback port scraping a small exporter every second, and counters the test drives.
//!
//! Each scenario waits by polling against a deadline; intervals are 5 s (the minimum).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use reqwest::Method;
use rollgate_auth::{DevKeys, MintRequest};
use rollgate_server::config::ServeArgs;
use rollgate_server::Application;
use rollgate_store::{BackendKind, Clock, SystemClock};
use rollgate_testkit::tools::{free_port, prometheus, ChildGuard};
use rollgate_testkit::TestDb;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// The exporter: text exposition of `requests_total{track,code}` from counters the test sets.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Counters(Arc<Mutex<BTreeMap<(String, String), u64>>>);

impl Counters {
    fn add(&self, track: &str, code: &str, n: u64) {
        *self
            .0
            .lock()
            .unwrap()
            .entry((track.into(), code.into()))
            .or_default() += n;
    }

    fn exposition(&self) -> String {
        let mut out = String::from("# TYPE requests_total counter\n");
        for ((track, code), n) in self.0.lock().unwrap().iter() {
            out.push_str(&format!(
                "requests_total{{track=\"{track}\",code=\"{code}\"}} {n}\n"
            ));
        }
        out
    }
}

/// Serves `/metrics` (any path) on 127.0.0.1; answers each connection once.
async fn exporter(counters: Counters) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counters = counters.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut read = 0;
                // Read the request head (bounded), then answer.
                while read < buf.len() {
                    match socket.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                    if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let body = counters.exposition();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, task)
}

// ---------------------------------------------------------------------------------------------
// Prometheus, started and stopped by the test.
// ---------------------------------------------------------------------------------------------

struct Prom {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<ChildGuard>,
}

impl Prom {
    async fn start(target: u16) -> Prom {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: app\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let mut p = Prom {
            port: free_port(),
            dir,
            child: None,
        };
        p.spawn().await;
        p
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = ChildGuard::spawn(
            Command::new(prometheus())
                .arg(format!(
                    "--config.file={}",
                    self.dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    self.dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.child = Some(child);
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/query", self.url());
        eventually("prometheus scraping the exporter", 30, || {
            let http = http.clone();
            let url = url.clone();
            async move {
                let body: Value = http
                    .post(&url)
                    .form(&[("query", "up{job=\"app\"}")])
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (body["data"]["result"][0]["value"][1] == "1").then_some(())
            }
        })
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }
}

async fn eventually<T, F, Fut>(what: &str, seconds: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The server with the real clock.
// ---------------------------------------------------------------------------------------------

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

struct Server {
    address: String,
    keys: DevKeys,
    http: reqwest::Client,
    app: Arc<rollgate_server::state::AppState>,
    _keys_dir: Arc<tempfile::TempDir>,
}

impl Server {
    async fn spawn(db: &TestDb, prometheus_url: &str, keys_dir: Arc<tempfile::TempDir>) -> Server {
        let args = Args::parse_from([
            "rollgate",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--dev-key-dir",
            keys_dir.path().to_str().unwrap(),
            "--prometheus-url",
            prometheus_url,
            "--prometheus-timeout-ms",
            "1000",
        ]);
        let app = Application::build(&args.serve, Arc::new(SystemClock) as Arc<dyn Clock>)
            .await
            .expect("server starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().into_inner();
        tokio::spawn(app.run_until_stopped());
        Server {
            address,
            keys: DevKeys::load_or_create(keys_dir.path()).unwrap(),
            http: reqwest::Client::new(),
            app: state,
            _keys_dir: keys_dir,
        }
    }

    fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.keys
            .mint(MintRequest {
                sub: sub.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                teams: vec!["web".into()],
                ttl_seconds: 3600,
                now: chrono::Utc::now().timestamp(),
                issuer: "rollgate".into(),
                audience: "rollgate".into(),
            })
            .unwrap()
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(("alice", &["release_manager", "sre"]), method, path, body)
            .await
    }

    async fn call_as(
        &self,
        (sub, roles): (&str, &[&str]),
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(self.token(sub, roles));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn events(&self, id: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                Method::GET,
                &format!("/v1/rollouts/{id}/events?limit=1000"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// The evaluations rollgate recorded (`source: prometheus`), in order.
    async fn evaluations(&self, id: &str) -> Vec<Value> {
        self.events(id)
            .await
            .into_iter()
            .filter(|e| e["type"] == "ReadingsRecorded" && e["payload"]["source"] == "prometheus")
            .flat_map(|e| {
                e["payload"]["evaluations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }
}

const ERROR_RATE: &str = r#"sum(requests_total{track="canary",code=~"5.."} or vector(0)) / sum(requests_total{track="canary"})"#;
const SAMPLES: &str = r#"sum(requests_total{track="canary"})"#;
const BASELINE_RATE: &str = r#"sum(requests_total{track="baseline",code=~"5.."} or vector(0)) / sum(requests_total{track="baseline"})"#;

fn plan(criterion: Value, inconclusive: Option<(i64, &str)>) -> Value {
    let mut everyone = json!({
        "name": "everyone",
        "audience": {"percentage": 100},
        "min_soak_seconds": 0,
        "evaluation_interval_seconds": 5,
        "rollback_criteria": [criterion.clone()],
        "on_breach": "rollback",
        "approvals": [{"roles": ["approver"], "count": 1}]
    });
    let mut canary = json!({
        "name": "canary",
        "audience": {"percentage": 10},
        "min_soak_seconds": 0,
        "evaluation_interval_seconds": 5,
        "rollback_criteria": [criterion],
        "on_breach": "rollback",
        "approvals": [{"roles": ["approver"], "count": 1}]
    });
    if let Some((limit, action)) = inconclusive {
        for stage in [&mut canary, &mut everyone] {
            stage["inconclusive_limit"] = json!(limit);
            stage["on_inconclusive"] = json!(action);
        }
    }
    json!({
        "feature_key": "checkout",
        "title": "Checkout guarded by Prometheus",
        "team": "web",
        "plan": {
            "owner": "alice",
            "stages": [canary, everyone]
        }
    })
}

fn threshold_criterion() -> Value {
    json!({
        "metric": "error_rate",
        "query": ERROR_RATE,
        "samples_query": SAMPLES,
        "comparator": "gt",
        "threshold": 0.05,
        "min_samples": 10
    })
}

async fn start_rollout(server: &Server, body: Value) -> String {
    let (status, created) = server.call(Method::POST, "/v1/rollouts", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["rollout_id"].as_str().unwrap().to_owned();
    let (status, started) = server
        .call(
            Method::POST,
            &format!("/v1/rollouts/{id}/start"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_passes_then_a_breach_rolls_back_with_query_and_value() {
    let counters = Counters::default();
    counters.add("canary", "200", 100);
    let (port, _exporter) = exporter(counters.clone()).await;
    let prom = Prom::start(port).await;
    let db = TestDb::new(BackendKind::Sqlite).await;
    let server = Server::spawn(&db, &prom.url(), Arc::new(tempfile::tempdir().unwrap())).await;

    // An invalid query is refused at creation, with its field path.
    let mut bad = threshold_criterion();
    bad["query"] = json!("sum(rate(requests_total[1m])");
    let (status, problem) = server
        .call(Method::POST, "/v1/rollouts", Some(plan(bad, None)))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem
            .to_string()
            .contains("plan.stages[0].rollback_criteria[0].query"),
        "{problem}"
    );

    let mut templated = threshold_criterion();
    templated["samples_query"] = json!(r#"sum(requests_total{track="{{team}}"})"#);
    let (status, problem) = server
        .call(Method::POST, "/v1/rollouts", Some(plan(templated, None)))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem
            .to_string()
            .contains("plan.stages[0].rollback_criteria[0].samples_query"),
        "{problem}"
    );

    let id = start_rollout(&server, plan(threshold_criterion(), None)).await;

    // Healthy: passing evaluations recorded with the query, the instant and the values.
    let evaluations = eventually("two healthy evaluations", 20, || async {
        let e = server.evaluations(&id).await;
        (e.len() >= 2).then_some(e)
    })
    .await;
    for e in &evaluations {
        assert_eq!(e["query"], ERROR_RATE);
        assert_eq!(e["value"], json!(0.0));
        assert_eq!(e["samples"], json!(100));
        assert!(e["inconclusive"].is_null(), "{e}");
    }
    let (_, rollout) = server
        .call(Method::GET, &format!("/v1/rollouts/{id}"), None)
        .await;
    assert_eq!(rollout["status"], "running", "{rollout}");
    // The rollout shows the criterion's last evaluation: values, verdict, instant, source.
    let criterion = &rollout["criteria"][0];
    assert_eq!(
        (
            &criterion["kind"],
            &criterion["metric"],
            &criterion["verdict"]
        ),
        (&json!("rollback"), &json!("error_rate"), &json!("pass")),
        "{rollout}"
    );
    let last = &criterion["last_evaluation"];
    assert_eq!(last["source"], "prometheus", "{rollout}");
    assert_eq!(last["query"], ERROR_RATE, "{rollout}");
    assert_eq!(
        (&last["value"], &last["samples"]),
        (&json!(0.0), &json!(100))
    );
    assert!(last["evaluated_at"].is_string(), "{rollout}");

    // Passing evaluations let the stage advance (approved by someone else).
    let (status, request) = server
        .call(
            Method::POST,
            &format!("/v1/rollouts/{id}/advance-requests"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    let rid = request["request_id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .call_as(
            ("bob", &["approver"]),
            Method::POST,
            &format!("/v1/rollouts/{id}/advance-requests/{rid}/approvals"),
            Some(json!({"decision": "approve", "comment": "evaluations pass"})),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/v1/rollouts/{id}/advance"),
            Some(json!({"request_id": rid})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The new stage is evaluated on its own schedule.
    let before = server.evaluations(&id).await.len();
    eventually("an evaluation of the second stage", 15, || async {
        (server.evaluations(&id).await.len() > before).then_some(())
    })
    .await;

    // The evaluator's health on /metrics.
    let metrics = server
        .http
        .get(format!("{}/metrics", server.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rollgate_evaluator_evaluations_total{outcome=\"recorded\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollgate_evaluator_lag_seconds"),
        "{metrics}"
    );

    // Errors above the threshold: an automatic rollback within three intervals.
    counters.add("canary", "500", 50);
    let raised = Instant::now();
    let rolled_back = eventually("an automatic rollback", 20, || async {
        server
            .events(&id)
            .await
            .into_iter()
            .find(|e| e["type"] == "RolledBack")
    })
    .await;
    assert!(
        raised.elapsed() <= Duration::from_secs(15),
        "{:?}",
        raised.elapsed()
    );
    assert_eq!(rolled_back["payload"]["automatic"], true, "{rolled_back}");
    let last = server.evaluations(&id).await.last().cloned().unwrap();
    assert_eq!(last["query"], ERROR_RATE);
    let value = last["value"].as_f64().unwrap();
    assert!((value - 50.0 / 150.0).abs() < 1e-9, "{last}");
    let reason = rolled_back["payload"]["reason"].as_str().unwrap();
    assert!(reason.contains("error_rate"), "{reason}");

    // Rolled back: no more evaluations.
    let count = server.evaluations(&id).await.len();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(server.evaluations(&id).await.len(), count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_is_inconclusive_then_paused_and_back_resumes() {
    let counters = Counters::default();
    counters.add("canary", "200", 100);
    let (port, _exporter) = exporter(counters.clone()).await;
    let mut prom = Prom::start(port).await;
    let db = TestDb::new(BackendKind::Sqlite).await;
    let server = Server::spawn(&db, &prom.url(), Arc::new(tempfile::tempdir().unwrap())).await;
    let id = start_rollout(&server, plan(threshold_criterion(), Some((2, "pause")))).await;
    eventually("a first evaluation", 15, || async {
        (!server.evaluations(&id).await.is_empty()).then_some(())
    })
    .await;

    prom.stop();
    let paused = eventually("the configured pause", 25, || async {
        server
            .events(&id)
            .await
            .into_iter()
            .find(|e| e["type"] == "Paused")
    })
    .await;
    assert_eq!(paused["payload"]["automatic"], true, "{paused}");
    // A plan with queries is not accepted unchecked while Prometheus cannot be asked.
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/rollouts",
            Some(plan(threshold_criterion(), None)),
        )
        .await;
    assert_eq!(status, 503, "{problem}");
    let evaluations = server.evaluations(&id).await;
    let inconclusive: Vec<_> = evaluations
        .iter()
        .filter(|e| !e["inconclusive"].is_null())
        .collect();
    assert!(inconclusive.len() >= 2, "{evaluations:?}");
    for e in &inconclusive {
        assert!(e["value"].is_null(), "{e}");
        let why = e["inconclusive"].as_str().unwrap();
        assert!(why.contains("cannot reach Prometheus"), "{why}");
    }

    // Back, and resumed by a person: evaluations continue and pass.
    prom.spawn().await;
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/v1/rollouts/{id}/resume"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let before = server.evaluations(&id).await.len();
    let resumed = eventually("a conclusive evaluation after resume", 15, || async {
        let e = server.evaluations(&id).await;
        e.get(before..)
            .and_then(|new| new.iter().find(|x| x["inconclusive"].is_null()).cloned())
    })
    .await;
    assert_eq!(resumed["value"], json!(0.0), "{resumed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_against_baseline_breaches_alone_but_not_when_both_rise() {
    let counters = Counters::default();
    counters.add("canary", "200", 1000);
    counters.add("canary", "500", 10);
    counters.add("baseline", "200", 1000);
    counters.add("baseline", "500", 10);
    let (port, _exporter) = exporter(counters.clone()).await;
    let prom = Prom::start(port).await;
    let db = TestDb::new(BackendKind::Sqlite).await;
    let server = Server::spawn(&db, &prom.url(), Arc::new(tempfile::tempdir().unwrap())).await;
    let criterion = json!({
        "metric": "error_rate",
        "query": ERROR_RATE,
        "samples_query": SAMPLES,
        "baseline_query": BASELINE_RATE,
        "baseline": {"relation": "ratio", "max": 1.5},
        "min_samples": 10
    });
    let id = start_rollout(&server, plan(criterion, None)).await;

    // Both rise together (ratio stays 1): evaluations pass, with both values recorded.
    counters.add("canary", "500", 300);
    counters.add("baseline", "500", 300);
    let both = eventually("an evaluation with both tracks risen", 20, || async {
        server
            .evaluations(&id)
            .await
            .into_iter()
            .find(|e| e["baseline_value"].as_f64().is_some_and(|b| b > 0.2))
    })
    .await;
    let canary = both["value"].as_f64().unwrap();
    let baseline = both["baseline_value"].as_f64().unwrap();
    assert!((canary / baseline - 1.0).abs() < 1e-9, "{both}");
    assert_eq!(both["baseline_query"], BASELINE_RATE);
    let events = server.events(&id).await;
    assert!(
        !events.iter().any(|e| e["type"] == "RolledBack"),
        "both rising together is no breach"
    );

    // Only the canary rises: above 1.5 times the baseline, an automatic rollback.
    counters.add("canary", "500", 2000);
    let rolled_back = eventually("a rollback on the canary alone", 20, || async {
        server
            .events(&id)
            .await
            .into_iter()
            .find(|e| e["type"] == "RolledBack")
    })
    .await;
    assert_eq!(rolled_back["payload"]["automatic"], true);
    let last = server.evaluations(&id).await.last().cloned().unwrap();
    assert!(
        last["value"].as_f64().unwrap() > 1.5 * last["baseline_value"].as_f64().unwrap(),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_evaluate_each_interval_once_and_take_over() {
    let counters = Counters::default();
    counters.add("canary", "200", 100);
    let (port, _exporter) = exporter(counters.clone()).await;
    let prom = Prom::start(port).await;
    let db = TestDb::new(BackendKind::Postgres).await;
    let keys = Arc::new(tempfile::tempdir().unwrap());
    let a = Server::spawn(&db, &prom.url(), keys.clone()).await;
    let b = Server::spawn(&db, &prom.url(), keys.clone()).await;
    let id = start_rollout(&a, plan(threshold_criterion(), None)).await;

    let evaluated_at = |evaluations: &[Value]| -> Vec<String> {
        evaluations
            .iter()
            .map(|e| e["evaluated_at"].as_str().unwrap().to_owned())
            .collect()
    };
    // Three intervals: each evaluated once (distinct scheduled instants, none twice).
    let first = eventually("three evaluations", 25, || async {
        let e = a.evaluations(&id).await;
        (e.len() >= 3).then_some(e)
    })
    .await;
    let times = evaluated_at(&first);
    let mut unique = times.clone();
    unique.dedup();
    assert_eq!(unique, times, "an interval was evaluated twice");

    // Stop whichever instance evaluates (its lease then expires): the other takes over
    // within two intervals.
    let holder: String = sqlx::query_scalar("SELECT owner FROM evaluator_leases")
        .fetch_one(&sqlx::PgPool::connect(&db.url).await.unwrap())
        .await
        .unwrap();
    let instance = |s: &Server| s.app.evaluator.get().unwrap().instance().to_owned();
    let (stopped, survivor) = if instance(&a) == holder {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(instance(stopped), holder);
    stopped.app.evaluator.get().unwrap().stop();
    let before = survivor.evaluations(&id).await.len();
    let stopped_at = Instant::now();
    eventually("the surviving instance evaluating", 15, || async {
        (survivor.evaluations(&id).await.len() > before).then_some(())
    })
    .await;
    assert!(
        stopped_at.elapsed() <= Duration::from_secs(10),
        "{:?}",
        stopped_at.elapsed()
    );
    let all = survivor.evaluations(&id).await;
    let times = evaluated_at(&all);
    let mut unique = times.clone();
    unique.dedup();
    assert_eq!(unique, times, "an interval was evaluated twice");
}

/// A posted reading cannot pass itself off as rollgate's own evaluation: a body claiming
/// `source: prometheus`, or carrying evaluation fields, is refused with 422 and nothing is
/// written; what is posted stays `posted` and never feeds a query criterion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_reading_cannot_claim_to_come_from_prometheus() {
    let counters = Counters::default();
    counters.add("canary", "200", 100);
    let (port, _exporter) = exporter(counters.clone()).await;
    let prom = Prom::start(port).await;
    let db = TestDb::new(BackendKind::Sqlite).await;
    let server = Server::spawn(&db, &prom.url(), Arc::new(tempfile::tempdir().unwrap())).await;
    // An hour between evaluations: the evaluator records nothing while the test runs.
    let mut body = plan(threshold_criterion(), None);
    for stage in body["plan"]["stages"].as_array_mut().unwrap() {
        stage["evaluation_interval_seconds"] = json!(3600);
    }
    let id = start_rollout(&server, body).await;
    let sre = ("sam", &["sre"][..]);
    let now = chrono::Utc::now().to_rfc3339();
    let reading = json!({"metric": "error_rate", "value": 0.0, "samples": 100, "observed_at": now});
    let evaluation = json!({
        "metric": "error_rate", "query": ERROR_RATE, "samples_query": SAMPLES,
        "evaluated_at": now, "value": 0.0, "samples": 100,
        "baseline_value": null, "baseline_samples": null, "inconclusive": null
    });
    let before = server.events(&id).await.len();
    let mut claims_source_in_reading = reading.clone();
    claims_source_in_reading["source"] = json!("prometheus");
    let mut claims_query_in_reading = reading.clone();
    claims_query_in_reading["query"] = json!(ERROR_RATE);
    let forged = [
        json!({"source": "prometheus", "readings": [reading]}),
        json!({"readings": [reading], "evaluations": [evaluation]}),
        json!({"evaluations": [evaluation]}),
        json!({"readings": [claims_source_in_reading]}),
        json!({"readings": [claims_query_in_reading]}),
        json!({"readings": [reading], "recorded_by": "rollgate-evaluator"}),
    ];
    for body in forged {
        let (status, problem) = server
            .call_as(
                sre,
                Method::POST,
                &format!("/v1/rollouts/{id}/metrics"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 422, "{body} -> {problem}");
        assert_eq!(
            problem["type"].as_str().map(|t| t.ends_with("validation")),
            Some(true),
            "{problem}"
        );
    }
    assert_eq!(server.events(&id).await.len(), before, "nothing written");

    // The honest body is recorded as posted, and the query criterion does not stand on it.
    let (status, written) = server
        .call_as(
            sre,
            Method::POST,
            &format!("/v1/rollouts/{id}/metrics"),
            Some(json!({"readings": [reading]})),
        )
        .await;
    assert_eq!(status, 200, "{written}");
    let events = server.events(&id).await;
    assert_eq!(events.len(), before + 1);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "ReadingsRecorded");
    assert_eq!(last["payload"]["source"], "posted", "{last}");
    assert!(server.evaluations(&id).await.is_empty());
    let (_, rollout) = server
        .call(Method::GET, &format!("/v1/rollouts/{id}"), None)
        .await;
    let criterion = &rollout["criteria"][0];
    assert_eq!(criterion["source"], "prometheus", "{rollout}");
    assert_eq!(criterion["verdict"], "inconclusive", "{rollout}");
    assert!(criterion["last_evaluation"].is_null(), "{rollout}");
}
