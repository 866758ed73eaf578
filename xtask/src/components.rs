//! Programs and packages that tests run beside rollgate: Prometheus, Chromium and ChromeDriver
//! (Debian packages), npm packages run with the system node, and a Python virtualenv.
//!
//! Each step is skipped when already done (a stamp in target/xtask records the inputs it was
//! done with), prints one line when it finds or installs its component, and fails with one line
//! naming what is missing and how to get it. Installer output goes to target/xtask/logs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::util::{
    env_nonempty, is_executable, is_root, output_of, run_logged, say, stamp_matches, which,
    write_stamp, Paths,
};

/// An environment variable handed to the tests.
pub type Export = (&'static str, String);

/// A program from a Debian package.
struct DebianTool {
    var: &'static str,
    path: &'static str,
    package: &'static str,
    name: &'static str,
}

const DEBIAN_TOOLS: [DebianTool; 3] = [
    DebianTool {
        var: "ROLLGATE_PROMETHEUS_BIN",
        path: "/usr/bin/prometheus",
        package: "prometheus",
        name: "prometheus",
    },
    DebianTool {
        var: "ROLLGATE_CHROMIUM",
        path: "/usr/bin/chromium",
        package: "chromium",
        name: "chromium",
    },
    DebianTool {
        var: "ROLLGATE_CHROMEDRIVER",
        path: "/usr/bin/chromedriver",
        package: "chromium-driver",
        name: "chromedriver",
    },
];

/// Node packages the tests load from ROLLGATE_NODE_MODULES (pinned in xtask/node/).
const NODE_PACKAGES: [&str; 3] = [
    "@openfeature/flagd-core",
    "oidc-provider",
    "standardwebhooks",
];
const NODE_MIN_MAJOR: u32 = 20;

/// Python modules the virtualenv must import (pinned in xtask/requirements.txt).
const PYTHON_MODULES: &str = "schemathesis, standardwebhooks";

/// Every component, the three kinds side by side (apt, npm and pip mostly wait on the network).
/// Returns the exports, or every failure (one line each).
pub fn all(paths: &Paths) -> Result<Vec<Export>, Vec<anyhow::Error>> {
    let results = std::thread::scope(|s| {
        let debian = s.spawn(|| debian_tools(paths));
        let node = s.spawn(|| node_modules(paths));
        let python = s.spawn(|| python_venv(paths));
        [debian, node, python].map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("panicked"))))
    });
    let mut exports = Vec::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(e) => exports.extend(e),
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Ok(exports)
    } else {
        Err(failures)
    }
}

fn debian_tools(paths: &Paths) -> Result<Vec<Export>> {
    let mut exports = Vec::new();
    let mut missing = Vec::new();
    for tool in &DEBIAN_TOOLS {
        if let Some(value) = env_nonempty(tool.var) {
            if !is_executable(Path::new(&value)) {
                bail!(
                    "{}={value} is not an executable file: fix or unset {}",
                    tool.var,
                    tool.var
                );
            }
            say(format_args!("{}: {value} (from {})", tool.name, tool.var));
            exports.push((tool.var, value));
        } else if is_executable(Path::new(tool.path)) {
            say(format_args!("{}: {}", tool.name, tool.path));
            exports.push((tool.var, tool.path.to_owned()));
        } else {
            missing.push(tool);
        }
    }
    if missing.is_empty() {
        return Ok(exports);
    }

    let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    let list = packages.join(" ");
    let vars: Vec<&str> = missing.iter().map(|t| t.var).collect();
    let vars = vars.join(", ");
    let how = format!(
        "install the Debian package(s) ({}apt-get install {list}) or set {vars}",
        if is_root() { "" } else { "sudo " }
    );
    if !is_root() || which("apt-get").is_none() {
        let programs: Vec<&str> = missing.iter().map(|t| t.path).collect();
        bail!("{} not found: {how}", programs.join(", "));
    }
    say(format_args!(
        "installing Debian package(s) {list} (apt-get; a few minutes the first time)"
    ));
    let log = paths.log("apt");
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "-y", "-o", "DPkg::Lock::Timeout=600"])
            .args(args);
        run_logged(&mut cmd, &log)
    };
    if !apt(&["update"])? {
        bail!("apt-get update failed (see {}): {how}", log.display());
    }
    let mut install = vec!["install"];
    install.extend(&packages);
    if !apt(&install)? {
        bail!(
            "apt-get install {list} failed (see {}): {how}",
            log.display()
        );
    }
    for tool in missing {
        if !is_executable(Path::new(tool.path)) {
            bail!(
                "{} is still missing after installing {} (see {})",
                tool.path,
                tool.package,
                log.display()
            );
        }
        say(format_args!(
            "{}: {} (installed {})",
            tool.name, tool.path, tool.package
        ));
        exports.push((tool.var, tool.path.to_owned()));
    }
    Ok(exports)
}

