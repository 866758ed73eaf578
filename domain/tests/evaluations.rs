//! Query criteria (rollgate evaluates PromQL itself), canary against baseline,
//! and the inconclusive rules: plan validation with field paths, who may
//! record evaluations, and what the guardrails do with them.

mod common;

use common::*;
use rollgate_domain::guardrail::{QueryEvaluation, ReadingSource};
use rollgate_domain::plan::{OnInconclusive, Plan, Relation};
use rollgate_domain::rollout::{RolloutCommand as C, RolloutEvent as E, RolloutStatus};
use rollgate_domain::{Actor, ActorId, DomainError, ErrorKind, MetricName, Rule, ValidationErrors};
use serde_json::{json, Value};

const ERRORS_Q: &str = "sum(rate(http_requests_total{code=~\"5..\",app=\"checkout\",track=\"canary\",stage=\"{{stage}}\"}[1m])) / sum(rate(http_requests_total{app=\"checkout\",track=\"canary\"}[1m]))";
const SAMPLES_Q: &str =
    "sum(increase(http_requests_total{app=\"checkout\",track=\"canary\",feature=\"{{feature_key}}\"}[5m]))";
const BASELINE_Q: &str = "sum(rate(http_requests_total{code=~\"5..\",app=\"checkout\",track=\"baseline\"}[1m])) / sum(rate(http_requests_total{app=\"checkout\",track=\"baseline\"}[1m]))";

fn evaluator() -> Actor {
    Actor::system(ActorId::parse("rollgate-evaluator").unwrap())
}

fn parse(f: impl FnOnce(&mut Value)) -> Result<Plan, ValidationErrors> {
    let mut v: Value = serde_json::from_str(TEST_PLAN).unwrap();
    f(&mut v);
    Plan::parse(serde_json::from_value(v).unwrap())
}

fn invalid_at(f: impl FnOnce(&mut Value), field: &str) {
    let errors = parse(f).expect_err("the plan must be refused");
    assert!(errors.has_field(field), "no error at {field}: {errors}");
}

/// Stage 0 judged by queries: success `error_rate lte 0.01` (min 100
/// samples), rollback `error_rate gt 0.05` (min 10), on breach roll back.
fn query_stage(v: &mut Value) {
    v["stages"][0]["success_criteria"] = json!([{
        "metric": "error_rate", "query": ERRORS_Q, "samples_query": SAMPLES_Q,
        "comparator": "lte", "threshold": 0.01, "min_samples": 100
    }]);
    v["stages"][0]["rollback_criteria"] = json!([{
        "metric": "error_rate", "query": ERRORS_Q, "samples_query": SAMPLES_Q,
        "comparator": "gt", "threshold": 0.05, "min_samples": 10
    }]);
    v["stages"][0]["evaluation_interval_seconds"] = json!(15);
}

/// Stage 0's rollback criterion judged against the baseline's query.
fn baseline_stage(v: &mut Value) {
    v["stages"][0]["success_criteria"] = json!([]);
    v["stages"][0]["rollback_criteria"] = json!([{
        "metric": "error_rate", "query": ERRORS_Q, "samples_query": SAMPLES_Q,
        "baseline_query": BASELINE_Q,
        "baseline": {"relation": "ratio", "max": 1.2}, "min_samples": 200
    }]);
}

fn running_with(f: impl FnOnce(&mut Value)) -> Scenario {
    let plan = test_plan_with(f);
    Scenario::new()
        .run(&rita(), 0, create_cmd(plan))
        .run(
            &rita(),
            0,
            C::SignOffReadiness {
                item_key: "qa".into(),
            },
        )
        .run(
            &sam(),
            0,
            C::SignOffReadiness {
                item_key: "runbook".into(),
            },
        )
        .run(&rita(), 0, C::Start)
}

