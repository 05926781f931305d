//! kms-local driven by the real `aws-sdk-kms` client, with an attestation from the mock NSM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeyPairSpec, KeyEncryptionMechanism, RecipientInfo};
use pod_enclave::clock::SystemClock;
use pod_enclave::nsm::{AttestationRequest, MockNsm, MockPcrConfig, Nsm};
use pod_protocol::{cms, hpke};
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    client: aws_sdk_kms::Client,
    nsm: MockNsm,
    pcr0: String,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let nsm = MockNsm::open(
        &dir.path().join("nsm"),
        b"enclave image",
        MockPcrConfig::default(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let pcr0 = hex::encode(nsm.describe_pcr(0).unwrap().value);
    let kms = Arc::new(
        kms_local::Kms::open(&dir.path().join("kms"), &[nsm.root_pem().to_owned()], true).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kms_local::server::run(listener, kms, async {
        let _ = rx.await;
    }));
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "AKIDLOCAL",
            "local",
            None,
            None,
            "kms-local-tests",
        ))
        .endpoint_url(format!("http://{addr}"))
        .build();
    Fixture {
        _dir: dir,
        client: aws_sdk_kms::Client::from_conf(conf),
        nsm,
        pcr0,
        _shutdown: tx,
    }
}

fn pinned_policy(pcr0: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "enclave-only", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/pod"},
             "Action": ["kms:GenerateDataKeyPair", "kms:Decrypt"], "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0}}},
            {"Sid": "no-key-substitution", "Effect": "Deny", "Principal": "*",
             "Action": ["kms:Encrypt", "kms:ReEncrypt*"], "Resource": "*"},
            {"Sid": "describe", "Effect": "Allow", "Principal": "*", "Action": "kms:DescribeKey", "Resource": "*"}
        ]
    })
    .to_string()
}

/// An ephemeral RSA-2048 key and an attestation document binding it, as the enclave makes them.
fn recipient(nsm: &MockNsm) -> (OaepPrivateDecryptingKey, Vec<u8>, RecipientInfo) {
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = AsDer::<PublicKeyX509Der<'_>>::as_der(&key.public_key())
        .unwrap()
        .as_ref()
        .to_vec();
    let doc = nsm
        .attest(&AttestationRequest {
            public_key: Some(spki.clone()),
            ..Default::default()
        })
        .unwrap();
    let info = RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .attestation_document(Blob::new(doc))
        .build();
    (OaepPrivateDecryptingKey::new(key).unwrap(), spki, info)
}

fn code<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    e.as_service_error()
        .and_then(|s| s.code())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("not a service error: {e:?}"))
}

