//! The `rollgate` binary as a user runs it: zero-configuration start, clear one-line errors
//! for bad configuration, `token`, `migrate` and `verify`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rollgate");

/// A command with none of rollgate's configuration inherited from the environment.
fn rollgate(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("ROLLGATE_") || k == "DATABASE_URL" {
            c.env_remove(k);
        }
    }
    c
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("rollgate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_database_url_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) =
        run(rollgate(dir.path()).args(["migrate", "--database-url", "mysql://x/y"]));
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unsupported database URL"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Development keys are used unasked only on a loopback address with embedded SQLite:
/// anywhere else `serve` stops with one line naming the key options, before it creates a
/// database, a key or a listener.
#[test]
fn serve_refuses_development_keys_outside_the_zero_configuration_case() {
    for args in [
        vec!["serve", "--listen", "0.0.0.0:0"],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/test",
        ],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, err) = run(rollgate(dir.path()).args(&args));
        assert_ne!(code, 0, "{args:?}");
        let line = err.trim();
        assert_eq!(line.lines().count(), 1, "{line}");
        for option in [
            "--jwt-public-key",
            "--jwt-jwks",
            "--oidc-issuer",
            "--dev-keys",
        ] {
            assert!(line.contains(option), "{args:?}: {line}");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
}

#[test]
fn unreachable_database_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(rollgate(dir.path()).args([
        "migrate",
        "--database-url",
        "postgres://postgres@127.0.0.1:1/nowhere",
    ]));
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unreachable"), "{err}");
}

#[test]
fn verify_refuses_a_missing_file_and_verifies_a_migrated_one() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) =
        run(rollgate(dir.path()).args(["verify", "--database-url", "sqlite://missing.db"]));
    assert_ne!(code, 0);
    assert!(err.contains("no database"), "{err}");
    assert!(!dir.path().join("missing.db").exists());

    let (code, out, err) =
        run(rollgate(dir.path()).args(["migrate", "--database-url", "sqlite://log.db"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("migrations applied"));
    let (code, out, err) =
        run(rollgate(dir.path()).args(["verify", "--database-url", "sqlite://log.db"]));
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["verified_through"], 0);

    // A head file from the future (the log was truncated) fails.
    std::fs::write(
        dir.path().join("head.json"),
        r#"{"position":5,"hash":"ab"}"#,
    )
    .unwrap();
    let (code, out, _) = run(rollgate(dir.path()).args([
        "verify",
        "--database-url",
        "sqlite://log.db",
        "--head",
        "head.json",
    ]));
    assert_ne!(code, 0);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_position"], 1);
}

#[test]
fn token_mints_with_the_local_development_key() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(rollgate(dir.path()).args([
        "token",
        "--sub",
        "alice",
        "--roles",
        "approver,sre",
        "--teams",
        "web",
        "--ttl",
        "90s",
    ]));
    assert_eq!(code, 0, "{err}");
    let token = out.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    assert!(dir
        .path()
        .join(".rollgate")
        .join("dev-ed25519.pem")
        .exists());
    let (code, _, err) = run(rollgate(dir.path()).args(["token", "--sub", "a", "--ttl", "soon"]));
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `rollgate serve` with no configuration at all: SQLite at ./rollgate.db, 127.0.0.1:8080.
#[test]
fn serve_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = rollgate(dir.path())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = None;
    while Instant::now() < deadline {
        if let Ok(body) = http_get("127.0.0.1:8080", "/readyz") {
            ready = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let body = ready.expect("the server answered /readyz on 127.0.0.1:8080 within 30 s");
    assert!(body.contains("200 OK"), "{body}");
    assert!(body.contains("\"database\":\"ok\""), "{body}");
    assert!(dir.path().join("rollgate.db").exists());
    assert!(dir
        .path()
        .join(".rollgate")
        .join("dev-ed25519.pem")
        .exists());
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
