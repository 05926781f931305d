//! Arbitrary bytes as KMS `CiphertextForRecipient`: parsing must refuse or succeed, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = pod_protocol::cms::parse(data) {
        // Whatever parses must re-frame into something that parses to the same parts.
        let framed = pod_protocol::cms::frame(&env.recipient_key_id, &env.encrypted_key, &env.iv, &env.ciphertext);
        assert_eq!(pod_protocol::cms::parse(&framed).ok(), Some(env));
    }
});
