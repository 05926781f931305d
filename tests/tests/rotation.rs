//! Pod key rotation end to end, with the real binaries: 1,000 sealed documents move to a successor key (the job is
//! killed half-way and resumed), the certificate verifies and a tampered one does not, the old key is retired,
//! every document opens through the new key and none through the old; then a compromise rotation re-encrypts
//! every document under a fresh document key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use pod_client::{ClientError, PodClient};
use pod_protocol::envelope::{self, Kind};
use pod_protocol::keys::{EncryptionKey, UserSecrets};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const DOCS: usize = 1000;
/// The routine rotation job over the test's document directory.
const REWRAP_RUN: &[&str] = &["rotate", "run", "--dir", "documents", "--mode", "rewrap"];

fn podctl(work: &Path, state: &Path, url: &str, args: &[&str]) -> Command {
    let mut c = pod_tests::local::podctl(work, state, url);
    c.args(args);
    c
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn plaintext(i: usize) -> Vec<u8> {
    // Mostly small documents, every 97th one several chunks long.
    let len = if i.is_multiple_of(97) {
        200_000 + i
    } else {
        100 + (i * 37) % 3000
    };
    (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
}

fn doc_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("batch-{}", i % 4))
        .join(format!("doc-{i:04}.spd"))
}

fn header_of(path: &Path) -> (envelope::Header, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let (h, start) = envelope::read_header(&bytes).unwrap().unwrap();
    (h, bytes[start..].to_vec())
}

