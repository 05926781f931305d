//! A bounded soak run against the local pod: many clients for a fixed time, mixing reads by members, requests by
//! revoked users (refused), and grants and revocations by the owner; afterwards the audit log must hold exactly one
//! entry per re-encryption request and verify, and the memory samples show whether it stays flat.
//!
//! ```sh
//! cargo build --release --bins && target/release/pod-soak --clients 256 --seconds 60
//! ```
//!
//! It stops by itself. Traffic goes only to the local pod on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use base64::Engine as _;
use pod_protocol::envelope::{self, Kind};
use pod_protocol::keys::{EncryptionKey, UserSecrets};
use pod_protocol::membership::{Action, SignedEntry};
use pod_tests::fixtures::{self, RoomFixture, now_ms};
use pod_tests::https::Client;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pod_tests::b64;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut clients = 256usize;
    let mut seconds = 60u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--clients" => {
                clients = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--clients N")
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds N")
            }
            other => panic!("unknown argument {other}; use --clients N --seconds N"),
        }
    }
    let pod = pod_tests::local::start_unbudgeted();
    let cacert = std::fs::read_to_string(pod.state.join("tls/cert.pem")).unwrap();
    let verified = pod.client().attest().await.unwrap();
    let client = Arc::new(Client::new(&pod.url, Some(&cacert)).unwrap());
    let room = RoomFixture::new().unwrap();
    let room_id = room.id();
    let room_hex = hex::encode(room_id);
    room.register(&client).await.unwrap();
    let owner = Arc::new(room.owner);
    let member = Arc::new(room.member);
    let log = Arc::new(tokio::sync::Mutex::new(room.log));
    let outsider = Arc::new(UserSecrets::generate().unwrap());
    let sealed = Arc::new(
        envelope::seal(
            Kind::SealedToPod,
            &room_id,
            b"soak",
            &EncryptionKey::HpkeP256(verified.pod_key.clone()),
            &[7u8; 4096],
        )
        .unwrap(),
    );
    let (released, refused, membership, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let proxy_pid = pod.pid().to_string();
    let enclave_pid = pod.enclave_pid();
    let sampler = {
        let (p, e) = (proxy_pid.clone(), enclave_pid.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                samples.push((
                    pod_tests::local::status_kib(&p, "VmRSS"),
                    pod_tests::local::status_kib(&e, "VmRSS"),
                ));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            samples
        })
    };
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (client, owner, member, outsider, sealed, log) = (
            client.clone(),
            owner.clone(),
            member.clone(),
            outsider.clone(),
            sealed.clone(),
            log.clone(),
        );
        let (released, refused, membership, errors, key, room_hex) = (
            released.clone(),
            refused.clone(),
            membership.clone(),
            errors.clone(),
            verified.pod_key.clone(),
            room_hex.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (header, _) = envelope::read_header(&sealed).unwrap().unwrap();
            let id = header.room().to_owned();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                // One client in 16 changes membership now and then: grant or revoke the outsider.
                if i % 16 == 0 && n.is_multiple_of(8) {
                    let mut log = log.lock().await;
                    let room = pod_protocol::membership::Room::replay(&*log).unwrap();
                    let (action, subject) = if room.member(outsider.bundle.id()).is_some() {
                        (Action::Revoke, outsider.bundle.id().to_vec())
                    } else {
                        (Action::Grant, outsider.bundle.as_bytes().to_vec())
                    };
                    let e = SignedEntry::sign(room.next_entry(action, subject, now_ms(), *owner.bundle.id()), &owner.signing).unwrap();
                    match client.call("POST", &format!("/rooms/{room_hex}/entries"), Some(&json!({"entry": b64(e.as_bytes())}))).await {
                        Ok((200, _)) => {
                            log.push(e);
                            membership.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                // One request in 10 is by the outsider (refused while revoked); the rest by the member.
                let user = if n.is_multiple_of(10) { &outsider } else { &member };
                let token = fixtures::request(user, &id, &header, &key).unwrap();
                let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", b64(&user.bundle.encryption_key().to_spki_der()));
                let body = json!({"encrypted_blob": b64(&sealed), "user_public_key": pem, "auth_token": b64(token.as_bytes())});
                match client.call("POST", "/pod/re-encrypt", Some(&body)).await {
                    Ok((200, _)) => {
                        released.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((403, _)) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    // 400: the outsider was never granted, so the proxy turns the request away before the pod.
                    Ok((400, _)) if user.bundle.id() == outsider.bundle.id() => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let samples = sampler.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut raw = Vec::new();
    loop {
        let (_, v) = client
            .call("GET", &format!("/audit?from={}", raw.len()), None)
            .await
            .unwrap();
        let batch = v["entries"].as_array().cloned().unwrap_or_default();
        if batch.is_empty() {
            break;
        }
        raw.extend(batch.iter().map(|e| {
            base64::engine::general_purpose::STANDARD
                .decode(e.as_str().unwrap())
                .unwrap()
        }));
    }
    let summary = pod_protocol::audit::verify_log(&raw, &verified.receipt_key, &[], &[]);
    let (rel, refu, mem, err) = (
        released.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        membership.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    println!(
        "clients {clients}, {seconds} s: released {rel}, refused {refu}, membership changes {mem}, unexpected errors {err}"
    );
    println!(
        "audit entries {} (expected {}), log verifies: {}",
        raw.len(),
        rel + refu,
        summary.is_ok()
    );
    println!("memory samples every 5 s, KiB (proxy, enclave): {samples:?}");
    let ok = err == 0 && raw.len() as u64 == rel + refu && summary.is_ok();
    println!("{}", if ok { "SOAK OK" } else { "SOAK FAILED" });
    // `exit` skips destructors: stop the pod first, or it outlives the soak.
    drop(pod);
    std::process::exit(if ok { 0 } else { 1 });
}
