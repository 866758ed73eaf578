//! Authentication attacks over real HTTP (issue 10): every forged, stale or foreign token
//! is answered 401 problem+json and writes nothing (the log's head does not move), on a
//! write route and a read route; privilege attacks with valid tokens answer 403 or 404 as
//! DESIGN says (R10: viewers never write; R11: another team's rollout is not found).
//!
//! The token attacks need tokens saying exactly what the attacker wants, signed with the
//! server's own development key where the attack is about the claims; so this file starts
//! the server itself (as [`TestApp::spawn`] does) with a key directory it can read.

use std::sync::Arc;

use chrono::Duration;
use clap::Parser;
use reqwest::Method;
use rollgate_auth::reexport::base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rollgate_auth::reexport::base64::Engine;
use rollgate_auth::reexport::jsonwebtoken;
use rollgate_auth::DevKeys;
use rollgate_e2e::flow::*;
use rollgate_e2e::*;
use rollgate_server::config::ServeArgs;
use rollgate_server::Application;
use rollgate_store::{Clock, EventStore, ManualClock};
use rollgate_testkit::TestDb;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The server under attack, with its development key at hand.
struct Target {
    address: String,
    clock: Arc<ManualClock>,
    client: reqwest::Client,
    keys: DevKeys,
    store: Arc<dyn EventStore>,
    _db: TestDb,
    _key_dir: tempfile::TempDir,
}