fn evaluation(value: Option<f64>, samples: u64, secs: i64) -> QueryEvaluation {
    QueryEvaluation {
        metric: MetricName::parse("error_rate").unwrap(),
        query: ERRORS_Q.replace("{{stage}}", "internal"),
        samples_query: Some(SAMPLES_Q.replace("{{feature_key}}", "checkout-one-click")),
        baseline_query: None,
        evaluated_at: at(secs),
        value,
        samples: Some(samples),
        baseline_value: None,
        baseline_samples: None,
        inconclusive: None,
    }
}

fn with_baseline(mut e: QueryEvaluation, value: f64, samples: u64) -> QueryEvaluation {
    e.baseline_query = Some(BASELINE_Q.to_owned());
    e.baseline_value = Some(value);
    e.baseline_samples = Some(samples);
    e
}

fn failed(reason: &str, secs: i64) -> QueryEvaluation {
    QueryEvaluation {
        value: None,
        samples: None,
        inconclusive: Some(reason.to_owned()),
        ..evaluation(None, 0, secs)
    }
}

fn record(evaluations: Vec<QueryEvaluation>) -> C {
    C::RecordEvaluation { evaluations }
}

// --- plan shapes ---------------------------------------------------------------------

#[test]
fn query_and_baseline_criteria_are_accepted_with_their_templates() {
    let plan = parse(|v| {
        query_stage(v);
        v["stages"][1]["rollback_criteria"] = json!([{
            "metric": "p95_latency_ms", "query": "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{track=\"canary\"}[5m]))) * 1000",
            "baseline_query": "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{track=\"baseline\"}[5m]))) * 1000",
            "baseline": {"relation": "difference", "max": 50}
        }]);
        v["stages"][1]["inconclusive_limit"] = json!(3);
        v["stages"][1]["on_inconclusive"] = json!("record");
    })
    .unwrap();
    let s0 = &plan.stages()[0];
    assert_eq!(s0.evaluation_interval(), 15);
    let q = s0.success_criteria[0].queries.as_ref().unwrap();
    assert!(q.query.contains("{{stage}}"));
    assert!(q
        .samples_query
        .as_deref()
        .unwrap()
        .contains("{{feature_key}}"));
    let s1 = &plan.stages()[1];
    assert_eq!(s1.evaluation_interval(), 60, "the default");
    let latency = &s1.rollback_criteria[0];
    assert_eq!(latency.baseline, Some(Relation::Difference));
    assert_eq!(latency.threshold.get(), 50.0);
    assert_eq!(
        latency.to_string(),
        "p95_latency_ms difference to baseline gt 50"
    );
    let policy = s1.inconclusive.unwrap();
    assert_eq!((policy.limit, policy.action), (3, OnInconclusive::Record));
    // a plan without the new fields stores exactly what it stored before
    let old = serde_json::to_value(test_plan()).unwrap();
    assert!(old["stages"][0]
        .get("evaluation_interval_seconds")
        .is_none());
    assert!(old["stages"][0]["rollback_criteria"][0]
        .get("queries")
        .is_none());
}

#[test]
fn the_evaluation_interval_is_at_least_5_seconds() {
    let at0 = "plan.stages[0].evaluation_interval_seconds";
    invalid_at(
        |v| {
            query_stage(v);
            v["stages"][0]["evaluation_interval_seconds"] = json!(4);
        },
        at0,
    );
    parse(|v| {
        query_stage(v);
        v["stages"][0]["evaluation_interval_seconds"] = json!(5);
    })
    .unwrap();
    // only a stage with query criteria is evaluated
    invalid_at(
        |v| v["stages"][0]["evaluation_interval_seconds"] = json!(30),
        at0,
    );
}

