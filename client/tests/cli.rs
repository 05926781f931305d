//! The `podctl` command line without a pod. (These tests also make `cargo test --workspace` build the binary that
//! the end-to-end tests in `tests/` run.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn podctl(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_podctl"))
        .args(args)
        .current_dir(dir)
        .env_remove("POD_URL")
        .env_remove("POD_PCRS")
        .output()
        .unwrap()
}

#[test]
fn keygen_writes_a_private_and_a_public_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let o = podctl(&["keygen", "--out", "alice"], dir.path());
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("user id "));
    assert!(dir.path().join("alice.key").exists() && dir.path().join("alice.pub").exists());
    let o = podctl(&["keygen", "--out", "alice"], dir.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to overwrite"));
}

#[test]
fn missing_settings_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let o = podctl(&["attest"], dir.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("POD_URL"));
    let o = podctl(&["--pod", "https://127.0.0.1:1", "attest"], dir.path());
    assert!(String::from_utf8_lossy(&o.stderr).contains("POD_PCRS"));
    let help = podctl(&["--help"], dir.path());
    let text = String::from_utf8_lossy(&help.stdout);
    for word in [
        "keygen", "attest", "room", "seal", "open", "audit", "--pod", "--cacert", "--root",
        "--pcrs",
    ] {
        assert!(text.contains(word), "{word}");
    }
}
