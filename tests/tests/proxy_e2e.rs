//! The local pod over HTTPS: `pod-proxy local` starts kms-local, the relay, the enclave and the proxy; a client
//! verifies the pod, creates a room, shares documents, revokes a member, checks the audit, and the pod survives
//! the enclave being killed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use attestation_verifier::{ExpectedPcrs, Policy, UnixTime, Verifier};
use base64::Engine as _;
use pod_protocol::audit;
use pod_protocol::envelope::{self, Kind, UnwrapKey};
use pod_protocol::keys::{EncryptionKey, UserSecrets, VerifyingKey};
use pod_protocol::membership::{Action, Room, SignedEntry, genesis_entry};
use pod_tests::fixtures::{self, now_ms};
use pod_tests::https::Client;
use pod_tests::local::start;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

use pod_tests::b64;

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

fn pem(label: &str, der: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        b64(der)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_room_story_over_https() {
    let pod = start();
    let client = Client::new(
        &pod.url,
        Some(&std::fs::read_to_string(pod.state.join("tls/cert.pem")).unwrap()),
    )
    .unwrap();

    // Verify the pod before trusting it: fresh nonce, mock root, published PCRs.
    let nonce = [9u8; 32];
    let (status, att) = client
        .call(
            "GET",
            &format!("/pod/attestation?nonce={}", hex::encode(nonce)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{att}");
    let root = std::fs::read_to_string(pod.state.join("mock-root.pem")).unwrap();
    let pcrs =
        ExpectedPcrs::from_json(&std::fs::read_to_string(pod.state.join("pcrs.json")).unwrap())
            .unwrap();
    let verified = Verifier::with_root_pem(&root)
        .unwrap()
        .verify(
            &unb64(&att["document"]),
            &Policy::new(pcrs).unwrap().nonce(nonce.to_vec()),
            UnixTime::from_millis(now_ms()),
        )
        .unwrap();
    let pod_key =
        pod_protocol::hpke::PublicKey::from_spki_der(verified.public_key().unwrap()).unwrap();
    let mut ud = pod_cbor::Decoder::new(verified.user_data().unwrap());
    ud.array().unwrap();
    let receipt_key = VerifyingKey::from_spki_der(ud.bytes().unwrap()).unwrap();

    // The owner creates a room and grants Alice and Bob.
    let owner = UserSecrets::generate().unwrap();
    let alice = UserSecrets::generate().unwrap();
    let bob = UserSecrets::generate().unwrap();
    let genesis =
        SignedEntry::sign(genesis_entry(&owner.bundle, now_ms()), &owner.signing).unwrap();
    let (status, created) = client
        .call(
            "POST",
            "/rooms",
            Some(&json!({"entry": b64(genesis.as_bytes())})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let room_hex = created["room_id"].as_str().unwrap().to_owned();
    let mut log = vec![genesis];
    for (action, subject) in [
        (Action::Grant, alice.bundle.as_bytes().to_vec()),
        (Action::Grant, bob.bundle.as_bytes().to_vec()),
    ] {
        let e = SignedEntry::sign(
            Room::replay(&log)
                .unwrap()
                .next_entry(action, subject, now_ms(), *owner.bundle.id()),
            &owner.signing,
        )
        .unwrap();
        let (status, r) = client
            .call(
                "POST",
                &format!("/rooms/{room_hex}/entries"),
                Some(&json!({"entry": b64(e.as_bytes())})),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{r}");
        log.push(e);
    }
    let room = Room::replay(&log).unwrap();
    assert_eq!(hex::encode(room.id()), room_hex);
    let (_, served) = client
        .call("GET", &format!("/rooms/{room_hex}/log"), None)
        .await
        .unwrap();
    assert_eq!(served["entries"].as_array().unwrap().len(), 3);

    // Three documents sealed to the verified pod key; both members open them.
    let docs: Vec<(Vec<u8>, Vec<u8>)> = (0..3)
        .map(|i| {
            let plain: Vec<u8> = (0..(1000 + i * 70_000)).map(|j| (j % 253) as u8).collect();
            let sealed = envelope::seal(
                Kind::SealedToPod,
                room.id(),
                format!("doc-{i}").as_bytes(),
                &EncryptionKey::HpkeP256(pod_key.clone()),
                &plain,
            )
            .unwrap();
            (plain, sealed)
        })
        .collect();
    let ask = |user: &UserSecrets, sealed: &[u8]| {
        let (header, _) = envelope::read_header(sealed).unwrap().unwrap();
        let token = fixtures::request(user, room.id(), &header, &pod_key).unwrap();
        json!({
            "encrypted_blob": b64(sealed),
            "user_public_key": pem("PUBLIC KEY", &user.bundle.encryption_key().to_spki_der()),
            "auth_token": b64(token.as_bytes()),
        })
    };
    let mut receipts = Vec::new();
    for user in [&alice, &bob] {
        for (plain, sealed) in &docs {
            let (status, r) = client
                .call("POST", "/pod/re-encrypt", Some(&ask(user, sealed)))
                .await
                .unwrap();
            assert_eq!(status, 200, "{r}");
            let (_, opened) = envelope::open(
                &unb64(&r["re_encrypted_content"]),
                UnwrapKey::Hpke(&user.decryption),
            )
            .unwrap();
            assert_eq!(&*opened, plain);
            assert!(!unb64(&r["wrapped_key"]).is_empty());
            receipts
                .push(audit::Receipt::parse_verified(&unb64(&r["receipt"]), &receipt_key).unwrap());
        }
    }

    // Revoke Bob: refused on his very next request, for a document he opened before; Alice still reads.
    let revoke = SignedEntry::sign(
        room.next_entry(
            Action::Revoke,
            bob.bundle.id().to_vec(),
            now_ms(),
            *owner.bundle.id(),
        ),
        &owner.signing,
    )
    .unwrap();
    let (status, _) = client
        .call(
            "POST",
            &format!("/rooms/{room_hex}/entries"),
            Some(&json!({"entry": b64(revoke.as_bytes())})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, r) = client
        .call("POST", "/pod/re-encrypt", Some(&ask(&bob, &docs[0].1)))
        .await
        .unwrap();
    assert_eq!(
        (status, r["error"].as_str()),
        (403, Some("not_a_member")),
        "{r}"
    );
    let (status, _) = client
        .call("POST", "/pod/re-encrypt", Some(&ask(&alice, &docs[0].1)))
        .await
        .unwrap();
    assert_eq!(status, 200);

    // A key that is not the user's registered key is turned away.
    let mut wrong = ask(&alice, &docs[0].1);
    wrong["user_public_key"] = json!(pem(
        "PUBLIC KEY",
        &bob.bundle.encryption_key().to_spki_der()
    ));
    let (status, _) = client
        .call("POST", "/pod/re-encrypt", Some(&wrong))
        .await
        .unwrap();
    assert_eq!(status, 400);

    // The audit log: one entry per request, Bob's refusal in it, and it verifies with every receipt.
    let (_, audit_json) = client.call("GET", "/audit?from=0", None).await.unwrap();
    let entries: Vec<Vec<u8>> = audit_json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(unb64)
        .collect();
    assert_eq!(entries.len(), 8);
    audit::verify_log(&entries, &receipt_key, &[], &receipts).unwrap();
    let refused = audit::SignedEntry::parse_verified(&entries[6], &receipt_key).unwrap();
    assert_eq!(refused.entry().user, *bob.bundle.id());
    assert_eq!(refused.entry().reason, "not a member");

    // Kill the enclave: re-encrypt answers 503 with the clear error, then the pod comes back through KMS.
    let killed = Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("{}/enclave.sock", pod.state.display()),
        ])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, r) = client
        .call("POST", "/pod/re-encrypt", Some(&ask(&alice, &docs[1].1)))
        .await
        .unwrap();
    assert_eq!(status, 503, "{r}");
    assert_eq!(r["error"], "pod_unavailable");
    assert_eq!(
        r["message"],
        "Data room temporarily unavailable, please try again"
    );
    let mut back = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, h) = client.call("GET", "/pod/health", None).await.unwrap();
        if status == 200 && h["status"] == "ready" {
            back = true;
            break;
        }
    }
    assert!(back, "the enclave came back and unsealed");
    let (status, r) = client
        .call("POST", "/pod/re-encrypt", Some(&ask(&alice, &docs[1].1)))
        .await
        .unwrap();
    assert_eq!(status, 200, "{r}");
    let (status, r) = client
        .call("POST", "/pod/re-encrypt", Some(&ask(&bob, &docs[1].1)))
        .await
        .unwrap();
    assert_eq!(status, 403, "membership survived the restart: {r}");

    let (_, metrics) = client.call("GET", "/metrics", None).await.unwrap();
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("pod_reencrypt_released_total 8"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_leave_one_audit_entry_in_order() {
    let pod = start();
    let cacert = std::fs::read_to_string(pod.state.join("tls/cert.pem")).unwrap();
    let client = std::sync::Arc::new(Client::new(&pod.url, Some(&cacert)).unwrap());
    let pc = pod.client();
    let verified = pc.attest().await.unwrap();
    let room = fixtures::RoomFixture::new().unwrap();
    room.register(&client).await.unwrap();
    let sealed = envelope::seal(
        Kind::SealedToPod,
        &room.id(),
        b"doc",
        &EncryptionKey::HpkeP256(verified.pod_key.clone()),
        b"x",
    )
    .unwrap();
    let (header, _) = envelope::read_header(&sealed).unwrap().unwrap();
    let room_id = room.id();
    let member = std::sync::Arc::new(room.member);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, member, sealed, header, key, id) = (
            client.clone(),
            member.clone(),
            sealed.clone(),
            header.clone(),
            verified.pod_key.clone(),
            room_id,
        );
        tasks.push(tokio::spawn(async move {
            let token = fixtures::request(&member, &id, &header, &key).unwrap();
            let pem = pem("PUBLIC KEY", &member.bundle.encryption_key().to_spki_der());
            let body = json!({"encrypted_blob": b64(&sealed), "user_public_key": pem, "auth_token": b64(token.as_bytes())});
            client.call("POST", "/pod/re-encrypt", Some(&body)).await.unwrap().0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let (_, audit_json) = client.call("GET", "/audit?from=0", None).await.unwrap();
    let entries: Vec<Vec<u8>> = audit_json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(unb64)
        .collect();
    assert_eq!(entries.len(), 32);
    audit::verify_log(&entries, &verified.receipt_key, &[], &[]).unwrap();
}
