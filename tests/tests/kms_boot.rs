//! The enclave's KMS code (`pod_enclave::kms`, through the real aws-sdk-kms) against kms-local: the key ceremony,
//! unsealing at boot, and every way it must refuse.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use base64::Engine as _;
use pod_enclave::clock::SystemClock;
use pod_enclave::kms::{self, Credentials, KmsConfig, KmsError, KmsVia};
use pod_enclave::nsm::{MockNsm, MockPcrConfig, Nsm};
use pod_protocol::keys::fingerprint;
use std::sync::Arc;
use zeroize::Zeroizing;

struct Fixture {
    _dir: tempfile::TempDir,
    nsm: MockNsm,
    kms: Arc<kms_local::Kms>,
    config: KmsConfig,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let nsm = MockNsm::open(
        &dir.path().join("nsm"),
        b"image",
        MockPcrConfig::default(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let kms = Arc::new(
        kms_local::Kms::open(&dir.path().join("kms"), &[nsm.root_pem().to_owned()], false).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kms_local::server::run(listener, kms.clone(), async {
        let _ = rx.await;
    }));
    Fixture {
        _dir: dir,
        nsm,
        kms,
        config: KmsConfig {
            endpoint: format!("http://{addr}"),
            region: "us-east-1".into(),
            via: KmsVia::Tcp(addr.to_string()),
        },
        _stop: stop,
    }
}

fn creds() -> Credentials {
    Credentials {
        access_key_id: "AKIDLOCAL".into(),
        secret_access_key: Zeroizing::new("local".into()),
        session_token: None,
    }
}

fn create_key(f: &Fixture, pcr0: Option<&str>) -> String {
    let body = match pcr0 {
        Some(p) => serde_json::json!({ "Policy": serde_json::json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": ["kms:GenerateDataKeyPair", "kms:Decrypt"], "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": p}}},
            {"Effect": "Deny", "Principal": "*", "Action": ["kms:Encrypt", "kms:ReEncrypt*"], "Resource": "*"}
        ]}).to_string() }),
        None => serde_json::json!({}),
    };
    let out = f
        .kms
        .handle("TrentService.CreateKey", body.to_string().as_bytes())
        .unwrap();
    out["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceremony_then_unseal_recovers_the_same_pod_key() {
    let f = fixture().await;
    let pcr0 = hex::encode(f.nsm.describe_pcr(0).unwrap().value);
    let key_id = create_key(&f, Some(&pcr0));
    let client = kms::client(&f.config, &creds());
    let ctx = kms::pod_key_context("test-pod");

    let provisioned = kms::provision(&client, &key_id, &ctx, &f.nsm)
        .await
        .unwrap();
    let fpr = fingerprint(&provisioned.public_spki);
    let (key, arn) = kms::unseal(&client, &provisioned.sealed, &ctx, &fpr, &f.nsm)
        .await
        .unwrap();
    assert_eq!(key.public_key(), provisioned.key.public_key());
    // KMS names the key that released it, as an ARN: what the enclave pins a rotation's successor to.
    assert_eq!(arn, provisioned.key_arn);
    assert!(
        arn.starts_with("arn:aws:kms:") && arn.contains(":key/"),
        "{arn}"
    );

    // Another pod's context: KMS refuses the blob.
    let other = kms::pod_key_context("another-pod");
    match kms::unseal(&client, &provisioned.sealed, &other, &fpr, &f.nsm).await {
        Err(KmsError::Service { code, .. }) => assert_eq!(code, "InvalidCiphertextException"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("unsealed under the wrong context"),
    }
    // The right blob but a different published fingerprint: refused.
    assert!(matches!(
        kms::unseal(&client, &provisioned.sealed, &ctx, &[0u8; 32], &f.nsm).await,
        Err(KmsError::WrongKey)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pinned_to_another_image_leaves_the_pod_sealed() {
    let f = fixture().await;
    let key_id = create_key(&f, Some(&"ab".repeat(48)));
    let client = kms::client(&f.config, &creds());
    match kms::provision(&client, &key_id, &kms::pod_key_context("p"), &f.nsm).await {
        Err(KmsError::AccessDenied(_)) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("provisioned with the wrong PCR0"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substituted_key_is_refused_at_boot() {
    // An attacker with Encrypt rights on some other KMS key wraps a key of their own choosing under the pod's
    // context and hands it to the enclave as "the sealed pod key". KMS decrypts it (that key's policy allows it),
    // but the recovered key is not the one the pod published.
    let f = fixture().await;
    let pcr0 = hex::encode(f.nsm.describe_pcr(0).unwrap().value);
    let real_key = create_key(&f, Some(&pcr0));
    let client = kms::client(&f.config, &creds());
    let ctx = kms::pod_key_context("test-pod");
    let provisioned = kms::provision(&client, &real_key, &ctx, &f.nsm)
        .await
        .unwrap();
    let fpr = fingerprint(&provisioned.public_spki);

    let loose_key = create_key(&f, None);
    let attacker = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let wrapped = f
        .kms
        .handle(
            "TrentService.Encrypt",
            serde_json::json!({"KeyId": loose_key, "Plaintext": b64(attacker.as_ref()), "EncryptionContext": ctx})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(wrapped["CiphertextBlob"].as_str().unwrap())
        .unwrap();
    assert!(matches!(
        kms::unseal(&client, &blob, &ctx, &fpr, &f.nsm).await,
        Err(KmsError::WrongKey)
    ));

    // And under the pod's own KMS key, Encrypt is denied to everyone.
    let denied = f.kms.handle(
        "TrentService.Encrypt",
        serde_json::json!({"KeyId": real_key, "Plaintext": b64(attacker.as_ref())})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(denied.unwrap_err().kind, "AccessDeniedException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_kms_is_a_transient_error() {
    let f = fixture().await;
    let config = KmsConfig {
        via: KmsVia::Tcp("127.0.0.1:1".into()),
        ..f.config.clone()
    };
    let client = kms::client(&config, &creds());
    match kms::provision(&client, "any", &kms::pod_key_context("p"), &f.nsm).await {
        Err(e) => assert!(e.is_transient(), "{e}"),
        Ok(_) => panic!("reached a closed port"),
    }
}