#[test]
fn query_fields_are_validated_with_their_paths() {
    let c = "plan.stages[0].rollback_criteria[0]";
    invalid_at(
        |v| {
            v["stages"][0]["rollback_criteria"][0]["samples_query"] = json!(SAMPLES_Q);
        },
        &format!("{c}.query"),
    );
    invalid_at(
        |v| {
            query_stage(v);
            v["stages"][0]["rollback_criteria"][0]["query"] = json!("  ");
        },
        &format!("{c}.query"),
    );
    invalid_at(
        |v| {
            query_stage(v);
            v["stages"][0]["rollback_criteria"][0]["query"] = json!("up\u{0}");
        },
        &format!("{c}.query"),
    );
    // criteria of one stage naming one metric measure it one way
    invalid_at(
        |v| {
            query_stage(v);
            v["stages"][0]["rollback_criteria"][0]["query"] = json!("sum(up)");
        },
        &format!("{c}.query"),
    );
    invalid_at(
        |v| {
            v["stages"][0]["rollback_criteria"][0]["query"] = json!(ERRORS_Q);
        },
        &format!("{c}.query"),
    );
}

#[test]
fn baseline_relations_are_validated_with_their_paths() {
    let c = "plan.stages[0].rollback_criteria[0]";
    for max in [json!(0), json!(-1.5)] {
        invalid_at(
            |v| {
                baseline_stage(v);
                v["stages"][0]["rollback_criteria"][0]["baseline"]["max"] = max;
            },
            &format!("{c}.baseline.max"),
        );
    }
    invalid_at(
        |v| {
            baseline_stage(v);
            v["stages"][0]["rollback_criteria"][0]["baseline"]["relation"] = json!("quotient");
        },
        &format!("{c}.baseline.relation"),
    );
    invalid_at(
        |v| {
            baseline_stage(v);
            v["stages"][0]["rollback_criteria"][0]["threshold"] = json!(0.05);
        },
        &format!("{c}.threshold"),
    );
    invalid_at(
        |v| {
            baseline_stage(v);
            v["stages"][0]["rollback_criteria"][0]["comparator"] = json!("gt");
        },
        &format!("{c}.comparator"),
    );
    // without a comparator, threshold and baseline, nothing says what is bad
    invalid_at(
        |v| {
            v["stages"][0]["rollback_criteria"][0] = json!({"metric": "error_rate"});
        },
        &format!("{c}.comparator"),
    );
    // a baseline query needs a relation
    invalid_at(
        |v| {
            query_stage(v);
            v["stages"][0]["rollback_criteria"][0]["baseline_query"] = json!(BASELINE_Q);
            v["stages"][0]["success_criteria"][0]["baseline_query"] = json!(BASELINE_Q);
        },
        &format!("{c}.baseline"),
    );
    // no baseline query and no baseline_metrics figure: nothing to compare with
    invalid_at(
        |v| {
            baseline_stage(v);
            v["stages"][0]["rollback_criteria"][0]
                .as_object_mut()
                .unwrap()
                .remove("baseline_query");
            v["baseline_metrics"] = json!({});
        },
        &format!("{c}.baseline"),
    );
    // the plan's baseline_metrics figure is the fallback
    let plan = parse(|v| {
        baseline_stage(v);
        v["stages"][0]["rollback_criteria"][0]
            .as_object_mut()
            .unwrap()
            .remove("baseline_query");
    })
    .unwrap();
    assert_eq!(
        plan.stages()[0].rollback_criteria[0].baseline_reference,
        Some(0.004)
    );
}

#[test]
fn the_inconclusive_policy_is_validated_with_its_paths() {
    let s = "plan.stages[0]";
    invalid_at(
        |v| {
            query_stage(v);
            v["stages"][0]["inconclusive_limit"] = json!(0);
        },
        &format!("{s}.inconclusive_limit"),
    );
    invalid_at(
        |v| {
            query_stage(v);
            v["stages"][0]["inconclusive_limit"] = json!(3);
            v["stages"][0]["on_inconclusive"] = json!("panic");
        },
        &format!("{s}.on_inconclusive"),
    );
    invalid_at(
        |v| {
            query_stage(v);
            v["stages"][0]["on_inconclusive"] = json!("pause");
        },
        &format!("{s}.inconclusive_limit"),
    );
}

