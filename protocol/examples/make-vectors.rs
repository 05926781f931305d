//! Writes the test vectors of docs/SPEC.md: `cargo run -p pod-protocol --example make-vectors -- <dir>`.
//!
//! Every format is produced with throw-away keys whose private halves are in the file, so that any
//! implementation can open, verify and recompute everything. The committed vectors are run by
//! `protocol/tests/spec_vectors.rs` (Rust) and `protocol/tests/spec_vectors.py` (Python, independent). Running this
//! again makes new random values; the tests accept any correct set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use pod_protocol::audit::{self, Checkpoint, Decision, Receipt};
use pod_protocol::envelope::{self, Kind};
use pod_protocol::keys::{EncryptionKey, SigningKey, UserKeyBundle, UserSecrets, fingerprint};
use pod_protocol::membership::{Action, Room, SignedEntry, genesis_entry};
use pod_protocol::request::{Operation, Request, SignedRequest};
use pod_protocol::rotation;
use pod_protocol::{hpke, stream};
use serde_json::json;

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "protocol/tests/vectors".into());
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = 1_767_225_600_000u64; // 2026-01-01T00:00:00Z

    // HPKE: the single-shot seal used for every wrapped key.
    let hpke_recipient =
        hpke::PrivateKey::derive(b"secure-pod spec vector: hpke recipient").unwrap();
    let hpke_plain = b"a 32-byte file key, for example!".to_vec();
    let hpke_info = b"secure-pod/v1 spec vector".to_vec();
    let hpke_sealed =
        hpke::seal(hpke_recipient.public_key(), &hpke_info, b"", &hpke_plain).unwrap();

    // STREAM: 70,000 bytes, so two chunks (one full, one partial).
    let stream_key = stream::StreamKey::from_bytes(&[0x42; 32]).unwrap();
    let stream_plain: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let stream_sealed = stream::seal(&stream_key, &stream_plain).unwrap();
    std::fs::write(format!("{dir}/stream-70000.bin"), &stream_sealed).unwrap();

    // The pod key and two users: Alice (P-256, the default) and Rob (RSA-OAEP-4096).
    let pod = hpke::PrivateKey::derive(b"secure-pod spec vector: pod key").unwrap();
    let owner = UserSecrets::generate().unwrap();
    let alice = UserSecrets::generate().unwrap();
    let rob_rsa = PrivateDecryptingKey::generate(KeySize::Rsa4096).unwrap();
    let rob_rsa_pkcs8 = AsDer::<Pkcs8V1Der<'_>>::as_der(&rob_rsa)
        .unwrap()
        .as_ref()
        .to_vec();
    let rob_rsa_spki = AsDer::<PublicKeyX509Der<'_>>::as_der(&rob_rsa.public_key())
        .unwrap()
        .as_ref()
        .to_vec();
    let rob_signing = SigningKey::generate().unwrap();
    let rob_bundle = UserKeyBundle::new(
        EncryptionKey::RsaOaep4096(rob_rsa_spki),
        rob_signing.verifying_key(),
    );
    let scalar = |k: &hpke::PrivateKey| h(&k.to_scalar().unwrap());

    // Membership: genesis, grant Alice, grant Rob, revoke Rob.
    let genesis = SignedEntry::sign(genesis_entry(&owner.bundle, t0), &owner.signing).unwrap();
    let mut room = Room::genesis(&genesis).unwrap();
    let mut log = vec![genesis];
    for (action, subject) in [
        (Action::Grant, alice.bundle.as_bytes().to_vec()),
        (Action::Grant, rob_bundle.as_bytes().to_vec()),
        (Action::Revoke, rob_bundle.id().to_vec()),
    ] {
        let e = SignedEntry::sign(
            room.next_entry(
                action,
                subject,
                t0 + 1000 * log.len() as u64,
                *owner.bundle.id(),
            ),
            &owner.signing,
        )
        .unwrap();
        room.apply(&e).unwrap();
        log.push(e);
    }
    let room_id = *room.id();

    // A sealed document and Alice's signed request for it.
    let plaintext =
        b"Series A term sheet: pre-money valuation 40M, 1x non-participating preference.".to_vec();
    let to_pod = EncryptionKey::HpkeP256(pod.public_key().clone());
    let sealed = envelope::seal(
        Kind::SealedToPod,
        &room_id,
        b"term-sheet.pdf",
        &to_pod,
        &plaintext,
    )
    .unwrap();
    let (sealed_header, _) = envelope::read_header(&sealed).unwrap().unwrap();
    let request = SignedRequest::sign(
        Request {
            op: Operation::ReEncrypt,
            room: room_id,
            doc: b"term-sheet.pdf".to_vec(),
            header_hash: sealed_header.hash(),
            user: *alice.bundle.id(),
            nonce: vec![0x5a; 16],
            issued_at_ms: t0 + 10_000,
            pod_key: fingerprint(&pod.public_key().to_spki_der()),
        },
        &alice.signing,
    )
    .unwrap();

    // Re-encrypted copies for Alice (HPKE) and for Rob (RSA-OAEP-4096).
    let for_alice = envelope::seal(
        Kind::ReEncrypted,
        &room_id,
        b"term-sheet.pdf",
        alice.bundle.encryption_key(),
        &plaintext,
    )
    .unwrap();
    let for_rob = envelope::seal(
        Kind::ReEncrypted,
        &room_id,
        b"term-sheet.pdf",
        rob_bundle.encryption_key(),
        &plaintext,
    )
    .unwrap();

    // The audit log of two requests, a checkpoint and a receipt, under the pod's receipt key.
    let receipt_key = SigningKey::from_scalar(
        &hpke::PrivateKey::derive(b"secure-pod spec vector: receipt key")
            .unwrap()
            .to_scalar()
            .unwrap(),
    )
    .unwrap();
    let (for_alice_header, _) = envelope::read_header(&for_alice).unwrap().unwrap();
    let mut entries = Vec::new();
    let mut prev = [0u8; 32];
    for (seq, (decision, reason)) in [
        (Decision::Allow, "released"),
        (Decision::Deny, "not a member"),
    ]
    .into_iter()
    .enumerate()
    {
        let e = audit::SignedEntry::sign(
            audit::Entry {
                seq: seq as u64,
                prev,
                time_ms: t0 + 10_500 + seq as u64,
                user: *alice.bundle.id(),
                room: room_id,
                doc: b"term-sheet.pdf".to_vec(),
                decision,
                reason: reason.into(),
                membership_head: *room.head(),
                request_hash: request.hash(),
            },
            &receipt_key,
        )
        .unwrap();
        prev = e.hash();
        entries.push(e);
    }
    let checkpoint = Checkpoint {
        seq: 1,
        head: prev,
        time_ms: t0 + 11_000,
    }
    .sign(&receipt_key)
    .unwrap();
    let receipt = Receipt {
        request_hash: request.hash(),
        response_header_hash: for_alice_header.hash(),
        audit_seq: 0,
        audit_entry_hash: entries[0].hash(),
    }
    .sign(&receipt_key)
    .unwrap();

    // A rotation: the sealed document rewrapped to a successor pod key (same body), and a certificate over three
    // items (the rewrap above and two more), sorted by old header hash.
    let next_pod = hpke::PrivateKey::derive(b"secure-pod spec vector: next pod key").unwrap();
    let next_fpr = fingerprint(&next_pod.public_key().to_spki_der());
    let (_, body_start) = envelope::read_header(&sealed).unwrap().unwrap();
    let new_header = envelope::rewrap(
        &sealed_header,
        envelope::UnwrapKey::Hpke(&pod),
        &EncryptionKey::HpkeP256(next_pod.public_key().clone()),
    )
    .unwrap();
    let rewrapped = [new_header.to_prefixed().as_slice(), &sealed[body_start..]].concat();
    let mut items: Vec<rotation::SignedItem> = [
        (
            sealed_header.hash(),
            new_header.hash(),
            b"term-sheet.pdf".to_vec(),
        ),
        (
            pod_protocol::keys::labeled_hash("header", b"doc 2 before"),
            pod_protocol::keys::labeled_hash("header", b"doc 2 after"),
            b"cap-table.xlsx".to_vec(),
        ),
        (
            pod_protocol::keys::labeled_hash("header", b"doc 3 before"),
            pod_protocol::keys::labeled_hash("header", b"doc 3 after"),
            b"minutes.docx".to_vec(),
        ),
    ]
    .into_iter()
    .map(|(old, new, doc)| {
        rotation::Item {
            mode: rotation::Mode::Rewrap,
            room: room_id,
            doc,
            old_header_hash: old,
            new_header_hash: new,
            new_pod: next_fpr,
        }
        .sign(&receipt_key)
        .unwrap()
    })
    .collect();
    items.sort_by_key(|i| i.item().old_header_hash);
    let mut folder = rotation::ItemFolder::new(rotation::Mode::Rewrap, next_fpr);
    for i in &items {
        folder
            .push(i.as_bytes(), &receipt_key.verifying_key())
            .unwrap();
    }
    let certificate = rotation::Certificate {
        mode: rotation::Mode::Rewrap,
        old_pod: fingerprint(&pod.public_key().to_spki_der()),
        new_pod: next_fpr,
        old_receipt_spki: receipt_key.verifying_key().to_spki_der(),
        count: folder.count(),
        root: folder.root(),
        time_ms: t0 + 20_000,
    }
    .sign(&receipt_key)
    .unwrap();
    let item_bytes: Vec<Vec<u8>> = items.iter().map(|i| i.as_bytes().to_vec()).collect();
    let certificate_file = rotation::encode_certificate_file(&certificate, &item_bytes);

    let vectors = json!({
        "comment": "Secure Pod spec vectors (docs/SPEC.md). Throw-away keys; never use them for anything real.",
        "hpke": {
            "recipient_scalar": scalar(&hpke_recipient),
            "recipient_public": h(hpke_recipient.public_key().as_bytes()),
            "info": h(&hpke_info),
            "aad": "",
            "plaintext": h(&hpke_plain),
            "sealed": h(&hpke_sealed),
        },
        "stream": {
            "key": h(stream_key.as_bytes()),
            "plaintext": "70000 bytes, byte i = i mod 251",
            "plaintext_len": 70000,
            "sealed_file": "stream-70000.bin",
        },
        "pod": {
            "scalar": scalar(&pod),
            "spki": h(&pod.public_key().to_spki_der()),
            "fingerprint": h(&fingerprint(&pod.public_key().to_spki_der())),
        },
        "users": {
            "owner": {"bundle": h(owner.bundle.as_bytes()), "id": h(owner.bundle.id())},
            "alice": {
                "bundle": h(alice.bundle.as_bytes()),
                "id": h(alice.bundle.id()),
                "decryption_scalar": scalar(&alice.decryption),
            },
            "rob": {
                "bundle": h(rob_bundle.as_bytes()),
                "id": h(rob_bundle.id()),
                "rsa_pkcs8": h(&rob_rsa_pkcs8),
            },
        },
        "membership": {
            "entries": log.iter().map(|e| h(e.as_bytes())).collect::<Vec<_>>(),
            "room_id": h(&room_id),
            "head": h(room.head()),
            "members_after": [h(owner.bundle.id()), h(alice.bundle.id())],
        },
        "sealed_document": {
            "document": h(&sealed),
            "plaintext": h(&plaintext),
            "room_id": h(&room_id),
            "doc_id": h(b"term-sheet.pdf"),
            "header_hash": h(&sealed_header.hash()),
        },
        "signed_request": {
            "signed": h(request.as_bytes()),
            "request_hash": h(&request.hash()),
            "user": "alice",
            "nonce": h(&[0x5a; 16]),
            "issued_at_ms": t0 + 10_000,
        },
        "re_encrypted": {
            "for_alice": h(&for_alice),
            "for_rob": h(&for_rob),
            "plaintext": h(&plaintext),
        },
        "audit": {
            "receipt_key_spki": h(&receipt_key.verifying_key().to_spki_der()),
            "entries": entries.iter().map(|e| h(e.as_bytes())).collect::<Vec<_>>(),
            "head": h(&prev),
            "checkpoint": h(&checkpoint),
            "receipt": h(&receipt),
        },
        "rotation": {
            "next_pod_scalar": scalar(&next_pod),
            "next_pod_fingerprint": h(&next_fpr),
            "rewrapped_document": h(&rewrapped),
            "certificate_file": h(&certificate_file),
            "root": h(&folder.root()),
            "count": 3,
        },
    });
    let path = format!("{dir}/spec-vectors.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&vectors).unwrap() + "\n",
    )
    .unwrap();
    eprintln!("wrote {path} and {dir}/stream-70000.bin");
}
