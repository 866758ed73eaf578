//! A realistic mix of governance commands: each client takes rollouts of its own through
//! create, readiness sign-offs (release manager, SRE), start, healthy readings (automation),
//! an advance request (release manager), approvals by two distinct approvers (R1–R3), the
//! advance (R4: soak 0, success criteria met by the readings), readings again, and a rollback
//! with a reason by the SRE (R7). Every answer must be a success.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// The kinds of command, in the order of a cycle.
pub const KINDS: [&str; 8] = [
    "create",
    "readiness sign-off",
    "start",
    "readings",
    "advance request",
    "approval",
    "advance",
    "rollback",
];

/// Tokens of the people of the mix (team web).
pub struct People {
    pub release_manager: String,
    pub sre: String,
    pub approvers: [String; 2],
    pub automation: String,
}

fn plan_body(feature_key: &str) -> Value {
    let guard = json!([{ "metric": "error_rate", "comparator": "gt", "threshold": 0.02, "min_samples": 100 }]);
    json!({
        "feature_key": feature_key,
        "title": "Benchmark rollout (mix)",
        "team": "web",
        "plan": {
            "owner": "bench-rm",
            "stages": [
                {
                    "name": "canary", "audience": { "percentage": 5 }, "min_soak_seconds": 0,
                    "success_criteria": [{ "metric": "error_rate", "comparator": "lte", "threshold": 0.005, "min_samples": 100 }],
                    "rollback_criteria": guard, "on_breach": "rollback",
                    "approvals": [{ "roles": ["approver"], "count": 1 }], "informed": []
                },
                {
                    "name": "all", "audience": { "percentage": 100 }, "min_soak_seconds": 0,
                    "success_criteria": [], "rollback_criteria": guard, "on_breach": "rollback",
                    "approvals": [{ "roles": ["approver"], "count": 2 }], "informed": []
                }
            ],
            "readiness_checklist": [
                { "key": "qa-signoff", "title": "Tests reviewed", "owner_role": "release_manager" },
                { "key": "runbook", "title": "Runbook rehearsed", "owner_role": "sre" }
            ],
            "contingencies": []
        }
    })
}

fn healthy() -> Value {
    json!({ "readings": [{
        "metric": "error_rate", "value": 0.003, "samples": 1000,
        "observed_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }]})
}

/// One client's requests: (kind index, start, latency).
pub type Timed = Vec<(usize, Instant, Duration)>;

struct Client<'a> {
    http: reqwest::Client,
    base: &'a str,
    deadline: Instant,
    timed: Timed,
}

impl Client<'_> {
    /// Sends one command; `None` once the window is over (the command is not sent).
    async fn send(&mut self, kind: usize, token: &str, path: &str, body: Value) -> Option<Value> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let t = Instant::now();
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = res.status();
        let answer: Value = res.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "{} {path}: {status} {answer}",
            KINDS[kind]
        );
        self.timed.push((kind, t, t.elapsed()));
        Some(answer)
    }

    async fn cycle(&mut self, p: &People, key: &str) -> Option<()> {
        let created = self
            .send(0, &p.release_manager, "/v1/rollouts", plan_body(key))
            .await?;
        let id = created["rollout_id"]
            .as_str()
            .expect("rollout_id")
            .to_owned();
        let r = format!("/v1/rollouts/{id}");
        self.send(
            1,
            &p.release_manager,
            &format!("{r}/readiness/qa-signoff/sign-off"),
            json!({}),
        )
        .await?;
        self.send(
            1,
            &p.sre,
            &format!("{r}/readiness/runbook/sign-off"),
            json!({}),
        )
        .await?;
        self.send(2, &p.release_manager, &format!("{r}/start"), json!({}))
            .await?;
        self.send(3, &p.automation, &format!("{r}/metrics"), healthy())
            .await?;
        let req = self
            .send(
                4,
                &p.release_manager,
                &format!("{r}/advance-requests"),
                json!({}),
            )
            .await?;
        let rid = req["request_id"].as_str().expect("request_id").to_owned();
        for approver in &p.approvers {
            self.send(
                5,
                approver,
                &format!("{r}/advance-requests/{rid}/approvals"),
                json!({ "decision": "approve", "comment": "fine" }),
            )
            .await?;
        }
        self.send(
            6,
            &p.release_manager,
            &format!("{r}/advance"),
            json!({ "request_id": rid }),
        )
        .await?;
        self.send(3, &p.automation, &format!("{r}/metrics"), healthy())
            .await?;
        self.send(
            7,
            &p.sre,
            &format!("{r}/rollback"),
            json!({ "reason": "benchmark: back to the known good state" }),
        )
        .await?;
        Some(())
    }
}

/// Runs `clients` clients until `deadline`; answers every request's kind, start and latency.
pub async fn run(
    base: &str,
    people: People,
    clients: usize,
    deadline: Instant,
) -> anyhow::Result<Timed> {
    let people = std::sync::Arc::new(people);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let people = people.clone();
            let http = http.clone();
            let base = base.to_owned();
            let run = run.clone();
            tokio::spawn(async move {
                let mut client = Client {
                    http,
                    base: &base,
                    deadline,
                    timed: Vec::new(),
                };
                let mut n = 0;
                while client
                    .cycle(&people, &format!("mix-{}-{c}-{n}", &run[..8]))
                    .await
                    .is_some()
                {
                    n += 1;
                }
                client.timed
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("a mix client failed")?);
    }
    if all.is_empty() {
        bail!("the mix sent no command");
    }
    Ok(all)
}

/// Latencies of each kind, in the order of [`KINDS`].
pub fn by_kind(timed: &Timed) -> BTreeMap<usize, Vec<Duration>> {
    let mut m: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
    for (k, _, l) in timed {
        m.entry(*k).or_default().push(*l);
    }
    m
}
