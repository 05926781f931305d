//! The messages of the parent–enclave link, carried in [`crate::frame`]s (the frame's `kind` is the message
//! type, its `body` the fields as a CBOR array; chunk bodies are the raw chunk bytes).
//!
//! One request at a time per connection; the parent opens several connections for concurrency. A re-encryption
//! is a short conversation:
//!
//! ```text
//! parent                                   enclave
//! ReEncrypt{signed_request, header}  ──▶
//!                                    ◀──   AuditAppend{seq, entry}        (nothing released yet)
//! AuditAck{seq, hash}                ──▶   (after the entry is durable)
//!                                    ◀──   Released{header, receipt}  or  Refused{code, message}
//! Chunk / LastChunk (stored)         ──▶
//!                                    ◀──   Chunk / LastChunk (re-encrypted), one for one
//! ```

use crate::Error;
use pod_cbor::{Decoder, Encoder, Len};

/// Message type codes (the frame's `kind`).
pub mod kind {
    /// Parent → enclave: report health.
    pub const HEALTH: u64 = 1;
    /// Parent → enclave: produce an attestation document.
    pub const ATTESTATION: u64 = 2;
    /// Parent → enclave: load a room from its whole membership log.
    pub const SYNC_ROOM: u64 = 3;
    /// Parent → enclave: append one membership entry.
    pub const APPEND_MEMBERSHIP: u64 = 4;
    /// Parent → enclave: continue the audit chain from the last stored entry.
    pub const RESUME_AUDIT: u64 = 5;
    /// Parent → enclave: decide a re-encryption.
    pub const RE_ENCRYPT: u64 = 6;
    /// Parent → enclave: an audit entry is durable.
    pub const AUDIT_ACK: u64 = 7;
    /// Parent → enclave: run the key ceremony (KMS GenerateDataKeyPair with Recipient).
    pub const PROVISION: u64 = 10;
    /// Parent → enclave: unseal the stored pod key (KMS Decrypt with Recipient).
    pub const UNSEAL: u64 = 11;
    /// Parent → enclave: sign a checkpoint of the audit chain (answer: CHECKPOINT_SIGNED).
    pub const CHECKPOINT: u64 = 12;
    /// Parent → enclave: rotation, run the key ceremony for the successor pod key under another KMS key (body as
    /// PROVISION; answer PROVISIONED).
    pub const PROVISION_NEXT: u64 = 13;
    /// Parent → enclave: rotation, load an existing successor pod key through KMS (body as UNSEAL; answer OK).
    pub const UNSEAL_NEXT: u64 = 14;
    /// Parent → enclave: move a stored document to the successor key, `[mode, prefix and header]`; then the same
    /// conversation as RE_ENCRYPT (the released body is `[new header, signed rotation item]`; chunks follow only
    /// in re-encrypt mode).
    pub const ROTATE: u64 = 15;
    /// Parent → enclave: sign a rotation certificate, `[mode, count]`, then CHUNK frames each holding a CBOR array
    /// of signed items (sorted), and a LAST_CHUNK (answer ROTATION_CERTIFICATE).
    pub const CERTIFY_ROTATION: u64 = 16;
    /// Either way: a chunk that is not the last.
    pub const CHUNK: u64 = 8;
    /// Either way: the last chunk.
    pub const LAST_CHUNK: u64 = 9;
    /// Enclave → parent: health.
    pub const HEALTH_REPORT: u64 = 101;
    /// Enclave → parent: an attestation document.
    pub const DOCUMENT: u64 = 102;
    /// Enclave → parent: a room's membership head.
    pub const ROOM_HEAD: u64 = 103;
    /// Enclave → parent: done, nothing to report.
    pub const OK: u64 = 104;
    /// Enclave → parent: store this audit entry durably, then acknowledge.
    pub const AUDIT_APPEND: u64 = 105;
    /// Enclave → parent: the re-encrypted header and the receipt; chunks may follow.
    pub const RELEASED: u64 = 106;
    /// Enclave → parent: the request is refused (and audited).
    pub const REFUSED: u64 = 107;
    /// Enclave → parent: the ceremony's results: `[sealed pod key, pod key SPKI, attestation document]`.
    pub const PROVISIONED: u64 = 108;
    /// Enclave → parent: a signed checkpoint.
    pub const CHECKPOINT_SIGNED: u64 = 109;
    /// Enclave → parent: a signed rotation certificate.
    pub const ROTATION_CERTIFICATE: u64 = 110;
    /// Enclave → parent, after the last chunk of a re-encrypt-mode rotation: the body seal (SPEC §9).
    pub const ROTATION_BODY_SEAL: u64 = 111;
    /// Enclave → parent: the operation failed.
    pub const ERROR: u64 = 199;
}

/// Largest number of signed rotation items in one CHUNK frame of a CERTIFY_ROTATION conversation.
pub const MAX_ITEMS_PER_FRAME: u64 = 512;

/// Largest number of entries in a room sync.
pub const MAX_SYNC_ENTRIES: u64 = 20_000;

