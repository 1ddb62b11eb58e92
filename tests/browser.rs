//! The browser half in a real browser: each `tests/browser/*.test.mjs` runs under Node's test
//! runner against this build's binary, driving Debian's headless Chromium with playwright-core.
//!
//! Needs `node` and `/usr/bin/chromium` (`apt-get install chromium`; `CHROMIUM` names another
//! one). The npm package is installed from the lock file on first use. Without a browser the
//! tests are skipped with a message, except under `CI=true`, where that is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One browser at a time: the machine may have two cores, and the scenarios time things.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether the browser tests can run here; `false` (after saying why) means skip.
fn ready() -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node = Command::new("node").arg("--version").output();
    let missing = match (Path::new(&chromium).exists(), node) {
        (true, Ok(out)) if out.status.success() => None,
        (false, _) => Some(format!(
            "no browser at {chromium} (apt-get install chromium)"
        )),
        _ => Some("no `node` on PATH".to_owned()),
    };
    if let Some(missing) = missing {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!in_ci, "browser tests cannot run under CI=true: {missing}");
        // Straight to the terminal: the harness captures eprint!, and a skip must not read as
        // a pass.
        let _ = writeln!(std::io::stderr(), "SKIPPED: the browser tests: {missing}");
        return false;
    }
    if !dir().join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir())
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci in tests/browser failed");
    }
    true
}

fn run(file: &str) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !ready() {
        return;
    }
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec", file])
        .current_dir(dir())
        .env("SNAPKEEP_BIN", env!("CARGO_BIN_EXE_snapkeep"))
        .output()
        .expect("node runs");
    // Through the test harness's capture: shown when the test fails or with --nocapture.
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{file} failed (its output is above)");
}

#[test]
fn client_module_in_chromium() {
    run("client.test.mjs");
}

#[test]
fn inspection_page_in_chromium() {
    run("inspect.test.mjs");
}

#[test]
fn one_tag_mirror_in_chromium() {
    run("mirror.test.mjs");
}

#[test]
fn end_to_end_encryption_in_chromium() {
    run("encryption.test.mjs");
}
