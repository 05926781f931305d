//! Interoperability with an independent implementation: Python's `cryptography` package opens what the Rust side
//! seals, and the Rust side opens what Python seals, for HPKE and STREAM. `.ci/run` installs the package.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use pod_protocol::{hpke, stream};
use serde_json::{Value, json};
use std::process::Command;

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn python_cryptography_opens_ours_and_we_open_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let recipient = hpke::PrivateKey::generate().unwrap();
    let ours = hpke::PrivateKey::generate().unwrap();

    let mut hpke_cases = Vec::new();
    for (name, info, len) in [
        ("empty", &b""[..], 0usize),
        ("file-key", b"secure-pod/v1", 32),
        ("long", b"i", 4000),
    ] {
        let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        let sealed = hpke::seal(recipient.public_key(), info, b"", &plaintext).unwrap();
        hpke_cases.push(json!({
            "name": name,
            "info": hex::encode(info),
            "plaintext": hex::encode(&plaintext),
            "sealed": hex::encode(&sealed),
            "recipient_scalar": hex::encode(&*recipient.to_scalar().unwrap()),
        }));
    }
    let mut stream_cases = Vec::new();
    for (name, len) in [
        ("empty", 0usize),
        ("small", 100),
        ("exact", stream::CHUNK_SIZE),
        ("three", 2 * stream::CHUNK_SIZE + 5),
    ] {
        let key = stream::StreamKey::generate().unwrap();
        let plaintext: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let file = format!("rust-{name}.bin");
        std::fs::write(
            dir.path().join(&file),
            stream::seal(&key, &plaintext).unwrap(),
        )
        .unwrap();
        stream_cases.push(json!({
            "name": name,
            "key": hex::encode(key.as_bytes()),
            "plaintext": hex::encode(&plaintext),
            "sealed_file": file,
        }));
    }
    let rust = json!({
        "hpke": hpke_cases,
        "stream": stream_cases,
        "python_recipient_point": hex::encode(ours.public_key().as_bytes()),
    });
    std::fs::write(dir.path().join("rust.json"), rust.to_string()).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .output()
        .expect("python3 must be installed (the test suite needs it for interoperability tests)");
    assert!(
        out.status.success(),
        "the Python implementation refused what Rust sealed (or is not installed: pip install 'cryptography>=48'):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let python: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("python.json")).unwrap()).unwrap();
    let hpke_cases = python["hpke"].as_array().unwrap();
    assert_eq!(hpke_cases.len(), 3);
    for case in hpke_cases {
        let opened = hpke::open(&ours, &hex(&case["info"]), b"", &hex(&case["sealed"])).unwrap();
        assert_eq!(*opened, hex(&case["plaintext"]), "{}", case["name"]);
    }
    let stream_cases = python["stream"].as_array().unwrap();
    assert_eq!(stream_cases.len(), 4);
    for case in stream_cases {
        let key = stream::StreamKey::from_bytes(&hex(&case["key"])).unwrap();
        let sealed = std::fs::read(dir.path().join(case["sealed_file"].as_str().unwrap())).unwrap();
        let opened = stream::open(&key, &sealed).unwrap();
        assert_eq!(*opened, hex(&case["plaintext"]), "{}", case["name"]);
    }
}
