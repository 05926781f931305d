//! The properties of DESIGN.md that the pod layer owns, shown on the pure state machine with the mock NSM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use attestation_verifier::{ExpectedPcrs, Policy, UnixTime, Verifier};
use pod_enclave::budget::{BudgetConfig, Limits, Scope};
use pod_enclave::clock::{Clock, ManualClock};
use pod_enclave::nsm::{MockNsm, MockPcrConfig};
use pod_enclave::pod::{AuditAck, Outcome, Pending, Pod, PodConfig, PodError, Refusal, Status};
use pod_protocol::audit::{self, Decision, Receipt};
use pod_protocol::envelope::{self, Kind, UnwrapKey};
use pod_protocol::keys::{EncryptionKey, UserSecrets, fingerprint};
use pod_protocol::membership::{Action, Room, SignedEntry, genesis_entry};
use pod_protocol::request::{Operation, Request, SignedRequest};
use pod_protocol::{hpke, stream};
use std::sync::Arc;

const T0: u64 = 1_800_000_000_000;

struct World {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    nsm: Arc<MockNsm>,
    pod: Pod,
    pod_public: hpke::PublicKey,
    owner: UserSecrets,
    log: Vec<SignedEntry>,
    audit_log: Vec<Vec<u8>>,
    receipts: Vec<Receipt>,
}

impl World {
    fn new(config: PodConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let nsm = Arc::new(
            MockNsm::open(
                dir.path(),
                b"enclave",
                MockPcrConfig::default(),
                clock.clone(),
            )
            .unwrap(),
        );
        let mut pod = Pod::new(config, clock.clone(), nsm.clone());
        assert_eq!(pod.health().status, Status::Sealed);
        let key = hpke::PrivateKey::generate().unwrap();
        let pod_public = key.public_key().clone();
        pod.unseal(key).unwrap();
        pod.resume_audit(None).unwrap();
        let owner = UserSecrets::generate().unwrap();
        let genesis = SignedEntry::sign(genesis_entry(&owner.bundle, T0), &owner.signing).unwrap();
        let mut w = Self {
            _dir: dir,
            clock,
            nsm,
            pod,
            pod_public,
            owner,
            log: vec![genesis],
            audit_log: Vec::new(),
            receipts: Vec::new(),
        };
        w.sync();
        w
    }

    fn room(&self) -> Room {
        Room::replay(&self.log).unwrap()
    }

    fn room_id(&self) -> [u8; 32] {
        *self.room().id()
    }

    fn sync(&mut self) {
        let bytes: Vec<Vec<u8>> = self.log.iter().map(|e| e.as_bytes().to_vec()).collect();
        self.pod.sync_room(&bytes).unwrap();
    }

    /// The owner signs a membership change and the pod applies it.
    fn change(&mut self, action: Action, subject: Vec<u8>) {
        let room = self.room();
        let e = SignedEntry::sign(
            room.next_entry(
                action,
                subject,
                self.clock.now_ms(),
                *self.owner.bundle.id(),
            ),
            &self.owner.signing,
        )
        .unwrap();
        self.pod.append_membership(e.as_bytes()).unwrap();
        self.log.push(e);
    }

    fn grant(&mut self, user: &UserSecrets) {
        self.change(Action::Grant, user.bundle.as_bytes().to_vec());
    }

    fn seal(&self, room: &[u8; 32], doc: &[u8], plaintext: &[u8]) -> Vec<u8> {
        envelope::seal(
            Kind::SealedToPod,
            room,
            doc,
            &EncryptionKey::HpkeP256(self.pod_public.clone()),
            plaintext,
        )
        .unwrap()
    }

