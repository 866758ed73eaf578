//! The flagd export: exposure per lifecycle state, the file's shape, and the
//! file evaluated by the real `@openfeature/flagd-core` (npm) with its schema
//! validation on.
//!
//! The evaluator runs with the system `node` and the node_modules folder in
//! `ROLLGATE_NODE_MODULES` (else target/xtask/node/node_modules, where
//! `cargo xtask test` installs it); the checker is tests/js/flagd-check.mjs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rollgate_domain::flagd::{exposure, flag_file, COHORT_ATTRIBUTE, SCHEMA};
use rollgate_domain::plan::Plan;
use rollgate_domain::rollout::{RolloutCommand as C, RolloutState};
use rollgate_domain::{FeatureKey, RolloutId, Team};
use serde_json::{json, Value};
use uuid::Uuid;

/// Three stages: 5 % plus the `beta-opt-in` cohort, 25 %, 100 %; one approver
/// each, no soak, no criteria, no readiness items.
fn plan(percentages: [f64; 3]) -> Plan {
    let stage = |name: &str, p: f64, cohorts: &[&str]| {
        json!({
            "name": name,
            "audience": { "percentage": p, "cohorts": cohorts },
            "min_soak_seconds": 0,
            "approvals": [ { "roles": ["approver"], "count": 1 } ]
        })
    };
    let spec = json!({
        "owner": "rita",
        "stages": [
            stage("early", percentages[0], &["beta-opt-in"]),
            stage("wide", percentages[1], &[]),
            stage("all", percentages[2], &[]),
        ]
    });
    Plan::parse(serde_json::from_value(spec).unwrap()).unwrap()
}

fn create(key: &str, n: u128, plan: Plan) -> C {
    C::Create {
        id: RolloutId::new(Uuid::from_u128(n)),
        feature_key: FeatureKey::parse(key).unwrap(),
        title: key.to_owned(),
        team: team(),
        plan,
    }
}

/// Ready (empty checklist) at t=0.
fn ready(key: &str, n: u128, percentages: [f64; 3]) -> Scenario {
    Scenario::new().run(&rita(), 0, create(key, n, plan(percentages)))
}

fn advanced(s: Scenario, request: u128, secs: i64) -> Scenario {
    s.run(
        &rita(),
        secs,
        C::RequestAdvance {
            request_id: rid(request),
        },
    )
    .approve(&ann(), request, secs)
    .run(
        &rita(),
        secs,
        C::Advance {
            request_id: rid(request),
            inconclusive_override: None,
        },
    )
}

fn at_stage(key: &str, n: u128, stage: u32) -> Scenario {
    let mut s = ready(key, n, [5.0, 25.0, 100.0]).run(&rita(), 0, C::Start);
    for i in 0..stage {
        s = advanced(s, u128::from(i) + 1, 10 * (i64::from(i) + 1));
    }
    s
}

fn rolled_back(key: &str, n: u128) -> Scenario {
    at_stage(key, n, 1).run(
        &sam(),
        100,
        C::Rollback {
            to_stage: None,
            reason: "errors".into(),
        },
    )
}

fn completed(key: &str, n: u128) -> Scenario {
    at_stage(key, n, 2).run(&rita(), 100, C::Complete)
}

fn rollout(s: &Scenario) -> &rollgate_domain::rollout::Rollout {
    s.state.rollout().unwrap()
}

fn on_percent(s: &Scenario) -> u8 {
    exposure(rollout(s)).on_percent
}

// --- exposure per state --------------------------------------------------------

#[test]
fn zero_before_start() {
    let s = ready("f", 1, [5.0, 25.0, 100.0]);
    let e = exposure(rollout(&s));
    assert_eq!(e.on_percent, 0);
    assert!(e.cohorts.is_empty());
}

#[test]
fn the_stage_percentage_and_every_entered_stage_cohort_while_in_a_stage() {
    assert_eq!(on_percent(&at_stage("f", 1, 0)), 5);
    assert_eq!(on_percent(&at_stage("f", 1, 1)), 25);
    let e = exposure(rollout(&at_stage("f", 1, 1)));
    assert_eq!(e.cohorts.into_iter().collect::<Vec<_>>(), ["beta-opt-in"]);
    let paused = at_stage("f", 1, 1).run(
        &sam(),
        50,
        C::Pause {
            reason: "look".into(),
        },
    );
    assert_eq!(on_percent(&paused), 25, "a pause keeps the exposure");
}

