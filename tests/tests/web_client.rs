//! The browser client's tests, run from the workspace's one test command:
//!
//! * `node --test web/test/`: the page's format and attestation code against the spec vectors, the real AWS
//!   attestation documents and the Python and CLI implementations;
//! * `node --test web/e2e/`: headless Chromium (Debian's `chromium`, driven by `playwright-core`) against a real local
//!   pod, two browser profiles and `podctl` interoperating.
//!
//! `.ci/run` installs Node's dependencies (`npm ci` in `web/`) and Chromium first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("web")
}

fn node_test(dir: &str) {
    let bin_dir = pod_tests::bin("pod-proxy").parent().unwrap().to_path_buf();
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec", dir])
        .current_dir(web())
        .env("POD_BIN_DIR", &bin_dir)
        .output()
        .expect("node (Node.js 20) is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node --test {dir} failed:\n{stdout}\n{stderr}"
    );
    // A run that found no test, or skipped one, is not a pass. The spec reporter ends with `ℹ pass N`, `ℹ skipped N`.
    let count = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("ℹ {name} ")))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no `ℹ {name}` line in the report:\n{stdout}"))
    };
    assert!(count("pass") > 0, "no test ran:\n{stdout}");
    assert_eq!(count("skipped"), 0, "tests were skipped:\n{stdout}");
}

#[test]
fn the_pages_code_passes_its_unit_tests() {
    node_test("test/");
}

#[test]
fn the_page_works_in_chromium_with_podctl() {
    assert!(
        web().join("node_modules/playwright-core").exists(),
        "web/node_modules is missing: run `npm ci` in web/ (.ci/run does)"
    );
    node_test("e2e/");
}
