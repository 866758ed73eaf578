//! Where the programs and packages that tests run beside rollgate are, and small helpers for
//! running them (a free port, a child process killed on drop).
//!
//! Each component is found from its environment variable (set by `cargo xtask test`), else on
//! PATH or at its usual Debian path, else under target/xtask where `cargo xtask` installs it.
//! A component that is nowhere fails the test with one line saying what is missing and how to
//! get it. See docs/TESTING.md.
//!
//! ```no_run
//! let prometheus = rollgate_testkit::tools::prometheus();
//! let port = rollgate_testkit::tools::free_port();
//! let _server = rollgate_testkit::tools::ChildGuard::spawn(
//!     std::process::Command::new(prometheus).arg(format!("--web.listen-address=127.0.0.1:{port}")),
//! );
//! ```

use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The prometheus server binary (`ROLLGATE_PROMETHEUS_BIN`; Debian package `prometheus`).
pub fn prometheus() -> PathBuf {
    tool_path(
        "ROLLGATE_PROMETHEUS_BIN",
        &["prometheus", "/usr/bin/prometheus"],
        "prometheus",
    )
}

/// The Chromium browser (`ROLLGATE_CHROMIUM`; Debian package `chromium`).
pub fn chromium() -> PathBuf {
    tool_path(
        "ROLLGATE_CHROMIUM",
        &["chromium", "/usr/bin/chromium"],
        "chromium",
    )
}

/// ChromeDriver, Chromium's WebDriver server (`ROLLGATE_CHROMEDRIVER`; Debian package
/// `chromium-driver`).
pub fn chromedriver() -> PathBuf {
    tool_path(
        "ROLLGATE_CHROMEDRIVER",
        &["chromedriver", "/usr/bin/chromedriver"],
        "chromedriver",
    )
}

/// A node_modules folder with `@openfeature/flagd-core`, `oidc-provider` and
/// `standardwebhooks` (`ROLLGATE_NODE_MODULES`, else target/xtask/node/node_modules). Run
/// scripts with [`node`] and `NODE_PATH` set to this folder.
pub fn node_modules() -> PathBuf {
    let fallback = xtask_dir().join("node/node_modules");
    dir_path(
        "ROLLGATE_NODE_MODULES",
        &[fallback],
        "node packages (@openfeature/flagd-core, oidc-provider, standardwebhooks)",
    )
}

/// The system `node` (Node.js 20 or later).
pub fn node() -> PathBuf {
    match find(
        None,
        &[Fallback::OnPath("node".into()), Fallback::Path("/usr/bin/node".into())],
        Kind::Executable,
    ) {
        Some(path) => path,
        None => panic!("node not found: install Node.js 20 (Debian packages nodejs and npm); `cargo xtask test` checks for it"),
    }
}

/// A command running the system `node` with `NODE_PATH` set to [`node_modules`], so a
/// CommonJS script can `require` the pinned packages (all three load that way on Node 20.19+).
/// `NODE_PATH` does not apply to ES module `import`: an `.mjs` script imports by full path
/// (`node_modules().join("oidc-provider/lib/index.js")`, say) or uses `createRequire`.
pub fn node_command() -> Command {
    let mut cmd = Command::new(node());
    cmd.env("NODE_PATH", node_modules());
    cmd
}

