//! Membership and audit logs: who may change a room, and what tampering the audit verifier detects.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use pod_protocol::Error;
use pod_protocol::audit::{self, Checkpoint, Decision, Receipt};
use pod_protocol::keys::{SigningKey, UserSecrets};
use pod_protocol::membership::{Action, Room, SignedEntry, genesis_entry};

fn user() -> UserSecrets {
    UserSecrets::generate().unwrap()
}

fn sign(room: &Room, by: &UserSecrets, action: Action, subject: Vec<u8>, t: u64) -> SignedEntry {
    SignedEntry::sign(
        room.next_entry(action, subject, t, *by.bundle.id()),
        &by.signing,
    )
    .unwrap()
}

#[test]
fn owner_and_admins_manage_members_and_others_cannot() {
    let owner = user();
    let admin = user();
    let alice = user();
    let bob = user();
    let genesis = SignedEntry::sign(genesis_entry(&owner.bundle, 1), &owner.signing).unwrap();
    let mut room = Room::genesis(&genesis).unwrap();
    assert_eq!(room.id(), &genesis.hash());

    // A member cannot grant.
    let grant_alice = sign(
        &room,
        &owner,
        Action::Grant,
        alice.bundle.as_bytes().to_vec(),
        2,
    );
    room.apply(&grant_alice).unwrap();
    let by_alice = sign(
        &room,
        &alice,
        Action::Grant,
        bob.bundle.as_bytes().to_vec(),
        3,
    );
    assert!(matches!(room.apply(&by_alice), Err(Error::Membership(_))));

    // The owner adds an admin; the admin grants and revokes members but not other admins or the owner.
    let e = sign(
        &room,
        &owner,
        Action::AddAdmin,
        admin.bundle.as_bytes().to_vec(),
        3,
    );
    room.apply(&e).unwrap();
    let e = sign(
        &room,
        &admin,
        Action::Grant,
        bob.bundle.as_bytes().to_vec(),
        4,
    );
    room.apply(&e).unwrap();
    assert!(room.member(bob.bundle.id()).is_some());
    let e = sign(&room, &admin, Action::Revoke, bob.bundle.id().to_vec(), 5);
    room.apply(&e).unwrap();
    assert!(room.member(bob.bundle.id()).is_none());
    let e = sign(&room, &admin, Action::Revoke, owner.bundle.id().to_vec(), 6);
    assert!(matches!(room.apply(&e), Err(Error::Membership(_))));
    let e = sign(
        &room,
        &admin,
        Action::AddAdmin,
        bob.bundle.as_bytes().to_vec(),
        6,
    );
    assert!(matches!(room.apply(&e), Err(Error::Membership(_))));

    // An entry signed by someone other than its named signer is refused.
    let forged = SignedEntry::sign(
        room.next_entry(
            Action::Grant,
            bob.bundle.as_bytes().to_vec(),
            6,
            *owner.bundle.id(),
        ),
        &alice.signing,
    )
    .unwrap();
    assert_eq!(room.apply(&forged), Err(Error::BadSignature));
    // A stranger's key never counts.
    let stranger = SigningKey::generate().unwrap();
    let forged = SignedEntry::sign(
        room.next_entry(
            Action::Grant,
            bob.bundle.as_bytes().to_vec(),
            6,
            *owner.bundle.id(),
        ),
        &stranger,
    )
    .unwrap();
    assert_eq!(room.apply(&forged), Err(Error::BadSignature));
}

