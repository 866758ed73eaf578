//! The benchmark's smoke mode, run by `cargo test --workspace` (CI): every part of
//! `rollgate-bench` once, briefly and small, against the `rollgate` binary cargo built beside
//! it (debug). A check that the benchmark works and prints every table, not a measurement.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn every_part_runs_and_prints_its_tables() {
    let bench = Path::new(env!("CARGO_BIN_EXE_rollgate-bench"));
    let rollgate = bench.with_file_name("rollgate");
    assert!(
        rollgate.exists(),
        "{} is missing: build it with `cargo build -p rollgate-server` \
         (`cargo test --workspace` builds it)",
        rollgate.display()
    );
    let out_dir = tempfile::tempdir().expect("temporary directory");
    let out_path = out_dir.path().join("out.md");
    let mut child = Command::new(bench)
        .arg("--smoke")
        .stdout(std::fs::File::create(&out_path).expect("output file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rollgate-bench runs");
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rollgate-bench --smoke did not finish in 600 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&out_path).expect("output");
    assert!(
        status.success(),
        "rollgate-bench --smoke failed: {status}\n{out}"
    );
    for expected in [
        "Baseline: pgbench",
        "| governance commands over HTTP (notes), 4 clients | Postgres |",
        "| governance command mix over HTTP, 4 clients | Sqlite |",
        "| notes | Postgres | 1 |",
        "| command mix | Postgres | 4 |",
        "| approval | Postgres |",
        "| rollback | Sqlite |",
        "### SQLite checkpoints during the HTTP windows",
        "| verify (2000 events) | Postgres |",
        "| server CPU ≤ 150 µs per command (notes, 4 clients) |",
    ] {
        assert!(out.contains(expected), "no `{expected}` in:\n{out}");
    }
}