/// Flags for a headless Chromium on a machine without network: without the background
/// networking flags Chromium keeps trying to reach Google's hosts. Add a fresh
/// `--user-data-dir` per browser. (`--no-sandbox` because tests may run as root.)
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A python with `standardwebhooks` and `schemathesis` (`ROLLGATE_PYTHON`, else the
/// virtualenv target/xtask/venv).
pub fn python() -> PathBuf {
    let fallback = xtask_dir().join("venv/bin/python");
    located(
        "ROLLGATE_PYTHON",
        &[Fallback::Path(fallback)],
        Kind::Executable,
        "python with standardwebhooks and schemathesis",
    )
}

/// The folder with PostgreSQL's server binaries (initdb, pg_ctl, postgres) for tests that run
/// a cluster of their own (`ROLLGATE_PG_BINDIR`, else the newest /usr/lib/postgresql/<v>/bin).
pub fn pg_bindir() -> PathBuf {
    let newest = newest_pg_bindir(Path::new("/usr/lib/postgresql"));
    dir_path(
        "ROLLGATE_PG_BINDIR",
        &newest.into_iter().collect::<Vec<_>>(),
        "PostgreSQL server binaries (initdb, pg_ctl)",
    )
}

/// A command running one of PostgreSQL's server binaries (`initdb`, `pg_ctl`, `postgres`):
/// as the user `postgres` through `runuser` when the tests run as root, since the server
/// refuses to run as root. Folders it writes must then belong to that user (see
/// [`give_to_postgres`]).
pub fn pg_command(program: &str) -> Command {
    let path = pg_bindir().join(program);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

/// Makes `dir` (created if missing) writable by the user [`pg_command`] runs as.
pub fn give_to_postgres(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    if !is_root() {
        return;
    }
    let status = Command::new("chown")
        .arg("postgres:postgres")
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run chown: {e}"));
    assert!(
        status.success(),
        "cannot give {} to user postgres (does the user exist? apt-get install postgresql)",
        dir.display()
    );
}

/// The program named by `var`, else the first of `fallbacks` that exists: a bare name is
/// looked up on PATH, a path is taken as it is (relative paths from the workspace root).
/// Panics with one line naming what is missing and how to get it.
pub fn tool_path(var: &str, fallbacks: &[&str], what: &str) -> PathBuf {
    let fallbacks: Vec<Fallback> = fallbacks.iter().map(|f| Fallback::parse(f)).collect();
    located(var, &fallbacks, Kind::Executable, what)
}

/// Like [`tool_path`], for a folder.
pub fn dir_path(var: &str, fallbacks: &[PathBuf], what: &str) -> PathBuf {
    let fallbacks: Vec<Fallback> = fallbacks.iter().cloned().map(Fallback::Path).collect();
    located(var, &fallbacks, Kind::Dir, what)
}

/// The workspace root (the folder with the top Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("services/testkit sits two levels below the workspace root")
        .to_path_buf()
}

/// target/xtask: where `cargo xtask` installs components (under CARGO_TARGET_DIR when set).
pub fn xtask_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => root.join(dir).join("xtask"),
        None => root.join("target/xtask"),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for servers that cannot be told to
/// listen on port 0 and report the port they got).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A child process that is killed (and reaped) when the guard is dropped, also when the test
/// panics.
pub struct ChildGuard(Child);

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(child)
    }

    /// Spawns `cmd`, panicking with the program's name if it cannot start.
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        ChildGuard(child)
    }

    /// Kills the process now and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Executable,
    Dir,
}

#[derive(Debug)]
enum Fallback {
    /// A program name looked up on PATH.
    OnPath(String),
    Path(PathBuf),
}

impl Fallback {
    fn parse(text: &str) -> Fallback {
        if text.contains('/') {
            Fallback::Path(workspace_root().join(text))
        } else {
            Fallback::OnPath(text.to_owned())
        }
    }
}

fn located(var: &str, fallbacks: &[Fallback], kind: Kind, what: &str) -> PathBuf {
    let value = std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(value) = &value {
        let path = PathBuf::from(value);
        assert!(
            is_kind(&path, kind),
            "{what}: {var}={} is not {}: fix or unset it",
            path.display(),
            describe(kind)
        );
        return path;
    }
    find(None, fallbacks, kind).unwrap_or_else(|| panic!("{}", missing_line(what, var)))
}

/// The one line a test fails with when a component is nowhere.
fn missing_line(what: &str, var: &str) -> String {
    format!("{what} not found: set {var} or run `cargo xtask test`, which installs it")
}

/// The first of `value`, then `fallbacks`, that is of `kind`; PATH as given (None: the
/// process's).
fn find(value: Option<&OsStr>, fallbacks: &[Fallback], kind: Kind) -> Option<PathBuf> {
    find_with_path(value, fallbacks, kind, std::env::var_os("PATH").as_deref())
}

fn find_with_path(
    value: Option<&OsStr>,
    fallbacks: &[Fallback],
    kind: Kind,
    path_var: Option<&OsStr>,
) -> Option<PathBuf> {
    if let Some(value) = value {
        let path = PathBuf::from(value);
        return is_kind(&path, kind).then_some(path);
    }
    fallbacks.iter().find_map(|fallback| match fallback {
        Fallback::OnPath(name) => std::env::split_paths(path_var?)
            .map(|dir| dir.join(name))
            .find(|p| is_kind(p, kind)),
        Fallback::Path(path) => is_kind(path, kind).then(|| path.clone()),
    })
}

fn is_kind(path: &Path, kind: Kind) -> bool {
    match kind {
        Kind::Dir => path.is_dir(),
        Kind::Executable => std::fs::metadata(path)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0),
    }
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Dir => "a folder",
        Kind::Executable => "an executable file",
    }
}

