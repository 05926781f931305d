//! Rules checked on documents that carry a *valid* signature (made with the mock NSM's leaf key) but break one
//! rule each: the verifier must refuse them for the rule itself, not because a signature happened to fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use attestation_verifier::{CertPosition, Error, ExpectedPcrs, Policy, UnixTime, Verifier};
use pod_cbor::Encoder;
use pod_enclave::clock::ManualClock;
use pod_enclave::nsm::{AttestationRequest, MockNsm, MockPcrConfig, Nsm};
use std::sync::Arc;

const T0: u64 = 1_790_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    nsm: MockNsm,
    verifier: Verifier,
    policy: Policy,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let nsm = MockNsm::open(
        dir.path(),
        b"image",
        MockPcrConfig::default(),
        Arc::new(ManualClock::new(T0)),
    )
    .unwrap();
    let verifier = Verifier::with_root_pem(nsm.root_pem()).unwrap();
    let policy = Policy::new(ExpectedPcrs::from_json(&nsm.pcrs_json()).unwrap()).unwrap();
    Fixture {
        _dir: dir,
        nsm,
        verifier,
        policy,
    }
}

impl Fixture {
    fn verify(&self, doc: &[u8]) -> Result<(), Error> {
        self.verifier
            .verify(doc, &self.policy, UnixTime::from_millis(T0))
            .map(|_| ())
    }

    /// A payload with AWS's fields, where `edit` may change the entry list (raw CBOR values).
    fn payload(&self, edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
        let (leaf, cabundle) = self.nsm.certificate_chain().unwrap();
        let item = |f: &dyn Fn(&mut Encoder)| {
            let mut e = Encoder::new();
            f(&mut e);
            e.into_bytes()
        };
        let pcrs = ExpectedPcrs::from_json(&self.nsm.pcrs_json()).unwrap();
        let mut entries: Vec<(String, Vec<u8>)> = vec![
            (
                "module_id".into(),
                item(&|e| {
                    e.text("i-test");
                }),
            ),
            (
                "digest".into(),
                item(&|e| {
                    e.text("SHA384");
                }),
            ),
            (
                "timestamp".into(),
                item(&|e| {
                    e.u64(T0);
                }),
            ),
            (
                "pcrs".into(),
                item(&|e| {
                    e.map(pcrs.len() as u64);
                    for (i, v) in pcrs.iter() {
                        e.u64(u64::from(i)).bytes(v);
                    }
                }),
            ),
            (
                "certificate".into(),
                item(&|e| {
                    e.bytes(&leaf);
                }),
            ),
            (
                "cabundle".into(),
                item(&|e| {
                    e.array(cabundle.len() as u64);
                    for c in &cabundle {
                        e.bytes(c);
                    }
                }),
            ),
            ("public_key".into(), vec![0xf6]),
            ("user_data".into(), vec![0xf6]),
            ("nonce".into(), vec![0xf6]),
        ];
        edit(&mut entries);
        let mut e = Encoder::new();
        e.map(entries.len() as u64);
        for (k, v) in &entries {
            e.text(k).raw(v);
        }
        e.into_bytes()
    }

    fn signed(&self, edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
        self.nsm.sign_payload(&self.payload(edit)).unwrap()
    }
}

fn set(entries: &mut [(String, Vec<u8>)], key: &str, value: Vec<u8>) {
    entries.iter_mut().find(|(k, _)| k == key).unwrap().1 = value;
}

#[test]
fn the_hand_built_payload_verifies_as_is() {
    let f = fixture();
    f.verify(&f.signed(|_| {})).unwrap();
    // So does the NSM's own document.
    f.verify(&f.nsm.attest(&AttestationRequest::default()).unwrap())
        .unwrap();
}

#[test]
fn signed_duplicate_key_is_refused() {
    let f = fixture();
    let doc = f.signed(|e| e.push(("nonce".into(), vec![0x41, 0x01])));
    assert_eq!(f.verify(&doc), Err(Error::DuplicateField("nonce")));
}

#[test]
fn signed_null_in_a_required_field_is_refused() {
    let f = fixture();
    for field in [
        "module_id",
        "digest",
        "timestamp",
        "pcrs",
        "certificate",
        "cabundle",
    ] {
        let doc = f.signed(|e| set(e, field, vec![0xf6]));
        assert_eq!(f.verify(&doc), Err(Error::MissingField(field)), "{field}");
        let doc = f.signed(|e| e.retain(|(k, _)| k != field));
        assert_eq!(
            f.verify(&doc),
            Err(Error::MissingField(field)),
            "{field} absent"
        );
    }
}

#[test]
fn signed_unknown_field_and_trailing_payload_bytes_are_refused() {
    let f = fixture();
    let doc = f.signed(|e| e.push(("extension".into(), vec![0x01])));
    assert_eq!(f.verify(&doc), Err(Error::UnknownField));
    let mut payload = f.payload(|_| {});
    payload.push(0x00);
    let doc = f.nsm.sign_payload(&payload).unwrap();
    assert!(matches!(
        f.verify(&doc),
        Err(Error::Cbor(pod_cbor::Error::TrailingBytes { .. }))
    ));
}

