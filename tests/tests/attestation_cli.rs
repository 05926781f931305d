//! `pod-enclave attest --nsm mock` and `attest-verify` together, as a person runs them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use base64::Engine as _;
use pod_tests::{run, vectors_dir};
use std::io::Write as _;
use std::process::{Command, Stdio};

struct MockPod {
    dir: tempfile::TempDir,
}

impl MockPod {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// Asks the mock NSM (through the enclave binary) for a document.
    fn attest(&self, extra: &[&str]) -> String {
        let out = self.path("doc.cbor");
        let state = self.path("mock-nsm");
        let mut args = vec![
            "attest",
            "--nsm",
            "mock",
            "--mock-state-dir",
            &state,
            "--out",
            &out,
        ];
        args.extend_from_slice(extra);
        let o = run("pod-enclave", &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    }

    fn pcr_file(&self) -> String {
        let o = run(
            "pod-enclave",
            &[
                "mock-pcrs",
                "--image",
                &pod_tests::bin("pod-enclave").to_string_lossy(),
            ],
        );
        assert!(o.status.success());
        let path = self.path("pcrs.json");
        std::fs::write(&path, &o.stdout).unwrap();
        path
    }
}

#[test]
fn a_mock_document_passes_with_the_mock_root_and_fails_without_it() {
    let pod = MockPod::new();
    let nonce = "00112233445566778899aabbccddeeff";
    let doc = pod.attest(&["--nonce", nonce, "--user-data", "cafe"]);
    let root = pod.path("mock-nsm/mock-root.pem");
    let pcrs = pod.pcr_file();

    let ok = run(
        "attest-verify",
        &[
            "--root",
            &root,
            "--pcrs",
            &pcrs,
            "--nonce",
            nonce,
            "--max-age",
            "5m",
            &doc,
        ],
    );
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("OK: attestation document verified"),
        "{stdout}"
    );
    assert!(stdout.contains(nonce), "{stdout}");
    assert!(stdout.contains("cafe"), "{stdout}");

    let refused = run("attest-verify", &["--pcrs", &pcrs, &doc]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not the pinned root"), "{stderr}");

    // A wrong nonce and a wrong PCR are refused with their reasons.
    let wrong_nonce = run(
        "attest-verify",
        &["--root", &root, "--pcrs", &pcrs, "--nonce", "01", &doc],
    );
    assert_eq!(wrong_nonce.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong_nonce.stderr).contains("nonce"));
    let wrong_pcr = format!("0={}", "ab".repeat(48));
    let o = run(
        "attest-verify",
        &["--root", &root, "--pcr", &wrong_pcr, &doc],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("PCR0 does not match"));
}

#[test]
fn the_mock_root_persists_across_runs() {
    let pod = MockPod::new();
    pod.attest(&[]);
    let first = std::fs::read(pod.path("mock-nsm/mock-root.pem")).unwrap();
    let doc = pod.attest(&[]);
    assert_eq!(
        first,
        std::fs::read(pod.path("mock-nsm/mock-root.pem")).unwrap()
    );
    let o = run(
        "attest-verify",
        &[
            "--root",
            &pod.path("mock-nsm/mock-root.pem"),
            "--pcrs",
            &pod.pcr_file(),
            &doc,
        ],
    );
    assert!(o.status.success());
}

#[test]
fn real_documents_through_the_cli_json_and_encodings() {
    let doc = vectors_dir().join("marlin-nitroprover-2024-02-26.cbor");
    let doc_s = doc.to_str().unwrap();
    let pcr0 = "0=17bf8f048519797be90497001a7559a3d555395937117d76f8baaedf56ca6d97952de79479bc0c76e5d176d20f663790";
    let o = run(
        "attest-verify",
        &[
            "--pcr",
            pcr0,
            "--at",
            "2024-02-26T07:05:00Z",
            "--json",
            doc_s,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["timestamp_ms"], 1708930921439u64);
    assert_eq!(v["pcrs"]["PCR0"], &pcr0[2..]);
    assert_eq!(v["nonce"], serde_json::Value::Null);

    // Now (years later) the leaf has expired: refused, as JSON too.
    let o = run("attest-verify", &["--pcr", pcr0, "--json", doc_s]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert!(v["error"].as_str().unwrap().contains("not valid at"));

    // Hex and base64 on standard input, with the time as Unix milliseconds.
    let raw = std::fs::read(&doc).unwrap();
    for text in [
        hex::encode(&raw),
        base64::engine::general_purpose::STANDARD.encode(&raw),
    ] {
        let mut child = Command::new(pod_tests::bin("attest-verify"))
            .args(["--pcr", pcr0, "--at", "1708930921439", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    // Debug documents need --allow-debug.
    let debug = vectors_dir().join("evervault-debug-2023-09-18.cbor");
    let debug = debug.to_str().unwrap();
    let o = run(
        "attest-verify",
        &["--insecure-any-pcrs", "--at", "1695049410860", debug],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("debug mode"));
    let o = run(
        "attest-verify",
        &[
            "--insecure-any-pcrs",
            "--allow-debug",
            "--at",
            "1695049410860",
            debug,
        ],
    );
    assert!(o.status.success());
}

#[test]
fn usage_errors_exit_2_and_help_explains_every_option() {
    let doc = vectors_dir().join("marlin-nitroprover-2024-02-26.cbor");
    // No PCR policy at all is a usage error that says what to do.
    let o = run("attest-verify", &[doc.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--pcrs"));
    let o = run(
        "attest-verify",
        &["--insecure-any-pcrs", "/nonexistent/doc"],
    );
    assert_eq!(o.status.code(), Some(2));

    let o = run("attest-verify", &["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for option in [
        "--at",
        "--pcrs",
        "--pcr",
        "--nonce",
        "--max-age",
        "--root",
        "--allow-debug",
        "--insecure-any-pcrs",
        "--json",
        "--format",
        "--public-key",
        "--user-data",
        "Exit status",
    ] {
        assert!(help.contains(option), "--help does not mention {option}");
    }
}