// --- who records evaluations -----------------------------------------------------------

#[test]
fn only_rollgate_itself_records_evaluations() {
    let s = running_with(query_stage);
    for caller in [bot(), sam(), rita()] {
        let e = given_scenario(&s)
            .when(
                record(vec![evaluation(Some(0.001), 500, 5)]),
                &ctx(&caller, 5),
            )
            .then_error(Rule::Permission);
        assert!(matches!(e, DomainError::SystemOnly { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Forbidden);
    }
    let events = given_scenario(&s)
        .when(
            record(vec![evaluation(Some(0.001), 500, 5)]),
            &ctx(&evaluator(), 5),
        )
        .then_types(&["ReadingsRecorded"]);
    let E::ReadingsRecorded {
        source,
        evaluations,
        readings,
        ..
    } = &events[0]
    else {
        panic!()
    };
    assert_eq!(*source, ReadingSource::Prometheus);
    assert!(readings.is_empty());
    assert_eq!(evaluations[0].value, Some(0.001));
    // what callers post is always `posted`
    let events = given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.001, 500, 5)],
            },
            &ctx(&bot(), 5),
        )
        .events();
    assert!(matches!(
        events[0],
        E::ReadingsRecorded {
            source: ReadingSource::Posted,
            ..
        }
    ));
}

#[test]
fn the_system_actor_is_never_read_from_json() {
    assert!(evaluator().is_system());
    assert!(!bot().is_system());
    let mut json = serde_json::to_value(evaluator()).unwrap();
    assert!(json.get("system").is_none());
    json["system"] = json!(true);
    let forged: Actor = serde_json::from_value(json).unwrap();
    assert!(!forged.is_system());
    given_scenario(&running_with(query_stage))
        .when(
            record(vec![evaluation(Some(0.001), 500, 5)]),
            &ctx(&forged, 5),
        )
        .then_error(Rule::Permission);
}

#[test]
fn evaluations_are_recorded_only_while_running() {
    let s = running_with(query_stage).run(
        &sam(),
        5,
        C::Pause {
            reason: "hold".into(),
        },
    );
    given_scenario(&s)
        .when(
            record(vec![evaluation(Some(0.001), 500, 6)]),
            &ctx(&evaluator(), 6),
        )
        .then_error_kind(ErrorKind::Conflict);
}

#[test]
fn evaluations_are_validated_with_their_paths() {
    let s = running_with(query_stage);
    let when =
        |e: QueryEvaluation| given_scenario(&s).when(record(vec![e]), &ctx(&evaluator(), 100));
    let mut unknown = evaluation(Some(0.001), 500, 100);
    unknown.metric = MetricName::parse("latency_ms").unwrap();
    when(unknown).then_invalid("evaluations[0].metric");
    when(evaluation(Some(f64::NAN), 500, 100)).then_invalid("evaluations[0].value");
    when(with_baseline(
        evaluation(Some(0.1), 500, 100),
        f64::INFINITY,
        500,
    ))
    .then_invalid("evaluations[0].baseline_value");
    when(evaluation(None, 500, 100)).then_invalid("evaluations[0].value");
    when(failed(" ", 100)).then_invalid("evaluations[0].inconclusive");
    when(evaluation(Some(0.001), 500, 100 + 61)).then_invalid("evaluations[0].evaluated_at");
    given_scenario(&s)
        .when(record(vec![]), &ctx(&evaluator(), 100))
        .then_invalid("evaluations");
}

// --- judging query criteria -----------------------------------------------------------