#[test]
fn the_log_only_grows_at_its_head() {
    let owner = user();
    let alice = user();
    let genesis = SignedEntry::sign(genesis_entry(&owner.bundle, 10), &owner.signing).unwrap();
    let mut room = Room::genesis(&genesis).unwrap();
    let grant = sign(
        &room,
        &owner,
        Action::Grant,
        alice.bundle.as_bytes().to_vec(),
        11,
    );
    room.apply(&grant).unwrap();
    // The same entry again (a replay) does not extend the head.
    assert!(matches!(room.apply(&grant), Err(Error::Membership(_))));
    // An entry for another room.
    let other_owner = user();
    let other = Room::genesis(
        &SignedEntry::sign(genesis_entry(&other_owner.bundle, 1), &other_owner.signing).unwrap(),
    )
    .unwrap();
    let foreign = sign(
        &other,
        &other_owner,
        Action::Grant,
        alice.bundle.as_bytes().to_vec(),
        12,
    );
    assert!(matches!(room.apply(&foreign), Err(Error::Membership(_))));
    // Time going backwards.
    let e = sign(&room, &owner, Action::Revoke, alice.bundle.id().to_vec(), 5);
    assert!(matches!(room.apply(&e), Err(Error::Membership(_))));
    // Replay of the whole log reaches the same state; parse round-trips.
    let parsed: Vec<SignedEntry> = [&genesis, &grant]
        .iter()
        .map(|e| SignedEntry::parse(e.as_bytes()).unwrap())
        .collect();
    assert_eq!(Room::replay(&parsed).unwrap(), room);
    // A genesis entry not signed by the owner it names.
    let bad = SignedEntry::sign(genesis_entry(&owner.bundle, 1), &alice.signing).unwrap();
    assert!(Room::genesis(&bad).is_err());
}

fn audit_log(n: u64, key: &SigningKey) -> Vec<Vec<u8>> {
    let mut prev = [0u8; 32];
    (0..n)
        .map(|seq| {
            let e = audit::SignedEntry::sign(
                audit::Entry {
                    seq,
                    prev,
                    time_ms: 1000 + seq,
                    user: [1; 32],
                    room: [2; 32],
                    doc: b"doc".to_vec(),
                    decision: if seq % 3 == 0 {
                        Decision::Deny
                    } else {
                        Decision::Allow
                    },
                    reason: "ok".into(),
                    membership_head: [3; 32],
                    request_hash: [seq as u8; 32],
                },
                key,
            )
            .unwrap();
            prev = e.hash();
            e.as_bytes().to_vec()
        })
        .collect()
}

#[test]
fn the_audit_verifier_detects_deletion_alteration_reordering_and_truncation() {
    let key = SigningKey::generate().unwrap();
    let vk = key.verifying_key();
    let log = audit_log(6, &key);
    let summary = audit::verify_log(&log, &vk, &[], &[]).unwrap();
    assert_eq!(summary.entries, 6);
    let head = summary.head;
    let checkpoint_bytes = Checkpoint {
        seq: 5,
        head,
        time_ms: 2000,
    }
    .sign(&key)
    .unwrap();
    let checkpoint = Checkpoint::parse_verified(&checkpoint_bytes, &vk).unwrap();
    audit::verify_log(&log, &vk, std::slice::from_ref(&checkpoint), &[]).unwrap();

    // Deleted from the middle.
    let mut deleted = log.clone();
    deleted.remove(2);
    assert!(matches!(
        audit::verify_log(&deleted, &vk, &[], &[]),
        Err(Error::Audit { seq: 2, .. })
    ));
    // Altered: any flipped byte.
    for i in 0..log[3].len() {
        let mut altered = log.clone();
        altered[3][i] ^= 1;
        assert!(
            audit::verify_log(&altered, &vk, &[], &[]).is_err(),
            "byte {i}"
        );
    }
    // Reordered.
    let mut reordered = log.clone();
    reordered.swap(1, 2);
    assert!(audit::verify_log(&reordered, &vk, &[], &[]).is_err());
    // Truncated: the rest still chains, so only a checkpoint or receipt beyond the end reveals it.
    let truncated = log[..4].to_vec();
    audit::verify_log(&truncated, &vk, &[], &[]).unwrap();
    assert!(matches!(
        audit::verify_log(&truncated, &vk, &[checkpoint], &[]),
        Err(Error::Audit { seq: 5, .. })
    ));
    let receipt = Receipt {
        request_hash: [5; 32],
        response_header_hash: [9; 32],
        audit_seq: 5,
        audit_entry_hash: head,
    };
    let receipt = Receipt::parse_verified(&receipt.sign(&key).unwrap(), &vk).unwrap();
    audit::verify_log(&log, &vk, &[], std::slice::from_ref(&receipt)).unwrap();
    assert!(audit::verify_log(&truncated, &vk, &[], &[receipt]).is_err());
    // Entries signed by another key (the parent forging entries).
    let forger = SigningKey::generate().unwrap();
    let mut forged = log.clone();
    forged.push(audit_log(7, &forger).pop().unwrap());
    assert!(matches!(
        audit::verify_log(&forged, &vk, &[], &[]),
        Err(Error::Audit { seq: 6, .. })
    ));
}
