//! Runs every vector of docs/SPEC.md (protocol/tests/vectors/spec-vectors.json) through the Rust implementation,
//! and has the independent Python implementation (spec_vectors.py) do the same and produce vectors of its own,
//! which the Rust side must accept.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey};
use pod_protocol::audit::{self, Checkpoint, Receipt};
use pod_protocol::envelope::{self, Kind, UnwrapKey};
use pod_protocol::keys::{UserKeyBundle, VerifyingKey, fingerprint};
use pod_protocol::membership::{Room, SignedEntry};
use pod_protocol::request::SignedRequest;
use pod_protocol::{hpke, stream};
use serde_json::Value;
use std::process::Command;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/spec-vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn check_all(v: &Value) {
    // HPKE.
    let sk = hpke::PrivateKey::from_scalar(&hx(&v["hpke"]["recipient_scalar"])).unwrap();
    assert_eq!(
        sk.public_key().as_bytes().as_slice(),
        hx(&v["hpke"]["recipient_public"]).as_slice()
    );
    let opened = hpke::open(&sk, &hx(&v["hpke"]["info"]), b"", &hx(&v["hpke"]["sealed"])).unwrap();
    assert_eq!(*opened, hx(&v["hpke"]["plaintext"]));

    // STREAM.
    let key = stream::StreamKey::from_bytes(&hx(&v["stream"]["key"])).unwrap();
    let file = format!(
        "{}/tests/vectors/{}",
        env!("CARGO_MANIFEST_DIR"),
        v["stream"]["sealed_file"].as_str().unwrap()
    );
    let opened = stream::open(&key, &std::fs::read(file).unwrap()).unwrap();
    let expected: Vec<u8> = (0..v["stream"]["plaintext_len"].as_u64().unwrap())
        .map(|i| (i % 251) as u8)
        .collect();
    assert_eq!(*opened, expected);

    // Users: bundles parse and ids are what the vectors say.
    let bundle = |name: &str| {
        let b = UserKeyBundle::parse(&hx(&v["users"][name]["bundle"])).unwrap();
        assert_eq!(
            b.id().as_slice(),
            hx(&v["users"][name]["id"]).as_slice(),
            "{name}"
        );
        b
    };
    let owner = bundle("owner");
    let alice = bundle("alice");
    let _rob = bundle("rob");

    // Membership: the log replays to the stated room, head and members.
    let entries: Vec<SignedEntry> = v["membership"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| SignedEntry::parse(&hx(e)).unwrap())
        .collect();
    let room = Room::replay(&entries).unwrap();
    assert_eq!(
        room.id().as_slice(),
        hx(&v["membership"]["room_id"]).as_slice()
    );
    assert_eq!(
        room.head().as_slice(),
        hx(&v["membership"]["head"]).as_slice()
    );
    assert_eq!(room.owner(), &owner);
    let members = v["membership"]["members_after"].as_array().unwrap();
    assert_eq!(room.member_count(), members.len());
    for m in members {
        assert!(room.member(&hx(m).try_into().unwrap()).is_some());
    }

    // The sealed document opens with the pod key, for its room and id.
    let pod = hpke::PrivateKey::from_scalar(&hx(&v["pod"]["scalar"])).unwrap();
    assert_eq!(
        fingerprint(&pod.public_key().to_spki_der()).as_slice(),
        hx(&v["pod"]["fingerprint"]).as_slice()
    );
    let (header, plain) = envelope::open(
        &hx(&v["sealed_document"]["document"]),
        UnwrapKey::Hpke(&pod),
    )
    .unwrap();
    assert_eq!(*plain, hx(&v["sealed_document"]["plaintext"]));
    assert_eq!(header.kind(), Kind::SealedToPod);
    assert_eq!(
        header.room().as_slice(),
        hx(&v["sealed_document"]["room_id"]).as_slice()
    );
    assert_eq!(header.doc(), hx(&v["sealed_document"]["doc_id"]).as_slice());
    assert_eq!(
        header.hash().as_slice(),
        hx(&v["sealed_document"]["header_hash"]).as_slice()
    );

    // The signed request verifies under Alice's key and names that document.
    let req = SignedRequest::parse(&hx(&v["signed_request"]["signed"])).unwrap();
    assert_eq!(
        req.hash().as_slice(),
        hx(&v["signed_request"]["request_hash"]).as_slice()
    );
    let fields = req.verify(alice.signing_key()).unwrap();
    assert_eq!(fields.header_hash, header.hash());
    assert_eq!(&fields.user, alice.id());
    assert_eq!(fields.nonce, hx(&v["signed_request"]["nonce"]));
    assert_eq!(
        fields.issued_at_ms,
        v["signed_request"]["issued_at_ms"].as_u64().unwrap()
    );

    // Re-encrypted copies open with the users' keys: HPKE for Alice, RSA-OAEP-4096 for Rob.
    let alice_key =
        hpke::PrivateKey::from_scalar(&hx(&v["users"]["alice"]["decryption_scalar"])).unwrap();
    let (h, plain) = envelope::open(
        &hx(&v["re_encrypted"]["for_alice"]),
        UnwrapKey::Hpke(&alice_key),
    )
    .unwrap();
    assert_eq!(h.kind(), Kind::ReEncrypted);
    assert_eq!(*plain, hx(&v["re_encrypted"]["plaintext"]));
    let rob_key = OaepPrivateDecryptingKey::new(
        PrivateDecryptingKey::from_pkcs8(&hx(&v["users"]["rob"]["rsa_pkcs8"])).unwrap(),
    )
    .unwrap();
    let (_, plain) =
        envelope::open(&hx(&v["re_encrypted"]["for_rob"]), UnwrapKey::Rsa(&rob_key)).unwrap();
    assert_eq!(*plain, hx(&v["re_encrypted"]["plaintext"]));
    // The stored blob never opens with a user's key.
    assert!(
        envelope::open(
            &hx(&v["sealed_document"]["document"]),
            UnwrapKey::Hpke(&alice_key)
        )
        .is_err()
    );

    // Audit: the chain, the checkpoint and the receipt verify under the receipt key.
    let rk = VerifyingKey::from_spki_der(&hx(&v["audit"]["receipt_key_spki"])).unwrap();
    let log: Vec<Vec<u8>> = v["audit"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(hx)
        .collect();
    let checkpoint = Checkpoint::parse_verified(&hx(&v["audit"]["checkpoint"]), &rk).unwrap();
    let receipt = Receipt::parse_verified(&hx(&v["audit"]["receipt"]), &rk).unwrap();
    let summary = audit::verify_log(&log, &rk, &[checkpoint], &[receipt]).unwrap();
    assert_eq!(summary.head.as_slice(), hx(&v["audit"]["head"]).as_slice());

    // Rotation: the rewrapped document opens under the next pod key with the same body; the certificate verifies
    // under the receipt key and names the root.
    let r = &v["rotation"];
    let next = hpke::PrivateKey::from_scalar(&hx(&r["next_pod_scalar"])).unwrap();
    let moved = hx(&r["rewrapped_document"]);
    let (_, plain) = envelope::open(&moved, UnwrapKey::Hpke(&next)).unwrap();
    assert_eq!(
        plain.as_slice(),
        hx(&v["sealed_document"]["plaintext"]).as_slice()
    );
    let original = hx(&v["sealed_document"]["document"]);
    let (_, a) = envelope::read_header(&original).unwrap().unwrap();
    let (_, b) = envelope::read_header(&moved).unwrap().unwrap();
    assert_eq!(original[a..], moved[b..]);
    let (c, items) =
        pod_protocol::rotation::verify_certificate_file(&hx(&r["certificate_file"]), 10).unwrap();
    assert_eq!(c.old_receipt_spki, rk.to_spki_der());
    assert_eq!(c.root.as_slice(), hx(&r["root"]).as_slice());
    assert_eq!(items.len(), 3);
}

#[test]
fn the_committed_vectors_verify() {
    check_all(&vectors());
}

#[test]
fn python_checks_our_vectors_and_we_accept_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/spec_vectors.py");
    let vectors_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");
    let out = Command::new("python3")
        .arg(script)
        .arg(vectors_dir)
        .arg(dir.path())
        .output()
        .expect("python3 must be installed (the suite needs it for interoperability tests)");
    assert!(
        out.status.success(),
        "the Python implementation failed (pip install 'cryptography>=48' if it is missing):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("python-vectors.json")).unwrap(),
    )
    .unwrap();
    // Python sealed a document to our pod key.
    let v = vectors();
    let pod = hpke::PrivateKey::from_scalar(&hx(&v["pod"]["scalar"])).unwrap();
    let (header, plain) =
        envelope::open(&hx(&theirs["sealed_document"]), UnwrapKey::Hpke(&pod)).unwrap();
    assert_eq!(*plain, hx(&theirs["plaintext"]));
    // Its user bundle, membership log and signed request are accepted.
    let user = UserKeyBundle::parse(&hx(&theirs["bundle"])).unwrap();
    assert_eq!(user.id().as_slice(), hx(&theirs["user_id"]).as_slice());
    let entries: Vec<SignedEntry> = theirs["membership"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| SignedEntry::parse(&hx(e)).unwrap())
        .collect();
    let room = Room::replay(&entries).unwrap();
    assert_eq!(room.id().as_slice(), hx(&theirs["room_id"]).as_slice());
    assert!(room.member(user.id()).is_some());
    let req = SignedRequest::parse(&hx(&theirs["signed_request"])).unwrap();
    let fields = req.verify(user.signing_key()).unwrap();
    assert_eq!(fields.header_hash, header.hash());
    assert_eq!(
        req.hash().as_slice(),
        hx(&theirs["request_hash"]).as_slice()
    );
    // Its audit chain verifies under its key.
    let key = VerifyingKey::from_spki_der(&hx(&theirs["audit_key_spki"])).unwrap();
    let log: Vec<Vec<u8>> = theirs["audit"].as_array().unwrap().iter().map(hx).collect();
    assert_eq!(audit::verify_log(&log, &key, &[], &[]).unwrap().entries, 3);
}
