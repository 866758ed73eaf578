//! Templated values cannot leave their label matcher: checked by a real Prometheus.
//!
//! The exporter serves one series per hostile stage name, each with a distinct power-of-two
//! count, so the sum a query returns says exactly which series it matched.

mod support;

use std::time::Duration;

use chrono::Utc;
use rollgate_prometheus::{render, Prometheus, PrometheusConfig, TemplateVars};
use support::{eventually, Exporter, PrometheusProcess};

const STAGES: [&str; 8] = [
    "beta",
    r#"beta"} or vector(1000) #"#,
    r"back\slash",
    "brace}{",
    "line\nbreak",
    ".*",
    r#"quote""#,
    r#"x",stage=~".+"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stage_value_matches_only_its_own_series() {
    let exporter = Exporter::start().await;
    for (i, stage) in STAGES.iter().enumerate() {
        exporter.add("canary", stage, "200", 1 << i);
    }
    let prom = PrometheusProcess::start(&[exporter.port]).await;
    let client = Prometheus::new(PrometheusConfig::new(&prom.url)).unwrap();
    let all = (1u64 << STAGES.len()) - 1;
    eventually("every series scraped", Duration::from_secs(20), || async {
        let v = client.value("sum(requests_total)", Utc::now()).await.ok()?;
        (v.value as u64 == all).then_some(())
    })
    .await;

    for template in [
        r#"sum(requests_total{track="canary",stage="{{stage}}"})"#,
        r#"sum(requests_total{stage=~"{{stage}}",track="canary"})"#,
        r#"sum(requests_total{stage = "{{ stage }}"}) or vector(1000)"#,
    ] {
        for (i, stage) in STAGES.iter().enumerate() {
            let vars = TemplateVars {
                stage,
                feature_key: "checkout",
            };
            let query = render(template, &vars).unwrap();
            let got = client
                .value(&query, Utc::now())
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(
                got.value as u64,
                1 << i,
                "stage {stage:?} rendered as {query} matched other series"
            );
        }
    }

    // A value matching no series stays a matcher that matches nothing.
    let vars = TemplateVars {
        stage: r#"nope"} or vector(7) #"#,
        feature_key: "k",
    };
    let query = render(r#"sum(requests_total{stage="{{stage}}"})"#, &vars).unwrap();
    assert_eq!(
        client.value(&query, Utc::now()).await.unwrap_err().code(),
        "no_data",
        "{query}"
    );
}
