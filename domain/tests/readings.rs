//! Readings: who records them, which observation times are accepted, which
//! reading is latest (by recording, never by the claimed time) and what the
//! folded state keeps of them.

mod common;

use chrono::{TimeZone, Utc};
use common::*;
use rollgate_domain::guardrail::CLOCK_LEEWAY_SECONDS;
use rollgate_domain::rollout::{RolloutCommand as C, RolloutEvent as E, RolloutStatus};
use rollgate_domain::{evolve, MetricName, Reading, Rule, StageIndex};

fn record(readings: Vec<Reading>) -> C {
    C::RecordReadings { readings }
}

fn year_2999() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2999, 1, 1, 0, 0, 0).unwrap()
}

// --- who records readings ---------------------------------------------------------

#[test]
fn sre_and_service_record_readings() {
    let s = Scenario::running();
    for who in [sam(), bot()] {
        given_scenario(&s)
            .when(
                record(vec![reading("error_rate", 0.001, 50, 5)]),
                &ctx(&who, 5),
            )
            .then_types(&["ReadingsRecorded"]);
    }
}

#[test]
fn a_release_manager_may_not_record_readings() {
    let s = Scenario::running();
    let e = given_scenario(&s)
        .when(
            record(vec![reading("error_rate", 0.001, 50, 5)]),
            &ctx(&rita(), 5),
        )
        .then_error(Rule::Permission);
    assert!(e.to_string().contains("service, sre"), "{e}");
    // a note is still theirs to add
    given_scenario(&s)
        .when(
            C::AddNote {
                audience: rollgate_domain::NoteAudience::Internal,
                text: "error rate looks flat".into(),
            },
            &ctx(&rita(), 5),
        )
        .then_types(&["NoteAdded"]);
}

// --- observation times ------------------------------------------------------------

#[test]
fn a_reading_dated_in_the_future_beyond_the_leeway_is_refused() {
    let s = Scenario::running();
    let mut far = reading("error_rate", 0.001, 50, 0);
    far.observed_at = year_2999();
    let e = given_scenario(&s)
        .when(
            record(vec![reading("error_rate", 0.001, 50, 5), far]),
            &ctx(&bot(), 5),
        )
        .then_invalid("readings[1].observed_at");
    assert!(e.to_string().contains("ahead of rollgate's clock"), "{e}");
    // the leeway is the boundary: exactly at it is accepted, one second more is not
    given_scenario(&s)
        .when(
            record(vec![reading(
                "error_rate",
                0.001,
                50,
                5 + CLOCK_LEEWAY_SECONDS,
            )]),
            &ctx(&bot(), 5),
        )
        .then_types(&["ReadingsRecorded"]);
    given_scenario(&s)
        .when(
            record(vec![reading(
                "error_rate",
                0.001,
                50,
                6 + CLOCK_LEEWAY_SECONDS,
            )]),
            &ctx(&bot(), 5),
        )
        .then_invalid("readings[0].observed_at");
}

#[test]
fn a_reading_from_before_the_stage_was_entered_is_refused() {
    let s = Scenario::at_stage_1(); // entered at 3600
    let e = given_scenario(&s)
        .when(
            record(vec![reading(
                "error_rate",
                0.001,
                50,
                3599 - CLOCK_LEEWAY_SECONDS,
            )]),
            &ctx(&bot(), 3700),
        )
        .then_invalid("readings[0].observed_at");
    assert!(e.to_string().contains("before the current stage"), "{e}");
    // clock skew (or a time truncated to whole seconds) within the leeway is accepted
    given_scenario(&s)
        .when(
            record(vec![reading(
                "error_rate",
                0.001,
                50,
                3600 - CLOCK_LEEWAY_SECONDS,
            )]),
            &ctx(&bot(), 3700),
        )
        .then_types(&["ReadingsRecorded"]);
}

#[test]
fn a_non_finite_value_is_refused_at_its_index() {
    let s = Scenario::running();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        given_scenario(&s)
            .when(
                record(vec![
                    reading("error_rate", 0.001, 50, 5),
                    reading("error_rate", bad, 50, 5),
                ]),
                &ctx(&bot(), 5),
            )
            .then_invalid("readings[1].value");
    }
}

// --- which reading is latest ------------------------------------------------------

