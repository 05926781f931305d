//! The enclave's re-encrypt operation beside the sum of its primitive operations, measured in the same run.
//!
//! `cargo bench -p pod-enclave --bench reencrypt`. The "floor" does only what re-encryption cannot avoid, with the
//! same aws-lc-rs primitives: unwrap the file key (HPKE open), derive the payload key, AES-256-GCM-open every
//! chunk, wrap a fresh key to the user (HPKE seal), derive, AES-256-GCM-seal every chunk, verify the request's
//! ECDSA signature and make two ECDSA signatures (audit entry and receipt). The ratio pod / floor is the overhead
//! of everything else: parsing, membership and replay checks, budgets, hashing, bookkeeping.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pod_enclave::budget::{BudgetConfig, Limits};
use pod_enclave::clock::{Clock, SystemClock};
use pod_enclave::nsm::{MockNsm, MockPcrConfig};
use pod_enclave::pod::{AuditAck, Outcome, Pod, PodConfig};
use pod_protocol::envelope::{self, Kind};
use pod_protocol::keys::{EncryptionKey, SigningKey, UserSecrets, fingerprint};
use pod_protocol::membership::{Action, Room, SignedEntry, genesis_entry};
use pod_protocol::request::{Operation, Request, SignedRequest};
use pod_protocol::{hpke, stream};
use std::sync::Arc;

const SIZES: [(usize, &str); 4] = [
    (1024, "1KiB"),
    (1 << 20, "1MiB"),
    (5 << 20, "5MiB"),
    (64 << 20, "64MiB"),
];

struct Setup {
    _dir: tempfile::TempDir,
    pod_public: hpke::PublicKey,
    alice: UserSecrets,
    room: [u8; 32],
}

fn setup() -> (Pod, Setup) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SystemClock);
    let nsm = Arc::new(
        MockNsm::open(
            dir.path(),
            b"bench",
            MockPcrConfig::default(),
            clock.clone(),
        )
        .unwrap(),
    );
    let unlimited = Limits {
        hourly: 0,
        daily: 0,
    };
    let config = PodConfig {
        budgets: BudgetConfig {
            per_user_room: unlimited,
            per_room: unlimited,
            global: unlimited,
        },
        replay_capacity: 10_000_000,
        ..PodConfig::default()
    };
    let mut pod = Pod::new(config, clock.clone(), nsm);
    let key = hpke::PrivateKey::generate().unwrap();
    let pod_public = key.public_key().clone();
    pod.unseal(key).unwrap();
    pod.resume_audit(None).unwrap();
    let owner = UserSecrets::generate().unwrap();
    let alice = UserSecrets::generate().unwrap();
    let genesis =
        SignedEntry::sign(genesis_entry(&owner.bundle, clock.now_ms()), &owner.signing).unwrap();
    let room = Room::genesis(&genesis).unwrap();
    let grant = SignedEntry::sign(
        room.next_entry(
            Action::Grant,
            alice.bundle.as_bytes().to_vec(),
            clock.now_ms(),
            *owner.bundle.id(),
        ),
        &owner.signing,
    )
    .unwrap();
    pod.sync_room(&[genesis.as_bytes().to_vec(), grant.as_bytes().to_vec()])
        .unwrap();
    (
        pod,
        Setup {
            _dir: dir,
            pod_public,
            room: *room.id(),
            alice,
        },
    )
}

fn request(s: &Setup, sealed: &[u8], counter: &mut u64) -> Vec<u8> {
    *counter += 1;
    let (header, _) = envelope::read_header(sealed).unwrap().unwrap();
    let mut nonce = vec![0u8; 16];
    nonce[..8].copy_from_slice(&counter.to_be_bytes());
    SignedRequest::sign(
        Request {
            op: Operation::ReEncrypt,
            room: s.room,
            doc: b"doc".to_vec(),
            header_hash: header.hash(),
            user: *s.alice.bundle.id(),
            nonce,
            issued_at_ms: SystemClock.now_ms(),
            pod_key: fingerprint(&s.pod_public.to_spki_der()),
        },
        &s.alice.signing,
    )
    .unwrap()
    .as_bytes()
    .to_vec()
}

