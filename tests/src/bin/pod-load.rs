//! A load generator for the local pod: requests per second, p50 and p99 of `POST /pod/re-encrypt` for 1 KiB and
//! 1 MiB documents at several concurrencies, and the peak memory of the proxy and the enclave.
//!
//! ```sh
//! cargo build --release --bins && target/release/pod-load --seconds 10 --clients 1,16,64
//! ```
//!
//! It starts its own `pod-proxy local` (budgets lifted through the enclave's environment), creates a room with one
//! member, seals the documents once, then keeps `clients` concurrent HTTPS clients busy for `seconds` per case.
//! Every request is a fresh signed request; every answer must be 200 (anything else is counted and reported).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use pod_protocol::envelope::{self, Kind};
use pod_protocol::keys::EncryptionKey;
use pod_tests::fixtures::{self, RoomFixture};
use pod_tests::https::Client;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pod_tests::b64;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut seconds = 10u64;
    let mut clients = vec![1usize, 16, 64];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds N")
            }
            "--clients" => {
                clients = args
                    .next()
                    .expect("--clients 1,16,64")
                    .split(',')
                    .map(|c| c.parse().expect("a number"))
                    .collect()
            }
            other => panic!("unknown argument {other}; use --seconds N --clients 1,16,64"),
        }
    }
    // Budgets lifted for the measurement.
    let pod = pod_tests::local::start_unbudgeted();
    let cacert = std::fs::read_to_string(pod.state.join("tls/cert.pem")).unwrap();
    let verified = pod.client().attest().await.unwrap();
    let room = RoomFixture::new().unwrap();
    let id = room.id();
    let client = Arc::new(Client::new(&pod.url, Some(&cacert)).unwrap());
    room.register(&client).await.unwrap();
    let member = Arc::new(room.member);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        b64(&member.bundle.encryption_key().to_spki_der())
    );
    let proxy_pid = pod.pid().to_string();
    let enclave_pid = pod.enclave_pid();

    println!(
        "{:>8} {:>8} {:>10} {:>10} {:>10} {:>8}",
        "size", "clients", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for (size, name) in [(1024usize, "1KiB"), (1 << 20, "1MiB")] {
        let plain = vec![0x5au8; size];
        let sealed = Arc::new(
            envelope::seal(
                Kind::SealedToPod,
                &id,
                b"load",
                &EncryptionKey::HpkeP256(verified.pod_key.clone()),
                &plain,
            )
            .unwrap(),
        );
        for &n in &clients {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (client, member, sealed, pem, key) = (
                    client.clone(),
                    member.clone(),
                    sealed.clone(),
                    pem.clone(),
                    verified.pod_key.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut errors = 0u64;
                    let mut first_error: Option<String> = None;
                    let (header, _) = envelope::read_header(&sealed).unwrap().unwrap();
                    while Instant::now() < deadline {
                        let token = fixtures::request(&member, &id, &header, &key).unwrap();
                        let body = json!({"encrypted_blob": b64(&sealed), "user_public_key": pem, "auth_token": b64(token.as_bytes())});
                        let t = Instant::now();
                        match client.call("POST", "/pod/re-encrypt", Some(&body)).await {
                            Ok((200, _)) => lat.push(t.elapsed()),
                            Ok((status, v)) => {
                                errors += 1;
                                first_error.get_or_insert_with(|| format!("{status} {v}"));
                            }
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                    (lat, errors, first_error)
                }));
            }
            let mut all = Vec::new();
            let mut errors = 0;
            let mut example = None;
            for t in tasks {
                let (l, e, first) = t.await.unwrap();
                all.extend(l);
                errors += e;
                example = example.or(first);
            }
            if let Some(e) = &example {
                eprintln!("first error at {n} clients: {e}");
            }
            all.sort();
            let pct = |p: f64| {
                all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .unwrap_or(0.0)
            };
            println!(
                "{name:>8} {n:>8} {:>10.1} {:>10.2} {:>10.2} {errors:>8}",
                all.len() as f64 / seconds as f64,
                pct(0.50),
                pct(0.99)
            );
        }
    }
    println!(
        "peak memory: proxy {} KiB, enclave {} KiB",
        pod_tests::local::status_kib(&proxy_pid, "VmHWM"),
        pod_tests::local::status_kib(&enclave_pid, "VmHWM")
    );
}
