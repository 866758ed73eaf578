//! The in-memory state cache is never authoritative: commands see events written by other
//! instances, and `as_of` answers from checkpoints equal a replay from the first event,
//! field by field.

use rollgate_domain::{ActorId, NoteAudience, RolloutEvent};
use rollgate_e2e::flow::{self, ALICE};
use rollgate_e2e::{both_backends, json, Backend, TestApp};
use rollgate_server::views::RolloutView;
use rollgate_store::{Clock, EventData, ExpectedVersion};
use uuid::Uuid;

fn stored(e: &RolloutEvent) -> EventData {
    EventData {
        id: Uuid::new_v4(),
        event_type: e.event_type().to_owned(),
        schema_version: e.schema_version(),
        payload: e.payload(),
        metadata: json!({ "actor": { "id": "other-instance", "roles": ["release_manager"] }, "team": "web" }),
    }
}

async fn commands_see_writes_of_other_instances(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::running_example(&app).await;
    let store = app.db.store(Default::default()).await;
    let stream = format!("rollout-{id}");
    let version = store.stream_version(&stream).await.unwrap();
    // Another instance pauses the rollout behind this server's back.
    let paused = RolloutEvent::Paused {
        reason: "paused elsewhere".into(),
        automatic: false,
        paused_by: ActorId::parse("alice").unwrap(),
        policy_version: 0,
        at: app.clock.now(),
    };
    store
        .append(
            &stream,
            ExpectedVersion::Exact(version),
            vec![stored(&paused)],
        )
        .await
        .unwrap();
    // Resuming only works if this server folds that event in.
    let r = app
        .post(
            &format!("/v1/rollouts/{id}/resume"),
            &ALICE.token(&app),
            json!({}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(flow::rollout(&app, &id).await["status"], "running");
}

async fn as_of_from_checkpoints_equals_full_replay(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::running_example(&app).await;
    let store = app.db.store(Default::default()).await;
    let stream = format!("rollout-{id}");
    let note = |i: usize| RolloutEvent::NoteAdded {
        audience: NoteAudience::Internal,
        text: format!("update {i}"),
        stage: None,
        author: ActorId::parse("alice").unwrap(),
        at: app.clock.now(),
    };
    // 700 events, with a pause in the middle, so the stream crosses two checkpoints.
    let mut version = store.stream_version(&stream).await.unwrap();
    for chunk in 0..7 {
        let mut events: Vec<EventData> = (0..100).map(|i| stored(&note(chunk * 100 + i))).collect();
        if chunk == 3 {
            events[50] = stored(&RolloutEvent::Paused {
                reason: "midway".into(),
                automatic: false,
                paused_by: ActorId::parse("alice").unwrap(),
                policy_version: 0,
                at: app.clock.now(),
            });
        }
        version = store
            .append(&stream, ExpectedVersion::Exact(version), events)
            .await
            .unwrap()
            .stream_version;
    }
    // Warm the cache, then ask for points before, between and after the checkpoints.
    flow::rollout(&app, &id).await;
    let all = rollgate_store::read_whole_stream(&*store, &stream)
        .await
        .unwrap();
    let pause_version = all
        .iter()
        .find(|e| e.event_type == "Paused")
        .unwrap()
        .version;
    let start_version = all
        .iter()
        .find(|e| e.event_type == "RolloutStarted")
        .unwrap()
        .version;
    // The full replay, folded alongside: at each point asked for, every field of the
    // answer must equal the view of the replayed state.
    let mut replayed = rollgate_domain::RolloutState::default();
    let mut at = 0;
    let mut differences = Vec::new();
    for e in all.iter().step_by(37).chain(all.last()) {
        while at < all.len() && all[at].position <= e.position {
            let s = &all[at];
            let event =
                RolloutEvent::from_stored(&s.event_type, s.schema_version, s.payload.clone())
                    .unwrap();
            replayed = rollgate_domain::evolve(replayed, &event);
            at += 1;
        }
        let r = app
            .get(
                &format!("/v1/rollouts/{id}?as_of={}", e.position),
                &ALICE.token(&app),
            )
            .await;
        let view = RolloutView::new(replayed.rollout().unwrap(), Some(e.position));
        let expected = serde_json::to_value(view).unwrap();
        let fields = expected.as_object().unwrap();
        assert_eq!(
            fields.len(),
            r.body.as_object().unwrap().len(),
            "as_of {}",
            e.position
        );
        for (field, value) in fields {
            if &r.body[field] != value {
                differences.push(format!(
                    "as_of {}: {field}: {} != {value}",
                    e.position, r.body[field]
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "cached differs from replay:\n{}",
        differences.join("\n")
    );
    for e in all.iter().step_by(37).chain(all.last()) {
        let r = app
            .get(
                &format!("/v1/rollouts/{id}?as_of={}", e.position),
                &ALICE.token(&app),
            )
            .await;
        r.assert_status(200);
        assert_eq!(r.body["version"], e.version, "as_of {}", e.position);
        assert_eq!(r.body["as_of_position"], e.position);
        if e.version >= start_version {
            let expected = if e.version >= pause_version {
                "paused"
            } else {
                "running"
            };
            assert_eq!(r.body["status"], expected, "as_of {}", e.position);
        }
        assert_eq!(
            r.header("etag"),
            Some(format!("\"{}\"", e.version).as_str())
        );
    }
}

both_backends!(
    commands_see_writes_of_other_instances,
    as_of_from_checkpoints_equals_full_replay,
);
