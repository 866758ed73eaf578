//! `cargo xtask test`: makes the world the test suite needs, then runs `cargo test --workspace`.
//!
//! - PostgreSQL: ROLLGATE_TEST_DATABASE_URL, else the local server on 127.0.0.1:5432 (started
//!   with `pg_ctlcluster` when down), else a private cluster under target/xtask/pg.
//! - Prometheus, Chromium, ChromeDriver (Debian packages, installed with apt-get when missing
//!   and running as root), npm packages (xtask/node, `npm ci` into target/xtask/node) and a
//!   Python virtualenv (xtask/requirements.txt, target/xtask/venv).
//!
//! Each step is skipped when already done; each failure is one line. See docs/TESTING.md.

mod components;
mod postgres;
mod util;

use std::fs;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use util::{say, shell_quote, Paths};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [--private-postgres] [--] [ARGS...]
        set up PostgreSQL and the test components, then run `cargo test --workspace ARGS...`
        (--private-postgres, or ROLLGATE_XTASK_PRIVATE_PG=1: use a private throwaway cluster
        under target/xtask/pg even when a server answers on 127.0.0.1:5432)
  setup
        install or locate the test components only, and print their variables as shell
        exports (also written to target/xtask/env): eval \"$(cargo xtask setup)\"
  help  this text";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    match command.as_deref() {
        Some("test") => test(rest),
        Some("setup") => setup(rest),
        None | Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => bail!("unknown command `{other}`: see `cargo xtask help`"),
    }
}

struct TestArgs {
    private_postgres: bool,
    /// Handed to `cargo test --workspace` as they are.
    cargo_args: Vec<String>,
}

/// xtask's own flags come first; then an optional `--`; everything after goes to cargo test.
fn parse_test_args(args: Vec<String>) -> TestArgs {
    let mut private_postgres = std::env::var("ROLLGATE_XTASK_PRIVATE_PG").is_ok_and(|v| v == "1");
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.peek() {
        match arg.as_str() {
            "--private-postgres" => private_postgres = true,
            "--" => {
                args.next();
                break;
            }
            _ => break,
        }
        args.next();
    }
    TestArgs {
        private_postgres,
        cargo_args: args.collect(),
    }
}

fn test(args: Vec<String>) -> Result<ExitCode> {
    let args = parse_test_args(args);
    let paths = Paths::discover()?;
    let exports = match components::all(&paths) {
        Ok(exports) => exports,
        Err(failures) => return Ok(report(failures)),
    };
    // Started last: a private cluster is stopped when `postgres` is dropped, on every path.
    let postgres = postgres::prepare(&paths, args.private_postgres)?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    let scope = cargo_test_scope(&args.cargo_args);
    cmd.current_dir(&paths.root)
        .arg("test")
        .args(scope)
        .args(&args.cargo_args)
        .env("CARGO_TARGET_DIR", &paths.target)
        .envs(exports.iter().map(|(k, v)| (*k, v)))
        .envs(postgres.exports());
    let line: Vec<&str> = ["cargo", "test"]
        .into_iter()
        .chain(scope.iter().copied())
        .chain(args.cargo_args.iter().map(String::as_str))
        .collect();
    say(line.join(" "));
    let status = cmd.status().context("cannot run cargo test")?;
    drop(postgres);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// `--workspace`, unless the arguments name packages (`-p`), which cargo would otherwise
/// ignore in favour of the whole workspace.
fn cargo_test_scope(cargo_args: &[String]) -> &'static [&'static str] {
    let names_packages = cargo_args.iter().take_while(|a| *a != "--").any(|a| {
        a == "-p" || a.starts_with("--package") || (a.starts_with("-p") && !a.starts_with("--"))
    });
    if names_packages {
        &[]
    } else {
        &["--workspace"]
    }
}

fn setup(args: Vec<String>) -> Result<ExitCode> {
    if let Some(arg) = args.first() {
        bail!("`cargo xtask setup` takes no arguments (got `{arg}`)");
    }
    let paths = Paths::discover()?;
    let mut exports = match components::all(&paths) {
        Ok(exports) => exports,
        Err(failures) => return Ok(report(failures)),
    };
    if let Some(dir) = postgres::bindir() {
        exports.push(("ROLLGATE_PG_BINDIR", dir.display().to_string()));
    }
    let text: String = exports
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect();
    let file = paths.work.join("env");
    fs::write(&file, &text).with_context(|| format!("cannot write {}", file.display()))?;
    print!("{text}");
    say(format_args!("exports written to {}", file.display()));
    Ok(ExitCode::SUCCESS)
}

/// One line per missing component.
fn report(failures: Vec<anyhow::Error>) -> ExitCode {
    for failure in failures {
        eprintln!("xtask: error: {failure:#}");
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> (bool, Vec<String>) {
        let parsed = parse_test_args(args.iter().map(|s| s.to_string()).collect());
        (parsed.private_postgres, parsed.cargo_args)
    }

    #[test]
    fn the_whole_workspace_unless_packages_are_named() {
        let scope = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            cargo_test_scope(&args)
        };
        assert_eq!(scope(&[]), ["--workspace"]);
        assert_eq!(
            scope(&["--", "-p"]),
            ["--workspace"],
            "after `--` it is a test filter"
        );
        assert_eq!(scope(&["--release", "store"]), ["--workspace"]);
        for named in [
            &["-p", "a"][..],
            &["-pa"],
            &["--package", "a"],
            &["--package=a"],
        ] {
            assert!(scope(named).is_empty(), "{named:?}");
        }
    }

    #[test]
    fn own_flags_first_then_everything_to_cargo() {
        let forced = std::env::var("ROLLGATE_XTASK_PRIVATE_PG").is_ok_and(|v| v == "1");
        assert_eq!(parse(&[]), (forced, vec![]));
        assert_eq!(
            parse(&["--private-postgres", "--", "-p", "rollgate-store"]),
            (true, vec!["-p".into(), "rollgate-store".into()])
        );
        assert_eq!(
            parse(&["-p", "x", "--", "--nocapture"]),
            (
                forced,
                vec!["-p".into(), "x".into(), "--".into(), "--nocapture".into()]
            )
        );
        // After the first `--`, even xtask's flag belongs to cargo.
        assert_eq!(
            parse(&["--", "--private-postgres"]),
            (forced, vec!["--private-postgres".into()])
        );
    }
}
