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
use pod_tests::services::{
    Proc, create_pinned_key, enclave_pcr0, mock_ca, start_enclave, start_kms, start_relay,
    start_serve,
};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn setup(d: &Path, pcr0: Option<String>) -> (Vec<Proc>, String) {
    mock_ca(d);
    let (kms, kms_addr) = start_kms(&d.join("kms"), &d.join("nsm/mock-root.pem"));
    let relay = start_relay(d, &kms_addr);
    let key_id = create_pinned_key(&kms_addr, &pcr0.unwrap_or_else(enclave_pcr0));
    let (enclave, link) = start_enclave(d, &kms_addr);
    drop(link);
    let (proxy, url) = start_serve(d, &key_id);
    (vec![proxy, enclave, relay, kms], url)
}

async fn wait_health(client: &Client) -> serde_json::Value {
    for _ in 0..100 {
        if let Ok((_, h)) = client.call("GET", "/pod/health", None).await
            && (h["status"] == "ready" || h["sealed_reason"].is_string())
        {
            return h;
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
