//! `pod-proxy serve` from a TOML file, with the enclave, kms-local and the relay started apart as on EC2: the pod
//! comes up through KMS and serves; with a key policy pinned to another image it stays sealed and re-encryption
//! answers 503 while health says why.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use pod_tests::https::Client;
use pod_tests::services::{Proc, create_pinned_key, start_enclave, start_kms};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn setup(d: &Path, pcr0: Option<String>) -> (Vec<Proc>, String) {
    let made = Command::new(pod_tests::bin("pod-enclave"))
        .args([
            "attest",
            "--nsm",
            "mock",
            "--out",
            "/dev/null",
            "--mock-state-dir",
        ])
        .arg(d.join("nsm"))
        .output()
        .unwrap();
    assert!(made.status.success());
    let (kms, kms_addr) = start_kms(&d.join("kms"), &d.join("nsm/mock-root.pem"));
    let relay = Proc(
        Command::new(pod_tests::bin("pod-proxy"))
            .args(["kms-relay", "--listen"])
            .arg(format!("unix:{}", d.join("relay.sock").display()))
            .args(["--to", &kms_addr])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let image = std::fs::read(pod_tests::bin("pod-enclave")).unwrap();
    let pcr0 =
        pcr0.unwrap_or_else(|| hex::encode(&pod_enclave::nsm::mock_pcrs_for_image(&image)[0]));
    let key_id = create_pinned_key(&kms_addr, &pcr0);
    let (enclave, link) = start_enclave(d, &kms_addr);
    drop(link);
    // TLS for the proxy.
    let key = tls_files(d);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        d.join("pod-proxy.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             [enclave]\naddress = \"unix:{}\"\n[kms]\nkey_id = \"{key_id}\"\npod_name = \"serve-test\"\ncredentials = \"static\"\n",
            d.join("parent").display(),
            d.join("cert.pem").display(),
            key.display(),
            d.join("enclave.sock").display()
        ),
    )
    .unwrap();
    let proxy = Proc(
        Command::new(pod_tests::bin("pod-proxy"))
            .args(["serve", "--config"])
            .arg(d.join("pod-proxy.toml"))
            .env("AWS_ACCESS_KEY_ID", "AKIDLOCAL")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (
        vec![proxy, enclave, relay, kms],
        format!("https://127.0.0.1:{port}"),
    )
}

/// A self-signed certificate for 127.0.0.1, written as cert.pem and key.pem.
fn tls_files(d: &Path) -> std::path::PathBuf {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("cert.pem"))
        .output()
        .expect("openssl makes the test certificate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.join("key.pem")
}

async fn wait_health(client: &Client) -> serde_json::Value {
    for _ in 0..100 {
        if let Ok((_, h)) = client.call("GET", "/pod/health", None).await {
            if h["status"] == "ready" || h["sealed_reason"].is_string() {
                return h;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the proxy never reported the enclave's state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_brings_the_pod_up_through_kms() {
    let dir = tempfile::tempdir().unwrap();
    let (_procs, url) = setup(dir.path(), None);
    let client = Client::new(
        &url,
        Some(&std::fs::read_to_string(dir.path().join("cert.pem")).unwrap()),
    )
    .unwrap();
    let h = wait_health(&client).await;
    assert_eq!(h["status"], "ready", "{h}");
    assert!(dir.path().join("parent/sealed-pod-key.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_for_another_image_leaves_the_pod_sealed_and_reencrypt_503() {
    let dir = tempfile::tempdir().unwrap();
    let (_procs, url) = setup(dir.path(), Some("ab".repeat(48)));
    let client = Client::new(
        &url,
        Some(&std::fs::read_to_string(dir.path().join("cert.pem")).unwrap()),
    )
    .unwrap();
    let h = wait_health(&client).await;
    assert_eq!(h["status"], "sealed", "{h}");
    assert!(
        h["sealed_reason"].as_str().unwrap().contains("denied"),
        "{h}"
    );
    let (status, r) = client
        .call("POST", "/pod/re-encrypt", Some(&json!({"encrypted_blob": "AA==", "user_public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "auth_token": "AA=="})))
        .await
        .unwrap();
    assert_eq!(status, 503, "{r}");
    assert_eq!(r["error"], "pod_unavailable");
}
