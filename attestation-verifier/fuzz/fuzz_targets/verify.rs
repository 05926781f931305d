//! Feeds arbitrary bytes to parsing and full verification: against the AWS root at the time of the seed
//! documents (so that well-formed mutants get as far as the chain and signature checks), under a permissive
//! policy, and under a strict one.
#![no_main]

use attestation_verifier::{ExpectedPcrs, Policy, UnixTime, Verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let verifier = Verifier::aws_nitro();
    // 2024-02-26T07:02:01Z, the timestamp of one seed document.
    let at = UnixTime::from_millis(1_708_930_921_439);
    let permissive = Policy::insecure_any_pcrs().insecure_allow_debug();
    if let Ok(v) = verifier.verify(data, &permissive, at) {
        // Whatever verified under the permissive policy must give the same answer twice.
        assert_eq!(verifier.verify(data, &permissive, at).ok(), Some(v));
    }
    let mut pcrs = ExpectedPcrs::new();
    if pcrs.insert(0, vec![0x17; 48]).is_ok() {
        if let Ok(strict) = Policy::new(pcrs) {
            let _ = verifier.verify(data, &strict.nonce(vec![1; 16]), at);
        }
    }
    // The PCR file parser takes untrusted files too.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ExpectedPcrs::from_json(text);
    }
});
