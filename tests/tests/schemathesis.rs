//! The server and its served OpenAPI document agree, checked by an independent fuzzer:
//! schemathesis (from the Python virtualenv the test command installs) reads
//! `/openapi.yaml` from a running server on PostgreSQL and sends generated requests for
//! every operation, with every check on (no 5xx, responses and SSE events that match their
//! schemas, only documented status codes and headers, requests invalid by the schema
//! refused, valid ones accepted), once per role with that role's token. The one widened
//! check and why are in `tests/schemathesis.toml`. GitHub, Slack and webhooks are
//! configured so that their routes answer as in production rather than 503.
//!
//! Bounded: a fixed seed, a few examples per operation, two workers, a request timeout.

use std::path::Path;

use rollgate_e2e::{flow, Backend, TestApp};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

/// (subject, roles, teams, examples per operation).
const CALLERS: [(&str, &[&str], &[&str], u32); 4] = [
    (
        "ada",
        &[
            "release_manager",
            "approver",
            "sre",
            "auditor",
            "governance_admin",
            "viewer",
        ],
        &["*"],
        8,
    ),
    ("vic", &["viewer"], &["web"], 3),
    ("bob", &["approver"], &["web"], 3),
    ("sam", &["sre", "service"], &["web"], 3),
];

/// Runs schemathesis once; answers (passed, test cases generated, output).
/// The server runs in this test's runtime, so the fuzzer is awaited, never waited for on
/// the runtime's thread.
async fn schemathesis(
    workdir: &Path,
    spec: &str,
    token: &str,
    examples: u32,
) -> (bool, u64, String) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml");
    let out = tokio::process::Command::new(rollgate_testkit::tools::python())
        .current_dir(workdir)
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'st'; sys.exit(schemathesis())",
            "--config-file",
        ])
        .arg(&config)
        .args(["run", spec, "--checks", "all", "--workers", "2"])
        .args(["--phases", "examples,fuzzing,stateful", "--seed", "20261130"])
        .args(["--generation-database", "none"])
        .args(["-n", &examples.to_string()])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis runs (cargo xtask setup installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let generated = text
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.split_once(" generated").and_then(|(n, _)| n.parse().ok())
        })
        .unwrap_or(0);
    (out.status.success(), generated, text)
}

#[tokio::test]
async fn the_server_and_its_openapi_document_agree() {
    let dir = tempfile::tempdir().unwrap();
    let github_key = dir.path().join("github-app.pem");
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key");
    std::fs::write(
        &github_key,
        private.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    let github_secret = dir.path().join("github-secret");
    std::fs::write(&github_secret, "a github webhook secret").unwrap();
    let slack_secret = dir.path().join("slack-secret");
    std::fs::write(&slack_secret, "a slack signing secret").unwrap();
    let app = TestApp::spawn_with(
        Backend::Postgres,
        &[
            "--github-app-id",
            "4242",
            "--github-private-key-file",
            github_key.to_str().unwrap(),
            "--github-webhook-secret-file",
            github_secret.to_str().unwrap(),
            "--github-api-url",
            "http://127.0.0.1:9",
            "--slack-signing-secret-file",
            slack_secret.to_str().unwrap(),
        ],
    )
    .await;
    // Some history, so reads have something to show and ids exist to be found.
    flow::running_example(&app).await;
    let spec = format!("{}/openapi.yaml", app.address);

    let mut failures = Vec::new();
    let mut total = 0;
    for (sub, roles, teams, examples) in CALLERS {
        let token = app.token(sub, roles, teams);
        let (passed, generated, output) = schemathesis(dir.path(), &spec, &token, examples).await;
        total += generated;
        eprintln!(
            "schemathesis as {sub} ({}): {generated} test cases, passed: {passed}",
            roles.join(",")
        );
        if !passed {
            let start = output
                .find("FAILURES")
                .or_else(|| output.find("Error"))
                .unwrap_or(0);
            failures.push(format!("as {sub}:\n{}", &output[start..]));
        }
    }
    eprintln!(
        "schemathesis: {total} test cases in all, failures {}",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(total > 500, "only {total} test cases ran");
}
