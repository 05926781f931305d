//! `CiphertextForRecipient`: every vector of tests/vectors/kms (see its README), the exact KMS framing, mutations,
//! and OpenSSL's CLI decrypting what the emulator builds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey};
use base64::Engine as _;
use pod_protocol::cms;

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/vectors/kms/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn expected(name: &str) -> std::collections::HashMap<String, Vec<u8>> {
    String::from_utf8(vector(name))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| hex::decode(v).ok().map(|b| (k.to_owned(), b)))
        .collect()
}

fn pem_pkcs8(name: &str) -> Vec<u8> {
    let text = String::from_utf8(vector(name)).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn key_and_spki(pkcs8: &[u8]) -> (OaepPrivateDecryptingKey, Vec<u8>) {
    let private = PrivateDecryptingKey::from_pkcs8(pkcs8).unwrap();
    let spki = AsDer::<PublicKeyX509Der<'_>>::as_der(&private.public_key())
        .unwrap()
        .as_ref()
        .to_vec();
    (OaepPrivateDecryptingKey::new(private).unwrap(), spki)
}

fn test_key() -> (OaepPrivateDecryptingKey, Vec<u8>) {
    // recipient_key_pkcs8.der is, despite its name, a PKCS#1 RSAPrivateKey (see the README); the PEM is PKCS#8.
    let (key, spki) = key_and_spki(&pem_pkcs8("recipient_key.pem"));
    assert_eq!(spki, vector("recipient_pub_spki.der"));
    (key, spki)
}

#[test]
fn every_vector_with_a_key_decrypts() {
    let (key, spki) = test_key();
    for (ber, plain) in [
        ("kms_shape_32b.ber", "kms_shape_32b.plaintext.bin"),
        (
            "kms_shape_primitive_13b.ber",
            "kms_shape_primitive_13b.plaintext.bin",
        ),
        (
            "kms_shape_chunked_4096b.ber",
            "kms_shape_chunked_4096b.plaintext.bin",
        ),
        ("openssl_cli_stream.ber", "openssl_cli.plaintext.bin"),
        ("openssl_cli_der.der", "openssl_cli.plaintext.bin"),
    ] {
        let got = cms::decrypt(&vector(ber), &key, &spki).unwrap_or_else(|e| panic!("{ber}: {e}"));
        assert_eq!(*got, vector(plain), "{ber}");
    }
    let (key, spki) = key_and_spki(&pem_pkcs8("third_party/enclaver_recipient_key.pem"));
    let got = cms::decrypt(
        &vector("third_party/enclaver_kms_response_hello.ber"),
        &key,
        &spki,
    )
    .unwrap();
    assert_eq!(
        *got,
        vector("third_party/enclaver_kms_response_hello.plaintext.bin")
    );
}

#[test]
fn real_kms_responses_parse_into_their_parts() {
    for name in [
        "aws_sdk_c_kms_response_1",
        "aws_sdk_c_kms_response_2_primitive",
    ] {
        let env = cms::parse(&vector(&format!("third_party/{name}.ber"))).unwrap();
        let want = expected(&format!("third_party/{name}.expected.txt"));
        assert_eq!(env.encrypted_key, want["encrypted_key"], "{name}");
        assert_eq!(env.iv.as_slice(), want["iv"].as_slice(), "{name}");
        assert_eq!(env.ciphertext, want["ciphertext"], "{name}");
        assert_eq!(env.recipient_key_id.len(), 32);
    }
}

#[test]
fn the_emulator_framing_is_byte_for_byte_the_kms_shape() {
    let want = expected("kms_shape_32b.expected.txt");
    let iv: [u8; 16] = want["iv"].as_slice().try_into().unwrap();
    let framed = cms::frame(
        &want["ski_sha256_spki"],
        &want["encrypted_key"],
        &iv,
        &want["ciphertext"],
    );
    assert_eq!(framed, vector("kms_shape_32b.ber"));
}

#[test]
fn encrypt_for_recipient_round_trips() {
    let (key, spki) = test_key();
    for len in [0usize, 1, 15, 16, 32, 121, 4096] {
        let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let blob = cms::encrypt_for_recipient(&spki, &plain).unwrap();
        assert_eq!(*cms::decrypt(&blob, &key, &spki).unwrap(), plain);
    }
    // A blob for another key is refused by its recipient id before any RSA work.
    let (_, other_spki) = key_and_spki(&pem_pkcs8("third_party/enclaver_recipient_key.pem"));
    let blob = cms::encrypt_for_recipient(&other_spki, b"x").unwrap();
    assert_eq!(
        cms::decrypt(&blob, &key, &spki).unwrap_err(),
        pod_protocol::Error::Decrypt
    );
}

#[test]
fn mutated_and_truncated_inputs_are_refused_without_panic() {
    let (key, spki) = test_key();
    let blob = vector("kms_shape_32b.ber");
    let plain = vector("kms_shape_32b.plaintext.bin");
    // AES-CBC is not authenticated: a changed IV or ciphertext byte changes the plaintext (or its padding) and goes
    // undetected here. That is KMS's format; the pod relies on TLS to KMS terminating in the enclave and on checking
    // the recovered key against the expected pod key fingerprint. Every other byte must be refused.
    let want = expected("kms_shape_32b.expected.txt");
    let range = |needle: &[u8]| {
        let at = blob
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        at..at + needle.len()
    };
    let malleable = [range(&want["iv"]), range(&want["ciphertext"])];
    for i in 0..blob.len() {
        for flip in [0x01u8, 0x80] {
            let mut m = blob.clone();
            m[i] ^= flip;
            match cms::decrypt(&m, &key, &spki) {
                Err(_) => {}
                Ok(p) => {
                    assert!(
                        malleable.iter().any(|r| r.contains(&i)),
                        "byte {i} flip {flip:#x} was accepted"
                    );
                    assert_ne!(*p, plain, "byte {i}");
                }
            }
        }
    }
    for n in 0..blob.len() {
        assert!(
            cms::decrypt(&blob[..n], &key, &spki).is_err(),
            "truncated to {n}"
        );
    }
    assert!(cms::parse(&vec![0x30; 200_000]).is_err());
    // Deeply nested indefinite lengths.
    let mut deep = Vec::new();
    for _ in 0..100 {
        deep.extend_from_slice(&[0x30, 0x80]);
    }
    assert!(cms::parse(&deep).is_err());
}

#[test]
fn openssl_decrypts_what_the_emulator_builds() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: openssl is not installed; the OpenSSL interoperability check did not run"
        );
        return;
    }
    let (_, spki) = test_key();
    let blob = cms::encrypt_for_recipient(&spki, b"pod key material, 32 bytes long!").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("blob.ber");
    std::fs::write(&input, &blob).unwrap();
    let key = format!(
        "{}/tests/vectors/kms/recipient_key.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = std::process::Command::new("openssl")
        .args([
            "cms", "-decrypt", "-inform", "DER", "-binary", "-inkey", &key, "-in",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"pod key material, 32 bytes long!");
}