fn malformed() -> Error {
    Error::MalformedFrame("message body does not match its type")
}

/// Writes `[a, b]` of two unsigned integers.
pub fn encode_u64_pair(a: u64, b: u64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.array(2).u64(a).u64(b);
    e.into_bytes()
}

/// Reads `[a, b]` of two unsigned integers.
pub fn decode_u64_pair(body: &[u8]) -> Result<(u64, u64), Error> {
    let mut d = Decoder::new(body);
    if d.array()? != Len::Definite(2) {
        return Err(malformed());
    }
    let a = d.u64()?;
    let b = d.u64()?;
    d.finish()?;
    Ok((a, b))
}

/// Writes a CBOR array of byte strings.
pub fn encode_bytes_list(items: &[&[u8]]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.array(items.len() as u64);
    for i in items {
        e.bytes(i);
    }
    e.into_bytes()
}

/// Reads a CBOR array of exactly `n` byte strings.
pub fn decode_bytes_n(body: &[u8], n: u64) -> Result<Vec<&[u8]>, Error> {
    let mut d = Decoder::new(body);
    if d.array().map_err(|_| malformed())? != Len::Definite(n) {
        return Err(malformed());
    }
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(d.bytes().map_err(|_| malformed())?);
    }
    d.finish().map_err(|_| malformed())?;
    Ok(out)
}

/// Reads a CBOR array of at most `max` byte strings.
pub fn decode_bytes_list(body: &[u8], max: u64) -> Result<Vec<&[u8]>, Error> {
    let mut d = Decoder::new(body);
    let len = d.array().map_err(|_| malformed())?;
    let mut out = Vec::new();
    d.for_each(len, max, |d, _| {
        out.push(d.bytes()?);
        Ok(())
    })
    .map_err(|_| malformed())?;
    d.finish().map_err(|_| malformed())?;
    Ok(out)
}

/// `[seq, bytes]`: an audit append (entry) or acknowledgement (hash).
pub fn encode_seq_bytes(seq: u64, bytes: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.array(2).u64(seq).bytes(bytes);
    e.into_bytes()
}

/// Reads `[seq, bytes]`.
pub fn decode_seq_bytes(body: &[u8]) -> Result<(u64, &[u8]), Error> {
    let mut d = Decoder::new(body);
    if d.array().map_err(|_| malformed())? != Len::Definite(2) {
        return Err(malformed());
    }
    let seq = d.u64().map_err(|_| malformed())?;
    let bytes = d.bytes().map_err(|_| malformed())?;
    d.finish().map_err(|_| malformed())?;
    Ok((seq, bytes))
}

/// `[code, message]`: a refusal or an error.
pub fn encode_code_message(code: &str, message: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.array(2).text(code).text(message);
    e.into_bytes()
}

/// Reads `[code, message]`.
pub fn decode_code_message(body: &[u8]) -> Result<(&str, &str), Error> {
    let mut d = Decoder::new(body);
    if d.array().map_err(|_| malformed())? != Len::Definite(2) {
        return Err(malformed());
    }
    let code = d.text().map_err(|_| malformed())?;
    let message = d.text().map_err(|_| malformed())?;
    d.finish().map_err(|_| malformed())?;
    Ok((code, message))
}

/// Reads an optional byte string: `null` or a bstr.
pub fn decode_optional_bytes(body: &[u8]) -> Result<Option<&[u8]>, Error> {
    let mut d = Decoder::new(body);
    let v = if d.null().map_err(|_| malformed())? {
        None
    } else {
        Some(d.bytes().map_err(|_| malformed())?)
    };
    d.finish().map_err(|_| malformed())?;
    Ok(v)
}

/// Writes an optional byte string.
pub fn encode_optional_bytes(v: Option<&[u8]>) -> Vec<u8> {
    let mut e = Encoder::new();
    match v {
        Some(b) => e.bytes(b),
        None => e.null(),
    };
    e.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_round_trip_and_refuse_the_wrong_shape() {
        let b = encode_bytes_list(&[b"a", b"bc"]);
        assert_eq!(decode_bytes_list(&b, 4).unwrap(), vec![&b"a"[..], b"bc"]);
        assert_eq!(decode_bytes_n(&b, 2).unwrap().len(), 2);
        assert!(decode_bytes_n(&b, 3).is_err());
        assert!(decode_bytes_list(&b, 1).is_err());
        let s = encode_seq_bytes(7, b"h");
        assert_eq!(decode_seq_bytes(&s).unwrap(), (7, &b"h"[..]));
        let c = encode_code_message("not_member", "no");
        assert_eq!(decode_code_message(&c).unwrap(), ("not_member", "no"));
        assert_eq!(
            decode_optional_bytes(&encode_optional_bytes(None)).unwrap(),
            None
        );
        assert_eq!(
            decode_optional_bytes(&encode_optional_bytes(Some(b"x"))).unwrap(),
            Some(&b"x"[..])
        );
        assert!(decode_seq_bytes(&c).is_err());
    }
}
