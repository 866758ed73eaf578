//! The console's answers: headers, media types, revalidation, configuration, and the
//! assets' own discipline (no inline script or style, no markup built from strings).

use actix_web::http::{header, StatusCode};
use actix_web::{test as web_test, App};

use super::*;

const STRICT: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

async fn get(
    config: &ConsoleConfig,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, actix_web::http::header::HeaderMap, Vec<u8>) {
    let config = config.clone();
    let app = web_test::init_service(App::new().configure(|c| configure_with(c, &config))).await;
    let mut req = web_test::TestRequest::get().uri(path);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let res = web_test::call_service(&app, req.to_request()).await;
    let status = res.status();
    let headers = res.headers().clone();
    let body = web_test::read_body(res).await.to_vec();
    (status, headers, body)
}

fn h<'a>(headers: &'a header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[actix_web::test]
async fn every_asset_is_served_with_its_type_and_the_security_headers() {
    let config = ConsoleConfig::without_oidc();
    for asset in ASSETS {
        let path = if asset.path == "index.html" {
            "/console/".to_owned()
        } else {
            format!("/console/{}", asset.path)
        };
        let (status, headers, body) = get(&config, &path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(h(&headers, "content-type"), asset.content_type, "{path}");
        assert_eq!(h(&headers, "content-security-policy"), STRICT, "{path}");
        assert_eq!(h(&headers, "x-frame-options"), "DENY");
        assert_eq!(h(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(h(&headers, "referrer-policy"), "no-referrer");
        assert_eq!(h(&headers, "cache-control"), "no-cache");
        assert!(h(&headers, "etag").starts_with('"'), "{path}");
        assert_eq!(body, asset.bytes, "{path}");
    }
}

#[actix_web::test]
async fn a_matching_etag_answers_304_without_a_body_and_another_one_the_file() {
    let config = ConsoleConfig::without_oidc();
    let (_, headers, _) = get(&config, "/console/js/app.js", &[]).await;
    let etag = h(&headers, "etag").to_owned();
    let (status, headers, body) =
        get(&config, "/console/js/app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(h(&headers, "etag"), etag);
    assert_eq!(h(&headers, "content-security-policy"), STRICT);
    let (status, _, body) = get(
        &config,
        "/console/js/app.js",
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.is_empty());
    // Each file has its own tag.
    let (_, other, _) = get(&config, "/console/console.css", &[]).await;
    assert_ne!(h(&other, "etag"), etag);
}

#[actix_web::test]
async fn unknown_files_answer_404_with_the_same_headers_and_the_bare_prefix_redirects() {
    let config = ConsoleConfig::without_oidc();
    for path in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/index.html",
    ] {
        let (status, headers, _) = get(&config, path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(h(&headers, "content-security-policy"), STRICT);
        assert_eq!(h(&headers, "x-frame-options"), "DENY");
    }
    let (status, headers, _) = get(&config, "/console", &[]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h(&headers, "location"), "/console/");
}

#[actix_web::test]
async fn config_json_says_whether_to_offer_oidc_and_the_policy_allows_only_that_issuer() {
    let (status, headers, body) =
        get(&ConsoleConfig::without_oidc(), "/console/config.json", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h(&headers, "content-type"), "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json, serde_json::json!({"oidc": null}));

    let config = ConsoleConfig::new(
        Some("https://id.example.com/realms/main"),
        Some("rollgate-console"),
    )
    .unwrap();
    let (_, headers, body) = get(&config, "/console/config.json", &[]).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"oidc": {"issuer": "https://id.example.com/realms/main", "client_id": "rollgate-console"}})
    );
    assert_eq!(
        h(&headers, "content-security-policy"),
        STRICT.replace(
            "connect-src 'self'",
            "connect-src 'self' https://id.example.com"
        )
    );
    let etag = h(&headers, "etag").to_owned();
    let (status, _, _) = get(&config, "/console/config.json", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}

#[test]
fn issuers_that_could_widen_or_break_the_policy_are_refused() {
    for bad in [
        "not a url",
        "ftp://id.example.com",
        "https://id.example.com/x?y=1",
        "https://user:pw@id.example.com",
        "javascript:alert(1)",
    ] {
        assert!(
            matches!(
                ConsoleConfig::with_oidc(bad, "c"),
                Err(ConfigError::BadIssuer(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        ConsoleConfig::with_oidc("https://id.example.com", "a b"),
        Err(ConfigError::BadClientId)
    ));
    assert!(matches!(
        ConsoleConfig::with_oidc("https://id.example.com", ""),
        Err(ConfigError::BadClientId)
    ));
    assert!(matches!(
        ConsoleConfig::new(Some("https://id.example.com"), None),
        Err(ConfigError::Incomplete)
    ));
    assert!(matches!(
        ConsoleConfig::new(None, Some("c")),
        Err(ConfigError::Incomplete)
    ));
    // A path or a port stays out of the policy except as part of the origin.
    let c = ConsoleConfig::with_oidc("http://127.0.0.1:4444/oidc", "c").unwrap();
    assert!(c
        .content_security_policy()
        .contains("connect-src 'self' http://127.0.0.1:4444;"));
}

fn text(asset: &Asset) -> &'static str {
    std::str::from_utf8(asset.bytes).expect("utf-8 asset")
}

#[test]
fn the_page_has_no_inline_script_style_or_handlers() {
    let html = text(&ASSETS[find("index.html").unwrap()]);
    let lower = html.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag_end = lower[i..].find('>').unwrap() + i;
        assert!(lower[i..tag_end].contains(" src="), "inline script at {i}");
        assert!(
            lower[tag_end + 1..].starts_with("</script>"),
            "script with a body at {i}"
        );
    }
    assert!(!lower.contains("<style"), "inline style element");
    assert!(!lower.contains(" style="), "style attribute");
    assert!(
        !lower.contains(" on"),
        "an event handler attribute (or a word starting with 'on' inside a tag)"
    );
    assert!(
        !lower.contains("http://") && !lower.contains("https://"),
        "a remote resource"
    );
}

#[test]
fn scripts_never_build_markup_from_strings_or_evaluate_code() {
    for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
        // The SVG namespace is a name, not a resource.
        let js = text(asset).replace("'http://www.w3.org/2000/svg'", "");
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setTimeout('",
            "setTimeout(\"",
            "localStorage",
            "document.cookie",
            "http://",
            "https://",
        ] {
            assert!(!js.contains(forbidden), "{} uses {forbidden}", asset.path);
        }
    }
}

#[test]
fn every_module_the_scripts_import_is_embedded() {
    for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
        let dir = asset.path.rsplit_once('/').map_or("", |(d, _)| d);
        for line in text(asset).lines().filter(|l| l.starts_with("import ")) {
            let spec = line
                .rsplit_once("from '")
                .map(|(_, r)| r.trim_end_matches("';"))
                .unwrap();
            let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
            for seg in spec.split('/') {
                match seg {
                    "." => {}
                    ".." => {
                        parts.pop();
                    }
                    s => parts.push(s),
                }
            }
            let resolved = parts.join("/");
            assert!(
                find(&resolved).is_some(),
                "{} imports {spec} ({resolved}), which is not embedded",
                asset.path
            );
        }
    }
}
