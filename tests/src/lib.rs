//! Helpers for the end-to-end tests: locating the workspace's binaries and running them.
//!
//! The tests run the real binaries as a person would. `cargo test --workspace` builds every binary before any
//! test runs; [`bin`] finds them next to the test executable.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of a workspace binary built by the same `cargo test` run.
///
/// # Panics
/// When the binary has not been built, with a message saying how to build it (this is test-support code).
#[allow(clippy::panic, clippy::expect_used)]
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps");
    let path = dir.join(name);
    if !path.exists() {
        panic!(
            "{} is not built; run the suite with `cargo test --workspace` (or `cargo build --bins` first)",
            path.display()
        );
    }
    path
}

/// Runs a binary with arguments and returns its output.
#[allow(clippy::expect_used)]
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .output()
        .expect("the binary starts")
}

/// The directory of the real attestation vectors shipped with the verifier's tests.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("attestation-verifier")
        .join("tests")
        .join("vectors")
}