fn node_modules(paths: &Paths) -> Result<Vec<Export>> {
    const VAR: &str = "ROLLGATE_NODE_MODULES";
    if let Some(value) = env_nonempty(VAR) {
        check_node_modules(Path::new(&value)).with_context(|| format!("{VAR}={value}"))?;
        say(format_args!("node packages: {value} (from {VAR})"));
        return Ok(vec![(VAR, value)]);
    }
    let how_node = "install Node.js 20 (Debian packages nodejs and npm, or nodesource)";
    let node_version = output_of("node", &["--version"])
        .ok_or_else(|| anyhow!("node not found on PATH: {how_node}"))?;
    let major: u32 = node_version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < NODE_MIN_MAJOR {
        bail!("node {node_version} is too old (tests need {NODE_MIN_MAJOR} or later): {how_node}");
    }
    let npm_version = output_of("npm", &["--version"])
        .ok_or_else(|| anyhow!("npm not found on PATH: {how_node}"))?;

    let source = paths.root.join("xtask/node");
    let dir = paths.work.join("node");
    let modules = dir.join("node_modules");
    let manifest = read(&source.join("package.json"))?;
    let lock = read(&source.join("package-lock.json"))?;
    let stamp = dir.join(".installed");
    let inputs = format!("node {node_version}\nnpm {npm_version}\n{manifest}\n{lock}");
    if stamp_matches(&stamp, &inputs) && check_node_modules(&modules).is_ok() {
        say(format_args!(
            "node packages: {} (node {node_version})",
            modules.display()
        ));
        return Ok(vec![(VAR, modules.display().to_string())]);
    }

    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _ = fs::remove_file(&stamp);
    fs::write(dir.join("package.json"), &manifest)?;
    fs::write(dir.join("package-lock.json"), &lock)?;
    let log = paths.log("npm");
    let mut npm = Command::new("npm");
    npm.current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    if !run_logged(&mut npm, &log)? {
        bail!(
            "npm ci in {} failed (see {}): the npm registry must be reachable",
            dir.display(),
            log.display()
        );
    }
    check_node_modules(&modules)?;
    write_stamp(&stamp, &inputs)?;
    say(format_args!(
        "node packages: {} (installed with npm ci, node {node_version})",
        modules.display()
    ));
    Ok(vec![(VAR, modules.display().to_string())])
}

fn check_node_modules(modules: &Path) -> Result<()> {
    for package in NODE_PACKAGES {
        let dir = modules.join(package);
        if !dir.join("package.json").is_file() {
            bail!("{} is missing: run `cargo xtask setup`", dir.display());
        }
    }
    Ok(())
}

fn python_venv(paths: &Paths) -> Result<Vec<Export>> {
    const VAR: &str = "ROLLGATE_PYTHON";
    if let Some(value) = env_nonempty(VAR) {
        check_python(Path::new(&value)).with_context(|| format!("{VAR}={value}"))?;
        say(format_args!("python: {value} (from {VAR})"));
        return Ok(vec![(VAR, value)]);
    }
    let python3 = which("python3").ok_or_else(|| {
        anyhow!("python3 not found on PATH: install the Debian packages python3 and python3-venv")
    })?;
    let version = output_of(&python3, &["--version"]).unwrap_or_default();
    let requirements = read(&paths.root.join("xtask/requirements.txt"))?;
    let venv = paths.work.join("venv");
    let python = venv.join("bin/python");
    let stamp = paths.work.join("venv.installed");
    let inputs = format!("{} {version}\n{requirements}", python3.display());
    if stamp_matches(&stamp, &inputs) && is_executable(&python) {
        say(format_args!(
            "python: {} ({version}; {PYTHON_MODULES})",
            python.display()
        ));
        return Ok(vec![(VAR, python.display().to_string())]);
    }

    let _ = fs::remove_file(&stamp);
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("cannot remove {}", venv.display()))?;
    }
    let log = paths.log("pip");
    let mut make = Command::new(&python3);
    make.args(["-m", "venv"]).arg(&venv);
    if !run_logged(&mut make, &log)? {
        bail!(
            "`python3 -m venv` failed (see {}): install the Debian package python3-venv",
            log.display()
        );
    }
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "-r",
    ])
    .arg(paths.root.join("xtask/requirements.txt"));
    if !run_logged(&mut pip, &log)? {
        bail!(
            "pip install -r xtask/requirements.txt failed (see {}): PyPI must be reachable",
            log.display()
        );
    }
    check_python(&python)?;
    write_stamp(&stamp, &inputs)?;
    say(format_args!(
        "python: {} (installed {PYTHON_MODULES})",
        python.display()
    ));
    Ok(vec![(VAR, python.display().to_string())])
}

fn check_python(python: &Path) -> Result<()> {
    let ok = Command::new(python)
        .args(["-c", &format!("import {PYTHON_MODULES}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "{} cannot import {PYTHON_MODULES}: run `cargo xtask setup`",
            python.display()
        );
    }
    Ok(())
}

fn read(path: &PathBuf) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
