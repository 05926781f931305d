//! The formats Secure Pod speaks, as pure functions over bytes: no I/O, no async, no clock.
//!
//! * [`hpke`]: RFC 9180 base-mode HPKE (DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM), used to wrap
//!   document keys to the pod key and per-request keys to users' P-256 keys.
//! * [`frame`]: the length-prefixed CBOR frames of the parent–enclave link, bounded before allocation.
//! * [`stream`]: chunked AES-256-GCM in the STREAM construction, so that documents of any size are sealed and
//!   opened with bounded memory, and truncation or reordering is detected.
//!
//! The written specification with test vectors is `docs/SPEC.md`; every vector there is run by the tests.
//! Errors on decryption are deliberately coarse ([`Error::Decrypt`]): which step failed is not an attacker's
//! business.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod cms;
pub mod envelope;
pub mod frame;
pub mod hpke;
pub mod keys;
pub mod link;
pub mod membership;
pub mod request;
pub mod rotation;
pub mod stream;

/// Errors of the protocol layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A public key is not a valid key of the expected type (e.g. a P-256 point off the curve).
    #[error("invalid public key")]
    InvalidPublicKey,
    /// A private key is not valid for its algorithm.
    #[error("invalid private key")]
    InvalidPrivateKey,
    /// Decryption or authentication failed. One variant for every cause, on purpose.
    #[error("decryption failed")]
    Decrypt,
    /// A stream ended before its last chunk, or went on after it.
    #[error("the encrypted stream is truncated or has data after its last chunk")]
    Truncated,
    /// A chunk has a length the format does not allow.
    #[error("invalid chunk length {len} (chunks are {max} bytes, the last one at most that)")]
    ChunkLength {
        /// The length found.
        len: usize,
        /// The chunk size.
        max: usize,
    },
    /// A stream has more chunks than its counter can number.
    #[error("the stream is too long")]
    StreamTooLong,
    /// A signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A structure does not follow the specification (docs/SPEC.md).
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    /// A membership entry is not allowed (wrong link, signer without authority, ...).
    #[error("membership entry refused: {0}")]
    Membership(&'static str),
    /// An audit log or receipt does not verify.
    #[error("audit entry {seq}: {reason}")]
    Audit {
        /// The sequence number where verification failed.
        seq: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A frame announces or has more bytes than [`frame::MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The announced or actual length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A frame is not `[version, request_id, kind, body]`.
    #[error("malformed frame: {0}")]
    MalformedFrame(&'static str),
    /// A frame has a version this code does not speak.
    #[error("unsupported frame version {0}")]
    UnsupportedVersion(u64),
    /// The crypto library failed in a way that does not depend on the input (e.g. no randomness).
    #[error("internal cryptographic failure")]
    Crypto,
}
