//! CPU time from `/proc` and WAL volume from PostgreSQL, read before and after a load window.
//!
//! Counted per window:
//! - the server: utime + stime of the `rollgate` process (all its threads);
//! - PostgreSQL backends: every backend whose `pg_stat_activity.datname` is the benchmark's
//!   database, except the benchmark's own connections (`application_name` `rollgate-bench`);
//!   a backend seen only at the end counts with its whole CPU time, one gone by the end is
//!   lost and counted in `pg_vanished`;
//! - PostgreSQL background: the WAL writer, checkpointer and background writer. They serve the
//!   whole cluster, so this is an upper bound for the benchmark's share when others use it;
//! - the load generator (this process) and the whole machine (`/proc/stat`, all CPUs, busy
//!   time = everything but idle and iowait);
//! - WAL bytes: `pg_current_wal_lsn()` after minus before (cluster-wide as well).

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Clock ticks per second (`getconf CLK_TCK`; 100 when it cannot be asked).
pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process in clock ticks, from `/proc/<pid>/stat`.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces; fields after it start
    // at field 3 (state). utime is field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy clock ticks of the whole machine (all CPUs), from the first line of `/proc/stat`.
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4).copied().unwrap_or(0);
    Some(busy)
}

/// Parses an LSN (`16/B374D848`) into a byte position.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// What the benchmark asks PostgreSQL during a window.
#[derive(Clone)]
pub struct PgProbe {
    pub pool: PgPool,
    pub datname: String,
}

impl PgProbe {
    /// One connection of its own to the database at `url`, named `rollgate-bench` so that
    /// it is not counted.
    pub async fn connect(url: &str) -> anyhow::Result<PgProbe> {
        let options = PgConnectOptions::from_str(url)?.application_name("rollgate-bench");
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        let datname: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&pool)
            .await?;
        Ok(PgProbe { pool, datname })
    }

    /// The backends serving this database, but the benchmark's own.
    pub async fn backend_pids(&self) -> anyhow::Result<Vec<u32>> {
        Ok(self.pids().await?.0)
    }

    async fn pids(&self) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
        let rows: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT pid, datname::text, backend_type FROM pg_stat_activity
             WHERE (datname = $1 AND coalesce(application_name, '') <> 'rollgate-bench'
                    AND pid <> pg_backend_pid())
                OR backend_type IN ('walwriter', 'checkpointer', 'background writer')",
        )
        .bind(&self.datname)
        .fetch_all(&self.pool)
        .await?;
        let mut backends = Vec::new();
        let mut background = Vec::new();
        for (pid, datname, _) in rows {
            if datname.as_deref() == Some(self.datname.as_str()) {
                backends.push(pid as u32);
            } else {
                background.push(pid as u32);
            }
        }
        Ok((backends, background))
    }

    /// What each backend of the database is doing now: `on CPU`, `idle` (waiting for its
    /// client), `idle in transaction`, or its wait event (`IO:WalSync`, `Lock:advisory`, …).
    pub async fn backend_states(&self) -> anyhow::Result<Vec<String>> {
        let rows: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity
             WHERE datname = $1 AND coalesce(application_name, '') <> 'rollgate-bench'
               AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .bind(&self.datname)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(state, kind, event)| match (state.as_deref(), kind, event) {
                    (Some("active"), Some(k), Some(e)) => format!("{k}:{e}"),
                    (Some("active"), _, _) => "on CPU".to_owned(),
                    (Some("idle in transaction"), Some(k), Some(e)) if k != "Client" => {
                        format!("idle in transaction, {k}:{e}")
                    }
                    (Some(s), _, _) => s.to_owned(),
                    (None, _, _) => "unknown".to_owned(),
                },
            )
            .collect())
    }

    /// Samples [`PgProbe::backend_states`] every 20 ms until `stop`; answers the share of
    /// each state over all backend samples, largest first.
    pub async fn sample_states(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<(String, f64)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut total = 0usize;
        while !*stop.borrow() {
            if let Ok(states) = self.backend_states().await {
                for s in states {
                    total += 1;
                    *counts.entry(s).or_default() += 1;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut shares: Vec<(String, f64)> = counts
            .into_iter()
            .map(|(s, n)| (s, n as f64 / total.max(1) as f64))
            .collect();
        shares.sort_by(|a, b| b.1.total_cmp(&a.1));
        shares
    }

    pub async fn wal_lsn(&self) -> anyhow::Result<u64> {
        let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.pool)
            .await?;
        parse_lsn(&lsn).ok_or_else(|| anyhow::anyhow!("unreadable LSN {lsn}"))
    }
}

/// Counters at one instant.
pub struct Snapshot {
    server: u64,
    bench: u64,
    machine: u64,
    pg_backends: HashMap<u32, u64>,
    pg_background: HashMap<u32, u64>,
    wal: Option<u64>,
}

fn ticks_of(pids: &[u32]) -> HashMap<u32, u64> {
    pids.iter()
        .filter_map(|&p| process_ticks(p).map(|t| (p, t)))
        .collect()
}

pub async fn snapshot(server_pid: u32, pg: Option<&PgProbe>) -> anyhow::Result<Snapshot> {
    let (pg_backends, pg_background, wal) = match pg {
        Some(pg) => {
            let (backends, background) = pg.pids().await?;
            (
                ticks_of(&backends),
                ticks_of(&background),
                Some(pg.wal_lsn().await?),
            )
        }
        None => Default::default(),
    };
    Ok(Snapshot {
        server: process_ticks(server_pid).unwrap_or(0),
        bench: process_ticks(std::process::id()).unwrap_or(0),
        machine: machine_busy_ticks().unwrap_or(0),
        pg_backends,
        pg_background,
        wal,
    })
}

/// CPU seconds and WAL bytes spent between two snapshots.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub server_s: f64,
    pub bench_s: f64,
    pub machine_s: f64,
    /// `None` on SQLite.
    pub pg_backends_s: Option<f64>,
    pub pg_background_s: Option<f64>,
    /// Backends counted, and backends seen at the start but gone at the end (their time is lost).
    pub pg_counted: usize,
    pub pg_vanished: usize,
    pub wal_bytes: Option<u64>,
}

fn delta(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> (u64, usize) {
    let ticks = after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    let vanished = before.keys().filter(|p| !after.contains_key(p)).count();
    (ticks, vanished)
}

pub fn usage(before: &Snapshot, after: &Snapshot, pg: bool) -> Usage {
    let tck = clk_tck();
    let s = |t: u64| t as f64 / tck;
    let (backends, vanished) = delta(&before.pg_backends, &after.pg_backends);
    let (background, _) = delta(&before.pg_background, &after.pg_background);
    Usage {
        server_s: s(after.server.saturating_sub(before.server)),
        bench_s: s(after.bench.saturating_sub(before.bench)),
        machine_s: s(after.machine.saturating_sub(before.machine)),
        pg_backends_s: pg.then(|| s(backends)),
        pg_background_s: pg.then(|| s(background)),
        pg_counted: after.pg_backends.len(),
        pg_vanished: vanished,
        wal_bytes: match (before.wal, after.wal) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (postgres: a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1234 567 0 0 20 0 1 0 100 1000 10";
        assert_eq!(parse_stat_ticks(stat), Some(1234 + 567));
    }

    #[test]
    fn lsn_positions() {
        assert_eq!(parse_lsn("0/10"), Some(16));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_the_machine_busy_time() {
        assert!(process_ticks(std::process::id()).is_some());
        assert!(machine_busy_ticks().is_some());
        assert!(clk_tck() > 0.0);
    }
}
