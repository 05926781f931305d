//! The `pod-enclave` binary's command line. (Having integration tests also makes `cargo test --workspace` build
//! this binary before any test runs, which the end-to-end tests in `tests/` rely on.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

fn pod_enclave(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pod-enclave"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn mock_pcrs_measures_the_given_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    std::fs::write(&image, b"some enclave image").unwrap();
    let o = pod_enclave(&["mock-pcrs", "--image", image.to_str().unwrap()]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let [p0, p1, p2] = pod_enclave::nsm::mock_pcrs_for_image(b"some enclave image");
    assert_eq!(v["PCR0"], hex::encode(p0));
    assert_eq!(v["PCR1"], hex::encode(p1));
    assert_eq!(v["PCR2"], hex::encode(p2));
}

#[test]
fn attest_writes_a_document_in_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nsm");
    for format in ["cbor", "hex", "base64"] {
        let out = dir.path().join(format!("doc.{format}"));
        let o = pod_enclave(&[
            "attest",
            "--nsm",
            "mock",
            "--mock-state-dir",
            state.to_str().unwrap(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(&out).unwrap();
        match format {
            "cbor" => assert_eq!(bytes[0], 0x84),
            "hex" => assert!(bytes.iter().all(|b| b.is_ascii_hexdigit() || *b == b'\n')),
            _ => assert!(!bytes.is_empty()),
        }
    }
    assert!(state.join("mock-root.pem").exists());
}

#[test]
fn the_real_nsm_is_refused_off_nitro_and_bad_arguments_are_explained() {
    if std::path::Path::new("/dev/nsm").exists() {
        return;
    }
    let o = pod_enclave(&["attest", "--nsm", "nitro"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/dev/nsm"));

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nsm");
    let o = pod_enclave(&[
        "attest",
        "--nsm",
        "mock",
        "--mock-state-dir",
        state.to_str().unwrap(),
        "--nonce",
        &"00".repeat(513),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("512"));
    let o = pod_enclave(&["attest", "--nsm", "mock", "--mock-pcr", "0=00"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("only 3, 4 and 8"));
}