#[test]
fn hundred_when_completed() {
    assert_eq!(on_percent(&completed("f", 1)), 100);
    // even when the last stage exposes less than everyone
    let s = ready("g", 2, [5.0, 25.0, 50.0]).run(&rita(), 0, C::Start);
    let s = advanced(advanced(s, 1, 10), 2, 20).run(&rita(), 30, C::Complete);
    assert_eq!(on_percent(&s), 100);
}

#[test]
fn zero_after_a_rollback_to_zero_and_after_an_abort() {
    let s = rolled_back("f", 1);
    let e = exposure(rollout(&s));
    assert_eq!((e.on_percent, e.cohorts.len()), (0, 0));
    let aborted = at_stage("f", 1, 1).run(&rita(), 100, C::Abort { reason: "x".into() });
    assert_eq!(on_percent(&aborted), 0);
    assert!(exposure(rollout(&aborted)).cohorts.is_empty());
    // a rollback to an earlier stage exposes that stage
    let back_to_0 = at_stage("f", 1, 2).run(
        &sam(),
        100,
        C::Rollback {
            to_stage: Some(rollgate_domain::StageIndex::FIRST),
            reason: "errors".into(),
        },
    );
    assert_eq!(on_percent(&back_to_0), 5);
}

#[test]
fn fractional_percentages_round_down() {
    let s = ready("f", 1, [0.5, 25.0, 100.0]).run(&rita(), 0, C::Start);
    assert_eq!(on_percent(&s), 0);
    let s = ready("f", 1, [12.9, 25.0, 100.0]).run(&rita(), 0, C::Start);
    assert_eq!(on_percent(&s), 12);
}

// --- the file ---------------------------------------------------------------------

#[test]
fn one_flag_per_feature_key_with_cohort_rule_then_fractional() {
    let s = at_stage("checkout", 1, 0);
    let file = flag_file(&team(), [rollout(&s)]);
    assert_eq!(file["$schema"], SCHEMA);
    let flag = &file["flags"]["checkout"];
    assert_eq!(flag["state"], "ENABLED");
    assert_eq!(flag["variants"], json!({"on": true, "off": false}));
    assert_eq!(flag["defaultVariant"], "off");
    assert_eq!(
        flag["targeting"],
        json!({
            "if": [
                { "in": [ { "var": COHORT_ATTRIBUTE }, ["beta-opt-in"] ] },
                "on",
                { "fractional": [
                    { "cat": [ { "var": "$flagd.flagKey" }, { "var": "targetingKey" } ] },
                    ["on", 5], ["off", 95]
                ] }
            ]
        })
    );
    assert_eq!(flag["metadata"]["stage"], 0);
    assert_eq!(flag["metadata"]["status"], "running");
    assert_eq!(flag["metadata"]["rollout_id"], rollout(&s).id.to_string());
    // without cohorts the targeting is the fractional alone, weights summing to 100
    let before = ready("checkout", 1, [5.0, 25.0, 100.0]);
    let t = &flag_file(&team(), [rollout(&before)])["flags"]["checkout"]["targeting"];
    assert_eq!(t["fractional"][1], json!(["on", 0]));
    assert_eq!(t["fractional"][2], json!(["off", 100]));
}

#[test]
fn a_live_rollout_wins_a_shared_key_and_other_teams_are_left_out() {
    let old = completed("checkout", 1);
    let new = ready("checkout", 2, [5.0, 25.0, 100.0]).run(&rita(), 0, C::Start);
    let other = {
        let mut api = Scenario::new();
        let mut c = create("api-flag", 3, plan([5.0, 25.0, 100.0]));
        if let C::Create { team, .. } = &mut c {
            *team = Team::parse("api").unwrap();
        }
        let olga = rollgate_domain::Actor::new(
            id("olga"),
            [rollgate_domain::Role::ReleaseManager],
            rollgate_domain::TeamScope::parse(["api"]).unwrap(),
        );
        api = api.run(&olga, 0, c);
        api
    };
    let states: Vec<RolloutState> = vec![old.state, new.state.clone(), other.state];
    let file = flag_file(&team(), states.iter().filter_map(RolloutState::rollout));
    let flags = file["flags"].as_object().unwrap();
    assert_eq!(flags.keys().collect::<Vec<_>>(), ["checkout"]);
    assert_eq!(
        flags["checkout"]["metadata"]["rollout_id"],
        rollout(&new).id.to_string()
    );
}