    fn request(&self, user: &UserSecrets, room: &[u8; 32], sealed: &[u8]) -> SignedRequest {
        let (header, _) = envelope::read_header(sealed).unwrap().unwrap();
        let mut nonce = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).unwrap();
        SignedRequest::sign(
            Request {
                op: Operation::ReEncrypt,
                room: *room,
                doc: header.doc().to_vec(),
                header_hash: header.hash(),
                user: *user.bundle.id(),
                nonce,
                issued_at_ms: self.clock.now_ms(),
                pod_key: fingerprint(&self.pod_public.to_spki_der()),
            },
            &user.signing,
        )
        .unwrap()
    }

    /// Sends a request through the pod the way the binary does: decide, store the audit entry, acknowledge,
    /// release; then convert every chunk.
    fn ask(&mut self, request: &SignedRequest, sealed: &[u8]) -> Result<Vec<u8>, Refusal> {
        let (_, body_start) = envelope::read_header(sealed).unwrap().unwrap();
        let pending = self
            .pod
            .re_encrypt(request.as_bytes(), &sealed[..body_start])
            .unwrap();
        let pending = self.store_and_ack(pending);
        match pending.release(&mut self.pod).unwrap() {
            Outcome::Refused(r) => Err(r),
            Outcome::Released(mut release) => {
                self.receipts.push(
                    Receipt::parse_verified(&release.receipt, &self.pod.keys_public().unwrap().1)
                        .unwrap(),
                );
                let mut out = release.header.clone();
                let body = &sealed[body_start..];
                let mut chunks = body.chunks(stream::SEALED_CHUNK_SIZE).peekable();
                while let Some(c) = chunks.next() {
                    let mut buf = c.to_vec();
                    let t = release.transcryptor.as_mut().unwrap();
                    t.process(&mut buf, chunks.peek().is_none()).unwrap();
                    out.extend_from_slice(&buf);
                }
                assert!(release.transcryptor.unwrap().is_done());
                Ok(out)
            }
        }
    }

    fn store_and_ack(&mut self, pending: Pending) -> Pending {
        // Before the acknowledgement nothing can be released.
        let hash = pending.hash();
        let seq = pending.seq();
        self.audit_log.push(pending.audit_entry().to_vec());
        self.pod.audit_durable(&AuditAck { seq, hash }).unwrap();
        pending
    }

    fn last_audit(&self) -> audit::Entry {
        let key = self.pod.keys_public().unwrap().1;
        audit::SignedEntry::parse_verified(self.audit_log.last().unwrap(), &key)
            .unwrap()
            .entry()
            .clone()
    }

    fn verify_audit(&self) {
        let key = self.pod.keys_public().unwrap().1;
        let summary = audit::verify_log(&self.audit_log, &key, &[], &self.receipts).unwrap();
        assert_eq!(summary.entries as usize, self.audit_log.len());
    }
}

fn open_as(user: &UserSecrets, doc: &[u8]) -> Result<Vec<u8>, pod_protocol::Error> {
    envelope::open(doc, UnwrapKey::Hpke(&user.decryption)).map(|(_, p)| p.to_vec())
}

#[test]
fn a_member_gets_a_copy_only_they_can_open_and_a_revoked_member_is_refused_next_time() {
    let mut w = World::new(PodConfig::default());
    let alice = UserSecrets::generate().unwrap();
    let bob = UserSecrets::generate().unwrap();
    w.grant(&alice);
    w.grant(&bob);
    let room = w.room_id();
    let plaintext: Vec<u8> = (0..stream::CHUNK_SIZE * 2 + 100)
        .map(|i| (i % 251) as u8)
        .collect();
    let sealed = w.seal(&room, b"term-sheet-v3", &plaintext);

    let copy = w.ask(&w.request(&alice, &room, &sealed), &sealed).unwrap();
    assert_eq!(open_as(&alice, &copy).unwrap(), plaintext);
    // The copy is for Alice alone, and her key never opens the stored blob.
    assert!(open_as(&bob, &copy).is_err());
    assert!(open_as(&alice, &sealed).is_err());
    assert_eq!(w.last_audit().decision, Decision::Allow);

    // Revoke Alice: her very next request, for the document she opened before, is refused.
    w.change(Action::Revoke, alice.bundle.id().to_vec());
    assert_eq!(
        w.ask(&w.request(&alice, &room, &sealed), &sealed),
        Err(Refusal::NotMember)
    );
    assert_eq!(w.last_audit().decision, Decision::Deny);
    assert_eq!(w.last_audit().reason, "not a member");
    // Bob still reads it.
    assert_eq!(
        open_as(
            &bob,
            &w.ask(&w.request(&bob, &room, &sealed), &sealed).unwrap()
        )
        .unwrap(),
        plaintext
    );
    w.verify_audit();
}

