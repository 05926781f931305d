//! The operator files in eif/: the scripts parse (and pass shellcheck where it is installed), the example
//! configuration is a valid `pod-proxy serve` configuration, and the units call commands that exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn eif(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../eif")
        .join(name)
}

#[test]
fn scripts_parse() {
    for script in ["build.sh", "run.sh"] {
        let o = Command::new("bash")
            .arg("-n")
            .arg(eif(script))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let ci = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/fuzz-short");
    assert!(
        Command::new("bash")
            .arg("-n")
            .arg(ci)
            .status()
            .unwrap()
            .success()
    );
    match Command::new("shellcheck").arg("--version").output() {
        Ok(_) => {
            let ci = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci");
            let o = Command::new("shellcheck")
                .arg(eif("build.sh"))
                .arg(eif("run.sh"))
                .arg(ci.join("run"))
                .arg(ci.join("fuzz-short"))
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        }
        Err(_) => {
            eprintln!("NOTE: shellcheck is not installed; only `bash -n` checked the scripts")
        }
    }
}

#[test]
fn the_image_build_refuses_a_toolchain_not_pinned_by_digest() {
    let o = Command::new("bash")
        .arg(eif("build.sh"))
        .arg(std::env::temp_dir().join("secure-pod-eif-out"))
        .env("RUST_IMAGE", "rust:1.95-bookworm")
        .env_remove("ALLOW_UNPINNED")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not pinned by digest"), "{err}");
    assert!(err.contains("docker inspect"), "{err}");
}

#[test]
fn the_example_configuration_loads() {
    let text = std::fs::read_to_string(eif("pod-proxy.toml.example")).unwrap();
    let c = pod_proxy::config::load(&text, |_| None).unwrap();
    assert_eq!(c.enclave.address, "vsock:16:5000");
    assert_eq!(c.kms.credentials, pod_proxy::config::CredentialSource::Imds);
}

#[test]
fn the_units_run_real_subcommands() {
    for (unit, words) in [
        (
            "systemd/secure-pod-proxy.service",
            vec!["pod-proxy serve --config"],
        ),
        (
            "systemd/secure-pod-kms-relay.service",
            vec!["pod-proxy kms-relay --listen vsock:8000 --to kms."],
        ),
        (
            "systemd/secure-pod-enclave.service",
            vec!["run.sh", "terminate-enclave"],
        ),
    ] {
        let text = std::fs::read_to_string(eif(unit)).unwrap();
        for w in words {
            assert!(text.contains(w), "{unit} lacks {w:?}");
        }
    }
    // And those subcommands exist with those flags.
    let help = Command::new(env!("CARGO_BIN_EXE_pod-proxy"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config"));
    let help = Command::new(env!("CARGO_BIN_EXE_pod-proxy"))
        .args(["kms-relay", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--to"));
}
