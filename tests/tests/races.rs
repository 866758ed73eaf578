//! Races on one rollout, over real HTTP: many approvers at once on one request, advance
//! against rollback, plan revisions with the same If-Match. Each answer is checked against
//! the log: every success wrote its events, every refusal wrote nothing, and the state read
//! back agrees with what the answers said.

use std::collections::HashMap;

use futures::future::join_all;
use reqwest::Method;
use rollgate_e2e::flow::{self, ALICE, BOT, HEALTHY, SAM};
use rollgate_e2e::{both_backends, example_create_body, json, Backend, Reply, TestApp};
use serde_json::Value;

/// Every event of the rollout's stream (type, position), in order.
async fn stream(app: &TestApp, id: &str) -> Vec<(String, u64)> {
    let r = app
        .get(
            &format!("/v1/rollouts/{id}/events?limit=1000"),
            &ALICE.token(app),
        )
        .await;
    r.assert_status(200);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["position"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn count(events: &[(String, u64)], kind: &str) -> usize {
    events.iter().filter(|(t, _)| t == kind).count()
}

/// A refusal must be problem+json 4xx (never 5xx).
fn assert_refused(r: &Reply, what: &str) {
    assert!(
        r.status.is_client_error(),
        "{what}: {} {}",
        r.status,
        r.body
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
}

/// A running example rollout with an open request to advance into stage 1 (quorum: two
/// approvers and an SRE), soak served and readings healthy.
async fn open_request(app: &TestApp) -> (String, String) {
    let id = flow::running_example(app).await;
    flow::record(app, &id, BOT, HEALTHY).await;
    app.advance_clock(chrono::Duration::seconds(flow::EXAMPLE_SOAK[0]));
    let rid = flow::request_advance(app, &id).await;
    (id, rid)
}

/// 50 approvals at once on one request: 9 approvers and one SRE, each sending 5 times.
/// Exactly one approval per person is recorded (R3), the 40 repeats are refused, and of 20
/// concurrent advances on the met quorum exactly one advances.
async fn fifty_concurrent_approvers(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let (id, rid) = open_request(&app).await;
    let path = format!("/v1/rollouts/{id}/advance-requests/{rid}/approvals");
    let people: Vec<(String, &[&str])> = (0..9)
        .map(|i| (format!("approver-{i}"), &["approver"][..]))
        .chain([(SAM.sub.to_owned(), SAM.roles)])
        .collect();
    let calls: Vec<_> = people
        .iter()
        .flat_map(|(sub, roles)| {
            let token = app.token(sub, roles, &["web"]);
            std::iter::repeat_n(token, 5)
        })
        .collect();
    assert_eq!(calls.len(), 50);
    let before = stream(&app, &id).await;
    let body = json!({"decision": "approve"});
    // A version conflict (the request changed while this approval was decided) asks the
    // client to retry: each caller does, a bounded number of times.
    let replies = join_all(calls.iter().map(|t| {
        let (path, body, app) = (&path, &body, &app);
        async move {
            let mut conflicts = 0;
            loop {
                let r = app.post(path, t, body.clone()).await;
                if r.body["type"] == "urn:rollgate:problem:version-conflict" && conflicts < 50 {
                    conflicts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * conflicts)).await;
                    continue;
                }
                return (r, conflicts);
            }
        }
    }))
    .await;
    let conflicts: u64 = replies.iter().map(|(_, c)| c).sum();
    let replies: Vec<Reply> = replies.into_iter().map(|(r, _)| r).collect();
    let ok = replies.iter().filter(|r| r.status.is_success()).count();
    for r in replies.iter().filter(|r| !r.status.is_success()) {
        assert_refused(r, "repeated approval");
        assert_eq!(r.status.as_u16(), 409, "{}", r.body);
        assert_ne!(r.body["type"], "urn:rollgate:problem:version-conflict");
    }
    let after = stream(&app, &id).await;
    assert_eq!(ok, people.len(), "one approval per person");
    assert_eq!(
        count(&after, "AdvanceApproved") - count(&before, "AdvanceApproved"),
        people.len()
    );
    assert_eq!(
        after.len() - before.len(),
        people.len(),
        "nothing else written"
    );

    // 20 advances at once: one wins.
    let token = ALICE.token(&app);
    let advance = format!("/v1/rollouts/{id}/advance");
    let body = json!({ "request_id": rid });
    let replies = join_all((0..20).map(|_| app.post(&advance, &token, body.clone()))).await;
    let won = replies.iter().filter(|r| r.status.is_success()).count();
    for r in replies.iter().filter(|r| !r.status.is_success()) {
        assert_refused(r, "second advance");
    }
    let end = stream(&app, &id).await;
    assert_eq!(won, 1, "exactly one advance answered");
    assert_eq!(count(&end, "Advanced") - count(&after, "Advanced"), 1);
    let at = end.last().unwrap().1;
    let rollout = app
        .get(&format!("/v1/rollouts/{id}?min_position={at}"), &token)
        .await;
    assert_eq!(rollout.body["stage"], 1, "{}", rollout.body);
    eprintln!(
        "races {kind:?}: approvals sent 50, recorded {ok}, refused as repeats {}, version-conflict retries {conflicts}; advances sent 20, won {won}",
        50 - ok
    );
}

/// Advance and rollback at once, ten times on fresh rollouts: the rollback always wins (it
/// is allowed in every state the advance leaves), the advance wins only if it was written
/// first, and the state read back is what the answers said.
async fn advance_against_rollback(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    for round in 0..10 {
        let (id, rid) = open_request(&app).await;
        for who in flow::example_quorum(1) {
            flow::approve(&app, &id, &rid, who).await;
        }
        let before = stream(&app, &id).await;
        let token = ALICE.token(&app);
        let advance_path = format!("/v1/rollouts/{id}/advance");
        let rollback_path = format!("/v1/rollouts/{id}/rollback");
        let (adv, rb) = tokio::join!(
            app.post(&advance_path, &token, json!({ "request_id": rid })),
            app.post(
                &rollback_path,
                &token,
                json!({ "reason": format!("race {round}") })
            ),
        );
        assert!(
            rb.status.is_success(),
            "rollback: {} {}",
            rb.status,
            rb.body
        );
        let after = stream(&app, &id).await;
        let new: Vec<_> = after[before.len()..].to_vec();
        let rb_pos = rb.body["position"].as_u64().unwrap();
        assert!(new.iter().any(|(t, p)| t == "RolledBack" && *p == rb_pos));
        if adv.status.is_success() {
            let adv_pos = adv.body["position"].as_u64().unwrap();
            assert!(adv_pos < rb_pos, "advance after a rollback");
            assert!(new.iter().any(|(t, p)| t == "Advanced" && *p == adv_pos));
            assert_eq!(new.len(), 2, "{new:?}");
            *outcomes.entry("advance then rollback").or_default() += 1;
        } else {
            assert_refused(&adv, "advance after rollback");
            assert_eq!(count(&new, "Advanced"), 0);
            assert_eq!(new.len(), 1, "{new:?}");
            *outcomes.entry("rollback first").or_default() += 1;
        }
        let read = app
            .get(&format!("/v1/rollouts/{id}?min_position={rb_pos}"), &token)
            .await;
        read.assert_status(200);
        assert_eq!(read.body["status"], "rolled_back", "{}", read.body);
        // The replay of the log agrees with the read model.
        let replay = app
            .get(
                &format!("/v1/rollouts/{id}/replay?limit=200&min_position={rb_pos}"),
                &token,
            )
            .await;
        replay.assert_status(200);
        let last = replay.body["items"]
            .as_array()
            .and_then(|s| s.last().cloned())
            .unwrap_or(Value::Null);
        assert!(
            last.to_string().contains("rolled_back"),
            "replay ends elsewhere: {last}"
        );
    }
    eprintln!("races {kind:?}: advance vs rollback, 10 rounds: {outcomes:?}");
}

/// Ten plan revisions at once with the same If-Match: one wins, the rest answer 412, and
/// the rollout's version moved by exactly one.
async fn plan_revisions_with_the_same_if_match(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::create(&app, example_create_body()).await;
    let token = ALICE.token(&app);
    let r = app.get(&format!("/v1/rollouts/{id}"), &token).await;
    let etag = r.header("etag").expect("etag").to_owned();
    let before = stream(&app, &id).await;
    let path = format!("/v1/rollouts/{id}/plan");
    let replies = join_all((0..10).map(|i| {
        let mut plan = example_create_body()["plan"].clone();
        plan["owner"] = json!(format!("owner-{i}"));
        let body = json!({ "plan": plan });
        let (path, token, etag) = (path.clone(), token.clone(), etag.clone());
        let app = &app;
        async move {
            app.request(
                Method::PUT,
                &path,
                Some(&token),
                Some(&body),
                &[("if-match", etag.as_str())],
            )
            .await
        }
    }))
    .await;
    let won = replies.iter().filter(|r| r.status.is_success()).count();
    for r in replies.iter().filter(|r| !r.status.is_success()) {
        r.assert_problem(412, None);
    }
    let after = stream(&app, &id).await;
    assert_eq!(won, 1, "exactly one revision wins");
    assert_eq!(
        count(&after, "PlanRevised") - count(&before, "PlanRevised"),
        1
    );
    assert_eq!(after.len(), before.len() + 1);
    eprintln!(
        "races {kind:?}: plan revisions sent 10, won {won}, 412: {}",
        10 - won
    );
}

both_backends!(
    workers = 4;
    fifty_concurrent_approvers,
    advance_against_rollback,
    plan_revisions_with_the_same_if_match,
);
