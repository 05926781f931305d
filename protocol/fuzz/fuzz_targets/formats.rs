//! Arbitrary bytes to every other parser of the protocol: frames, link messages, document headers, key bundles,
//! signed requests, membership and audit entries, checkpoints and receipts, rotation items and certificate files,
//! and the HTTP API's JSON bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_protocol::{api, audit, envelope, frame, keys, link, membership, request, rotation};

fuzz_target!(|data: &[u8]| {
    let _ = api::ReEncryptBody::parse(data);
    let _ = api::EntryBody::parse(data);
    let _ = frame::split(data);
    let _ = frame::parse(data);
    let _ = link::decode_bytes_list(data, 64);
    let _ = link::decode_seq_bytes(data);
    let _ = link::decode_code_message(data);
    let _ = link::decode_u64_pair(data);
    let _ = rotation::verify_certificate_file(data, 64);
    let _ = envelope::read_header(data);
    let _ = keys::UserKeyBundle::parse(data);
    let _ = request::SignedRequest::parse(data);
    if let Ok(e) = membership::SignedEntry::parse(data) {
        let _ = membership::Room::genesis(&e);
    }
    if let Ok(k) = keys::SigningKey::generate() {
        let vk = k.verifying_key();
        let _ = audit::SignedEntry::parse_verified(data, &vk);
        let _ = audit::Checkpoint::parse_verified(data, &vk);
        let _ = audit::Receipt::parse_verified(data, &vk);
        let _ = rotation::SignedItem::parse_verified(data, &vk);
        let mut folder = rotation::ItemFolder::new(rotation::Mode::Rewrap, [0; 32]);
        let _ = folder.push(data, &vk);
    }
});
