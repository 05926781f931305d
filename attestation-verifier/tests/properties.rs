//! Arbitrary and mutated input never makes parsing or verification panic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use attestation_verifier::{Policy, UnixTime, Verifier};
use proptest::prelude::*;

const DOCS: [&str; 3] = [
    "marlin-nitroprover-2024-02-26.cbor",
    "base-nitro-validator-2026-01-03.cbor",
    "evervault-tlscert-san-2023-01-18.cbor",
];
const TIMES: [u64; 3] = [1708930921439, 1767472867402, 1674047239280];

fn load(i: usize) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/vectors/{}",
        env!("CARGO_MANIFEST_DIR"),
        DOCS[i]
    ))
    .unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(doc: &mut Vec<u8>, m: &Mutation) {
    if doc.is_empty() {
        return;
    }
    match *m {
        Mutation::Set(i, b) => {
            let n = doc.len();
            doc[i % n] = b;
        }
        Mutation::Insert(i, b) => {
            let n = doc.len();
            doc.insert(i % (n + 1), b);
        }
        Mutation::Remove(i) => {
            let n = doc.len();
            doc.remove(i % n);
        }
        Mutation::Truncate(i) => {
            let n = doc.len();
            doc.truncate(i % n);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let _ = Verifier::aws_nitro().verify(&bytes, &Policy::insecure_any_pcrs(), UnixTime::from_millis(TIMES[0]));
    }

    #[test]
    fn mutated_real_documents_never_panic(
        which in 0usize..3,
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let mut doc = load(which);
        for m in &mutations {
            apply(&mut doc, m);
        }
        let policy = Policy::insecure_any_pcrs().insecure_allow_debug();
        let result = Verifier::aws_nitro().verify(&doc, &policy, UnixTime::from_millis(TIMES[which]));
        // Should a mutation leave the document intact (or only add the optional COSE tag), it still verifies;
        // any real change must not.
        let original = load(which);
        let equivalent = doc == original || (doc.first() == Some(&0xd2) && doc[1..] == original[..]);
        prop_assert_eq!(result.is_ok(), equivalent);
    }
}