#[test]
fn a_future_dated_reading_on_record_does_not_hide_a_later_breach() {
    // A reading dated 2999 stored before observation times were checked: the
    // breaching reading recorded after it still rolls back.
    let mut future = reading("error_rate", 0.0001, 5000, 0);
    future.observed_at = year_2999();
    let mut history = Scenario::running().events;
    history.push(E::ReadingsRecorded {
        stage: Some(StageIndex::new(0)),
        readings: vec![future],
        source: rollgate_domain::guardrail::ReadingSource::Posted,
        evaluations: vec![],
        recorded_by: id("bot"),
        at: at(5),
    });
    given(&history)
        .when(
            record(vec![reading("error_rate", 0.2, 50, 100)]),
            &ctx(&bot(), 100),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
}

#[test]
fn a_reading_dated_within_the_leeway_does_not_hide_a_later_breach() {
    // good reading claims t=160 (60 s ahead), the bad one recorded later claims t=101
    let s = Scenario::running().readings(vec![reading("error_rate", 0.0001, 5000, 160)], 100);
    let events = given_scenario(&s)
        .when(
            record(vec![reading("error_rate", 0.2, 50, 101)]),
            &ctx(&bot(), 101),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
    let E::GuardrailBreached { reading, .. } = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(reading.value, 0.2);
}

#[test]
fn within_one_batch_the_later_reading_is_latest() {
    let s = Scenario::running();
    // bad then good at the same observation time: the good one is latest
    given_scenario(&s)
        .when(
            record(vec![
                reading("error_rate", 0.2, 50, 5),
                reading("error_rate", 0.001, 50, 5),
            ]),
            &ctx(&bot(), 5),
        )
        .then_types(&["ReadingsRecorded"]);
    // good then bad: the bad one is latest and breaches
    given_scenario(&s)
        .when(
            record(vec![
                reading("error_rate", 0.001, 50, 5),
                reading("error_rate", 0.2, 50, 5),
            ]),
            &ctx(&bot(), 5),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
}

#[test]
fn success_criteria_use_the_latest_recorded_reading() {
    // a good reading claiming a later time, then a failing one recorded after it
    let s = Scenario::approved()
        .readings(vec![reading("error_rate", 0.001, 500, 100)], 50)
        .readings(vec![reading("error_rate", 0.02, 500, 60)], 60);
    let e = given_scenario(&s)
        .when(
            C::Advance {
                request_id: rid(1),
                inconclusive_override: None,
            },
            &ctx(&rita(), 3600),
        )
        .then_error(Rule::R4);
    assert!(e.to_string().contains("value 0.02"), "{e}");
}

// --- what the state keeps ---------------------------------------------------------

#[test]
fn the_state_keeps_the_latest_per_metric_and_counts() {
    let mut s = Scenario::running();
    for i in 0..300 {
        s = s.readings(
            vec![
                reading("error_rate", 0.001, 10, i),
                reading("unjudged_metric", 1.0, 10, i),
            ],
            i,
        );
    }
    let r = s.state.rollout().unwrap();
    assert_eq!(r.readings.len(), 600);
    // only the metric a criterion of the stage judges is kept
    assert_eq!(r.readings.metrics().len(), 1);
    let m = r
        .readings
        .metric(&MetricName::parse("error_rate").unwrap())
        .unwrap();
    assert_eq!(m.count, 300);
    assert_eq!(m.total_samples, 3000);
    assert_eq!(m.latest.recorded_at, at(299));
    assert_eq!(m.latest.reading.observed_at, at(299));
    // the serialized state does not grow with the number of readings
    let size_300 = serde_json::to_string(&s.state).unwrap().len();
    let more = s
        .clone()
        .readings(vec![reading("error_rate", 0.002, 10, 400)], 400);
    let size_301 = serde_json::to_string(&more.state).unwrap().len();
    assert!(size_301 <= size_300 + 8, "{size_300} -> {size_301}");
}

#[test]
fn entering_a_stage_starts_with_no_readings() {
    let s = Scenario::at_stage_1();
    let r = s.state.rollout().unwrap();
    assert!(r.readings.is_empty());
    assert!(r.readings.metrics().is_empty());
    // a rollback clears them too
    let s = s
        .readings(vec![reading("error_rate", 0.001, 50, 3700)], 3700)
        .run(
            &sam(),
            3800,
            C::Rollback {
                to_stage: Some(StageIndex::new(0)),
                reason: "errors".into(),
            },
        );
    let r = s.state.rollout().unwrap();
    assert_eq!(r.status, RolloutStatus::RolledBack);
    assert!(r.readings.is_empty());
}

#[test]
fn a_plan_revision_drops_readings_of_metrics_no_longer_judged() {
    let s = Scenario::running().readings(vec![reading("error_rate", 0.001, 50, 5)], 5);
    let plan = test_plan_with(|v| {
        v["stages"][0]["success_criteria"] = serde_json::json!([]);
        v["stages"][0]["rollback_criteria"] =
            serde_json::json!([{"metric": "latency_ms", "comparator": "gt", "threshold": 500}]);
    });
    let events = given_scenario(&s)
        .when(C::RevisePlan { plan }, &ctx(&rita(), 10))
        .events();
    let state = events.iter().fold(s.state.clone(), evolve);
    let r = state.rollout().unwrap();
    assert!(r.readings.metrics().is_empty());
    assert_eq!(r.readings.len(), 1, "the count of recorded readings stays");
}
