//! `pod-proxy promote` on a state directory: the successor becomes the pod key, the old key and audit log are
//! archived, the retired list names the old key; a promotion interrupted half-way finishes when run again; a
//! running proxy's directory is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pod_proxy::parent::{
    RetiredKey, SealedKey, lock_state_dir, promote, read_retired, refuse_interrupted_promotion,
    write_durably,
};
use std::path::Path;

fn key(fpr: &str) -> SealedKey {
    SealedKey {
        kms_key_id: format!("key-{fpr}"),
        pod_name: "p".into(),
        sealed: "c2VhbGVk".into(),
        pod_spki: "c3BraQ==".into(),
        fingerprint: fpr.repeat(64 / fpr.len()),
    }
}

fn write(dir: &Path, name: &str, k: &SealedKey) {
    std::fs::write(dir.join(name), serde_json::to_string(k).unwrap()).unwrap();
}

/// What `promote` writes first: `old` listed as retired in favour of `new`.
fn write_retired(dir: &Path, old: &SealedKey, new: &SealedKey) {
    let list = vec![RetiredKey {
        fingerprint: old.fingerprint.clone(),
        successor: new.fingerprint.clone(),
        retired_at_ms: 1,
    }];
    write_durably(
        &dir.join("retired-keys.json"),
        serde_json::to_string(&list).unwrap().as_bytes(),
    )
    .unwrap();
}

fn read(dir: &Path, name: &str) -> SealedKey {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

#[test]
fn promotion_archives_the_old_key_and_finishes_after_an_interruption() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (old, new) = (key("a"), key("b"));
    write(dir, "sealed-pod-key.json", &old);
    write(dir, "sealed-pod-key.next.json", &new);
    std::fs::write(dir.join("audit.log"), b"old chain").unwrap();

    // Refused while a proxy holds the directory.
    {
        let _held = lock_state_dir(dir).unwrap();
        assert!(promote(dir).unwrap_err().to_string().contains("in use"));
    }

    let p = promote(dir).unwrap();
    assert_eq!(
        (p.retired.as_str(), p.current.as_str()),
        (old.fingerprint.as_str(), new.fingerprint.as_str())
    );
    assert_eq!(
        read(dir, "sealed-pod-key.json").fingerprint,
        new.fingerprint
    );
    assert!(!dir.join("sealed-pod-key.next.json").exists());
    let archive = dir.join("retired").join(&old.fingerprint);
    assert_eq!(
        std::fs::read(archive.join("audit.log")).unwrap(),
        b"old chain"
    );
    assert_eq!(
        read(&archive, "sealed-pod-key.json").fingerprint,
        old.fingerprint
    );
    let retired = read_retired(dir).unwrap();
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].successor, new.fingerprint);
    // Nothing left to promote.
    let e = promote(dir).unwrap_err().to_string();
    assert!(e.contains("prepare a rotation first"), "{e}");

    // Interrupted between archiving the key and moving the successor in: a second run finishes.
    let newer = key("c");
    write(dir, "sealed-pod-key.next.json", &newer);
    std::fs::create_dir_all(dir.join("retired").join(&new.fingerprint)).unwrap();
    std::fs::rename(
        dir.join("sealed-pod-key.json"),
        dir.join("retired")
            .join(&new.fingerprint)
            .join("sealed-pod-key.json"),
    )
    .unwrap();
    let mut list = read_retired(dir).unwrap();
    list.push(RetiredKey {
        fingerprint: new.fingerprint.clone(),
        successor: newer.fingerprint.clone(),
        retired_at_ms: 1,
    });
    std::fs::write(
        dir.join("retired-keys.json"),
        serde_json::to_string(&list).unwrap(),
    )
    .unwrap();
    let p = promote(dir).unwrap();
    assert_eq!(p.current, newer.fingerprint);
    assert_eq!(
        read(dir, "sealed-pod-key.json").fingerprint,
        newer.fingerprint
    );
    assert_eq!(
        read_retired(dir).unwrap().len(),
        2,
        "the retired key is listed once"
    );
}