#[test]
fn a_blob_of_room_a_does_not_open_through_a_grant_in_room_b() {
    let mut w = World::new(PodConfig::default());
    let alice = UserSecrets::generate().unwrap();
    let room_a = w.room_id();
    let sealed_a = w.seal(&room_a, b"doc", b"room A secret");
    // Room B, where Alice is a member.
    let owner_b = UserSecrets::generate().unwrap();
    let genesis_b =
        SignedEntry::sign(genesis_entry(&owner_b.bundle, T0), &owner_b.signing).unwrap();
    let room_b = Room::genesis(&genesis_b).unwrap();
    let grant = SignedEntry::sign(
        room_b.next_entry(
            Action::Grant,
            alice.bundle.as_bytes().to_vec(),
            T0,
            *owner_b.bundle.id(),
        ),
        &owner_b.signing,
    )
    .unwrap();
    w.pod
        .sync_room(&[genesis_b.as_bytes().to_vec(), grant.as_bytes().to_vec()])
        .unwrap();
    let id_b = *room_b.id();

    // Asking in room B for room A's blob: the header names room A.
    assert_eq!(
        w.ask(&w.request(&alice, &id_b, &sealed_a), &sealed_a),
        Err(Refusal::WrongDocument)
    );

    // Rewriting the header to claim room B (the request then names the forged header) does not decrypt.
    let (header, start) = envelope::read_header(&sealed_a).unwrap().unwrap();
    let forged_header = {
        let mut bytes = header.as_bytes().to_vec();
        let at = bytes.windows(32).position(|w| w == room_a).unwrap();
        bytes[at..at + 32].copy_from_slice(&id_b);
        envelope::Header::parse(&bytes).unwrap()
    };
    let forged = [forged_header.to_prefixed().as_slice(), &sealed_a[start..]].concat();
    assert_eq!(
        w.ask(&w.request(&alice, &id_b, &forged), &forged),
        Err(Refusal::CannotDecrypt)
    );
    w.verify_audit();
}

#[test]
fn replayed_expired_future_forged_and_misdirected_requests_are_refused() {
    let mut w = World::new(PodConfig::default());
    let alice = UserSecrets::generate().unwrap();
    let mallory = UserSecrets::generate().unwrap();
    w.grant(&alice);
    let room = w.room_id();
    let sealed = w.seal(&room, b"doc", b"secret");

    let req = w.request(&alice, &room, &sealed);
    w.ask(&req, &sealed).unwrap();
    assert_eq!(w.ask(&req, &sealed), Err(Refusal::Replayed));

    let old = w.request(&alice, &room, &sealed);
    w.clock.advance(5 * 60 * 1000 + 1);
    assert_eq!(w.ask(&old, &sealed), Err(Refusal::Expired));

    let mut future = w.request(&alice, &room, &sealed).unwrap_request();
    future.issued_at_ms = w.clock.now_ms() + 60_000;
    let future = SignedRequest::sign(future, &alice.signing).unwrap();
    assert_eq!(w.ask(&future, &sealed), Err(Refusal::FromTheFuture));

    // Mallory signs a request in Alice's name.
    let forged = SignedRequest::sign(
        w.request(&alice, &room, &sealed).unwrap_request(),
        &mallory.signing,
    )
    .unwrap();
    assert_eq!(w.ask(&forged, &sealed), Err(Refusal::BadSignature));

    // A request meant for another pod key.
    let mut other_pod = w.request(&alice, &room, &sealed).unwrap_request();
    other_pod.pod_key = [9; 32];
    let other_pod = SignedRequest::sign(other_pod, &alice.signing).unwrap();
    assert_eq!(w.ask(&other_pod, &sealed), Err(Refusal::WrongPod));

    // A request naming another document's header.
    let other_doc = w.seal(&room, b"doc", b"another version");
    assert_eq!(
        w.ask(&w.request(&alice, &room, &other_doc), &sealed),
        Err(Refusal::WrongDocument)
    );

    // Garbage.
    let (_, start) = envelope::read_header(&sealed).unwrap().unwrap();
    let pending = w.pod.re_encrypt(b"\x00garbage", &sealed[..start]).unwrap();
    let pending = w.store_and_ack(pending);
    assert!(matches!(
        pending.release(&mut w.pod).unwrap(),
        Outcome::Refused(Refusal::Malformed)
    ));
    w.verify_audit();
}

trait UnwrapRequest {
    fn unwrap_request(self) -> Request;
}