#[test]
fn signed_bad_pcrs_are_refused() {
    let f = fixture();
    let doc = f.signed(|e| {
        set(
            e,
            "pcrs",
            vec![0xa1, 0x18, 0x20, 0x58, 0x30]
                .into_iter()
                .chain([0u8; 48])
                .collect(),
        )
    });
    assert_eq!(f.verify(&doc), Err(Error::PcrIndex { index: 32 }));
    let doc = f.signed(|e| set(e, "pcrs", vec![0xa1, 0x00, 0x41, 0x00]));
    assert!(matches!(
        f.verify(&doc),
        Err(Error::FieldSize { field: "pcrs", .. })
    ));
    let doc = f.signed(|e| set(e, "pcrs", vec![0xa0]));
    assert!(matches!(
        f.verify(&doc),
        Err(Error::FieldSize {
            field: "pcrs",
            len: 0,
            ..
        })
    ));
}

#[test]
fn signed_timestamp_outside_the_leaf_validity_is_refused() {
    let f = fixture();
    let doc = f.signed(|e| {
        let mut t = Encoder::new();
        t.u64(T0 + 4 * 3600 * 1000);
        set(e, "timestamp", t.into_bytes());
    });
    assert_eq!(f.verify(&doc), Err(Error::TimestampOutsideLeafValidity));
}

#[test]
fn signed_chain_without_its_intermediate_or_in_the_wrong_order_is_refused() {
    let f = fixture();
    let (_, cabundle) = f.nsm.certificate_chain().unwrap();
    let doc = f.signed(|e| {
        let mut c = Encoder::new();
        c.array(1).bytes(&cabundle[0]);
        set(e, "cabundle", c.into_bytes());
    });
    assert!(matches!(
        f.verify(&doc),
        Err(Error::IssuerMismatch {
            position: CertPosition::Leaf
        })
    ));
    let doc = f.signed(|e| {
        let mut c = Encoder::new();
        c.array(2).bytes(&cabundle[1]).bytes(&cabundle[0]);
        set(e, "cabundle", c.into_bytes());
    });
    assert_eq!(f.verify(&doc), Err(Error::WrongRoot));
    // The root used as the leaf: a CA certificate may not sign documents.
    let doc = f.signed(|e| {
        let mut c = Encoder::new();
        c.array(1).bytes(&cabundle[0]);
        set(e, "cabundle", c.into_bytes());
        let mut l = Encoder::new();
        l.bytes(&cabundle[1]);
        set(e, "certificate", l.into_bytes());
    });
    assert!(matches!(
        f.verify(&doc),
        Err(Error::Constraint {
            position: CertPosition::Leaf,
            ..
        })
    ));
}

#[test]
fn every_byte_of_every_certificate_matters_even_when_the_document_is_re_signed() {
    // The document is re-signed after each change, so only the chain checks can catch it.
    let f = fixture();
    let (leaf, cabundle) = f.nsm.certificate_chain().unwrap();
    let certs: Vec<(CertPosition, Vec<u8>)> = std::iter::once((CertPosition::Leaf, leaf))
        .chain(
            cabundle
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, c)| (CertPosition::Bundle(i), c)),
        )
        .collect();
    for (position, original) in &certs {
        for i in 0..original.len() {
            let mut mutated = original.clone();
            mutated[i] ^= 0x01;
            let doc = f.signed(|e| {
                let mut enc = Encoder::new();
                match position {
                    CertPosition::Leaf => {
                        enc.bytes(&mutated);
                        set(e, "certificate", enc.into_bytes());
                    }
                    CertPosition::Bundle(n) => {
                        enc.array(cabundle.len() as u64);
                        for (j, c) in cabundle.iter().enumerate() {
                            enc.bytes(if j == *n { &mutated } else { c });
                        }
                        set(e, "cabundle", enc.into_bytes());
                    }
                    CertPosition::PinnedRoot => unreachable!(),
                }
            });
            let err = f
                .verify(&doc)
                .expect_err("a changed certificate byte must fail");
            let ok = match (&err, position) {
                (Error::WrongRoot, CertPosition::Bundle(0)) => true,
                // A changed leaf key no longer matches the key that signed the document.
                (Error::Signature, CertPosition::Leaf) => true,
                (
                    Error::CertificateParse { position: p, .. }
                    | Error::CertificateNotValidAt { position: p, .. }
                    | Error::IssuerMismatch { position: p }
                    | Error::UnsupportedAlgorithm { position: p, .. }
                    | Error::CertificateSignature { position: p }
                    | Error::Constraint { position: p, .. },
                    _,
                ) => {
                    // A change to an issuer shows up on the issuer or on the certificate it signed.
                    p == position
                        || (*position == CertPosition::Bundle(1) && *p == CertPosition::Leaf)
                }
                _ => false,
            };
            assert!(ok, "{position:?} byte {i}: {err:?}");
        }
    }
}
