//! The PostgreSQL server the tests use.
//!
//! In order: the server named by ROLLGATE_TEST_DATABASE_URL; else the local server on
//! 127.0.0.1:5432, starting the local cluster(s) (`pg_ctlcluster`) when it is down; else, where
//! no cluster answers but the server binaries exist, a private throwaway cluster under
//! target/xtask/pg on a free port, stopped again when xtask ends. `--private-postgres` (or
//! ROLLGATE_XTASK_PRIVATE_PG=1) goes straight to the private cluster.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::util::{
    env_nonempty, free_port, is_executable, is_root, output_of, run_logged, say, which, Paths,
};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const WAIT: Duration = Duration::from_secs(30);
/// The non-root user that runs a private cluster when xtask runs as root (initdb refuses root).
const SERVER_USER: &str = "postgres";

/// The server the tests use, and what to export for them.
pub struct Postgres {
    pub url: String,
    /// The folder with initdb and pg_ctl, for tests that run a cluster of their own.
    pub bindir: Option<PathBuf>,
    /// A private cluster this run started; stopped when dropped.
    _private: Option<PrivateCluster>,
}

impl Postgres {
    pub fn exports(&self) -> Vec<(&'static str, String)> {
        let mut exports = vec![("ROLLGATE_TEST_DATABASE_URL", self.url.clone())];
        if let Some(dir) = &self.bindir {
            exports.push(("ROLLGATE_PG_BINDIR", dir.display().to_string()));
        }
        exports
    }
}

