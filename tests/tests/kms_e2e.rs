//! The pod key's whole life across processes: kms-local, the parent's KMS relay, and the enclave binary with the
//! mock NSM. The ceremony on first start, unsealing after a restart, and the pod staying sealed when KMS says no.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use attestation_verifier::{Policy, UnixTime, Verifier};
use pod_cbor::{Decoder, Encoder};
use pod_protocol::keys::fingerprint;
use pod_protocol::link::{self, kind};
use pod_tests::fixtures::now_ms;
use pod_tests::parent::Link;
use pod_tests::services::{
    create_pinned_key, enclave_pcr0, mock_ca, start_enclave, start_kms, start_relay,
};

/// `[status, fingerprint|null, audit_next_seq, rooms, config_hash, failure|null, sealed_reason|null]`.
fn health(link: &mut Link) -> (String, Option<Vec<u8>>, Option<String>) {
    let reply = link.call(kind::HEALTH, &[]).unwrap();
    let mut d = Decoder::new(&reply.body);
    d.array().unwrap();
    let status = d.text().unwrap().to_owned();
    let fpr = if d.null().unwrap() {
        None
    } else {
        Some(d.bytes().unwrap().to_vec())
    };
    d.u64().unwrap();
    d.u64().unwrap();
    d.bytes().unwrap();
    if !d.null().unwrap() {
        d.text().unwrap();
    }
    let reason = if d.null().unwrap() {
        None
    } else {
        Some(d.text().unwrap().to_owned())
    };
    (status, fpr, reason)
}

fn provision_body(key_id: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.array(5)
        .text(key_id)
        .text("e2e-pod")
        .text("AKIDLOCAL")
        .text("local")
        .null();
    e.into_bytes()
}

fn unseal_body(sealed: &[u8], fpr: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.array(6)
        .bytes(sealed)
        .bytes(fpr)
        .text("e2e-pod")
        .text("AKIDLOCAL")
        .text("local")
        .null();
    e.into_bytes()
}

#[test]
fn the_pod_key_is_born_in_kms_and_comes_back_only_to_the_attested_enclave() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The mock NSM's CA exists before KMS is told to trust it.
    mock_ca(d);
    let (_kms, kms_addr) = start_kms(&d.join("kms"), &d.join("nsm/mock-root.pem"));
    let relay = start_relay(d, &kms_addr);
    let pcr0 = enclave_pcr0();
    let key_id = create_pinned_key(&kms_addr, &pcr0);

    // First start: sealed until the ceremony.
    let (enclave, mut link) = start_enclave(d, &kms_addr);
    assert_eq!(health(&mut link).0, "sealed");
    let reply = link
        .call(kind::PROVISION, &provision_body(&key_id))
        .unwrap();
    assert_eq!(
        reply.kind,
        kind::PROVISIONED,
        "{:?}",
        link::decode_code_message(&reply.body)
    );
    let parts = link::decode_bytes_n(&reply.body, 3).unwrap();
    let (sealed, spki, doc) = (parts[0].to_vec(), parts[1].to_vec(), parts[2].to_vec());
    // The attestation binds exactly this pod key.
    let root = std::fs::read_to_string(d.join("nsm/mock-root.pem")).unwrap();
    let verified = Verifier::with_root_pem(&root)
        .unwrap()
        .verify(
            &doc,
            &Policy::insecure_any_pcrs().public_key(spki.clone()),
            UnixTime::from_millis(now_ms()),
        )
        .unwrap();
    assert_eq!(verified.pcr(0).map(hex::encode), Some(pcr0.clone()));
    let fpr = fingerprint(&spki);
    let (status, got, _) = health(&mut link);
    assert_eq!(
        (status.as_str(), got.as_deref()),
        ("ready", Some(fpr.as_slice()))
    );
    // A second ceremony is refused.
    let again = link
        .call(kind::PROVISION, &provision_body(&key_id))
        .unwrap();
    assert_eq!(
        link::decode_code_message(&again.body).unwrap().0,
        "already_unsealed"
    );
    drop(link);
    drop(enclave);

    // Restart: the stored blob unseals to the same key.
    let (enclave, mut link) = start_enclave(d, &kms_addr);
    assert_eq!(health(&mut link).0, "sealed");
    let reply = link
        .call(kind::UNSEAL, &unseal_body(&sealed, &fpr))
        .unwrap();
    assert_eq!(
        reply.kind,
        kind::OK,
        "{:?}",
        link::decode_code_message(&reply.body)
    );
    assert_eq!(health(&mut link).1.as_deref(), Some(fpr.as_slice()));
    drop(link);
    drop(enclave);

    // Restart with the wrong published fingerprint (a substituted blob looks like this): stays sealed.
    let (enclave, mut link) = start_enclave(d, &kms_addr);
    let reply = link
        .call(kind::UNSEAL, &unseal_body(&sealed, &[7u8; 32]))
        .unwrap();
    assert_eq!(
        link::decode_code_message(&reply.body).unwrap().0,
        "wrong_pod_key"
    );
    let (status, _, reason) = health(&mut link);
    assert_eq!(status, "sealed");
    assert!(reason.unwrap().contains("fingerprint"));

    // A KMS key pinned to another image: access denied, the pod stays sealed and says why.
    let other_key = create_pinned_key(&kms_addr, &"ab".repeat(48));
    let reply = link
        .call(kind::PROVISION, &provision_body(&other_key))
        .unwrap();
    assert_eq!(
        link::decode_code_message(&reply.body).unwrap().0,
        "kms_access_denied"
    );
    let (status, _, reason) = health(&mut link);
    assert_eq!(status, "sealed");
    assert!(reason.unwrap().contains("denied"));
    // A sealed pod serves no re-encryption.
    assert_eq!(link.resume_audit().unwrap().kind, kind::ERROR);
    let reply = link
        .call(
            kind::RE_ENCRYPT,
            &link::encode_bytes_list(&[b"request", b"header"]),
        )
        .unwrap();
    assert_eq!(link::decode_code_message(&reply.body).unwrap().0, "sealed");
    drop(link);
    drop(enclave);
    drop(relay);
}

#[test]
fn an_unreachable_kms_is_retried_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A relay to a port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    let _relay = start_relay(d, &dead);
    let (_enclave, mut link) = start_enclave(d, &dead);
    let reply = link
        .call(kind::UNSEAL, &unseal_body(b"blob", &[0u8; 32]))
        .unwrap();
    assert_eq!(
        link::decode_code_message(&reply.body).unwrap().0,
        "kms_unreachable"
    );
    let (status, _, reason) = health(&mut link);
    assert_eq!(status, "sealed");
    assert!(reason.unwrap().contains("unreachable"));
}