#[test]
fn a_promotion_interrupted_after_the_retired_list_is_refused_at_start_until_it_is_finished() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (old, new) = (key("a"), key("b"));
    write(dir, "sealed-pod-key.json", &old);
    write(dir, "sealed-pod-key.next.json", &new);
    refuse_interrupted_promotion(dir).unwrap();
    // `promote` wrote the retired list, then died before moving anything.
    write_retired(dir, &old, &new);
    let e = refuse_interrupted_promotion(dir).unwrap_err().to_string();
    assert!(
        e.contains("promotion was interrupted") && e.contains("pod-proxy promote"),
        "{e}"
    );
    // Running promote again finishes it, and the directory starts.
    assert_eq!(promote(dir).unwrap().current, new.fingerprint);
    refuse_interrupted_promotion(dir).unwrap();
}

#[test]
fn a_damaged_sealed_key_is_an_error_never_a_missing_key() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // A missing key is fine (a new pod); a torn one must not be taken for missing, or a new key would replace it.
    refuse_interrupted_promotion(dir).unwrap();
    std::fs::write(dir.join("sealed-pod-key.json"), b"{\"kms_key_id\": \"k").unwrap();
    let e = refuse_interrupted_promotion(dir).unwrap_err().to_string();
    assert!(e.contains("damaged") && e.contains("do not delete"), "{e}");
    // The same for a successor: promote refuses rather than archiving the pod key for a key it cannot read.
    write(dir, "sealed-pod-key.json", &key("a"));
    std::fs::write(dir.join("sealed-pod-key.next.json"), b"").unwrap();
    assert!(promote(dir).is_err());
    assert_eq!(
        read(dir, "sealed-pod-key.json").fingerprint,
        key("a").fingerprint
    );
    // write_durably leaves no temporary file behind.
    write_durably(
        &dir.join("sealed-pod-key.next.json"),
        serde_json::to_string(&key("b")).unwrap().as_bytes(),
    )
    .unwrap();
    assert_eq!(
        read(dir, "sealed-pod-key.next.json").fingerprint,
        key("b").fingerprint
    );
    assert!(!dir.join("sealed-pod-key.next.tmp").exists());
}

#[test]
fn an_archived_audit_chain_is_never_overwritten_by_a_log_created_after_the_interruption() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (old, new) = (key("a"), key("b"));
    write(dir, "sealed-pod-key.json", &old);
    write(dir, "sealed-pod-key.next.json", &new);
    // Interrupted after the retired list was written and the audit log archived.
    let archive = dir.join("retired").join(&old.fingerprint);
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(archive.join("audit.log"), b"old chain").unwrap();
    write_retired(dir, &old, &new);
    // Something wrote a non-empty log since: refused, both kept.
    std::fs::write(dir.join("audit.log"), b"newer entries").unwrap();
    let e = promote(dir).unwrap_err().to_string();
    assert!(e.contains("refusing to overwrite"), "{e}");
    assert_eq!(
        std::fs::read(archive.join("audit.log")).unwrap(),
        b"old chain"
    );
    // An empty log (what opening the log creates) is dropped, and the promotion finishes with the archive intact.
    std::fs::write(dir.join("audit.log"), b"").unwrap();
    assert_eq!(promote(dir).unwrap().current, new.fingerprint);
    assert_eq!(
        std::fs::read(archive.join("audit.log")).unwrap(),
        b"old chain"
    );
    assert!(!dir.join("audit.log").exists());
}

#[test]
fn a_missing_pod_key_in_a_directory_that_rotated_is_an_interrupted_promotion() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // A new pod: nothing here, nothing refused.
    refuse_interrupted_promotion(dir).unwrap();
    // The old key archived, the successor not yet in place.
    write(dir, "sealed-pod-key.next.json", &key("b"));
    let e = refuse_interrupted_promotion(dir).unwrap_err().to_string();
    assert!(
        e.contains("is missing") && e.contains("pod-proxy promote"),
        "{e}"
    );
}