/// The newest PostgreSQL server binaries: ROLLGATE_PG_BINDIR, else /usr/lib/postgresql/<v>/bin.
pub fn bindir() -> Option<PathBuf> {
    if let Some(dir) = env_nonempty("ROLLGATE_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (is_executable(&bin.join("initdb")) && is_executable(&bin.join("pg_ctl")))
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

pub fn prepare(paths: &Paths, force_private: bool) -> Result<Postgres> {
    let bindir = bindir();
    if force_private {
        let bin = bindir.clone().ok_or_else(no_server_binaries)?;
        return PrivateCluster::start(paths, &bin);
    }

    if let Some(url) = env_nonempty("ROLLGATE_TEST_DATABASE_URL") {
        let (host, port) = host_port(&url);
        if !wait_ready(&host, port, bindir.as_deref(), Duration::ZERO) {
            if is_loopback(&host) && start_local_clusters(paths) {
                wait_ready(&host, port, bindir.as_deref(), WAIT);
            }
            if !wait_ready(&host, port, bindir.as_deref(), Duration::ZERO) {
                bail!("PostgreSQL at {host}:{port} (ROLLGATE_TEST_DATABASE_URL) does not answer: start it, or unset the variable to use the local server");
            }
        }
        say(format_args!(
            "PostgreSQL: {host}:{port} (ROLLGATE_TEST_DATABASE_URL, used as it is)"
        ));
        return Ok(Postgres {
            url,
            bindir,
            _private: None,
        });
    }

    let (host, port) = ("127.0.0.1", 5432);
    let mut ready = wait_ready(host, port, bindir.as_deref(), Duration::ZERO);
    let mut how = "running";
    if !ready && start_local_clusters(paths) {
        ready = wait_ready(host, port, bindir.as_deref(), WAIT);
        how = "local cluster started";
        if !ready {
            say(format_args!(
                "the local cluster did not answer on {host}:{port} within {} s (see {})",
                WAIT.as_secs(),
                paths.log("pg_ctlcluster").display()
            ));
        }
    }
    if !ready {
        return match &bindir {
            Some(bin) => PrivateCluster::start(paths, bin),
            None => Err(no_server_binaries()),
        };
    }
    create_test_database(DEFAULT_URL, bindir.as_deref(), paths)?;
    say(format_args!("PostgreSQL: {host}:{port} ({how})"));
    Ok(Postgres {
        url: DEFAULT_URL.to_owned(),
        bindir,
        _private: None,
    })
}

fn no_server_binaries() -> anyhow::Error {
    anyhow!("PostgreSQL not found: nothing answers on 127.0.0.1:5432 and there is no initdb/pg_ctl in /usr/lib/postgresql/*/bin: apt-get install postgresql, or set ROLLGATE_TEST_DATABASE_URL")
}

/// Starts every cluster of the Debian layout (/etc/postgresql/<version>/main); true if any
/// start was attempted.
fn start_local_clusters(paths: &Paths) -> bool {
    if which("pg_ctlcluster").is_none() {
        return false;
    }
    let Ok(entries) = fs::read_dir("/etc/postgresql") else {
        return false;
    };
    let log = paths.log("pg_ctlcluster");
    let mut tried = false;
    for entry in entries.flatten() {
        if !entry.path().join("main/postgresql.conf").is_file() {
            continue;
        }
        let version = entry.file_name().to_string_lossy().into_owned();
        say(format_args!(
            "starting the local PostgreSQL cluster {version}/main"
        ));
        let mut cmd = Command::new("pg_ctlcluster");
        cmd.args(["--skip-systemctl-redirect", &version, "main", "start"]);
        let _ = run_logged(&mut cmd, &log);
        tried = true;
    }
    tried
}

/// Polls until the server accepts connections (pg_isready where there is one, else a TCP
/// connect), for at most `wait`; one probe when `wait` is zero.
fn wait_ready(host: &str, port: u16, bindir: Option<&Path>, wait: Duration) -> bool {
    let isready = which("pg_isready").or_else(|| {
        bindir
            .map(|b| b.join("pg_isready"))
            .filter(|p| is_executable(p))
    });
    let deadline = Instant::now() + wait;
    loop {
        let ready = match &isready {
            Some(prog) => Command::new(prog)
                .args(["-q", "-t", "2", "-h", host, "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success()),
            None => {
                use std::net::ToSocketAddrs;
                (host, port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .is_some_and(|addr| {
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
                    })
            }
        };
        if ready || Instant::now() >= deadline {
            return ready;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn psql(bindir: Option<&Path>) -> Option<PathBuf> {
    which("psql").or_else(|| bindir.map(|b| b.join("psql")).filter(|p| is_executable(p)))
}

/// Creates the database `test` (the URL's) through the `postgres` database when it is missing.
fn create_test_database(url: &str, bindir: Option<&Path>, paths: &Paths) -> Result<()> {
    let Some(psql) = psql(bindir) else {
        say("psql not found (Debian package postgresql-client): assuming database `test` exists");
        return Ok(());
    };
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    let exists = output_of(
        &psql,
        &[
            "-X",
            "-Atq",
            "-d",
            &format!("{base}/postgres"),
            "-c",
            "SELECT 1 FROM pg_database WHERE datname = 'test'",
        ],
    );
    match exists.as_deref() {
        Some("1") => Ok(()),
        Some(_) => {
            say("creating database test");
            let mut cmd = Command::new(&psql);
            cmd.args(["-X", "-q", "-d", &format!("{base}/postgres"), "-c", "CREATE DATABASE test"]);
            if run_logged(&mut cmd, &paths.log("psql"))? {
                Ok(())
            } else {
                bail!("cannot create database test at {base} (see {}): user postgres with trust authentication expected", paths.log("psql").display())
            }
        }
        None => bail!("PostgreSQL answers but `psql -d {base}/postgres` fails: user postgres with trust authentication expected, or set ROLLGATE_TEST_DATABASE_URL"),
    }
}

/// Host and port of a postgres:// URL (defaults 127.0.0.1 and 5432).
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').unwrap_or((v6, ""));
        (host, rest.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(5432);
    (host.to_owned(), port)
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "::1") || host.starts_with("127.")
}

/// A cluster of our own under target/xtask/pg/data: created once (initdb), started on a free
/// port for each run, stopped on drop (also when the tests fail).
struct PrivateCluster {
    pg_ctl: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Run the server binaries as this user (set when xtask runs as root).
    user: Option<&'static str>,
}

impl PrivateCluster {
    fn start(paths: &Paths, bin: &Path) -> Result<Postgres> {
        let base = paths.work.join("pg");
        let data = base.join("data");
        // pg_ctl's own output; the server writes its log as the server user into server_log.
        let log = paths.log("postgres");
        let server_log = base.join("server.log");
        let user = is_root().then_some(SERVER_USER);
        fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
        if let Some(user) = user {
            chown_to(user, &base)?;
        }
        let cluster = PrivateCluster {
            pg_ctl: bin.join("pg_ctl"),
            data: data.clone(),
            log: log.clone(),
            user,
        };

        // A server left running by an interrupted run: stop it (it is ours).
        if data.join("postmaster.pid").exists() {
            let mut status = cluster.command(&cluster.pg_ctl);
            status.arg("status").arg("-D").arg(&data);
            if run_logged(&mut status, &log)? {
                cluster.stop("immediate");
            }
        }

        let version = output_of(bin.join("pg_config"), &["--version"]).unwrap_or_default();
        let stamp = base.join("initdb.done");
        if !crate::util::stamp_matches(&stamp, &version) || !data.join("PG_VERSION").is_file() {
            if data.exists() {
                fs::remove_dir_all(&data)
                    .with_context(|| format!("cannot remove {}", data.display()))?;
            }
            let mut initdb = cluster.command(&bin.join("initdb"));
            initdb.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]);
            if !run_logged(&mut initdb, &log)? {
                bail!(
                    "initdb of a private PostgreSQL cluster in {} failed (see {})",
                    data.display(),
                    log.display()
                );
            }
            // Loopback TCP only (no socket to clash with the local cluster's), and no fsync:
            // this cluster is thrown away.
            let mut conf = fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))?;
            std::io::Write::write_all(
                &mut conf,
                b"\n# cargo xtask test\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\nfull_page_writes = off\nmax_connections = 200\n",
            )?;
            crate::util::write_stamp(&stamp, &version)?;
        }

        let port = free_port()?;
        let mut start = cluster.command(&cluster.pg_ctl);
        start
            .arg("start")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&server_log)
            .args([
                "-w",
                "-t",
                &WAIT.as_secs().to_string(),
                "-o",
                &format!("-p {port}"),
            ]);
        if !run_logged(&mut start, &log)? {
            bail!(
                "the private PostgreSQL cluster in {} did not start within {} s (see {})",
                data.display(),
                WAIT.as_secs(),
                server_log.display()
            );
        }
        let url = format!("postgres://postgres@127.0.0.1:{port}/test");
        // From here on the cluster is stopped on every path out.
        let postgres = Postgres {
            url,
            bindir: Some(bin.to_path_buf()),
            _private: Some(cluster),
        };
        if !wait_ready("127.0.0.1", port, Some(bin), WAIT) {
            bail!(
                "the private PostgreSQL cluster does not answer on 127.0.0.1:{port} (see {})",
                server_log.display()
            );
        }
        create_test_database(&postgres.url, Some(bin), paths)?;
        say(format_args!(
            "PostgreSQL: private cluster on 127.0.0.1:{port} ({}; stopped at the end)",
            data.display()
        ));
        Ok(postgres)
    }

    fn command(&self, program: &Path) -> Command {
        match self.user {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    fn stop(&self, mode: &str) {
        let mut stop = self.command(&self.pg_ctl);
        stop.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "30"]);
        let _ = run_logged(&mut stop, &self.log);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop("fast");
        say("PostgreSQL: private cluster stopped");
    }
}

/// Makes `dir` owned by `user`, so the server binaries can run as that user.
fn chown_to(user: &str, dir: &Path) -> Result<()> {
    let id = |flag: &str| -> Result<u32> {
        output_of("id", &[flag, user])
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("running as root, the private PostgreSQL cluster needs a user `{user}` to run as (initdb refuses root): useradd --system {user}, or apt-get install postgresql"))
    };
    let (uid, gid) = (id("-u")?, id("-g")?);
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .with_context(|| format!("cannot give {} to user {user}", dir.display()))?;
    // Every folder above must let that user through.
    let ok = Command::new("runuser")
        .args(["-u", user, "--", "test", "-w"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("user {user} cannot write {}: make the folders above it searchable (chmod o+x) or set CARGO_TARGET_DIR elsewhere", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_urls() {
        let hp = |u: &str| host_port(u);
        assert_eq!(hp(DEFAULT_URL), ("127.0.0.1".into(), 5432));
        assert_eq!(
            hp("postgres://u:p@db.example:6543/x?sslmode=disable"),
            ("db.example".into(), 6543)
        );
        assert_eq!(hp("postgresql://[::1]:5433/test"), ("::1".into(), 5433));
        assert_eq!(hp("postgres://localhost/test"), ("localhost".into(), 5432));
        assert_eq!(hp("postgres:///test"), ("127.0.0.1".into(), 5432));
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("127.0.1.1"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("::1"));
        assert!(!is_loopback("db.example"));
    }
}