impl Target {
    async fn spawn(backend: Backend) -> Target {
        let db = TestDb::new(backend).await;
        let key_dir = tempfile::tempdir().expect("key dir");
        let mut argv = vec![
            "rollgate",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--dev-key-dir",
            key_dir.path().to_str().unwrap(),
        ];
        argv.extend(EXTRA_FLAGS);
        let args = Args::parse_from(argv);
        let clock = Arc::new(ManualClock::new(start_time()));
        let app = Application::build(&args.serve, clock.clone() as Arc<dyn Clock>)
            .await
            .expect("server starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        let keys = DevKeys::load_or_create(key_dir.path()).expect("dev keys");
        let store = db.store(Default::default()).await;
        Target {
            address,
            clock,
            client: reqwest::Client::new(),
            keys,
            store,
            _db: db,
            _key_dir: key_dir,
        }
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// Claims that would be accepted now, for a governance admin of every team: what an
    /// attacker would like a forged token to say.
    fn claims(&self) -> Value {
        let now = self.now();
        json!({
            "iss": "rollgate", "aud": "rollgate", "sub": "mallory",
            "iat": now, "nbf": now, "exp": now + 600,
            "roles": ["governance_admin", "release_manager", "approver", "sre"],
            "teams": ["*"],
        })
    }

    /// `claims()` with some replaced (`null` removes one).
    fn claims_with(&self, changes: Value) -> Value {
        let mut claims = self.claims();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    /// Signed with the server's own key.
    fn sign(&self, claims: &Value) -> String {
        self.keys.sign_claims(None, claims).expect("sign")
    }

    async fn head(&self) -> u64 {
        self.store.head().await.expect("head").position
    }

    async fn send(&self, method: Method, path: &str, authorization: Option<&str>) -> Reply {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.address));
        if method == Method::POST {
            request = request.json(&example_create_body());
        }
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read");
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

/// Development keys outside the zero-configuration case (PostgreSQL), and a maximum token
/// lifetime of two hours instead of the default 24.
const EXTRA_FLAGS: [&str; 3] = ["--dev-keys", "--jwt-max-lifetime-seconds", "7200"];

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn segments(token: &str) -> (String, String, String) {
    let mut parts = token.split('.');
    let header = parts.next().unwrap().to_owned();
    let payload = parts.next().unwrap().to_owned();
    let signature = parts.next().unwrap().to_owned();
    (header, payload, signature)
}

/// Every attack: a name, the `Authorization` value, and a word the refusal's detail must
/// contain (so each is refused for its own reason, not by accident).
async fn attacks(target: &Target) -> Vec<(&'static str, String, &'static str)> {
    let genuine = target.sign(&target.claims());
    let (header, _, signature) = segments(&genuine);
    let server_kid = jsonwebtoken::decode_header(&genuine)
        .unwrap()
        .kid
        .expect("kid");
    let now = target.now();

    // alg none: no signature at all.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(target.claims().to_string().as_bytes())
    );
    // HS256 "signed" with the server's public key as the HMAC secret (algorithm confusion),
    // with the server's kid, both with the PEM text and the raw key bytes as the secret.
    let public_pem = std::fs::read(target.keys.dir().join(rollgate_auth::DEV_PUBLIC_KEY_FILE))
        .expect("public key file");
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(server_kid.clone());
    let hs256_pem = jsonwebtoken::encode(
        &hs_header,
        &target.claims(),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let hs256_raw = jsonwebtoken::encode(
        &hs_header,
        &target.claims(),
        &jsonwebtoken::EncodingKey::from_secret(target.keys.verifying_key().as_bytes()),
    )
    .unwrap();
    // The genuine header and signature over a payload that grants more.
    let mut weaker = target.claims();
    weaker["roles"] = json!(["viewer"]);
    weaker["teams"] = json!(["web"]);
    let weak_token = target.sign(&weaker);
    let (weak_header, _, weak_signature) = segments(&weak_token);
    let tampered = format!(
        "{weak_header}.{}.{weak_signature}",
        b64(target.claims().to_string().as_bytes())
    );
    // A valid signature from another key: once with a kid the server does not know, once
    // claiming the server's own kid.
    let other_dir = tempfile::tempdir().unwrap();
    let other = DevKeys::load_or_create(other_dir.path()).unwrap();
    let unknown_kid = other.sign_claims(None, &target.claims()).unwrap();
    let other_key_same_kid = other
        .sign_claims(Some(&server_kid), &target.claims())
        .unwrap();
    // The server's key, with a kid it does not have.
    let server_key_unknown_kid = target
        .keys
        .sign_claims(Some("rotated-away"), &target.claims())
        .unwrap();
    // 64 KiB of header parameters, correctly signed: refused for its size before decoding.
    let padding = "x".repeat(64 * 1024);
    let mut big_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    big_header.kid = Some(server_kid.clone());
    big_header.cty = Some(padding);
    let oversized = {
        let (_, payload, _) = segments(&genuine);
        let header_b64 = b64(serde_json::to_vec(&big_header).unwrap().as_slice());
        format!("{header_b64}.{payload}.{signature}")
    };
    // Just over the verifier's limit, still within what HTTP servers accept in a header.
    let just_over = format!(
        "{header}.{}.{signature}",
        b64(&vec![b'a'; rollgate_auth::MAX_TOKEN_BYTES])
    );

    vec![
        ("alg none", none, "none"),
        ("HS256 signed with the public key (PEM)", hs256_pem, "HS256"),
        ("HS256 signed with the public key (raw)", hs256_raw, "HS256"),
        (
            "expired",
            target.sign(
                &target
                    .claims_with(json!({"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600})),
            ),
            "expired",
        ),
        (
            "nbf in the future",
            target.sign(&target.claims_with(json!({"nbf": now + 600, "exp": now + 1200}))),
            "not valid yet",
        ),
        (
            "iat in the future",
            target.sign(
                &target.claims_with(json!({"nbf": null, "iat": now + 600, "exp": now + 1200})),
            ),
            "issued in the future",
        ),
        (
            "lifetime over the configured maximum",
            target.sign(&target.claims_with(json!({"exp": now + 3 * 3600}))),
            "lifetime",
        ),
        (
            "lifetime of a week",
            target.sign(&target.claims_with(json!({"exp": now + 7 * 86_400}))),
            "lifetime",
        ),
        (
            "no iat, so no known lifetime",
            target.sign(&target.claims_with(json!({"iat": null}))),
            "iat",
        ),
        (
            "wrong iss",
            target.sign(&target.claims_with(json!({"iss": "https://evil.example"}))),
            "issuer",
        ),
        (
            "wrong aud",
            target.sign(&target.claims_with(json!({"aud": "another-service"}))),
            "audience",
        ),
        ("tampered payload", tampered, "signature"),
        ("unknown kid (another key)", unknown_kid, "key id"),
        (
            "unknown kid (the server's key)",
            server_key_unknown_kid,
            "key id",
        ),
        (
            "valid signature from another key",
            other_key_same_kid,
            "signature",
        ),
        ("oversized token", just_over, "too long"),
        ("oversized token (64 KiB header)", oversized, "too long"),
    ]
    .into_iter()
    .map(|(name, token, reason)| (name, format!("Bearer {token}"), reason))
    .collect()
}

async fn token_attacks_are_refused_with_401_and_write_nothing(backend: Backend) {
    let target = Target::spawn(backend).await;
    // One event in the log, so the head is a real position.
    let genuine = format!("Bearer {}", target.sign(&target.claims()));
    let created = target
        .send(Method::POST, "/v1/rollouts", Some(&genuine))
        .await;
    created.assert_status(201);
    let id = created.body["rollout_id"].as_str().unwrap().to_owned();
    let head = target.head().await;
    assert!(head > 0);

    let attacks = attacks(&target).await;
    assert!(attacks.len() >= 12);
    let routes = [
        (Method::POST, "/v1/rollouts".to_owned()),
        (Method::GET, format!("/v1/rollouts/{id}")),
    ];
    for (name, authorization, reason) in &attacks {
        for (method, path) in &routes {
            let reply = target.send(method.clone(), path, Some(authorization)).await;
            assert_eq!(
                reply.status.as_u16(),
                401,
                "{name} on {method} {path}: {} {}",
                reply.status,
                reply.body
            );
            reply.assert_problem(401, None);
            let detail = reply.body["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains(reason),
                "{name}: refused for another reason: {detail}"
            );
            assert_eq!(target.head().await, head, "{name}: the log moved");
        }
    }

    // The genuine token still works after all that (nothing was poisoned), and a token
    // that was accepted is refused once it expires (a cached verification never outlives it).
    let reply = target
        .send(Method::GET, &format!("/v1/rollouts/{id}"), Some(&genuine))
        .await;
    reply.assert_status(200);
    target.clock.advance(Duration::seconds(600 + 30));
    let reply = target
        .send(Method::POST, "/v1/rollouts", Some(&genuine))
        .await;
    reply.assert_problem(401, None);
    assert!(reply.body["detail"].as_str().unwrap().contains("expired"));
    assert_eq!(target.head().await, head);
}

async fn privilege_attacks_answer_403_or_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running_example(&app).await;
    let rid = request_advance(&app, &id).await;
    let approval = json!({"decision": "approve", "comment": "looks fine"});

    // R10: a viewer of the team cannot write, whatever the route.
    let vic = VIC.token(&app);
    app.refused(
        Method::POST,
        "/v1/rollouts",
        Some(&vic),
        Some(&example_create_body()),
        403,
        Some("R10"),
    )
    .await;
    app.refused(
        Method::POST,
        &format!("/v1/rollouts/{id}/advance-requests/{rid}/approvals"),
        Some(&vic),
        Some(&approval),
        403,
        None,
    )
    .await;
    app.refused(
        Method::POST,
        &format!("/v1/rollouts/{id}/notes"),
        Some(&vic),
        Some(&json!({"audience": "internal", "text": "viewer was here"})),
        403,
        None,
    )
    .await;

    // R11: an approver (with every other writing role) of another team gets the answer
    // an unknown rollout gets.
    let otto = OTTO.token(&app);
    for (method, path, body) in [
        (
            Method::POST,
            format!("/v1/rollouts/{id}/advance-requests/{rid}/approvals"),
            Some(approval.clone()),
        ),
        (
            Method::POST,
            format!("/v1/rollouts/{id}/rollback"),
            Some(json!({"reason": "not my team"})),
        ),
        (Method::GET, format!("/v1/rollouts/{id}"), None),
    ] {
        app.refused(method, &path, Some(&otto), body.as_ref(), 404, None)
            .await;
    }

    // A token with roles and teams widened by hand does not get through either (401).
    let bob = BOB.token(&app);
    let (header, rest) = bob.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let now = app.clock.now().timestamp();
    let widened = b64(
        json!({"iss": "rollgate", "aud": "rollgate", "sub": "bob", "iat": now, "nbf": now,
               "exp": now + 600, "roles": ["approver", "governance_admin"], "teams": ["*"]})
        .to_string()
        .as_bytes(),
    );
    app.refused(
        Method::POST,
        &format!("/v1/rollouts/{id}/advance-requests/{rid}/approvals"),
        Some(&format!("{header}.{widened}.{signature}")),
        Some(&approval),
        401,
        None,
    )
    .await;
}

/// `rollgate serve` uses development keys without being asked only on a loopback address
/// with embedded SQLite; anywhere else it needs `--dev-keys`, or stops with one line naming
/// the key options.
#[test]
fn development_keys_only_in_the_zero_configuration_case() {
    let check = |extra: &[&str]| {
        let argv = std::iter::once("rollgate").chain(extra.iter().copied());
        Args::parse_from(argv).serve.check_dev_keys()
    };
    let postgres = "postgres://postgres@127.0.0.1:5432/test";
    // The quick start: nothing configured.
    assert!(check(&[]).is_ok());
    assert!(check(&["--listen", "[::1]:9000", "--database-url", "sqlite://x.db"]).is_ok());

    for refused in [
        vec!["--database-url", postgres],
        vec!["--listen", "0.0.0.0:8080"],
        vec!["--listen", "0.0.0.0:8080", "--database-url", postgres],
    ] {
        let line = check(&refused).unwrap_err().to_string();
        assert!(!line.contains('\n'), "{line}");
        for option in [
            "--jwt-public-key",
            "--jwt-jwks",
            "--oidc-issuer",
            "--dev-keys",
        ] {
            assert!(line.contains(option), "{refused:?}: {line}");
        }
    }
    // Asked for, or not needed because a key source is configured.
    assert!(check(&[
        "--listen",
        "0.0.0.0:8080",
        "--database-url",
        postgres,
        "--dev-keys"
    ])
    .is_ok());
    assert!(check(&["--database-url", postgres, "--jwt-jwks", "keys.json"]).is_ok());
    assert!(check(&[
        "--database-url",
        postgres,
        "--oidc-issuer",
        "https://id.example.com",
        "--oidc-client-id",
        "rollgate-console"
    ])
    .is_ok());
}

both_backends!(
    token_attacks_are_refused_with_401_and_write_nothing,
    privilege_attacks_answer_403_or_404,
);