// --- the real evaluator ------------------------------------------------------------

fn node_modules() -> PathBuf {
    if let Ok(dir) = std::env::var("ROLLGATE_NODE_MODULES") {
        return PathBuf::from(dir);
    }
    let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/xtask/node/node_modules");
    if fallback.join("@openfeature/flagd-core").is_dir() {
        return fallback;
    }
    panic!("@openfeature/flagd-core not found: set ROLLGATE_NODE_MODULES to a node_modules folder holding it (`cargo xtask test` installs it)");
}

fn node() -> PathBuf {
    for candidate in ["/usr/bin/node", "/usr/local/bin/node"] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    panic!("node not found: install Node.js 20 (Debian packages nodejs and npm); `cargo xtask test` checks for it");
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Runs the checker on `file` and returns its JSON report.
fn evaluate(file: &Value, cohorts: &[&str]) -> Value {
    let dir = std::env::temp_dir().join(format!("rollgate-flagd-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flags.json");
    std::fs::write(&path, serde_json::to_vec_pretty(file).unwrap()).unwrap();
    let out = Command::new(node())
        .arg(repo("tests/js/flagd-check.mjs"))
        .arg(node_modules())
        .arg(&path)
        .arg(repo("tests/fixtures/flagd/fractional-example.json"))
        .args(cohorts)
        .output()
        .expect("run node");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "checker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checker output {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn share(report: &Value, key: &str) -> f64 {
    let f = &report["flags"][key];
    assert_eq!(f["errors"], 0, "{f}");
    assert_eq!(f["total"], 10_000);
    f["on"].as_f64().unwrap() / 100.0
}

#[test]
fn flagd_core_evaluates_the_export_at_5_25_and_100_percent_and_0_after_a_rollback() {
    let five = at_stage("five", 1, 0);
    let twenty_five = at_stage("twenty-five", 2, 1);
    let hundred = at_stage("hundred", 3, 2);
    let done = completed("done", 4);
    let back = rolled_back("back", 5);
    let before = ready("before", 6, [5.0, 25.0, 100.0]);
    let all = [&five, &twenty_five, &hundred, &done, &back, &before];
    let file = flag_file(&team(), all.iter().map(|s| rollout(s)));

    let report = evaluate(&file, &["beta-opt-in", "someone-else"]);
    assert_eq!(report["loaded"], true, "{report}");
    for (key, expected) in [
        ("five", 5.0),
        ("twenty-five", 25.0),
        ("hundred", 100.0),
        ("done", 100.0),
        ("back", 0.0),
        ("before", 0.0),
    ] {
        let got = share(&report, key);
        assert!(
            (got - expected).abs() <= 1.0,
            "{key}: {got} % on, expected {expected} % ± 1"
        );
    }
    // cohort members are always on while a stage naming them is entered
    for key in ["five", "twenty-five", "hundred"] {
        assert_eq!(
            report["flags"][key]["cohorts"]["beta-opt-in"]["on"], 100,
            "{key}"
        );
    }
    // and never at 0 %
    for key in ["back", "before"] {
        assert_eq!(
            report["flags"][key]["cohorts"]["beta-opt-in"]["on"], 0,
            "{key}"
        );
    }
    // a cohort the plan does not name gets the percentage only
    let other = report["flags"]["five"]["cohorts"]["someone-else"]["on"]
        .as_u64()
        .unwrap();
    assert!(other < 30, "{other} of 100 non-members on at 5 %");
}

#[test]
fn flagd_core_refuses_a_broken_file_with_validation_on() {
    let s = at_stage("five", 1, 0);
    let good = flag_file(&team(), [rollout(&s)]);
    assert_eq!(evaluate(&good, &[])["loaded"], true);

    let mut broken = good.clone();
    broken["flags"]["five"]["state"] = json!("ON");
    let report = evaluate(&broken, &[]);
    assert_eq!(report["loaded"], false, "{report}");
    assert!(
        report["error"].as_str().unwrap().contains("state"),
        "{report}"
    );

    let mut broken = good;
    broken["flags"]["five"]["variants"]["on"] = json!("yes");
    broken["flags"]["five"]["variants"]["off"] = json!(0);
    assert_eq!(evaluate(&broken, &[])["loaded"], false);
}