/// Opens every document through the pod, 16 at a time, and checks the plaintext.
async fn open_all(c: &PodClient, user: &UserSecrets, dir: &Path) {
    use futures_util::StreamExt as _;
    let results: Vec<Result<(), String>> = futures_util::stream::iter(0..DOCS)
        .map(|i| async move {
            let sealed = std::fs::read(doc_path(dir, i)).unwrap();
            match c.open(user, &sealed).await {
                Ok(p) if p == plaintext(i) => Ok(()),
                Ok(_) => Err(format!("doc {i}: wrong plaintext")),
                Err(e) => Err(format!("doc {i}: {e}")),
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}

fn promote(state: &Path) {
    let out = Command::new(pod_tests::bin("pod-proxy"))
        .args(["promote", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    ok(out, "pod-proxy promote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_documents_rotate_resume_after_a_kill_and_the_old_key_is_retired() {
    let mut pod = pod_tests::local::start_unbudgeted();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("documents");
    let state = pod.state.clone();
    let run = |url: &str, args: &[&str], what: &str| {
        ok(
            podctl(work.path(), &state, url, args).output().unwrap(),
            what,
        )
    };

    // A room with a member, and 1,000 documents sealed to the verified pod key.
    let c = pod.client();
    let k1 = c.attest().await.unwrap();
    let (_owner, member, room) = pod.room_with_member(&c).await;
    for i in 0..DOCS {
        let sealed = envelope::seal(
            Kind::SealedToPod,
            &room,
            format!("doc-{i}").as_bytes(),
            &EncryptionKey::HpkeP256(k1.pod_key.clone()),
            &plaintext(i),
        )
        .unwrap();
        let p = doc_path(&dir, i);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, sealed).unwrap();
    }
    std::fs::write(dir.join("README.txt"), "not a sealed document").unwrap();
    let originals: Vec<(envelope::Header, Vec<u8>)> =
        (0..DOCS).map(|i| header_of(&doc_path(&dir, i))).collect();
    let keep_old = work.path().join("old-copy.spd");
    std::fs::copy(doc_path(&dir, 5), &keep_old).unwrap();

    // Running the job before a successor exists is refused with the next step named.
    let out = podctl(work.path(), &state, &pod.url, REWRAP_RUN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("podctl rotate prepare"));

    // Prepare: local mode makes a KMS key for the successor, the enclave runs the ceremony under it.
    let text = run(&pod.url, &["rotate", "prepare"], "rotate prepare");
    let k2_hex = text.split_whitespace().nth(3).unwrap().to_owned();
    assert_eq!(k2_hex.len(), 64);
    assert_ne!(k2_hex, hex::encode(k1.fingerprint));

    // A copy of a document, or a symbolic link, is refused before anything moves (a copy would make the
    // certificate impossible; a link would be passed over).
    let copy = dir.join("batch-0/copy-of-doc-0004.spd");
    std::fs::copy(doc_path(&dir, 4), &copy).unwrap();
    let link = dir.join("batch-1/link.spd");
    for (extra, expect) in [
        (&copy, "same sealed document"),
        (&link, "not a regular file"),
    ] {
        if extra == &link {
            std::fs::remove_file(&copy).unwrap();
            std::os::unix::fs::symlink(doc_path(&dir, 5), &link).unwrap();
        }
        let out = podctl(
            work.path(),
            &state,
            &pod.url,
            &[
                "rotate",
                "run",
                "--dir",
                "documents",
                "--mode",
                "rewrap",
                "--journal",
                "probe.jsonl",
            ],
        )
        .output()
        .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
    }
    std::fs::remove_file(&link).unwrap();
    let untouched = (0..DOCS).all(|i| {
        hex::encode(header_of(&doc_path(&dir, i)).0.recipient()) == hex::encode(k1.fingerprint)
    });
    assert!(untouched, "a refused run moved documents");

    // The job, killed half-way: once its journal names half of the documents.
    let journal = work.path().join("rotation-journal.jsonl");
    let mut job = podctl(work.path(), &state, &pod.url, REWRAP_RUN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&journal)
            .map(|t| t.lines().filter(|l| !l.is_empty()).count())
            .unwrap_or(0);
        if lines >= DOCS / 2 {
            break;
        }
        assert!(
            job.try_wait().unwrap().is_none(),
            "the job ended before it could be interrupted"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the job made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    job.kill().unwrap();
    job.wait().unwrap();
    let moved_before = (0..DOCS)
        .filter(|&i| hex::encode(header_of(&doc_path(&dir, i)).0.recipient()) == k2_hex)
        .count();
    // A journal line is written before its file is renamed into place, so at most one named file is not moved yet.
    assert!(
        (DOCS / 2 - 1..DOCS).contains(&moved_before),
        "killed half-way: {moved_before} moved"
    );
    eprintln!("killed after {moved_before} of {DOCS} documents moved");

    // Resumed: finishes, skips what was done, writes and checks the certificate.
    let text = run(&pod.url, REWRAP_RUN, "rotate run (resumed)");
    assert!(
        text.contains("rotation certificate: 1000 documents"),
        "{text}"
    );
    eprintln!(
        "rewrap (resumed): {}",
        text.lines().next().unwrap_or_default()
    );
    // Every document is sealed to the successor now; a rewrap kept each body byte for byte.
    for (i, (old_h, old_body)) in originals.iter().enumerate() {
        let (h, body) = header_of(&doc_path(&dir, i));
        assert_eq!(hex::encode(h.recipient()), k2_hex, "doc {i}");
        assert_eq!((h.room(), h.doc()), (old_h.room(), old_h.doc()));
        assert_eq!(&body, old_body, "doc {i}: a rewrap keeps the body");
    }
    // A third run has nothing left to do.
    let text = run(&pod.url, REWRAP_RUN, "rotate run (idempotent)");
    assert!(
        text.contains("moved 0 documents (1000 already moved"),
        "{text}"
    );
    // The journal belongs to its directory: another directory with the same journal is refused before anything moves.
    std::fs::create_dir_all(work.path().join("more")).unwrap();
    let out = podctl(
        work.path(),
        &state,
        &pod.url,
        &["rotate", "run", "--dir", "more", "--mode", "rewrap"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("journal of another directory"),
        "{err}"
    );

    // The certificate verifies, names every document, and any change to it is caught.
    let k1_hex = hex::encode(k1.fingerprint);
    let r1_hex = hex::encode(pod_protocol::keys::fingerprint(
        &k1.receipt_key.to_spki_der(),
    ));
    let verify = |cert: &str| {
        podctl(
            work.path(),
            &state,
            &pod.url,
            &[
                "rotate",
                "verify",
                cert,
                "--dir",
                "documents",
                "--old-pod",
                &k1_hex,
                "--old-receipt-key",
                &r1_hex,
            ],
        )
        .output()
        .unwrap()
    };
    let text = ok(verify("rotation-certificate.cbor"), "rotate verify");
    assert!(text.contains("1000 documents"), "{text}");
    // An interrupted move left in the directory is not passed over.
    let leftover = dir.join("batch-1").join("doc-0001.spd.rotating");
    std::fs::write(&leftover, b"half a document").unwrap();
    let out = verify("rotation-certificate.cbor");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("interrupted move"),
        "{err}"
    );
    std::fs::remove_file(&leftover).unwrap();
    let cert = std::fs::read(work.path().join("rotation-certificate.cbor")).unwrap();
    for at in [3, cert.len() / 2, cert.len() - 70, cert.len() - 1] {
        let mut bad = cert.clone();
        bad[at] ^= 0x20;
        std::fs::write(work.path().join("tampered.cbor"), &bad).unwrap();
        let out = verify("tampered.cbor");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && (err.contains("does not verify") || err.contains("signed by receipt key")),
            "a change at byte {at} went unnoticed or was refused for another reason: {err}"
        );
    }
    let other = k2_hex.clone();
    let out = podctl(
        work.path(),
        &state,
        &pod.url,
        &[
            "rotate",
            "verify",
            "rotation-certificate.cbor",
            "--old-pod",
            &other,
            "--old-receipt-key",
            &r1_hex,
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the certificate is by pod key"),
        "a certificate from another pod key must be refused as such: {err}"
    );
    // A forgery: items for every document on disk and a certificate naming the old pod, all signed by a key of the
    // forger's. It verifies as a structure; only the receipt key ties a certificate to the pod, and that refuses it.
    {
        use pod_protocol::rotation::{
            Certificate, Item, ItemFolder, Mode, encode_certificate_file,
        };
        let forger = pod_protocol::keys::SigningKey::generate().unwrap();
        let next: [u8; 32] = hex::decode(&k2_hex).unwrap().try_into().unwrap();
        let mut items: Vec<(Vec<u8>, Vec<u8>)> = (0..DOCS)
            .map(|i| {
                let (h, _) = header_of(&doc_path(&dir, i));
                let old = pod_protocol::keys::labeled_hash("header", &i.to_be_bytes());
                let item = Item {
                    mode: Mode::Rewrap,
                    room: *h.room(),
                    doc: h.doc().to_vec(),
                    old_header_hash: old,
                    new_header_hash: h.hash(),
                    new_pod: next,
                }
                .sign(&forger)
                .unwrap();
                (old.to_vec(), item.as_bytes().to_vec())
            })
            .collect();
        items.sort();
        let list: Vec<Vec<u8>> = items.into_iter().map(|(_, b)| b).collect();
        let mut folder = ItemFolder::new(Mode::Rewrap, next);
        for i in &list {
            folder.push(i, &forger.verifying_key()).unwrap();
        }
        let cert = Certificate {
            mode: Mode::Rewrap,
            old_pod: k1.fingerprint,
            new_pod: next,
            old_receipt_spki: forger.verifying_key().to_spki_der(),
            count: folder.count(),
            root: folder.root(),
            time_ms: 1,
        }
        .sign(&forger)
        .unwrap();
        std::fs::write(
            work.path().join("forged.cbor"),
            encode_certificate_file(&cert, &list),
        )
        .unwrap();
        let out = verify("forged.cbor");
        assert!(!out.status.success(), "a forged certificate was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not by the old pod's"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The old pod, still on the old key, opens none of the moved documents.
    let sealed = std::fs::read(doc_path(&dir, 0)).unwrap();
    match c.open(&member, &sealed).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "sealed_to_another_pod_key"),
        other => panic!("the old key opened a moved document: {other:?}"),
    }

    // Promote (proxy stopped), restart: the successor is the pod key, every document opens through it.
    pod.restart_with(|| promote(&state));
    let c = pod.client();
    let k2 = c.attest().await.unwrap();
    assert_eq!(hex::encode(k2.fingerprint), k2_hex);
    let t = Instant::now();
    open_all(&c, &member, &dir).await;
    eprintln!(
        "opened {DOCS} rotated documents through the new key in {:?}",
        t.elapsed()
    );
    // A copy still sealed to the retired key is refused, and says why.
    match c.open(&member, &std::fs::read(&keep_old).unwrap()).await {
        Err(ClientError::Refused { code, message, .. }) => {
            assert_eq!(code, "retired_pod_key");
            assert!(message.contains("retired"), "{message}");
        }
        other => panic!("a document sealed to the retired key was not refused: {other:?}"),
    }
    assert!(
        state
            .join("retired")
            .join(&k1_hex)
            .join("audit.log")
            .exists()
    );

    // Compromise mode: fresh document keys; every body changes, every document still opens after promotion.
    let before: Vec<(envelope::Header, Vec<u8>)> =
        (0..DOCS).map(|i| header_of(&doc_path(&dir, i))).collect();
    let text = run(&pod.url, &["rotate", "prepare"], "prepare 2");
    let k3_hex = text.split_whitespace().nth(3).unwrap().to_owned();
    let text = run(
        &pod.url,
        &[
            "rotate",
            "run",
            "--dir",
            "documents",
            "--mode",
            "re-encrypt",
            "--journal",
            "j2.jsonl",
            "--certificate",
            "c2.cbor",
        ],
        "rotate run (re-encrypt)",
    );
    assert!(
        text.contains("rotation certificate: 1000 documents"),
        "{text}"
    );
    eprintln!("re-encrypt: {}", text.lines().next().unwrap_or_default());
    for (i, (old_h, old_body)) in before.iter().enumerate() {
        let (h, body) = header_of(&doc_path(&dir, i));
        assert_eq!(hex::encode(h.recipient()), k3_hex);
        assert_ne!(
            h.as_bytes(),
            old_h.as_bytes(),
            "doc {i}: the header must change"
        );
        // A new document key: no 16-byte block of the old body survives in the new one.
        assert_eq!(body.len(), old_body.len());
        let same = body
            .chunks_exact(16)
            .zip(old_body.chunks_exact(16))
            .filter(|(a, b)| a == b)
            .count();
        assert_eq!(same, 0, "doc {i}: the body was not encrypted again");
    }
    run(
        &pod.url,
        &[
            "rotate",
            "verify",
            "c2.cbor",
            "--dir",
            "documents",
            "--old-pod",
            &k2_hex,
            "--old-receipt-key",
            &hex::encode(pod_protocol::keys::fingerprint(
                &k2.receipt_key.to_spki_der(),
            )),
        ],
        "rotate verify (re-encrypt)",
    );
    pod.restart_with(|| promote(&state));
    let c = pod.client();
    assert_eq!(hex::encode(c.attest().await.unwrap().fingerprint), k3_hex);
    open_all(&c, &member, &dir).await;
}
