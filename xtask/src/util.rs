//! Small helpers: where things live, running commands quietly, finding programs.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context, Result};

/// The folders xtask works in.
pub struct Paths {
    /// The workspace root (holds Cargo.toml and xtask/).
    pub root: PathBuf,
    /// Cargo's target directory (`CARGO_TARGET_DIR`, else `<root>/target`), absolute.
    pub target: PathBuf,
    /// `<target>/xtask`: everything xtask installs or starts lives here.
    pub work: PathBuf,
    /// `<target>/xtask/logs`: output of installers and servers, read only on failure.
    pub logs: PathBuf,
}

impl Paths {
    pub fn discover() -> Result<Paths> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow!("xtask's manifest folder has no parent"))?
            .to_path_buf();
        let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
            // A relative CARGO_TARGET_DIR is relative to where cargo was called from.
            Some(dir) => std::env::current_dir()
                .context("cannot read the current directory")?
                .join(dir),
            None => root.join("target"),
        };
        let work = target.join("xtask");
        let logs = work.join("logs");
        fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
        // Now that it exists: without `..` in the paths xtask prints and exports.
        let target = fs::canonicalize(&target)
            .with_context(|| format!("cannot resolve {}", target.display()))?;
        let work = target.join("xtask");
        let logs = work.join("logs");
        Ok(Paths {
            root,
            target,
            work,
            logs,
        })
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }
}

/// A status line (stderr, so `cargo xtask setup` keeps stdout for the exports).
pub fn say(line: impl std::fmt::Display) {
    eprintln!("xtask: {line}");
}

/// An environment variable that is set and not empty.
pub fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs `cmd` with stdin closed and its stdout and stderr appended to `log`; true on exit 0.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<bool> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    writeln!(file, "$ {cmd:?}")?;
    let err = file.try_clone()?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    Ok(status.success())
}

/// The trimmed stdout of a command that exited 0, or None (not found, failed).
pub fn output_of(program: impl AsRef<OsStr>, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A program found on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub fn is_root() -> bool {
    output_of("id", &["-u"]).as_deref() == Some("0")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `content` is what `stamp` holds: the step it records was done with these inputs.
pub fn stamp_matches(stamp: &Path, content: &str) -> bool {
    fs::read_to_string(stamp).is_ok_and(|s| s == content)
}

pub fn write_stamp(stamp: &Path, content: &str) -> Result<()> {
    fs::write(stamp, content).with_context(|| format!("cannot write {}", stamp.display()))
}

/// `value` quoted for a POSIX shell.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn stamps_compare_whole_content() {
        let dir = std::env::temp_dir().join(format!("xtask-stamp-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let stamp = dir.join("stamp");
        assert!(!stamp_matches(&stamp, "a"));
        write_stamp(&stamp, "a\nb").unwrap();
        assert!(stamp_matches(&stamp, "a\nb"));
        assert!(!stamp_matches(&stamp, "a"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
