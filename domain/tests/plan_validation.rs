//! Plan validation: every violation reported, each at its field path.

mod common;

use common::*;
use rollgate_domain::plan::{OnBreach, Plan, PlanSpec};
use rollgate_domain::rollout::CreateRolloutSpec;
use rollgate_domain::{Comparator, Role, RolloutCommand, RolloutId, ValidationErrors};
use serde_json::{json, Value};
use uuid::Uuid;

fn example_plan_json() -> Value {
    let body: Value = serde_json::from_str(EXAMPLE).unwrap();
    body["plan"].clone()
}

fn parse(v: Value) -> Result<Plan, ValidationErrors> {
    Plan::parse(serde_json::from_value::<PlanSpec>(v).unwrap())
}

fn errors_of(f: impl FnOnce(&mut Value)) -> ValidationErrors {
    let mut v = example_plan_json();
    f(&mut v);
    parse(v).expect_err("plan should be invalid")
}

fn fields(e: &ValidationErrors) -> Vec<&str> {
    e.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn the_example_plan_is_valid() {
    let plan = parse(example_plan_json()).unwrap();
    assert_eq!(plan.owner(), "alice");
    assert_eq!(plan.stages().len(), 3);
    let beta = &plan.stages()[1];
    assert_eq!(beta.name, "beta-5");
    assert_eq!(beta.audience.percentage.get(), 5.0);
    assert_eq!(beta.min_soak_seconds, 172_800);
    assert_eq!(beta.on_breach, OnBreach::Rollback);
    assert_eq!(beta.approvals.len(), 2);
    assert_eq!(beta.approvals[0].count, 2);
    assert!(beta.approvals[1].roles.contains(&Role::Sre));
    assert_eq!(beta.success_criteria[1].comparator, Comparator::Lte);
    assert_eq!(plan.stages()[2].on_breach, OnBreach::Pause);
    assert_eq!(plan.readiness_checklist().len(), 3);
    assert_eq!(plan.contingencies().len(), 2);
    assert!(plan.communications().external.is_some());
    // the validated plan survives serde (it is stored inside events)
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(serde_json::from_value::<Plan>(json).unwrap(), plan);
}

#[test]
fn the_example_create_body_parses_into_a_create_command() {
    let spec: CreateRolloutSpec = serde_json::from_str(EXAMPLE).unwrap();
    let cmd = spec.parse(RolloutId::new(Uuid::from_u128(1))).unwrap();
    assert!(matches!(cmd, RolloutCommand::Create { .. }));
}

#[test]
fn create_body_errors_are_all_reported() {
    let mut body: Value = serde_json::from_str(EXAMPLE).unwrap();
    body["feature_key"] = json!("Not A Slug");
    body["title"] = json!("");
    body["team"] = json!("");
    body["plan"]["stages"][0]["min_soak_seconds"] = json!(-1);
    let spec: CreateRolloutSpec = serde_json::from_value(body).unwrap();
    let e = spec.parse(RolloutId::new(Uuid::from_u128(1))).unwrap_err();
    assert_eq!(
        fields(&e),
        vec![
            "feature_key",
            "title",
            "team",
            "plan.stages[0].min_soak_seconds"
        ]
    );
}

#[test]
fn unknown_fields_are_refused_naming_the_field() {
    let mut v = example_plan_json();
    v["stages"][0]["audience"]["percent"] = json!(3);
    let err = serde_json::from_value::<PlanSpec>(v)
        .unwrap_err()
        .to_string();
    assert!(err.contains("percent"), "{err}");
    let mut body: Value = serde_json::from_str(EXAMPLE).unwrap();
    body["owner"] = json!("x");
    let err = serde_json::from_value::<CreateRolloutSpec>(body)
        .unwrap_err()
        .to_string();
    assert!(err.contains("owner"), "{err}");
}

#[test]
fn decreasing_percentage_is_located() {
    let e = errors_of(|v| v["stages"][2]["audience"]["percentage"] = json!(4));
    assert_eq!(fields(&e), vec!["plan.stages[2].audience.percentage"]);
}

#[test]
fn percentage_out_of_range() {
    let e = errors_of(|v| v["stages"][2]["audience"]["percentage"] = json!(101));
    assert_eq!(fields(&e), vec!["plan.stages[2].audience.percentage"]);
    let e = errors_of(|v| v["stages"][0]["audience"]["percentage"] = json!(-1));
    assert_eq!(fields(&e), vec!["plan.stages[0].audience.percentage"]);
}

#[test]
fn at_least_one_stage() {
    let e = errors_of(|v| v["stages"] = json!([]));
    assert_eq!(fields(&e), vec!["plan.stages"]);
}

#[test]
fn stage_names_are_unique_and_present() {
    let e = errors_of(|v| v["stages"][1]["name"] = json!("internal"));
    assert_eq!(fields(&e), vec!["plan.stages[1].name"]);
    let e = errors_of(|v| v["stages"][0]["name"] = json!(" "));
    assert_eq!(fields(&e), vec!["plan.stages[0].name"]);
}

#[test]
fn criteria_are_well_formed() {
    let e = errors_of(|v| {
        v["stages"][1]["success_criteria"][1]["comparator"] = json!("eq");
        v["stages"][1]["success_criteria"][0]["metric"] = json!("");
        v["stages"][0]["rollback_criteria"][0]["min_samples"] = json!(-5);
    });
    assert_eq!(
        fields(&e),
        vec![
            "plan.stages[0].rollback_criteria[0].min_samples",
            "plan.stages[1].success_criteria[0].metric",
            "plan.stages[1].success_criteria[1].comparator",
        ]
    );
}

#[test]
fn rollback_min_samples_is_optional() {
    let mut v = example_plan_json();
    v["stages"][0]["rollback_criteria"][0]
        .as_object_mut()
        .unwrap()
        .remove("min_samples");
    let plan = parse(v).unwrap();
    assert_eq!(plan.stages()[0].rollback_criteria[0].min_samples, 0);
}

#[test]
fn on_breach_defaults_to_pause_and_refuses_others() {
    let mut v = example_plan_json();
    v["stages"][0].as_object_mut().unwrap().remove("on_breach");
    assert_eq!(parse(v).unwrap().stages()[0].on_breach, OnBreach::Pause);
    let e = errors_of(|v| v["stages"][0]["on_breach"] = json!("panic"));
    assert_eq!(fields(&e), vec!["plan.stages[0].on_breach"]);
}

#[test]
fn quorum_rules_are_required_and_well_formed() {
    let e = errors_of(|v| v["stages"][0]["approvals"] = json!([]));
    assert_eq!(fields(&e), vec!["plan.stages[0].approvals"]);
    let e = errors_of(|v| {
        v["stages"][1]["approvals"][0]["count"] = json!(0);
        v["stages"][1]["approvals"][1]["roles"] = json!(["wizard"]);
        v["stages"][2]["approvals"][0]["roles"] = json!([]);
    });
    assert_eq!(
        fields(&e),
        vec![
            "plan.stages[1].approvals[0].count",
            "plan.stages[1].approvals[1].roles[0]",
            "plan.stages[2].approvals[0].roles",
        ]
    );
    let e = errors_of(|v| v["stages"][0]["approvals"][0]["roles"] = json!(["auditor"]));
    assert_eq!(fields(&e), vec!["plan.stages[0].approvals[0].roles[0]"]);
}

#[test]
fn readiness_items_have_unique_slug_keys_and_known_roles() {
    let e = errors_of(|v| {
        v["readiness_checklist"][1]["key"] = json!("qa-signoff");
        v["readiness_checklist"][2]["owner_role"] = json!("boss");
    });
    assert_eq!(
        fields(&e),
        vec![
            "plan.readiness_checklist[1].key",
            "plan.readiness_checklist[2].owner_role"
        ]
    );
    let e = errors_of(|v| v["readiness_checklist"][0]["key"] = json!("QA Signoff"));
    assert_eq!(fields(&e), vec!["plan.readiness_checklist[0].key"]);
}

#[test]
fn contingencies_need_scenario_action_owner() {
    let e = errors_of(|v| {
        v["contingencies"][1]["scenario"] = json!("");
        v["contingencies"][1]["action"] = json!("");
        v["contingencies"][0]["owner"] = json!("");
        v["contingencies"][0]["time_horizon_seconds"] = json!(-1);
    });
    assert_eq!(
        fields(&e),
        vec![
            "plan.contingencies[0].owner",
            "plan.contingencies[0].time_horizon_seconds",
            "plan.contingencies[1].scenario",
            "plan.contingencies[1].action",
        ]
    );
}

#[test]
fn negative_soak_and_every_error_at_once() {
    let e = errors_of(|v| {
        v["owner"] = json!("");
        v["stages"][0]["min_soak_seconds"] = json!(-60);
        v["stages"][2]["audience"]["percentage"] = json!(1);
    });
    assert_eq!(
        fields(&e),
        vec![
            "plan.owner",
            "plan.stages[0].min_soak_seconds",
            "plan.stages[2].audience.percentage",
        ]
    );
    assert!(e.to_string().contains("plan.owner: must not be empty"));
}

#[test]
fn the_test_fixture_plan_is_valid() {
    let plan = test_plan();
    assert_eq!(plan.stages().len(), 3);
}
