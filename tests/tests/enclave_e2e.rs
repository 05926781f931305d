//! The enclave binary as a process on a Unix socket, driven the way the parent drives it: a client verifies the
//! attestation before using the pod key, a room is created, a document goes through, a member is revoked, and the
//! audit log verifies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use attestation_verifier::{ExpectedPcrs, Policy, UnixTime, Verifier};
use pod_protocol::envelope::{self, Kind, UnwrapKey};
use pod_protocol::keys::{EncryptionKey, UserSecrets, VerifyingKey};
use pod_protocol::link::kind;
use pod_protocol::membership::Action;
use pod_protocol::{audit, hpke, stream};
use pod_tests::fixtures::{self, RoomFixture, now_ms};
use pod_tests::parent::{Link, ReEncrypted};
use std::process::{Child, Command, Stdio};

struct Enclave {
    child: Child,
    dir: tempfile::TempDir,
}

impl Enclave {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("enclave.sock");
        let state = dir.path().join("nsm");
        let child = Command::new(pod_tests::bin("pod-enclave"))
            .args([
                "serve",
                "--nsm",
                "mock",
                "--pod-key",
                "insecure-ephemeral",
                "--listen",
            ])
            .arg(format!("unix:{}", socket.display()))
            .arg("--mock-state-dir")
            .arg(&state)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child, dir }
    }

    fn link(&self) -> Link {
        Link::connect(&self.dir.path().join("enclave.sock")).unwrap()
    }

    fn stop(mut self) -> std::process::ExitStatus {
        nix_kill(self.child.id());
        self.child.wait().unwrap()
    }
}

fn nix_kill(pid: u32) {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}