impl UnwrapRequest for SignedRequest {
    fn unwrap_request(self) -> Request {
        self.unverified().clone()
    }
}

#[test]
fn grants_need_the_owner_or_an_admin_and_membership_never_goes_backwards() {
    let mut w = World::new(PodConfig::default());
    let alice = UserSecrets::generate().unwrap();
    let bob = UserSecrets::generate().unwrap();
    w.grant(&alice);
    let room = w.room();
    // Alice (a member, not an admin) grants Bob.
    let by_alice = SignedEntry::sign(
        room.next_entry(
            Action::Grant,
            bob.bundle.as_bytes().to_vec(),
            T0,
            *alice.bundle.id(),
        ),
        &alice.signing,
    )
    .unwrap();
    assert!(matches!(
        w.pod.append_membership(by_alice.as_bytes()),
        Err(PodError::Membership(_))
    ));

    // The parent serves the log as it was before Alice's grant: refused.
    let old: Vec<Vec<u8>> = w.log[..1].iter().map(|e| e.as_bytes().to_vec()).collect();
    assert!(matches!(
        w.pod.sync_room(&old),
        Err(PodError::Rollback { known_seq: 1 })
    ));
    // A fork: same length, different last entry.
    let fork_entry = SignedEntry::sign(
        Room::replay(&w.log[..1]).unwrap().next_entry(
            Action::Grant,
            bob.bundle.as_bytes().to_vec(),
            T0,
            *w.owner.bundle.id(),
        ),
        &w.owner.signing,
    )
    .unwrap();
    let fork = vec![w.log[0].as_bytes().to_vec(), fork_entry.as_bytes().to_vec()];
    assert!(matches!(
        w.pod.sync_room(&fork),
        Err(PodError::Rollback { .. })
    ));
    // The current log, and a longer one, are fine.
    w.sync();
    w.grant(&bob);
    w.sync();
    assert_eq!(w.pod.room_head(w.room().id()).unwrap().0, 2);
}

#[test]
fn an_exhausted_budget_refuses_and_audits_an_alert() {
    let config = PodConfig {
        budgets: BudgetConfig {
            per_user_room: Limits {
                hourly: 2,
                daily: 10,
            },
            ..BudgetConfig::default()
        },
        ..PodConfig::default()
    };
    let mut w = World::new(config);
    let alice = UserSecrets::generate().unwrap();
    w.grant(&alice);
    let room = w.room_id();
    let sealed = w.seal(&room, b"doc", b"secret");
    for _ in 0..2 {
        w.ask(&w.request(&alice, &room, &sealed), &sealed).unwrap();
    }
    assert_eq!(
        w.ask(&w.request(&alice, &room, &sealed), &sealed),
        Err(Refusal::BudgetExhausted(Scope::UserInRoom))
    );
    let alert = w.last_audit();
    assert_eq!(alert.decision, Decision::Alert);
    assert_eq!(alert.reason, "user budget in room");
    // An hour later the hourly budget has refilled.
    w.clock.advance(3_600_000);
    w.ask(&w.request(&alice, &room, &sealed), &sealed).unwrap();
    w.verify_audit();
}

#[test]
fn nothing_is_released_before_the_audit_entry_is_acknowledged() {
    let mut w = World::new(PodConfig::default());
    let alice = UserSecrets::generate().unwrap();
    w.grant(&alice);
    let room = w.room_id();
    let sealed = w.seal(&room, b"doc", b"secret");
    let (_, start) = envelope::read_header(&sealed).unwrap().unwrap();
    let req = w.request(&alice, &room, &sealed);
    let pending = w.pod.re_encrypt(req.as_bytes(), &sealed[..start]).unwrap();
    // Not acknowledged: no release.
    let seq = pending.seq();
    let hash = pending.hash();
    let pending = match pending.release(&mut w.pod) {
        Err(PodError::AuditNotDurable) => {
            // Re-decide: release consumed the pending value, as it must not be retried without the entry.
            let again = w.request(&alice, &room, &sealed);
            w.pod
                .re_encrypt(again.as_bytes(), &sealed[..start])
                .unwrap()
        }
        _ => panic!("released before the audit entry was durable"),
    };
    // An acknowledgement with the wrong hash is refused.
    assert!(matches!(
        w.pod.audit_durable(&AuditAck {
            seq: pending.seq(),
            hash: [0; 32]
        }),
        Err(PodError::AuditAckMismatch)
    ));
    // Each entry is acknowledged by itself; the abandoned first one stays unreleasable.
    assert_eq!(pending.seq(), seq + 1);
    let _ = hash;
    w.pod
        .audit_durable(&AuditAck {
            seq: pending.seq(),
            hash: pending.hash(),
        })
        .unwrap();
    assert!(matches!(
        pending.release(&mut w.pod).unwrap(),
        Outcome::Released(_)
    ));
}

