//! Measures the enclave's peak memory while it re-encrypts documents of growing size.
//!
//! ```sh
//! cargo build --release --bins && target/release/stream-memory 1 64 1024
//! ```
//!
//! For each size (in MiB) it starts a fresh `pod-enclave serve` (mock NSM, Unix socket), seals a document of that
//! size to the pod *as it streams* (the client never holds the document either), re-encrypts it through the
//! enclave, opens the result chunk by chunk as the user and compares it with what was sealed, then reads the
//! enclave's peak resident set (`VmHWM` in /proc/<pid>/status). Figures, not assertions: see docs/PERFORMANCE.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use pod_protocol::envelope::{self, Kind, UnwrapKey};
use pod_protocol::keys::EncryptionKey;
use pod_protocol::link::kind;
use pod_protocol::{hpke, stream};
use pod_tests::fixtures::{self, RoomFixture, now_ms};
use pod_tests::parent::{Link, ReEncrypted};
use std::process::{Command, Stdio};
use std::time::Instant;

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn measure(mib: u64) -> (u64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("enclave.sock");
    let mut child = Command::new(pod_tests::bin("pod-enclave"))
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
        .arg(dir.path().join("nsm"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut link = Link::connect(&socket).unwrap();
    assert_eq!(link.resume_audit().unwrap().kind, kind::OK);

    let doc = link.attestation(&[7; 32]).unwrap().body;
    // The pod key from the attestation document (verification is the e2e tests' job; here only the size matters).
    let root = std::fs::read_to_string(dir.path().join("nsm/mock-root.pem")).unwrap();
    let v = attestation_verifier::Verifier::with_root_pem(&root)
        .unwrap()
        .verify(
            &doc,
            &attestation_verifier::Policy::insecure_any_pcrs(),
            attestation_verifier::UnixTime::from_millis(now_ms()),
        )
        .unwrap();
    let pod_key = hpke::PublicKey::from_spki_der(v.public_key().unwrap()).unwrap();

    let room = RoomFixture::new().unwrap();
    link.sync_room(&room.log_bytes()).unwrap();
    let alice = &room.member;

    let (header, mut sealer) = envelope::begin(
        Kind::SealedToPod,
        &room.id(),
        b"big.bin",
        &EncryptionKey::HpkeP256(pod_key.clone()),
    )
    .unwrap();
    let request = fixtures::request(alice, &room.id(), &header, &pod_key).unwrap();

    let total = mib * 1024 * 1024;
    let chunks = total.div_ceil(stream::CHUNK_SIZE as u64);
    let mut produced = 0u64;
    let mut next = move || {
        if produced >= chunks {
            return None;
        }
        let start = produced * stream::CHUNK_SIZE as u64;
        let end = (start + stream::CHUNK_SIZE as u64).min(total);
        let mut buf: Vec<u8> = (start..end).map(byte).collect();
        produced += 1;
        let last = produced == chunks;
        sealer.seal_in_place(&mut buf, last).unwrap();
        Some((buf, last))
    };
    let mut opener: Option<stream::Opener> = None;
    let mut checked = 0u64;
    let started = Instant::now();
    let result = link.re_encrypt_stream(
        request.as_bytes(),
        &header.to_prefixed(),
        &mut next,
        |piece| {
            // The first piece is the user's document header: unwrap the per-request key from it.
            let Some(opener) = opener.as_mut() else {
                let (h, _) = envelope::read_header(piece).unwrap().unwrap();
                opener = Some(envelope::unwrap(&h, UnwrapKey::Hpke(&alice.decryption)).unwrap());
                return;
            };
            let mut buf = piece.to_vec();
            let last = checked + buf.len() as u64 - 16 >= total;
            opener.open_in_place(&mut buf, last).unwrap();
            for (k, b) in buf.iter().enumerate() {
                assert_eq!(*b, byte(checked + k as u64));
            }
            checked += buf.len() as u64;
        },
    );
    let elapsed = started.elapsed().as_secs_f64();
    match result.unwrap() {
        ReEncrypted::Released { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(checked, total, "the user's copy has every byte");
    let hwm = vm_hwm_kib(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    (hwm, elapsed)
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are whole MiB"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 64, 1024]
    } else {
        sizes
    };
    println!(
        "{:>10} {:>18} {:>12} {:>10}",
        "MiB", "enclave VmHWM KiB", "seconds", "MiB/s"
    );
    for mib in sizes {
        let (hwm, secs) = measure(mib);
        println!(
            "{mib:>10} {hwm:>18} {secs:>12.2} {:>10.1}",
            mib as f64 / secs
        );
    }
}