#[test]
fn a_breaching_evaluation_rolls_back_with_its_value() {
    let s = running_with(query_stage);
    let events = given_scenario(&s)
        .when(
            record(vec![evaluation(Some(0.09), 5000, 100)]),
            &ctx(&evaluator(), 100),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
    let E::GuardrailBreached { reading, .. } = &events[1] else {
        panic!()
    };
    assert_eq!(reading.value, 0.09);
    assert_eq!(reading.observed_at, at(100));
    let E::RolledBack {
        automatic, reason, ..
    } = &events[2]
    else {
        panic!()
    };
    assert!(*automatic);
    assert!(
        reason.contains("error_rate gt 0.05: value 0.09"),
        "{reason}"
    );
}

#[test]
fn posted_readings_do_not_feed_a_query_criterion() {
    let s = running_with(query_stage);
    // a breaching posted reading: the query criterion is judged on evaluations only
    given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.9, 5000, 100)],
            },
            &ctx(&sam(), 100),
        )
        .then_types(&["ReadingsRecorded"]);
    // nor can a good posted reading hide a breaching evaluation
    let s = s.readings(vec![reading("error_rate", 0.0001, 5000, 100)], 100);
    given_scenario(&s)
        .when(
            record(vec![evaluation(Some(0.09), 5000, 110)]),
            &ctx(&evaluator(), 110),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
}

#[test]
fn an_evaluation_with_too_few_samples_or_an_error_never_passes() {
    let s = running_with(query_stage);
    // 9 samples < 10: no breach, however bad the value
    given_scenario(&s)
        .when(
            record(vec![evaluation(Some(0.9), 9, 100)]),
            &ctx(&evaluator(), 100),
        )
        .then_types(&["ReadingsRecorded"]);
    // an errored query leaves the success criterion inconclusive: no advance without override
    let s = s
        .run(&rita(), 10, C::RequestAdvance { request_id: rid(1) })
        .approve(&ann(), 1, 20)
        .approve(&abe(), 1, 20)
        .approve(&sam(), 1, 20)
        .run(
            &evaluator(),
            30,
            record(vec![failed(
                "Prometheus unreachable: connection refused",
                30,
            )]),
        );
    let e = given_scenario(&s)
        .when(
            C::Advance {
                request_id: rid(1),
                inconclusive_override: None,
            },
            &ctx(&rita(), 3600),
        )
        .then_error(Rule::R4);
    assert!(e.to_string().contains("connection refused"), "{e}");
    // a good evaluation passes it
    let s = s.run(
        &evaluator(),
        40,
        record(vec![evaluation(Some(0.001), 500, 40)]),
    );
    given_scenario(&s)
        .when(
            C::Advance {
                request_id: rid(1),
                inconclusive_override: None,
            },
            &ctx(&rita(), 3600),
        )
        .then_types(&["Advanced"]);
}