#[test]
fn truncated_or_reordered_chunks_are_refused_by_the_transcryptor() {
    let mut w = World::new(PodConfig::default());
    let alice = UserSecrets::generate().unwrap();
    w.grant(&alice);
    let room = w.room_id();
    let sealed = w.seal(&room, b"doc", &vec![5u8; stream::CHUNK_SIZE * 3]);
    let (_, start) = envelope::read_header(&sealed).unwrap().unwrap();
    let chunks: Vec<Vec<u8>> = sealed[start..]
        .chunks(stream::SEALED_CHUNK_SIZE)
        .map(<[u8]>::to_vec)
        .collect();
    for attempt in ["truncate", "reorder"] {
        let req = w.request(&alice, &room, &sealed);
        let pending = w.pod.re_encrypt(req.as_bytes(), &sealed[..start]).unwrap();
        let pending = w.store_and_ack(pending);
        let Outcome::Released(mut r) = pending.release(&mut w.pod).unwrap() else {
            panic!("refused")
        };
        let order: Vec<(usize, bool)> = match attempt {
            "truncate" => vec![(0, false), (1, true)],
            _ => vec![(1, false), (0, false), (2, true)],
        };
        let mut failed = false;
        for (i, last) in order {
            let mut buf = chunks[i].clone();
            if r.transcryptor
                .as_mut()
                .unwrap()
                .process(&mut buf, last)
                .is_err()
            {
                failed = true;
                assert!(
                    buf.iter().all(|b| *b == 0) || buf.is_empty(),
                    "no partial plaintext is left"
                );
                break;
            }
        }
        assert!(failed, "{attempt} went through");
    }
}

#[test]
fn the_attestation_binds_the_pod_key_and_the_receipt_key() {
    let w = World::new(PodConfig::default());
    let doc = w.pod.attestation(Some(vec![1; 32])).unwrap();
    let verifier = Verifier::with_root_pem(w.nsm.root_pem()).unwrap();
    let policy = Policy::new(ExpectedPcrs::from_json(&w.nsm.pcrs_json()).unwrap())
        .unwrap()
        .nonce(vec![1; 32])
        .public_key(w.pod_public.to_spki_der());
    let v = verifier
        .verify(&doc, &policy, UnixTime::from_millis(T0))
        .unwrap();
    let mut d = pod_cbor::Decoder::new(v.user_data().unwrap());
    assert_eq!(d.array().unwrap(), pod_cbor::Len::Definite(2));
    assert_eq!(
        d.bytes().unwrap(),
        w.pod.keys_public().unwrap().1.to_spki_der().as_slice()
    );
    assert_eq!(d.bytes().unwrap(), w.pod.health().config_hash.as_slice());
    assert_eq!(
        w.pod.health().pod_key_fingerprint.unwrap(),
        fingerprint(&w.pod_public.to_spki_der())
    );
}

#[test]
fn a_failed_or_sealed_pod_serves_nothing() {
    let mut w = World::new(PodConfig::default());
    w.pod.fail("test");
    assert_eq!(w.pod.health().status, Status::Failed);
    assert!(w.pod.attestation(None).is_err());
    assert!(matches!(
        w.pod.re_encrypt(b"x", b"y"),
        Err(PodError::Failed(_))
    ));
    assert!(matches!(
        w.pod.unseal(hpke::PrivateKey::generate().unwrap()),
        Err(PodError::Failed(_))
    ));
}

