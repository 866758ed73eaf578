//! A slow receiver does not change append latency (issue 13), measured here as a ratio
//! against a run without webhooks.
//!
//! One server; blocks of SAMPLES sequential note appends (`POST /v1/rollouts/{id}/notes`,
//! PACE apart), each timed from request to answer. Blocks alternate: without webhooks (the
//! first block on a server that never had one; later ones after every webhook was removed
//! and its requests timed out), then with TARGETS webhooks subscribed to the notes, half on
//! a receiver that hangs past the request timeout (every attempt times out and is retried)
//! and half on one that answers after a quarter of a second (a growing backlog); both
//! verify the signatures, so the slow one accepts what it gets. The medians of the two kinds
//! must stay within MAX_MEDIAN_RATIO of each other; the p90s are printed. Alternating blocks
//! keep the comparison fair when other work on the machine comes and goes.

#[path = "../../services/delivery/tests/support/receiver.rs"]
mod receiver;

use std::time::{Duration, Instant};

use receiver::Receiver;
use reqwest::Method;
use rollgate_e2e::flow::{create, ALICE, GINA};
use rollgate_e2e::{example_create_body, json, Backend, TestApp};

const ROUNDS: usize = 2;
const SAMPLES: usize = 80;
/// Pause between appends, so a block spans request timeouts, retries and answers.
const PACE: Duration = Duration::from_millis(20);
const WARM_UP: usize = 15;
const TARGETS: usize = 4;
/// The bound on median(with slow webhooks) / median(without): generous against noise on
/// two shared cores, far below what one blocked request per append would cost (seconds).
const MAX_MEDIAN_RATIO: f64 = 2.0;
const TIMEOUT_SECONDS: u64 = 2;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn append_notes(app: &TestApp, token: &str, id: &str, n: usize, tag: &str) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"audience": "internal", "text": format!("latency {tag} {i}")});
        let started = Instant::now();
        let r = app
            .request(
                Method::POST,
                &format!("/v1/rollouts/{id}/notes"),
                Some(token),
                Some(&body),
                &[],
            )
            .await;
        out.push(started.elapsed());
        r.assert_status(201);
        tokio::time::sleep(PACE).await;
    }
    out
}

/// The two backends' measurements must not overlap (each would be the other's noise).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn latency_with_a_slow_receiver(kind: Backend) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_with(
        kind,
        &["--webhook-timeout-seconds", &TIMEOUT_SECONDS.to_string()],
    )
    .await;
    // Hangs past the timeout / answers after a second.
    let hanging = Receiver::start_with(0, json!({"default": {"status": 200, "sleep": 30}}));
    let slow = Receiver::start_with(0, json!({"default": {"status": 200, "sleep": 0.25}}));
    let id = create(&app, example_create_body()).await;
    let alice = ALICE.token(&app);
    let gina = GINA.token(&app);
    append_notes(&app, &alice, &id, WARM_UP, "warm-up").await;

    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut delivered_during = 0usize;
    let mut secrets = Vec::new();
    for round in 0..ROUNDS {
        without.extend(append_notes(&app, &alice, &id, SAMPLES, &format!("plain {round}")).await);

        let (hanging_before, slow_before) = (hanging.count().await, slow.count().await);
        let mut webhooks = Vec::new();
        for t in 0..TARGETS {
            let receiver = if t % 2 == 0 { &hanging } else { &slow };
            let r = app
                .post(
                    "/v1/webhooks",
                    &gina,
                    json!({
                        "team": "web",
                        "url": format!("{}/{round}-{t}", receiver.url()),
                        "event_types": ["dev.rollgate.rollout.note_added"],
                    }),
                )
                .await;
            r.assert_status(201);
            webhooks.push(r.body["id"].as_str().expect("webhook id").to_owned());
            secrets.push(r.body["secret"].as_str().expect("secret").to_owned());
        }
        // The receivers verify the signatures (and so accept, slowly, what they receive).
        for receiver in [&hanging, &slow] {
            receiver.control(json!({ "secrets": secrets })).await;
        }
        // Measure only once every target has a request in flight.
        append_notes(&app, &alice, &id, 1, &format!("trigger {round}")).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while hanging.count().await < hanging_before + TARGETS / 2
            || slow.count().await < slow_before + TARGETS / 2
        {
            assert!(Instant::now() < deadline, "the receivers were never called");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = hanging.count().await + slow.count().await;
        with.extend(append_notes(&app, &alice, &id, SAMPLES, &format!("webhooks {round}")).await);
        delivered_during += hanging.count().await + slow.count().await - before;

        for w in webhooks {
            let r = app
                .request(
                    Method::DELETE,
                    &format!("/v1/webhooks/{w}"),
                    Some(&gina),
                    None,
                    &[],
                )
                .await;
            assert!(r.status.is_success(), "remove {w}: {} {}", r.status, r.body);
        }
        // Requests still in flight end at the timeout.
        tokio::time::sleep(Duration::from_secs(TIMEOUT_SECONDS) + Duration::from_millis(200)).await;
    }

    without.sort();
    with.sort();
    let (m0, p0) = (percentile(&without, 0.5), percentile(&without, 0.9));
    let (m1, p1) = (percentile(&with, 0.5), percentile(&with, 0.9));
    let ratio = m1.as_secs_f64() / m0.as_secs_f64();
    let p90_ratio = p1.as_secs_f64() / p0.as_secs_f64();
    eprintln!(
        "delivery_latency {kind:?}: {} appends without webhooks: median {:.2} ms, p90 {:.2} ms; \
         {} appends with {TARGETS} slow webhooks (requests reaching the receivers meanwhile: {delivered_during}): \
         median {:.2} ms, p90 {:.2} ms; ratio median {ratio:.2}, p90 {p90_ratio:.2}",
        without.len(),
        ms(m0),
        ms(p0),
        with.len(),
        ms(m1),
        ms(p1),
    );
    assert!(
        delivered_during > 0,
        "no delivery reached a receiver while appends were measured"
    );
    assert!(
        slow.log().await.iter().any(|d| d["answered"] == 200),
        "the slow receiver never accepted a delivery (signatures not verified?)"
    );
    assert!(
        ratio < MAX_MEDIAN_RATIO,
        "appends are slower with a slow receiver: median ratio {ratio:.2} (bound {MAX_MEDIAN_RATIO})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_slow_receiver_does_not_slow_appends() {
    latency_with_a_slow_receiver(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_slow_receiver_does_not_slow_appends() {
    latency_with_a_slow_receiver(Backend::Sqlite).await;
}