#[test]
fn canary_against_baseline_breaches_on_the_ratio_not_the_level() {
    let s = running_with(baseline_stage);
    // canary 3 %, baseline 2 %: ratio 1.5 > 1.2
    let events = given_scenario(&s)
        .when(
            record(vec![with_baseline(
                evaluation(Some(0.03), 5000, 100),
                0.02,
                5000,
            )]),
            &ctx(&evaluator(), 100),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
    let E::RolledBack { reason, .. } = &events[2] else {
        panic!()
    };
    assert!(reason.contains("baseline 0.02"), "{reason}");
    // both rise together: ratio 1.0, fine
    given_scenario(&s)
        .when(
            record(vec![with_baseline(
                evaluation(Some(0.03), 5000, 100),
                0.03,
                5000,
            )]),
            &ctx(&evaluator(), 100),
        )
        .then_types(&["ReadingsRecorded"]);
    // exactly at the allowed multiple: fine
    given_scenario(&s)
        .when(
            record(vec![with_baseline(
                evaluation(Some(0.024), 5000, 100),
                0.02,
                5000,
            )]),
            &ctx(&evaluator(), 100),
        )
        .then_types(&["ReadingsRecorded"]);
}

#[test]
fn min_samples_applies_to_the_baseline_too() {
    let s = running_with(baseline_stage); // min_samples 200
    given_scenario(&s)
        .when(
            record(vec![with_baseline(
                evaluation(Some(0.5), 5000, 100),
                0.02,
                199,
            )]),
            &ctx(&evaluator(), 100),
        )
        .then_types(&["ReadingsRecorded"]);
    given_scenario(&s)
        .when(
            record(vec![with_baseline(
                evaluation(Some(0.5), 5000, 100),
                0.02,
                200,
            )]),
            &ctx(&evaluator(), 100),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
}

#[test]
fn a_zero_baseline_gives_no_ratio_and_is_inconclusive() {
    let s = running_with(baseline_stage);
    let s2 = s.clone().run(
        &evaluator(),
        100,
        record(vec![with_baseline(
            evaluation(Some(0.5), 5000, 100),
            0.0,
            5000,
        )]),
    );
    assert_eq!(s2.state.status(), Some(RolloutStatus::Running));
    let r = s2.state.rollout().unwrap();
    let e = rollgate_domain::evaluate(
        &r.current_stage().unwrap().rollback_criteria[0],
        rollgate_domain::CriterionKind::Rollback,
        &r.readings,
    );
    assert_eq!(e.verdict, rollgate_domain::Verdict::Inconclusive);
    assert_eq!(e.reason.as_deref(), Some("the baseline is 0: no ratio"));
}

#[test]
fn the_plans_baseline_metric_is_the_fallback_reference() {
    // difference to baseline_metrics.error_rate (0.004) at most 0.01, judged on posted readings
    let s = running_with(|v| {
        v["stages"][0]["success_criteria"] = json!([]);
        v["stages"][0]["rollback_criteria"] = json!([{
            "metric": "error_rate", "baseline": {"relation": "difference", "max": 0.01}
        }]);
    });
    given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.014, 500, 5)],
            },
            &ctx(&bot(), 5),
        )
        .then_types(&["ReadingsRecorded"]);
    given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.0141, 500, 5)],
            },
            &ctx(&bot(), 5),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
}

// --- consecutive inconclusive evaluations ---------------------------------------------------

fn limited(action: &str) -> impl FnOnce(&mut Value) + '_ {
    move |v: &mut Value| {
        query_stage(v);
        v["stages"][0]["inconclusive_limit"] = json!(3);
        v["stages"][0]["on_inconclusive"] = json!(action);
    }
}

#[test]
fn the_limit_of_consecutive_inconclusive_evaluations_pauses_with_the_reason() {
    let s = running_with(limited("pause"))
        .run(
            &evaluator(),
            15,
            record(vec![failed("query timed out after 10s", 15)]),
        )
        .run(&evaluator(), 30, record(vec![failed("no series", 30)]));
    assert_eq!(s.state.status(), Some(RolloutStatus::Running));
    let events = given_scenario(&s)
        .when(
            record(vec![failed("Prometheus unreachable", 45)]),
            &ctx(&evaluator(), 45),
        )
        .then_types(&["ReadingsRecorded", "Paused"]);
    let E::Paused {
        reason, automatic, ..
    } = &events[1]
    else {
        panic!()
    };
    assert!(*automatic);
    assert!(
        reason.contains("3 consecutive inconclusive evaluations")
            && reason.contains("Prometheus unreachable"),
        "{reason}"
    );
}