async fn create_key(f: &Fixture, policy: Option<String>) -> String {
    let mut req = f.client.create_key().description("pod key");
    if let Some(p) = policy {
        req = req.policy(p);
    }
    req.send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_key_ceremony_and_unseal_work_only_for_the_attested_enclave() {
    let f = fixture().await;
    let key_id = create_key(&f, Some(pinned_policy(&f.pcr0))).await;
    let described = f
        .client
        .describe_key()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(described.key_metadata().unwrap().key_id(), key_id);

    // Ceremony: GenerateDataKeyPair with Recipient; the private key comes back only inside the CMS envelope.
    let (rsa, spki, info) = recipient(&f.nsm);
    let pair = f
        .client
        .generate_data_key_pair()
        .key_id(&key_id)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .encryption_context("pod", "local-test")
        .encryption_context("purpose", "pod-key")
        .recipient(info)
        .send()
        .await
        .unwrap();
    assert!(
        pair.private_key_plaintext().is_none(),
        "no plaintext outside the enclave"
    );
    let cms_blob = pair.ciphertext_for_recipient().unwrap().as_ref();
    let pkcs8 = cms::decrypt(cms_blob, &rsa, &spki).unwrap();
    let pod_key = hpke::PrivateKey::from_der(&pkcs8).unwrap();
    assert_eq!(
        pod_key.public_key().to_spki_der(),
        pair.public_key().unwrap().as_ref()
    );
    let sealed = pair.private_key_ciphertext_blob().unwrap().clone();

    // Boot: Decrypt with a fresh Recipient gives back the same key.
    let (rsa2, spki2, info2) = recipient(&f.nsm);
    let out = f
        .client
        .decrypt()
        .ciphertext_blob(sealed.clone())
        .encryption_context("pod", "local-test")
        .encryption_context("purpose", "pod-key")
        .recipient(info2)
        .send()
        .await
        .unwrap();
    assert!(out.plaintext().is_none());
    let again = cms::decrypt(
        out.ciphertext_for_recipient().unwrap().as_ref(),
        &rsa2,
        &spki2,
    )
    .unwrap();
    assert_eq!(*again, *pkcs8);

    // Without Recipient: denied, for both operations.
    let e = f
        .client
        .decrypt()
        .ciphertext_blob(sealed.clone())
        .encryption_context("pod", "local-test")
        .encryption_context("purpose", "pod-key")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let e = f
        .client
        .generate_data_key_pair()
        .key_id(&key_id)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");

    // Wrong encryption context: the blob does not open.
    let (_, _, info3) = recipient(&f.nsm);
    let e = f
        .client
        .decrypt()
        .ciphertext_blob(sealed)
        .encryption_context("pod", "another-pod")
        .encryption_context("purpose", "pod-key")
        .recipient(info3)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidCiphertextException");

    // Nobody may wrap a key of their choosing under the pod's KMS key.
    let e = f
        .client
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(vec![1u8; 32]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pinned_to_another_image_gives_nothing() {
    let f = fixture().await;
    let other = "ab".repeat(48);
    let key_id = create_key(&f, Some(pinned_policy(&other))).await;
    let (_, _, info) = recipient(&f.nsm);
    let e = f
        .client
        .generate_data_key_pair()
        .key_id(&key_id)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .recipient(info)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_attestations_unknown_keys_and_plain_operations() {
    let f = fixture().await;
    let key_id = create_key(&f, None).await;

    // Without a policy everything is allowed, as AWS's default policy allows the account.
    let enc = f
        .client
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"hello".to_vec()))
        .encryption_context("a", "b")
        .send()
        .await
        .unwrap();
    let dec = f
        .client
        .decrypt()
        .ciphertext_blob(enc.ciphertext_blob().unwrap().clone())
        .encryption_context("a", "b")
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext().unwrap().as_ref(), b"hello");

    // A blob under one key presented for another.
    let other = create_key(&f, None).await;
    let e = f
        .client
        .decrypt()
        .key_id(&other)
        .ciphertext_blob(enc.ciphertext_blob().unwrap().clone())
        .encryption_context("a", "b")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "IncorrectKeyException");

    let dk = f
        .client
        .generate_data_key()
        .key_id(&key_id)
        .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    assert_eq!(dk.plaintext().unwrap().as_ref().len(), 32);

    let (rsa, spki, info) = recipient(&f.nsm);
    let random = f
        .client
        .generate_random()
        .number_of_bytes(64)
        .recipient(info)
        .send()
        .await
        .unwrap();
    assert!(random.plaintext().is_none());
    assert_eq!(
        cms::decrypt(
            random.ciphertext_for_recipient().unwrap().as_ref(),
            &rsa,
            &spki
        )
        .unwrap()
        .len(),
        64
    );

    // A document from a root kms-local does not trust.
    let dir = tempfile::tempdir().unwrap();
    let stranger = MockNsm::open(
        dir.path(),
        b"x",
        MockPcrConfig::default(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let (_, _, info) = recipient(&stranger);
    let e = f
        .client
        .generate_random()
        .number_of_bytes(8)
        .recipient(info)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");

    let e = f
        .client
        .describe_key()
        .key_id("00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_persist_in_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let a = kms_local::Kms::open(dir.path(), &[], false).unwrap();
    let created = a.handle("TrentService.CreateKey", b"{}").unwrap();
    let id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let enc = a
        .handle(
            "TrentService.Encrypt",
            format!(r#"{{"KeyId": "{id}", "Plaintext": "aGk="}}"#).as_bytes(),
        )
        .unwrap();
    drop(a);
    let b = kms_local::Kms::open(dir.path(), &[], false).unwrap();
    let dec = b
        .handle(
            "TrentService.Decrypt",
            format!(
                r#"{{"CiphertextBlob": "{}"}}"#,
                enc["CiphertextBlob"].as_str().unwrap()
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(dec["Plaintext"], "aGk=");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("kms-keys.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key file is private");
    }
    // Malformed requests get KMS-shaped errors.
    assert_eq!(
        b.handle("TrentService.Encrypt", b"[1]").unwrap_err().kind,
        "SerializationException"
    );
    assert_eq!(
        b.handle("TrentService.Nope", b"{}").unwrap_err().kind,
        "UnsupportedOperationException"
    );
    assert_eq!(
        b.handle("Other.Encrypt", b"{}").unwrap_err().kind,
        "UnknownOperationException"
    );
}