impl Drop for Enclave {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// What a client does before trusting the pod: verify the attestation with a fresh nonce against the mock root
/// and the PCRs of the enclave binary, and take the pod key and receipt key from it.
fn verify_pod(enclave: &Enclave, link: &mut Link) -> (hpke::PublicKey, VerifyingKey) {
    let nonce = [42u8; 32];
    let reply = link.attestation(&nonce).unwrap();
    assert_eq!(reply.kind, kind::DOCUMENT);
    let root = std::fs::read_to_string(enclave.dir.path().join("nsm/mock-root.pem")).unwrap();
    let image = std::fs::read(pod_tests::bin("pod-enclave")).unwrap();
    let [p0, p1, p2] = pod_enclave::nsm::mock_pcrs_for_image(&image);
    let mut pcrs = ExpectedPcrs::new();
    pcrs.insert(0, p0).unwrap();
    pcrs.insert(1, p1).unwrap();
    pcrs.insert(2, p2).unwrap();
    let policy = Policy::new(pcrs)
        .unwrap()
        .nonce(nonce.to_vec())
        .max_age(std::time::Duration::from_secs(60));
    let verified = Verifier::with_root_pem(&root)
        .unwrap()
        .verify(&reply.body, &policy, UnixTime::from_millis(now_ms()))
        .unwrap();
    let pod_key = hpke::PublicKey::from_spki_der(verified.public_key().unwrap()).unwrap();
    let mut d = pod_cbor::Decoder::new(verified.user_data().unwrap());
    d.array().unwrap();
    let receipt_key = VerifyingKey::from_spki_der(d.bytes().unwrap()).unwrap();
    // The same document must not verify against the AWS root.
    assert!(
        Verifier::aws_nitro()
            .verify(&reply.body, &policy, UnixTime::from_millis(now_ms()))
            .is_err()
    );
    (pod_key, receipt_key)
}

fn request(user: &UserSecrets, room: &[u8; 32], sealed: &[u8], pod: &hpke::PublicKey) -> Vec<u8> {
    let (header, _) = envelope::read_header(sealed).unwrap().unwrap();
    fixtures::request(user, room, &header, pod)
        .unwrap()
        .as_bytes()
        .to_vec()
}

#[test]
fn the_enclave_process_serves_the_data_room_story() {
    let enclave = Enclave::start(&[]);
    let mut link = enclave.link();
    assert_eq!(link.resume_audit().unwrap().kind, kind::OK);
    let (pod_key, receipt_key) = verify_pod(&enclave, &mut link);

    // The owner creates a room and shares it with Alice (the fixture's member).
    let mut room = RoomFixture::new().unwrap();
    let reply = link.sync_room(&room.log_bytes()).unwrap();
    assert_eq!(reply.kind, kind::ROOM_HEAD);
    let room_id = room.id();

    // A 1 MiB + 1 byte document sealed to the verified pod key.
    let plaintext: Vec<u8> = (0..(1 << 20) + 1).map(|i| (i % 241) as u8).collect();
    let sealed = envelope::seal(
        Kind::SealedToPod,
        &room_id,
        b"financial-model.xlsx",
        &EncryptionKey::HpkeP256(pod_key.clone()),
        &plaintext,
    )
    .unwrap();
    let mut receipts = Vec::new();
    match link
        .re_encrypt(&request(&room.member, &room_id, &sealed, &pod_key), &sealed)
        .unwrap()
    {
        ReEncrypted::Released { document, receipt } => {
            let (_, opened) =
                envelope::open(&document, UnwrapKey::Hpke(&room.member.decryption)).unwrap();
            assert_eq!(*opened, plaintext);
            let (_, body_start) = envelope::read_header(&document).unwrap().unwrap();
            assert_eq!(
                (document.len() - body_start) as u64,
                stream::sealed_len(plaintext.len() as u64)
            );
            receipts.push(audit::Receipt::parse_verified(&receipt, &receipt_key).unwrap());
        }
        other => panic!("{other:?}"),
    }

    // Revoke Alice; her next request is refused, with a message a person can act on.
    let alice_id = room.member.bundle.id().to_vec();
    let revoke = room.owner_signs(Action::Revoke, alice_id).unwrap();
    assert_eq!(
        link.append(revoke.as_bytes()).unwrap().kind,
        kind::ROOM_HEAD
    );
    match link
        .re_encrypt(&request(&room.member, &room_id, &sealed, &pod_key), &sealed)
        .unwrap()
    {
        ReEncrypted::Refused { code, message } => {
            assert_eq!(code, "not_a_member");
            assert!(message.contains("revoked"));
        }
        other => panic!("{other:?}"),
    }

    // Every request left exactly one audit entry, and the log verifies with the receipts.
    assert_eq!(link.audit_log.len(), 2);
    audit::verify_log(&link.audit_log, &receipt_key, &[], &receipts).unwrap();

    // A second connection works concurrently with the first.
    let mut second = enclave.link();
    assert_eq!(
        second.call(kind::HEALTH, &[]).unwrap().kind,
        kind::HEALTH_REPORT
    );

    drop(link);
    drop(second);
    let status = enclave.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_hostile_parent_gets_errors_not_crashes() {
    let enclave = Enclave::start(&["--frame-timeout-secs", "1"]);
    let mut link = enclave.link();
    // Re-encrypt before the audit log was loaded: refused with a reason.
    let reply = link
        .call(
            kind::RE_ENCRYPT,
            &pod_protocol::link::encode_bytes_list(&[b"x", b"y"]),
        )
        .unwrap();
    assert_eq!(reply.kind, kind::ERROR);
    let (_, message) = pod_protocol::link::decode_code_message(&reply.body).unwrap();
    assert!(message.contains("audit log"), "{message}");

    // An oversize frame announcement: the enclave closes the connection without reading 4 GiB.
    use std::io::{Read, Write};
    let mut raw =
        std::os::unix::net::UnixStream::connect(enclave.dir.path().join("enclave.sock")).unwrap();
    raw.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(raw.read(&mut buf).unwrap(), 0);

    // Half a frame, then silence: closed after the frame timeout.
    let mut raw =
        std::os::unix::net::UnixStream::connect(enclave.dir.path().join("enclave.sock")).unwrap();
    raw.write_all(&[0, 0, 0, 10, 0x84]).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    assert_eq!(raw.read(&mut buf).unwrap(), 0);

    // Garbage CBOR in a well-sized frame.
    let mut raw =
        std::os::unix::net::UnixStream::connect(enclave.dir.path().join("enclave.sock")).unwrap();
    raw.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).unwrap();
    assert_eq!(raw.read(&mut buf).unwrap(), 0);

    // The enclave still serves.
    let mut link = enclave.link();
    assert_eq!(
        link.call(kind::HEALTH, &[]).unwrap().kind,
        kind::HEALTH_REPORT
    );
    assert!(enclave.stop().success());
}

/// A certificate asked of a pod that has no successor is refused with that reason after the items, not in the
/// middle of them: the parent sends every frame before it reads the reply, and an early answer would leave its
/// next frame as a protocol error and the reason lost. The link stays usable.
#[test]
fn a_certificate_without_a_successor_is_refused_with_the_reason_after_every_item() {
    let enclave = Enclave::start(&[]);
    let mut link = enclave.link();
    assert_eq!(
        link.call(kind::HEALTH, &[]).unwrap().kind,
        kind::HEALTH_REPORT
    );
    let items: Vec<Vec<u8>> = (0..1300u32).map(|i| i.to_be_bytes().repeat(40)).collect();
    link.send(
        kind::CERTIFY_ROTATION,
        &pod_protocol::link::encode_u64_pair(1, items.len() as u64),
    )
    .unwrap();
    let batches: Vec<&[Vec<u8>]> = items.chunks(512).collect();
    for (i, batch) in batches.iter().enumerate() {
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let k = if i + 1 == batches.len() {
            kind::LAST_CHUNK
        } else {
            kind::CHUNK
        };
        link.send(k, &pod_protocol::link::encode_bytes_list(&refs))
            .unwrap();
    }
    let reply = link.recv().unwrap();
    assert_eq!(reply.kind, kind::ERROR);
    let (code, _) = pod_protocol::link::decode_code_message(&reply.body).unwrap();
    assert_eq!(code, "no_successor");
    // The same connection still serves: the items were read to the end.
    assert_eq!(
        link.call(kind::HEALTH, &[]).unwrap().kind,
        kind::HEALTH_REPORT
    );
    assert!(enclave.stop().success());
}