#[test]
fn a_conclusive_evaluation_or_a_resume_starts_the_count_over() {
    let s = running_with(limited("pause"))
        .run(&evaluator(), 15, record(vec![failed("no series", 15)]))
        .run(&evaluator(), 30, record(vec![failed("no series", 30)]))
        .run(
            &evaluator(),
            45,
            record(vec![evaluation(Some(0.001), 500, 45)]),
        )
        .run(&evaluator(), 60, record(vec![failed("no series", 60)]))
        .run(&evaluator(), 75, record(vec![failed("no series", 75)]));
    assert_eq!(s.state.status(), Some(RolloutStatus::Running));
    let m = s
        .state
        .rollout()
        .unwrap()
        .readings
        .evaluation(&MetricName::parse("error_rate").unwrap())
        .unwrap()
        .clone();
    assert_eq!((m.count, m.consecutive_inconclusive), (5, 2));
    // too few samples count as inconclusive as well
    let paused = s.run(
        &evaluator(),
        90,
        record(vec![evaluation(Some(0.001), 5, 90)]),
    );
    assert_eq!(paused.state.status(), Some(RolloutStatus::Paused));
    let resumed = paused.run(&sam(), 100, C::Resume);
    given_scenario(&resumed)
        .when(
            record(vec![failed("no series", 105)]),
            &ctx(&evaluator(), 105),
        )
        .then_types(&["ReadingsRecorded"]);
}

#[test]
fn with_record_the_inconclusive_evaluations_are_only_recorded() {
    let s = running_with(limited("record"))
        .run(&evaluator(), 15, record(vec![failed("no series", 15)]))
        .run(&evaluator(), 30, record(vec![failed("no series", 30)]));
    given_scenario(&s)
        .when(
            record(vec![failed("no series", 45)]),
            &ctx(&evaluator(), 45),
        )
        .then_types(&["ReadingsRecorded"]);
}

#[test]
fn an_interval_already_recorded_for_a_metric_is_refused_and_nothing_is_written() {
    // given intervals 1 and 2 (scheduled at 15 s and 30 s) recorded
    let s = running_with(query_stage)
        .run(
            &evaluator(),
            15,
            record(vec![evaluation(Some(0.001), 500, 15)]),
        )
        .run(
            &evaluator(),
            30,
            record(vec![evaluation(Some(0.001), 500, 30)]),
        );
    let already = |e: &DomainError| {
        matches!(e, DomainError::AlreadyEvaluated { latest, .. } if *latest == at(30))
            && e.kind() == ErrorKind::Conflict
            && e.rule().is_none()
    };
    // when interval 2 comes again (a restart, or a second instance), later on the clock,
    // even with another value or as inconclusive: refused
    given_scenario(&s)
        .when(
            record(vec![evaluation(Some(0.09), 5000, 30)]),
            &ctx(&evaluator(), 40),
        )
        .then_refused(already);
    given_scenario(&s)
        .when(
            record(vec![failed("no series", 30)]),
            &ctx(&evaluator(), 40),
        )
        .then_refused(already);
    // an older interval is refused as well
    given_scenario(&s)
        .when(
            record(vec![evaluation(Some(0.001), 500, 15)]),
            &ctx(&evaluator(), 40),
        )
        .then_refused(already);
    // one batch naming the metric twice at one instant records it once: refused
    given_scenario(&s)
        .when(
            record(vec![
                evaluation(Some(0.001), 500, 45),
                evaluation(Some(0.001), 500, 45),
            ]),
            &ctx(&evaluator(), 45),
        )
        .then_refused(
            |e| matches!(e, DomainError::AlreadyEvaluated { latest, .. } if *latest == at(45)),
        );
    // the next interval is recorded
    given_scenario(&s)
        .when(
            record(vec![evaluation(Some(0.001), 500, 45)]),
            &ctx(&evaluator(), 45),
        )
        .then_types(&["ReadingsRecorded"]);
    // and the kept state still holds interval 2, counted once
    let kept = s
        .state
        .rollout()
        .unwrap()
        .readings
        .evaluation(&MetricName::parse("error_rate").unwrap())
        .unwrap()
        .clone();
    assert_eq!((kept.count, kept.latest.evaluated_at), (2, at(30)));
}

