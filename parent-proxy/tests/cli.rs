//! The `pod-proxy` command line. (These tests also make `cargo test --workspace` build the binary that the
//! end-to-end tests in `tests/` start.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_relay_refuses_a_target_off_its_allowlist() {
    let out = Command::new(env!("CARGO_BIN_EXE_pod-proxy"))
        .args([
            "kms-relay",
            "--listen",
            "tcp:127.0.0.1:0",
            "--to",
            "attacker.example.com:443",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not on the relay's allowlist"));
}

#[test]
fn help_explains_the_relay() {
    let out = Command::new(env!("CARGO_BIN_EXE_pod-proxy"))
        .args(["kms-relay", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["--listen", "--to", "--allow", "vsock"] {
        assert!(help.contains(word), "{word}");
    }
}
