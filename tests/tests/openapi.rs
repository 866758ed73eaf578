//! `GET /openapi.yaml` on a running server answers the contract file byte for byte, without
//! a token.

use reqwest::Method;
use rollgate_e2e::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_contract_is_the_file_in_api_spec() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../api-spec/openapi.yaml");
    let on_disk = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));

    let res = app
        .client
        .request(Method::GET, format!("{}/openapi.yaml", app.address))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/yaml"),
        "content-type: {content_type}"
    );
    assert!(
        res.headers().contains_key("x-request-id"),
        "every answer carries X-Request-Id"
    );
    let served = res.bytes().await.expect("body read");
    assert!(
        served.as_ref() == on_disk.as_slice(),
        "GET /openapi.yaml ({} bytes) differs from api-spec/openapi.yaml ({} bytes)",
        served.len(),
        on_disk.len()
    );
}
