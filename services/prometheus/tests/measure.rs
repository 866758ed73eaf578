//! Measuring criteria against a real Prometheus: canary and baseline values and samples, the
//! reasons for inconclusive measurements, and query validation with field paths.

mod support;

use std::time::Duration;

use chrono::Utc;
use rollgate_prometheus::{
    measure, validate_criterion, CriterionQueries, Measured, Prometheus, PrometheusConfig, Side,
    TemplateVars,
};
use support::{eventually, Exporter, PrometheusProcess};

/// Error ratio and request count per track, templated on the stage.
fn criterion() -> CriterionQueries {
    let ratio = |track: &str| {
        format!(
            r#"sum(requests_total{{track="{track}",stage="{{{{stage}}}}",code=~"5.."}} or vector(0)) / sum(requests_total{{track="{track}",stage="{{{{stage}}}}"}})"#
        )
    };
    let count =
        |track: &str| format!(r#"sum(requests_total{{track="{track}",stage="{{{{stage}}}}"}})"#);
    CriterionQueries {
        query: ratio("canary"),
        samples_query: Some(count("canary")),
        baseline_query: Some(ratio("baseline")),
        baseline_samples_query: Some(count("baseline")),
    }
}

const VARS: TemplateVars<'static> = TemplateVars {
    stage: "beta",
    feature_key: "checkout",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_and_baseline_are_measured_together_or_not_at_all() {
    let exporter = Exporter::start().await;
    exporter.add("canary", "beta", "200", 380);
    exporter.add("canary", "beta", "500", 20);
    exporter.add("baseline", "beta", "200", 990);
    exporter.add("baseline", "beta", "500", 10);
    let mut prom = PrometheusProcess::start(&[exporter.port]).await;
    let client = Prometheus::new(PrometheusConfig::new(&prom.url)).unwrap();
    let queries = criterion().render(&VARS).unwrap();
    assert!(
        queries.query.contains(r#"stage="beta""#),
        "{}",
        queries.query
    );

    let m = eventually("both tracks scraped", Duration::from_secs(20), || async {
        let m = measure(&client, &queries, Utc::now()).await;
        match &m.measured {
            Measured::Observed {
                canary,
                baseline: Some(b),
            } if canary.samples == Some(400) && b.samples == Some(1000) => Some(m),
            _ => None,
        }
    })
    .await;
    let Measured::Observed { canary, baseline } = m.measured else {
        unreachable!()
    };
    assert!((canary.value - 0.05).abs() < 1e-9, "{canary:?}");
    let baseline = baseline.unwrap();
    assert!((baseline.value - 0.01).abs() < 1e-9, "{baseline:?}");
    assert_eq!(
        m.queries, queries,
        "the rendered queries are kept with the values"
    );

    // Without a baseline query there is no baseline side.
    let mut canary_only = queries.clone();
    canary_only.baseline_query = None;
    canary_only.baseline_samples_query = None;
    canary_only.samples_query = None;
    let m = measure(&client, &canary_only, Utc::now()).await;
    assert!(matches!(
        m.measured,
        Measured::Observed {
            canary: Side { samples: None, .. },
            baseline: None
        }
    ));

    // The baseline has no series for another stage: inconclusive, naming the query.
    let other = criterion()
        .render(&TemplateVars {
            stage: "ga",
            feature_key: "checkout",
        })
        .unwrap();
    exporter.add("canary", "ga", "200", 5);
    let m = eventually("the ga canary series", Duration::from_secs(20), || async {
        let m = measure(&client, &other, Utc::now()).await;
        match &m.measured {
            Measured::Inconclusive { field, .. } if field == "baseline_query" => Some(m),
            _ => None,
        }
    })
    .await;
    assert!(
        matches!(&m.measured, Measured::Inconclusive { code, reason, .. } if code == "no_data" && reason.contains("no series")),
        "{m:?}"
    );

    // Prometheus gone: inconclusive with the transport reason, never a value.
    prom.stop();
    let m = measure(&client, &queries, Utc::now()).await;
    match &m.measured {
        Measured::Inconclusive {
            field,
            code,
            reason,
        } => {
            assert_eq!(field, "query");
            assert_eq!(code, "unreachable");
            assert!(reason.contains("cannot reach Prometheus"), "{reason}");
        }
        other => panic!("expected inconclusive, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_queries_are_named_by_their_field_path() {
    let exporter = Exporter::start().await;
    let prom = PrometheusProcess::start(&[exporter.port]).await;
    let client = Prometheus::new(PrometheusConfig::new(&prom.url)).unwrap();
    let path = "plan.stages[1].rollback_criteria[0]";

    let valid = validate_criterion(Some(&client), path, &criterion(), &VARS)
        .await
        .unwrap();
    assert!(valid.is_empty(), "{valid:?}");

    let mut bad = criterion();
    bad.samples_query = Some("sum(rate(requests_total[1m])".into());
    bad.baseline_query = Some(r#"sum(requests_total{team="{{team}}"})"#.into());
    bad.baseline_samples_query = Some("requests_total[5m]".into());
    let invalid = validate_criterion(Some(&client), path, &bad, &VARS)
        .await
        .unwrap();
    let fields: Vec<_> = invalid.iter().map(|i| i.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "plan.stages[1].rollback_criteria[0].samples_query",
            "plan.stages[1].rollback_criteria[0].baseline_query",
            "plan.stages[1].rollback_criteria[0].baseline_samples_query",
        ]
    );
    assert!(invalid[0].message.contains("parse error"), "{invalid:?}");
    assert!(
        invalid[1].message.contains("unknown placeholder"),
        "{invalid:?}"
    );
    assert!(invalid[2].message.contains("range vector"), "{invalid:?}");

    // Without a Prometheus the templates are still checked.
    let invalid = validate_criterion(None, path, &bad, &VARS).await.unwrap();
    assert_eq!(invalid.len(), 1);
    assert_eq!(
        invalid[0].field,
        "plan.stages[1].rollback_criteria[0].baseline_query"
    );
}