fn bench(c: &mut Criterion) {
    let (mut pod, s) = setup();
    let mut group = c.benchmark_group("re-encrypt");
    group.sample_size(20);
    let mut counter = 0u64;
    for (size, name) in SIZES {
        let plaintext = vec![7u8; size];
        let sealed = envelope::seal(
            Kind::SealedToPod,
            &s.room,
            b"doc",
            &EncryptionKey::HpkeP256(s.pod_public.clone()),
            &plaintext,
        )
        .unwrap();
        let (_, start) = envelope::read_header(&sealed).unwrap().unwrap();
        let chunks: Vec<&[u8]> = sealed[start..].chunks(stream::SEALED_CHUNK_SIZE).collect();
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_function(BenchmarkId::new("pod", name), |b| {
            b.iter_batched(
                || request(&s, &sealed, &mut counter),
                |req| {
                    let pending = pod.re_encrypt(&req, &sealed[..start]).unwrap();
                    pod.audit_durable(&AuditAck {
                        seq: pending.seq(),
                        hash: pending.hash(),
                    })
                    .unwrap();
                    let Outcome::Released(mut r) = pending.release(&mut pod).unwrap() else {
                        panic!("refused")
                    };
                    let mut buf = Vec::with_capacity(stream::SEALED_CHUNK_SIZE);
                    for (i, c) in chunks.iter().enumerate() {
                        buf.clear();
                        buf.extend_from_slice(c);
                        r.transcryptor
                            .as_mut()
                            .unwrap()
                            .process(&mut buf, i + 1 == chunks.len())
                            .unwrap();
                    }
                },
                BatchSize::SmallInput,
            )
        });

        // The floor: the unavoidable primitives, nothing else.
        let pod_key = hpke::PrivateKey::generate().unwrap();
        let wrapped = hpke::seal(pod_key.public_key(), b"info", b"", &[1u8; 32]).unwrap();
        let user_key = hpke::PrivateKey::generate().unwrap();
        let stream_key = stream::StreamKey::from_bytes(&[3u8; 32]).unwrap();
        let stored = stream::seal(&stream_key, &plaintext).unwrap();
        let signer = SigningKey::generate().unwrap();
        let request_sig = signer.sign("request", &[0u8; 300]).unwrap();
        let verifier = signer.verifying_key();
        group.bench_function(BenchmarkId::new("floor", name), |b| {
            b.iter(|| {
                let file_key = hpke::open(&pod_key, b"info", b"", &wrapped).unwrap();
                let k = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[0u8; 32])
                    .extract(&file_key);
                let _ = k
                    .expand(&[b"secure-pod/v1/payload"], aws_lc_rs::hkdf::HKDF_SHA256)
                    .unwrap();
                verifier
                    .verify("request", &[0u8; 300], &request_sig)
                    .unwrap();
                let mut opener = stream::Opener::new(&stream_key).unwrap();
                let new_key = stream::StreamKey::generate().unwrap();
                let _wrapped =
                    hpke::seal(user_key.public_key(), b"info", b"", new_key.as_bytes()).unwrap();
                let mut sealer = stream::Sealer::new(&new_key).unwrap();
                let pieces: Vec<&[u8]> = stored.chunks(stream::SEALED_CHUNK_SIZE).collect();
                let mut buf = Vec::with_capacity(stream::SEALED_CHUNK_SIZE);
                for (i, p) in pieces.iter().enumerate() {
                    buf.clear();
                    buf.extend_from_slice(p);
                    let last = i + 1 == pieces.len();
                    opener.open_in_place(&mut buf, last).unwrap();
                    sealer.seal_in_place(&mut buf, last).unwrap();
                }
                signer.sign("audit", &[0u8; 300]).unwrap();
                signer.sign("receipt", &[0u8; 150]).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
