//! The verifier against real AWS Nitro attestation documents (see tests/vectors/README.md for provenance).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use attestation_verifier::{
    CertPosition, Error, ExpectedPcrs, Policy, UnixTime, VerifiedAttestation, Verifier,
};
use pod_cbor::{Decoder, Encoder, Len};
use std::time::Duration;

struct Vector {
    file: &'static str,
    timestamp_ms: u64,
    debug: bool,
    /// PCR0, PCR1, PCR2, PCR8 as listed in the vectors' README.
    pcrs: [&'static str; 4],
    has_public_key: bool,
    has_user_data: bool,
    has_nonce: bool,
}

const Z: &str = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

const VECTORS: &[Vector] = &[
    Vector {
        file: "evervault-debug-2022-10-12.cbor",
        timestamp_ms: 1665582606081,
        debug: true,
        pcrs: [Z, Z, Z, Z],
        has_public_key: true,
        has_user_data: true,
        has_nonce: false,
    },
    Vector {
        file: "evervault-prod-2022-10-13.cbor",
        timestamp_ms: 1665651482136,
        debug: false,
        pcrs: [
            "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b",
            "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f",
            "d8f114da658de5481f8d9ec73907feb553560787522f705c92d7d96beed8e15e2aa611984e098c576832c292e8dc469a",
            "8790eb3cce6c83d07e84b126dc61ca923333d6f66615c4a79157de48c5ab2418bdc60746ea7b7afbff03a1c6210201cb",
        ],
        has_public_key: false,
        has_user_data: false,
        has_nonce: true,
    },
    Vector {
        file: "evervault-tlscert-san-2023-01-18.cbor",
        timestamp_ms: 1674047239280,
        debug: false,
        pcrs: [
            "d265a83faa7b4fa0d73b82b6d06253e894445922937d0ee5a74fe4891da9817611a71e71b98e5329232902de3cf419af",
            "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f",
            "e4f634d24ad83b7f6e49fe283bafdb220f6252fb4a278a858e19d15b7cd0f263b9168ed0bacefb4444266df9f9a77f24",
            "97c5395a83c0d6a04d53ff962663c714c178c24500bf97f78456ed3721d922cf3f940614da4bb90107c439bc4a1443ca",
        ],
        has_public_key: false,
        has_user_data: true,
        has_nonce: true,
    },
    Vector {
        file: "evervault-debug-2023-09-18.cbor",
        timestamp_ms: 1695049410860,
        debug: true,
        pcrs: [Z, Z, Z, Z],
        has_public_key: false,
        has_user_data: true,
        has_nonce: true,
    },
    Vector {
        file: "marlin-nitroprover-2024-02-26.cbor",
        timestamp_ms: 1708930921439,
        debug: false,
        pcrs: [
            "17bf8f048519797be90497001a7559a3d555395937117d76f8baaedf56ca6d97952de79479bc0c76e5d176d20f663790",
            "5d3938eb05288e20a981038b1861062ff4174884968a39aee5982b312894e60561883576cc7381d1a7d05b809936bd16",
            "249037310daa90f4eb0703e7b105a241fdb09f12d3c40b7aea2f39e57b07b887e6ff4e4f9757943e127e391626b5e4d5",
            Z,
        ],
        has_public_key: true,
        has_user_data: true,
        has_nonce: false,
    },
    Vector {
        file: "marlin-nitroprover-2024-04-03.cbor",
        timestamp_ms: 1712149702338,
        debug: false,
        pcrs: [
            "ea6ff0cc81650a6a2e5e6b009b058d684600ea08006beafb60a693e2eeb362e3a06039ff8341f0715543672c5c9ffa61",
            "41245c1ef3514f08230e85fd21d97dee1eb2c3cfbca59cabd15b8858bc45c019acbbf1ec737cec472ffd0b0d8040e4ba",
            "861ca1d00bed2c7d8fa0bf5aa11fcb6a002fe729f3123477d470299fc5eb72ae886d33c3d73216064f9dc15e3f7251e2",
            Z,
        ],
        has_public_key: true,
        has_user_data: true,
        has_nonce: false,
    },
    Vector {
        file: "marlin-nitroprover-2024-04-10.cbor",
        timestamp_ms: 1712732941701,
        debug: false,
        pcrs: [
            "ea6ff0cc81650a6a2e5e6b009b058d684600ea08006beafb60a693e2eeb362e3a06039ff8341f0715543672c5c9ffa61",
            "41245c1ef3514f08230e85fd21d97dee1eb2c3cfbca59cabd15b8858bc45c019acbbf1ec737cec472ffd0b0d8040e4ba",
            "861ca1d00bed2c7d8fa0bf5aa11fcb6a002fe729f3123477d470299fc5eb72ae886d33c3d73216064f9dc15e3f7251e2",
            Z,
        ],
        has_public_key: true,
        has_user_data: true,
        has_nonce: false,
    },
    Vector {
        file: "base-nitro-validator-2026-01-03.cbor",
        timestamp_ms: 1767472867402,
        debug: false,
        pcrs: [
            "4b8d4cf2a99e05ce1b5bddaf9d21cb446eb0e606c5bebd1ebf02b473a22165f7b68b0bb0d1ac5a90f0311e493522cfab",
            "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa",
            "16efcc1d6952c5b9737eb2ab1751a08412835c5125818bfb55f6367cb3cdca49b13d2a5b6d771de9db1578242e328c6d",
            Z,
        ],
        has_public_key: false,
        has_user_data: true,
        has_nonce: false,
    },
];

fn load(file: &str) -> Vec<u8> {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn expected_pcrs(v: &Vector) -> ExpectedPcrs {
    let mut p = ExpectedPcrs::new();
    for (index, value) in [0u8, 1, 2, 8].into_iter().zip(v.pcrs) {
        p.insert_hex(index, value).unwrap();
    }
    p
}

fn pinned_policy(v: &Vector) -> Policy {
    let p = Policy::new(expected_pcrs(v)).unwrap();
    if v.debug { p.insecure_allow_debug() } else { p }
}

fn at(v: &Vector) -> UnixTime {
    UnixTime::from_millis(v.timestamp_ms)
}

fn verify(doc: &[u8], policy: &Policy, when: UnixTime) -> Result<VerifiedAttestation, Error> {
    Verifier::aws_nitro().verify(doc, policy, when)
}

fn vector(file: &str) -> &'static Vector {
    VECTORS.iter().find(|v| v.file == file).unwrap()
}

#[test]
fn every_real_document_verifies_at_its_own_timestamp_with_its_pcrs() {
    for v in VECTORS {
        let doc = load(v.file);
        let got =
            verify(&doc, &pinned_policy(v), at(v)).unwrap_or_else(|e| panic!("{}: {e}", v.file));
        assert_eq!(got.timestamp().as_millis(), v.timestamp_ms, "{}", v.file);
        assert_eq!(got.is_debug(), v.debug, "{}", v.file);
        assert_eq!(got.pcrs().count(), 16, "{}", v.file);
        assert_eq!(got.public_key().is_some(), v.has_public_key, "{}", v.file);
        assert_eq!(got.user_data().is_some(), v.has_user_data, "{}", v.file);
        assert_eq!(got.nonce().is_some(), v.has_nonce, "{}", v.file);
        assert!(got.module_id().starts_with("i-"), "{}", v.file);
        assert_eq!(
            hex::encode(got.root_sha256()),
            attestation_verifier::AWS_NITRO_ROOT_G1_SHA256
        );
        // The same document also passes a policy that pins nothing, and is tagged or not.
        let any = Policy::insecure_any_pcrs();
        let any = if v.debug {
            any.insecure_allow_debug()
        } else {
            any
        };
        verify(&doc, &any, at(v)).unwrap();
        let mut tagged = vec![0xd2];
        tagged.extend_from_slice(&doc);
        verify(&tagged, &any, at(v)).unwrap();
    }
}

#[test]
fn every_real_document_fails_at_the_current_time() {
    let now = UnixTime::from_millis(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    for v in VECTORS {
        let doc = load(v.file);
        match verify(&doc, &pinned_policy(v), now) {
            Err(Error::CertificateNotValidAt { .. }) => {}
            other => panic!("{}: expected CertificateNotValidAt, got {other:?}", v.file),
        }
    }
}

#[test]
fn a_policy_that_pins_no_image_is_refused() {
    let mut p = ExpectedPcrs::new();
    p.insert(3, vec![0; 48]).unwrap();
    p.insert(4, vec![0; 48]).unwrap();
    assert!(matches!(Policy::new(p), Err(Error::InvalidPcrPolicy(_))));
    let mut p = ExpectedPcrs::new();
    p.insert(8, vec![0; 48]).unwrap();
    assert!(
        Policy::new(p).is_ok(),
        "the signer's PCR8 pins the image's origin"
    );
}

#[test]
fn a_single_changed_pcr_byte_fails() {
    for v in VECTORS {
        let doc = load(v.file);
        for (slot, index) in [0u8, 1, 2, 8].into_iter().enumerate() {
            let mut bytes = hex::decode(v.pcrs[slot]).unwrap();
            for position in [0, 23, 47] {
                bytes[position] ^= 0x01;
                // Every policy pins the image (PCR0) too; a changed PCR0 is the test's own subject.
                let mut p = ExpectedPcrs::new();
                p.insert(index, bytes.clone()).unwrap();
                if index != 0 {
                    p.insert(0, hex::decode(v.pcrs[0]).unwrap()).unwrap();
                }
                let policy = Policy::new(p).unwrap().insecure_allow_debug();
                assert_eq!(
                    verify(&doc, &policy, at(v)).unwrap_err(),
                    Error::PcrMismatch { index },
                    "{} PCR{index}[{position}]",
                    v.file
                );
                bytes[position] ^= 0x01;
            }
        }
        // A PCR the document does not carry.
        let mut p = ExpectedPcrs::new();
        p.insert(0, hex::decode(v.pcrs[0]).unwrap()).unwrap();
        p.insert(20, vec![0; 48]).unwrap();
        assert_eq!(
            verify(&doc, &Policy::new(p).unwrap().insecure_allow_debug(), at(v)).unwrap_err(),
            Error::PcrMissing { index: 20 }
        );
    }
}

#[test]
fn debug_documents_are_refused_unless_allowed() {
    for v in VECTORS.iter().filter(|v| v.debug) {
        let doc = load(v.file);
        let strict = Policy::new(expected_pcrs(v)).unwrap();
        assert_eq!(verify(&doc, &strict, at(v)).unwrap_err(), Error::DebugMode);
        assert_eq!(
            verify(&doc, &Policy::insecure_any_pcrs(), at(v)).unwrap_err(),
            Error::DebugMode
        );
        assert!(verify(&doc, &strict.insecure_allow_debug(), at(v)).is_ok());
    }
}

#[test]
fn the_pcr_file_format_drives_the_policy() {
    let v = vector("marlin-nitroprover-2024-02-26.cbor");
    let json = format!(
        r#"{{"PCR0": "{}", "PCR1": "{}", "PCR2": "{}"}}"#,
        v.pcrs[0], v.pcrs[1], v.pcrs[2]
    );
    let policy = Policy::new(ExpectedPcrs::from_json(&json).unwrap()).unwrap();
    verify(&load(v.file), &policy, at(v)).unwrap();
}

// ---- One test per rejection rule -------------------------------------------------------------------------------

/// The four parts of a COSE_Sign1.
struct Parts {
    protected: Vec<u8>,
    unprotected: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn split(doc: &[u8]) -> Parts {
    let mut d = Decoder::new(doc);
    assert_eq!(d.array().unwrap(), Len::Definite(4));
    let protected = d.bytes().unwrap().to_vec();
    let start = d.position();
    d.skip().unwrap();
    let unprotected = doc[start..d.position()].to_vec();
    let payload = d.bytes().unwrap().to_vec();
    let signature = d.bytes().unwrap().to_vec();
    Parts {
        protected,
        unprotected,
        payload,
        signature,
    }
}

fn join(p: &Parts) -> Vec<u8> {
    let mut e = Encoder::new();
    e.array(4)
        .bytes(&p.protected)
        .raw(&p.unprotected)
        .bytes(&p.payload)
        .bytes(&p.signature);
    e.into_bytes()
}

/// Re-encodes a payload map entry by entry, letting `edit` replace, drop or add entries (as raw CBOR).
fn edit_payload(payload: &[u8], edit: impl Fn(&str, &[u8]) -> Vec<(String, Vec<u8>)>) -> Vec<u8> {
    let mut d = Decoder::new(payload);
    let len = d.map().unwrap();
    let mut entries = Vec::new();
    d.for_each(len, 64, |d, _| {
        let key = d.text()?.to_owned();
        let start = d.position();
        d.skip()?;
        entries.push((key, payload[start..d.position()].to_vec()));
        Ok(())
    })
    .unwrap();
    let edited: Vec<(String, Vec<u8>)> = entries.iter().flat_map(|(k, v)| edit(k, v)).collect();
    let mut e = Encoder::new();
    e.map(edited.len() as u64);
    for (k, v) in &edited {
        e.text(k).raw(v);
    }
    e.into_bytes()
}

const MARLIN: &str = "marlin-nitroprover-2024-02-26.cbor";
const EVERVAULT_PROD: &str = "evervault-prod-2022-10-13.cbor";

fn any_pcrs() -> Policy {
    Policy::insecure_any_pcrs()
}

#[test]
fn rule_tag_other_than_18_is_refused() {
    let v = vector(MARLIN);
    let mut doc = vec![0xd1]; // tag 17
    doc.extend_from_slice(&load(v.file));
    assert_eq!(
        verify(&doc, &any_pcrs(), at(v)).unwrap_err(),
        Error::UnexpectedTag { tag: 17 }
    );
}

#[test]
fn rule_protected_header_must_be_es384_only() {
    let v = vector(MARLIN);
    let mut parts = split(&load(v.file));
    assert_eq!(parts.protected, [0xa1, 0x01, 0x38, 0x22]);
    for protected in [
        vec![0xa1, 0x01, 0x38, 0x23],             // ES512
        vec![0xa1, 0x01, 0x26],                   // ES256
        vec![0xa0],                               // no alg
        vec![0xa2, 0x01, 0x38, 0x22, 0x04, 0x40], // alg plus a kid
        vec![0xa1, 0x01, 0x38, 0x22, 0x00],       // trailing byte
        vec![0x81, 0x01],                         // not a map
        vec![],                                   // empty
    ] {
        parts.protected = protected.clone();
        assert_eq!(
            verify(&join(&parts), &any_pcrs(), at(v)).unwrap_err(),
            Error::ProtectedHeader,
            "{protected:02x?}"
        );
    }
}

#[test]
fn rule_unprotected_header_must_be_empty() {
    let v = vector(MARLIN);
    let mut parts = split(&load(v.file));
    parts.unprotected = vec![0xa1, 0x04, 0x40]; // {4: h''}
    assert_eq!(
        verify(&join(&parts), &any_pcrs(), at(v)).unwrap_err(),
        Error::UnprotectedHeaderNotEmpty
    );
    parts.unprotected = vec![0xbf, 0xff]; // empty indefinite map is still empty
    verify(&join(&parts), &any_pcrs(), at(v)).unwrap();
}

#[test]
fn rule_null_is_absent_for_optional_and_missing_for_required_fields() {
    let v = vector(MARLIN);
    let parts = split(&load(v.file));
    // The real document carries `nonce: null` and verifies: null means absent.
    assert!(
        verify(&join(&parts), &any_pcrs(), at(v))
            .unwrap()
            .nonce()
            .is_none()
    );
    for field in [
        "module_id",
        "digest",
        "timestamp",
        "pcrs",
        "certificate",
        "cabundle",
    ] {
        let payload = edit_payload(&parts.payload, |k, val| {
            vec![(
                k.to_owned(),
                if k == field { vec![0xf6] } else { val.to_vec() },
            )]
        });
        let doc = join(&Parts {
            payload,
            ..split(&load(v.file))
        });
        assert_eq!(
            verify(&doc, &any_pcrs(), at(v)).unwrap_err(),
            Error::MissingField(field),
            "{field}"
        );
    }
}

#[test]
fn rule_duplicate_keys_are_refused() {
    let v = vector(MARLIN);
    let parts = split(&load(v.file));
    // Repeat `nonce` with a value: a lax parser would keep the last one.
    let payload = edit_payload(&parts.payload, |k, val| {
        let mut out = vec![(k.to_owned(), val.to_vec())];
        if k == "nonce" {
            out.push(("nonce".into(), vec![0x41, 0x07]));
        }
        out
    });
    let doc = join(&Parts {
        payload,
        ..split(&load(v.file))
    });
    assert_eq!(
        verify(&doc, &any_pcrs(), at(v)).unwrap_err(),
        Error::DuplicateField("nonce")
    );
}

#[test]
fn rule_unknown_fields_and_wrong_types_are_refused() {
    let v = vector(MARLIN);
    let parts = split(&load(v.file));
    let payload = edit_payload(&parts.payload, |k, val| {
        let mut out = vec![(k.to_owned(), val.to_vec())];
        if k == "nonce" {
            out.push(("extra".into(), vec![0x00]));
        }
        out
    });
    let doc = join(&Parts {
        payload,
        ..split(&load(v.file))
    });
    assert_eq!(
        verify(&doc, &any_pcrs(), at(v)).unwrap_err(),
        Error::UnknownField
    );

    let payload = edit_payload(&parts.payload, |k, val| {
        vec![(
            k.to_owned(),
            if k == "timestamp" {
                vec![0x61, b'1']
            } else {
                val.to_vec()
            },
        )]
    });
    let doc = join(&Parts {
        payload,
        ..split(&load(v.file))
    });
    assert!(matches!(
        verify(&doc, &any_pcrs(), at(v)).unwrap_err(),
        Error::Cbor(pod_cbor::Error::UnexpectedType { .. })
    ));

    let payload = edit_payload(&parts.payload, |k, val| {
        vec![(
            k.to_owned(),
            if k == "digest" {
                vec![0x66, b'S', b'H', b'A', b'2', b'5', b'6']
            } else {
                val.to_vec()
            },
        )]
    });
    let doc = join(&Parts {
        payload,
        ..split(&load(v.file))
    });
    assert_eq!(
        verify(&doc, &any_pcrs(), at(v)).unwrap_err(),
        Error::UnsupportedDigest
    );
}

#[test]
fn rule_oversize_fields_are_refused() {
    let v = vector(MARLIN);
    let parts = split(&load(v.file));
    let mut big = Encoder::new();
    big.bytes(&[7u8; 1025]);
    let big = big.into_bytes();
    for field in ["user_data", "nonce", "public_key"] {
        let payload = edit_payload(&parts.payload, |k, val| {
            vec![(
                k.to_owned(),
                if k == field {
                    big.clone()
                } else {
                    val.to_vec()
                },
            )]
        });
        let doc = join(&Parts {
            payload,
            ..split(&load(v.file))
        });
        assert_eq!(
            verify(&doc, &any_pcrs(), at(v)).unwrap_err(),
            Error::FieldSize {
                field,
                len: 1025,
                min: usize::from(field == "public_key"),
                max: 1024
            }
        );
    }
    let huge = vec![0u8; attestation_verifier::limits::MAX_DOCUMENT_LEN + 1];
    assert!(matches!(
        verify(&huge, &any_pcrs(), at(v)).unwrap_err(),
        Error::DocumentTooLarge { .. }
    ));
}

#[test]
fn rule_trailing_bytes_are_refused() {
    let v = vector(MARLIN);
    let mut doc = load(v.file);
    doc.push(0x00);
    assert!(matches!(
        verify(&doc, &any_pcrs(), at(v)).unwrap_err(),
        Error::Cbor(pod_cbor::Error::TrailingBytes { count: 1, .. })
    ));
}

#[test]
fn rule_wrong_root_is_refused() {
    let v = vector(MARLIN);
    let pem = std::fs::read_to_string(format!(
        "{}/tests/vectors/other-p384-root.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let other = Verifier::with_root_pem(&pem).unwrap();
    assert_eq!(
        other.verify(&load(v.file), &any_pcrs(), at(v)).unwrap_err(),
        Error::WrongRoot
    );
    // The AWS root read from its PEM is the embedded one.
    let aws_pem = std::fs::read_to_string(format!(
        "{}/tests/vectors/aws-nitro-root-g1.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    Verifier::with_root_pem(&aws_pem)
        .unwrap()
        .verify(&load(v.file), &any_pcrs(), at(v))
        .unwrap();
}

#[test]
fn rule_expired_or_not_yet_valid_certificates_are_refused() {
    let v = vector(MARLIN);
    let doc = load(v.file);
    // The leaf lives three hours: four hours later it has expired.
    let later = UnixTime::from_millis(v.timestamp_ms + 4 * 3600 * 1000);
    assert!(matches!(
        verify(&doc, &any_pcrs(), later).unwrap_err(),
        Error::CertificateNotValidAt {
            position: CertPosition::Leaf,
            ..
        }
    ));
    let earlier = UnixTime::from_millis(v.timestamp_ms - 3600 * 1000);
    assert!(matches!(
        verify(&doc, &any_pcrs(), earlier).unwrap_err(),
        Error::CertificateNotValidAt { .. }
    ));
}

#[test]
fn rule_nonce_must_match_and_be_present() {
    let v = vector(EVERVAULT_PROD);
    let doc = load(v.file);
    let real = verify(&doc, &pinned_policy(v), at(v)).unwrap();
    let nonce = real.nonce().unwrap().to_vec();
    verify(&doc, &pinned_policy(v).nonce(nonce.clone()), at(v)).unwrap();
    let mut wrong = nonce;
    wrong[0] ^= 1;
    assert_eq!(
        verify(&doc, &pinned_policy(v).nonce(wrong), at(v)).unwrap_err(),
        Error::NonceMismatch
    );
    let m = vector(MARLIN);
    assert_eq!(
        verify(&load(m.file), &pinned_policy(m).nonce(vec![1; 32]), at(m)).unwrap_err(),
        Error::NonceMissing
    );
}

#[test]
fn rule_stale_and_future_documents_are_refused() {
    let v = vector(MARLIN);
    let doc = load(v.file);
    let five_minutes = Duration::from_secs(300);
    let policy = pinned_policy(v).max_age(five_minutes);
    verify(
        &doc,
        &policy,
        UnixTime::from_millis(v.timestamp_ms + 299_000),
    )
    .unwrap();
    assert_eq!(
        verify(
            &doc,
            &policy,
            UnixTime::from_millis(v.timestamp_ms + 600_000)
        )
        .unwrap_err(),
        Error::Stale {
            age_ms: 600_000,
            max_ms: 300_000
        }
    );
    // Two minutes before its own timestamp (the leaf is already valid then): from the future.
    assert_eq!(
        verify(
            &doc,
            &policy,
            UnixTime::from_millis(v.timestamp_ms - 120_000)
        )
        .unwrap_err(),
        Error::FromTheFuture { ahead_ms: 120_000 }
    );
}

#[test]
fn rule_bound_public_key_and_user_data() {
    let v = vector(MARLIN);
    let doc = load(v.file);
    let got = verify(&doc, &pinned_policy(v), at(v)).unwrap();
    let key = got.public_key().unwrap().to_vec();
    let data = got.user_data().unwrap().to_vec();
    verify(
        &doc,
        &pinned_policy(v)
            .public_key(key.clone())
            .user_data(data.clone()),
        at(v),
    )
    .unwrap();
    assert_eq!(
        verify(&doc, &pinned_policy(v).public_key(vec![1; 32]), at(v)).unwrap_err(),
        Error::PublicKeyMismatch
    );
    assert_eq!(
        verify(&doc, &pinned_policy(v).user_data(vec![1; 4]), at(v)).unwrap_err(),
        Error::UserDataMismatch
    );
    let p = vector(EVERVAULT_PROD);
    assert_eq!(
        verify(&load(p.file), &pinned_policy(p).public_key(key), at(p)).unwrap_err(),
        Error::PublicKeyMissing
    );
    assert_eq!(
        verify(&load(p.file), &pinned_policy(p).user_data(data), at(p)).unwrap_err(),
        Error::UserDataMissing
    );
}

#[test]
fn rule_empty_pcr_policy_is_refused() {
    assert_eq!(
        Policy::new(ExpectedPcrs::new()).unwrap_err(),
        Error::EmptyPcrPolicy
    );
}

// ---- Mutation tests --------------------------------------------------------------------------------------------

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

/// The byte ranges of the signature and of each certificate inside a document, with the position each names.
fn regions(
    doc: &[u8],
) -> (
    std::ops::Range<usize>,
    Vec<(CertPosition, std::ops::Range<usize>)>,
) {
    let parts = split(doc);
    let sig_start = doc.len() - parts.signature.len();
    let mut d = Decoder::new(&parts.payload);
    let len = d.map().unwrap();
    let mut certs = Vec::new();
    d.for_each(len, 64, |d, _| {
        match d.text()? {
            "certificate" => {
                let c = d.bytes()?;
                certs.push((CertPosition::Leaf, c.to_vec()));
            }
            "cabundle" => {
                let l = d.array()?;
                d.for_each(l, 16, |d, i| {
                    let c = d.bytes()?;
                    certs.push((CertPosition::Bundle(i as usize), c.to_vec()));
                    Ok(())
                })?;
            }
            _ => d.skip()?,
        }
        Ok(())
    })
    .unwrap();
    let certs = certs
        .into_iter()
        .map(|(pos, c)| {
            let start = find(doc, &c);
            (pos, start..start + c.len())
        })
        .collect();
    (sig_start..doc.len(), certs)
}

fn is_certificate_error(e: &Error, want: CertPosition) -> bool {
    match e {
        Error::WrongRoot => want == CertPosition::Bundle(0),
        Error::CertificateParse { position, .. }
        | Error::CertificateNotValidAt { position, .. }
        | Error::IssuerMismatch { position }
        | Error::UnsupportedAlgorithm { position, .. }
        | Error::CertificateSignature { position }
        | Error::Constraint { position, .. } => {
            // A change to an issuer's key shows up as a bad signature on the certificate it signed.
            *position == want || child_of(want) == Some(*position)
        }
        _ => false,
    }
}

fn child_of(p: CertPosition) -> Option<CertPosition> {
    match p {
        CertPosition::Bundle(i) if i < 3 => Some(CertPosition::Bundle(i + 1)),
        CertPosition::Bundle(3) => Some(CertPosition::Leaf),
        _ => None,
    }
}

#[test]
fn every_single_byte_change_fails_with_the_matching_error() {
    // Two documents: a definite-length payload map with a high-S... and the indefinite-length one.
    for file in [MARLIN, "base-nitro-validator-2026-01-03.cbor"] {
        let v = vector(file);
        let doc = load(file);
        verify(&doc, &any_pcrs(), at(v)).unwrap();
        let (sig, certs) = regions(&doc);
        let mut mutated = doc.clone();
        for i in 0..doc.len() {
            mutated[i] ^= 0x01;
            let result = verify(&mutated, &any_pcrs(), at(v));
            mutated[i] ^= 0x01;
            let err = match result {
                Ok(_) => panic!("{file}: flipping byte {i} still verifies"),
                Err(e) => e,
            };
            if sig.contains(&i) {
                assert_eq!(err, Error::Signature, "{file}: signature byte {i}");
            } else if let Some((pos, _)) = certs.iter().find(|(_, r)| r.contains(&i)) {
                assert!(
                    is_certificate_error(&err, *pos),
                    "{file}: byte {i} in {pos:?} gave {err:?}"
                );
            }
        }
    }
}