#[test]
fn each_criterion_of_the_stage_shows_its_last_evaluation_and_verdict() {
    use rollgate_domain::guardrail::CriterionKind;
    use rollgate_domain::rollout::LastObservation;
    use rollgate_domain::Verdict;
    // given a running stage judged by queries, nothing evaluated yet
    let s = running_with(query_stage);
    let r = s.state.rollout().unwrap();
    let status = r.criteria_status();
    let shape: Vec<_> = status
        .iter()
        .map(|c| (c.kind, c.index, c.evaluation.verdict, c.last.is_some()))
        .collect();
    assert_eq!(
        shape,
        [
            (CriterionKind::Success, 0, Verdict::Inconclusive, false),
            (CriterionKind::Rollback, 0, Verdict::Inconclusive, false),
        ]
    );
    // when an evaluation is recorded, both criteria on its metric stand on it
    let s = s.run(
        &evaluator(),
        15,
        record(vec![evaluation(Some(0.001), 500, 15)]),
    );
    let r = s.state.rollout().unwrap();
    for c in r.criteria_status() {
        assert_eq!(c.evaluation.verdict, Verdict::Pass);
        assert_eq!(
            (c.evaluation.value, c.evaluation.samples),
            (Some(0.001), 500)
        );
        let Some(LastObservation::Prometheus(e)) = c.last else {
            panic!("judged on an evaluation: {c:?}")
        };
        assert_eq!((e.latest.evaluated_at, e.recorded_at), (at(15), at(15)));
    }
    // an inconclusive one carries its reason
    let s = s.run(&evaluator(), 30, record(vec![failed("no series", 30)]));
    let r = s.state.rollout().unwrap();
    let c = &r.criteria_status()[1];
    assert_eq!(c.evaluation.verdict, Verdict::Inconclusive);
    assert_eq!(c.evaluation.reason.as_deref(), Some("no series"));
    // a baseline criterion shows both sides (1.1 times the baseline: within 1.2)
    let s = running_with(baseline_stage).run(
        &evaluator(),
        15,
        record(vec![with_baseline(
            evaluation(Some(0.011), 500, 15),
            0.01,
            400,
        )]),
    );
    let r = s.state.rollout().unwrap();
    let c = &r.criteria_status()[0];
    assert_eq!(c.evaluation.verdict, Verdict::Pass);
    assert_eq!(
        (c.evaluation.baseline_value, c.evaluation.baseline_samples),
        (Some(0.01), Some(400))
    );
    // a posted criterion stands on the latest posted reading
    let s = running_with(|_| {}).run(
        &bot(),
        20,
        C::RecordReadings {
            readings: vec![reading("error_rate", 0.001, 5000, 20)],
        },
    );
    let r = s.state.rollout().unwrap();
    let posted: Vec<_> = r
        .criteria_status()
        .into_iter()
        .filter(|c| c.criterion.metric.as_str() == "error_rate")
        .collect();
    assert!(!posted.is_empty());
    for c in posted {
        let Some(LastObservation::Posted(m)) = c.last else {
            panic!("judged on a posted reading: {c:?}")
        };
        assert_eq!(m.latest.recorded_at, at(20));
    }
}

// --- storage ---------------------------------------------------------------------------------

#[test]
fn evaluation_events_round_trip_through_their_stored_form() {
    let s = running_with(baseline_stage).run(
        &evaluator(),
        100,
        record(vec![with_baseline(
            evaluation(Some(0.03), 5000, 100),
            0.02,
            5000,
        )]),
    );
    for e in &s.events {
        let back = E::from_stored(e.event_type(), e.schema_version(), e.payload()).unwrap();
        assert_eq!(&back, e);
    }
    let last = s
        .events
        .iter()
        .rev()
        .find(|e| e.event_type() == "ReadingsRecorded")
        .unwrap();
    assert_eq!(last.payload()["source"], json!("prometheus"));
    assert!(
        last.summary().contains("error_rate = 0.03"),
        "{}",
        last.summary()
    );
    // a plan with query criteria round-trips inside RolloutCreated
    assert!(matches!(s.events[0], E::RolloutCreated { .. }));
}