#[test]
fn acknowledgements_may_arrive_in_any_order() {
    // Concurrent connections: entries 0, 1, 2 are decided in order but acknowledged 2, 0, 1.
    let mut w = World::new(PodConfig::default());
    let alice = UserSecrets::generate().unwrap();
    w.grant(&alice);
    let room = w.room_id();
    let sealed = w.seal(&room, b"doc", b"secret");
    let (_, start) = envelope::read_header(&sealed).unwrap().unwrap();
    let mut pendings: Vec<Pending> = (0..3)
        .map(|_| {
            let req = w.request(&alice, &room, &sealed);
            w.pod.re_encrypt(req.as_bytes(), &sealed[..start]).unwrap()
        })
        .collect();
    let order = [2usize, 0, 1];
    let mut taken: Vec<Option<Pending>> = pendings.drain(..).map(Some).collect();
    for i in order {
        let p = taken[i].take().unwrap();
        w.pod
            .audit_durable(&AuditAck {
                seq: p.seq(),
                hash: p.hash(),
            })
            .unwrap();
        assert!(
            matches!(p.release(&mut w.pod).unwrap(), Outcome::Released(_)),
            "entry {i}"
        );
    }
    // An acknowledgement for an entry already acknowledged is refused.
    assert!(
        w.pod
            .audit_durable(&AuditAck {
                seq: 0,
                hash: [0; 32]
            })
            .is_err()
    );
}

/// Moves one stored document through `Pod::rotate` the way the binary does; returns the new document and the
/// signed item, or the refusal.
fn rotate_one(
    w: &mut World,
    mode: pod_protocol::rotation::Mode,
    sealed: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    let (_, body_start) = envelope::read_header(sealed).unwrap().unwrap();
    let pending = w.pod.rotate(mode, &sealed[..body_start]).unwrap();
    let pending = w.store_and_ack(pending);
    match pending.release(&mut w.pod).unwrap() {
        Outcome::Refused(r) => Err(r),
        Outcome::Released(mut release) => {
            let mut out = release.header.clone();
            match release.transcryptor.as_mut() {
                None => out.extend_from_slice(&sealed[body_start..]),
                Some(t) => {
                    let body = &sealed[body_start..];
                    let mut chunks = body.chunks(stream::SEALED_CHUNK_SIZE).peekable();
                    while let Some(c) = chunks.next() {
                        let mut buf = c.to_vec();
                        t.process(&mut buf, chunks.peek().is_none()).unwrap();
                        out.extend_from_slice(&buf);
                    }
                }
            }
            Ok((out, release.receipt))
        }
    }
}

