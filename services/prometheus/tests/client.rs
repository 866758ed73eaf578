//! The client against documented and captured answers, and against a real Prometheus.

mod support;

use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Utc;
use rollgate_prometheus::client::{decode_query_answer, InstantResult};
use rollgate_prometheus::{Auth, Prometheus, PrometheusConfig, QueryError, ValidationFailure};
use support::{eventually, Exporter, PrometheusProcess};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

#[test]
fn documented_and_captured_answers_decode() {
    // The documentation's `up` example holds two series: not one number.
    let docs = decode_query_answer(200, &fixture("api-docs-instant-vector-up.json")).unwrap();
    assert!(matches!(&docs, InstantResult::Vector(s) if s.len() == 2));
    assert_eq!(docs.single(), Err(QueryError::ManySeries(2)));

    let one = decode_query_answer(200, &fixture("real-2.42-vector-one-series.json")).unwrap();
    assert_eq!(one.single().unwrap().value, 1.0);

    let empty = decode_query_answer(200, &fixture("real-2.42-vector-empty.json")).unwrap();
    assert_eq!(empty.single(), Err(QueryError::NoData));

    let nan = decode_query_answer(200, &fixture("real-2.42-scalar-nan.json")).unwrap();
    assert_eq!(nan.single(), Err(QueryError::NotFinite("NaN".into())));

    let matrix = decode_query_answer(200, &fixture("real-2.42-matrix-empty.json")).unwrap();
    assert_eq!(
        matrix.single(),
        Err(QueryError::WrongResultType("matrix".into()))
    );
    let string = decode_query_answer(200, &fixture("real-2.42-string.json")).unwrap();
    assert_eq!(
        string.single(),
        Err(QueryError::WrongResultType("string".into()))
    );

    let err = decode_query_answer(400, &fixture("real-2.42-error-bad-data.json")).unwrap_err();
    assert_eq!(err.code(), "bad_data");
    assert!(
        matches!(err, QueryError::Api { status: 400, ref message, .. } if message.contains("unclosed left parenthesis"))
    );

    let not_api = decode_query_answer(404, &fixture("real-2.42-parse-query-404.txt")).unwrap_err();
    assert!(matches!(not_api, QueryError::Http { status: 404, .. }));
    assert!(matches!(
        decode_query_answer(200, b"{not json"),
        Err(QueryError::Decode(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_queries_against_a_real_prometheus() {
    let exporter = Exporter::start().await;
    exporter.add("canary", "beta", "200", 90);
    exporter.add("canary", "beta", "500", 10);
    exporter.add("baseline", "beta", "200", 100);
    let mut prom = PrometheusProcess::start(&[exporter.port]).await;
    let client = Prometheus::new(PrometheusConfig::new(&prom.url)).unwrap();

    let ratio =
        r#"sum(requests_total{track="canary",code=~"5.."}) / sum(requests_total{track="canary"})"#;
    let sample = eventually("the canary counters", Duration::from_secs(20), || async {
        client.value(ratio, Utc::now()).await.ok()
    })
    .await;
    assert!((sample.value - 0.1).abs() < 1e-9, "{sample:?}");

    // Several series unless aggregated; none; not finite.
    assert_eq!(
        client.value("requests_total", Utc::now()).await,
        Err(QueryError::ManySeries(3))
    );
    assert_eq!(
        client
            .value(r#"sum(requests_total{track="nope"})"#, Utc::now())
            .await,
        Err(QueryError::NoData)
    );
    assert_eq!(
        client
            .value(
                r#"sum(requests_total{track="baseline",code="500"} or vector(0)) / 0"#,
                Utc::now()
            )
            .await,
        Err(QueryError::NotFinite("NaN".into()))
    );
    assert_eq!(
        client.value("1/0", Utc::now()).await,
        Err(QueryError::NotFinite("+Inf".into()))
    );
    // Evaluated at a time before any scrape: no data, never a value.
    let before = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(client.value(ratio, before).await, Err(QueryError::NoData));
    // A parse error is the API's bad_data.
    let e = client.value("sum(", Utc::now()).await.unwrap_err();
    assert_eq!(e.code(), "bad_data", "{e}");

    // Validation on 2.42: no parse_query, so the past-time evaluation decides.
    client.validate(ratio).await.unwrap();
    client
        .validate("scalar(sum(requests_total))")
        .await
        .unwrap();
    client.validate("2 * 3").await.unwrap();
    for bad in [
        "sum(",
        "requests_total{track=\"a\\q\"}",
        "requests_total[1m]",
        "\"text\"",
        "  ",
    ] {
        assert!(
            matches!(
                client.validate(bad).await,
                Err(ValidationFailure::Invalid(_))
            ),
            "{bad:?} should be invalid"
        );
    }

    // Stopped: unreachable, and validation cannot answer.
    prom.stop();
    let e = client.value(ratio, Utc::now()).await.unwrap_err();
    assert_eq!(e.code(), "unreachable", "{e}");
    assert!(matches!(
        client.validate(ratio).await,
        Err(ValidationFailure::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_prometheus_that_does_not_answer_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let mut config = PrometheusConfig::new(format!("http://127.0.0.1:{port}"));
    config.timeout = Duration::from_millis(300);
    let client = Prometheus::new(config).unwrap();
    let e = client.value("up", Utc::now()).await.unwrap_err();
    assert_eq!(e, QueryError::Timeout(300));
    assert_eq!(e.code(), "timeout");
    held.abort();
}

/// A stand-in that answers like Prometheus behind an auth proxy: 401 without the expected
/// `Authorization` header, the query echoed back as a scalar otherwise.
async fn guarded(expected: &'static str) -> (u16, actix_web::dev::ServerHandle) {
    let server = HttpServer::new(move || {
        App::new().route(
            "/api/v1/query",
            web::post().to(move |req: HttpRequest| async move {
                let auth = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                if auth == Some(expected) {
                    HttpResponse::Ok().json(serde_json::json!({
                        "status": "success",
                        "data": {"resultType": "scalar", "result": [1.0, "42"]}
                    }))
                } else {
                    HttpResponse::Unauthorized().body("Unauthorized\n")
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (port, handle)
}

#[tokio::test]
async fn bearer_and_basic_credentials_are_sent() {
    let (port, handle) = guarded("Bearer s3cret").await;
    let mut config = PrometheusConfig::new(format!("http://127.0.0.1:{port}"));
    let anonymous = Prometheus::new(config.clone()).unwrap();
    assert!(matches!(
        anonymous.value("up", Utc::now()).await,
        Err(QueryError::Http { status: 401, .. })
    ));
    config.auth = Auth::Bearer("s3cret".into());
    let client = Prometheus::new(config).unwrap();
    assert_eq!(client.value("up", Utc::now()).await.unwrap().value, 42.0);
    handle.stop(false).await;

    // "alice:pw" in base64 (RFC 7617).
    let (port, handle) = guarded("Basic YWxpY2U6cHc=").await;
    let mut config = PrometheusConfig::new(format!("http://127.0.0.1:{port}"));
    config.auth = Auth::Basic {
        username: "alice".into(),
        password: "pw".into(),
    };
    let client = Prometheus::new(config).unwrap();
    assert_eq!(client.value("up", Utc::now()).await.unwrap().value, 42.0);
    handle.stop(false).await;
}