fn newest_pg_bindir(base: &Path) -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(base)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (is_kind(&bin.join("initdb"), Kind::Executable)
                && is_kind(&bin.join("pg_ctl"), Kind::Executable))
            .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A folder with an executable `bin/tool`, a plain file `bin/data` and a folder `mods`.
    fn scratch() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        fs::create_dir_all(dir.path().join("mods")).unwrap();
        let tool = dir.path().join("bin/tool");
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("bin/data"), "x").unwrap();
        dir
    }

    #[test]
    fn the_variable_wins_over_every_fallback() {
        let dir = scratch();
        let tool = dir.path().join("bin/tool");
        let other = scratch();
        let found = find_with_path(
            Some(tool.as_os_str()),
            &[Fallback::Path(other.path().join("bin/tool"))],
            Kind::Executable,
            None,
        );
        assert_eq!(found, Some(tool));
    }

    #[test]
    fn a_variable_naming_nothing_usable_is_not_replaced_by_a_fallback() {
        let dir = scratch();
        let fallback = dir.path().join("bin/tool");
        for bad in ["bin/data", "bin/missing", "mods"] {
            let value = dir.path().join(bad);
            let found = find_with_path(
                Some(value.as_os_str()),
                &[Fallback::Path(fallback.clone())],
                Kind::Executable,
                None,
            );
            assert_eq!(found, None, "{bad}");
        }
    }

    #[test]
    fn a_bare_name_is_looked_up_on_path_in_order() {
        let first = scratch();
        let second = scratch();
        let path_var =
            std::env::join_paths([first.path().join("mods"), second.path().join("bin")]).unwrap();
        let found = find_with_path(
            None,
            &[Fallback::OnPath("tool".into())],
            Kind::Executable,
            Some(&path_var),
        );
        assert_eq!(found, Some(second.path().join("bin/tool")));
        let none = find_with_path(
            None,
            &[Fallback::OnPath("data".into())],
            Kind::Executable,
            Some(&path_var),
        );
        assert_eq!(none, None, "a file that is not executable does not count");
    }

    #[test]
    fn fallbacks_are_tried_in_order_and_kinds_are_checked() {
        let dir = scratch();
        let fallbacks = [
            Fallback::OnPath("tool".into()),
            Fallback::Path(dir.path().join("bin/data")),
            Fallback::Path(dir.path().join("mods")),
            Fallback::Path(dir.path().join("bin/tool")),
        ];
        assert_eq!(
            find_with_path(None, &fallbacks, Kind::Executable, None),
            Some(dir.path().join("bin/tool"))
        );
        assert_eq!(
            find_with_path(None, &fallbacks, Kind::Dir, None),
            Some(dir.path().join("mods"))
        );
        assert_eq!(find_with_path(None, &fallbacks[..2], Kind::Dir, None), None);
    }

    #[test]
    fn the_missing_line_names_the_variable_and_the_command() {
        assert_eq!(
            missing_line("prometheus", "ROLLGATE_PROMETHEUS_BIN"),
            "prometheus not found: set ROLLGATE_PROMETHEUS_BIN or run `cargo xtask test`, which installs it"
        );
    }

    #[test]
    #[should_panic(
        expected = "not found: set ROLLGATE_TESTKIT_UNSET_FOR_TEST or run `cargo xtask test`"
    )]
    fn a_missing_tool_panics_with_one_line() {
        tool_path(
            "ROLLGATE_TESTKIT_UNSET_FOR_TEST",
            &["/nonexistent/rollgate-tool"],
            "rollgate-tool",
        );
    }

    #[test]
    fn relative_fallbacks_are_read_from_the_workspace_root() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(root.join("services/testkit").is_dir());
        match Fallback::parse("target/xtask/venv/bin/python") {
            Fallback::Path(p) => assert_eq!(p, root.join("target/xtask/venv/bin/python")),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(Fallback::parse("chromium"), Fallback::OnPath(name) if name == "chromium")
        );
    }

    #[test]
    fn the_newest_postgres_with_server_binaries_is_chosen() {
        let base = tempfile::tempdir().unwrap();
        for (version, complete) in [("13", true), ("15", true), ("16", false), ("x", true)] {
            let bin = base.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            let programs: &[&str] = if complete {
                &["initdb", "pg_ctl"]
            } else {
                &["initdb"]
            };
            for program in programs {
                let p = bin.join(program);
                fs::write(&p, "").unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        assert_eq!(
            newest_pg_bindir(base.path()),
            Some(base.path().join("15/bin"))
        );
        assert_eq!(newest_pg_bindir(&base.path().join("none")), None);
    }

    #[test]
    fn free_ports_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }

    #[test]
    fn a_guarded_child_is_killed_on_drop() {
        let guard = ChildGuard::spawn(Command::new("sleep").arg("600"));
        let pid = guard.id();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(guard);
        // Reaped by the guard: the pid no longer names a live `sleep` of ours.
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)"), "still running: {stat}");
    }
}