#[test]
fn rotation_moves_documents_to_the_successor_key_audits_each_and_certifies_them() {
    use pod_protocol::rotation::{self, Mode};
    let mut w = World::new(PodConfig::default());
    let room = w.room_id();
    let plain: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let docs: Vec<Vec<u8>> = (0..6)
        .map(|i| w.seal(&room, format!("doc-{i}").as_bytes(), &plain))
        .collect();
    // Nothing moves before a successor is loaded.
    assert!(matches!(
        w.pod.rotate(Mode::Rewrap, &docs[0][..64]),
        Err(PodError::NoSuccessor)
    ));
    let ikm = [9u8; 32];
    let next = hpke::PrivateKey::derive(&ikm).unwrap();
    let next_fpr = fingerprint(&next.public_key().to_spki_der());
    // The pod key came from KMS in account 111122223333: a successor from another account (one the parent could
    // own, and so know the key of) or with no KMS origin is refused; one from the same account and region loads.
    // When KMS's answer for the pod key did not name a key ARN, no successor is accepted at all (fail closed).
    w.pod.set_kms_origin("1234abcd-not-an-arn");
    assert!(matches!(
        w.pod.set_successor(
            hpke::PrivateKey::derive(&ikm).unwrap(),
            Some("arn:aws:kms:eu-west-1:111122223333:key/cccc-next")
        ),
        Err(PodError::SuccessorOrigin { .. })
    ));
    w.pod
        .set_kms_origin("arn:aws:kms:eu-west-1:111122223333:key/aaaa-current");
    for (arn, what) in [
        (
            Some("arn:aws:kms:eu-west-1:999988887777:key/bbbb"),
            "another account",
        ),
        (
            Some("arn:aws:kms:us-east-1:111122223333:key/bbbb"),
            "another region",
        ),
        (None, "no origin"),
    ] {
        assert!(
            matches!(
                w.pod
                    .set_successor(hpke::PrivateKey::derive(&ikm).unwrap(), arn),
                Err(PodError::SuccessorOrigin { .. })
            ),
            "{what}"
        );
    }
    assert_eq!(
        w.pod
            .set_successor(
                next,
                Some("arn:aws:kms:eu-west-1:111122223333:key/cccc-next")
            )
            .unwrap(),
        next_fpr
    );
    assert_eq!(w.pod.health().next_key_fingerprint, Some(next_fpr));
    assert!(matches!(
        w.pod.set_successor(
            hpke::PrivateKey::derive(&[8u8; 32]).unwrap(),
            Some("arn:aws:kms:eu-west-1:111122223333:key/dddd")
        ),
        Err(PodError::SuccessorLoaded(_))
    ));
    let next_copy = hpke::PrivateKey::derive(&ikm).unwrap();
    let (old_key_spki, receipt_key) = w.pod.keys_public().unwrap();
    assert_ne!(fingerprint(&old_key_spki), next_fpr);

    let mut items = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let mode = if i < 3 { Mode::Rewrap } else { Mode::ReEncrypt };
        let (moved, item) = rotate_one(&mut w, mode, doc).unwrap();
        let (old_h, old_start) = envelope::read_header(doc).unwrap().unwrap();
        let (new_h, new_start) = envelope::read_header(&moved).unwrap().unwrap();
        assert_eq!(new_h.recipient(), &next_fpr);
        assert_eq!((new_h.room(), new_h.doc()), (old_h.room(), old_h.doc()));
        // The successor opens it (and the header names only the successor, checked above).
        let (_, opened) = envelope::open(&moved, UnwrapKey::Hpke(&next_copy)).unwrap();
        assert_eq!(opened.as_slice(), plain.as_slice());
        // Rewrap keeps the body byte for byte; re-encrypt leaves no 16-byte block of it in place (a new file key).
        let same_body = moved[new_start..] == doc[old_start..];
        assert_eq!(same_body, mode == Mode::Rewrap, "doc {i}");
        if mode == Mode::ReEncrypt {
            let kept = moved[new_start..]
                .chunks(16)
                .zip(doc[old_start..].chunks(16))
                .filter(|(a, b)| a == b)
                .count();
            assert_eq!(kept, 0, "doc {i}: {kept} blocks survived a re-encryption");
        }
        let item = rotation::SignedItem::parse_verified(&item, &receipt_key).unwrap();
        assert_eq!(item.item().old_header_hash, old_h.hash());
        assert_eq!(item.item().new_header_hash, new_h.hash());
        let entry = w.last_audit();
        assert_eq!(entry.decision, Decision::Allow);
        assert_eq!(entry.reason, format!("rotated ({})", mode.name()));
        assert_eq!(entry.request_hash, old_h.hash());
        if mode == Mode::Rewrap {
            items.push(item);
        }
        // A second pass is refused as already done, and audited.
        assert_eq!(
            rotate_one(&mut w, mode, &moved).unwrap_err(),
            Refusal::AlreadyRotated
        );
        assert_eq!(w.last_audit().decision, Decision::Deny);
    }
    // The certificate over the rewrap items, in order of old header hash.
    items.sort_by_key(|i| i.item().old_header_hash);
    let (mut folder, key) = w.pod.certifier(Mode::Rewrap).unwrap();
    for i in &items {
        folder.push(i.as_bytes(), &key).unwrap();
    }
    let cert = w.pod.sign_certificate(Mode::Rewrap, &folder).unwrap();
    let list: Vec<Vec<u8>> = items.iter().map(|i| i.as_bytes().to_vec()).collect();
    let (c, parsed) =
        rotation::verify_certificate_file(&rotation::encode_certificate_file(&cert, &list), 10)
            .unwrap();
    assert_eq!((c.count, c.new_pod), (3, next_fpr));
    assert_eq!(c.old_pod, fingerprint(&old_key_spki));
    assert_eq!(c.old_receipt_spki, receipt_key.to_spki_der());
    assert_eq!(parsed.len(), 3);
    // An unsorted list is refused by the pod before it signs.
    let (mut folder, key) = w.pod.certifier(Mode::Rewrap).unwrap();
    folder.push(items[1].as_bytes(), &key).unwrap();
    assert!(folder.push(items[0].as_bytes(), &key).is_err());
    w.verify_audit();
}
