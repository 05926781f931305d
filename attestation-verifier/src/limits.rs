//! Size limits, checked before anything is copied.
//!
//! AWS documents two different bounds for the caller-supplied fields: the attestation document's CDDL schema gives
//! `user_data` and `nonce` `.size (0..1024)` and `public_key` `.size (1..1024)`, while the NSM API and its
//! driver take at most 512 bytes for each of them in an attestation *request*. A document can therefore never
//! carry more than 512 bytes in these fields when it comes from real hardware, but the schema allows 1024. This
//! verifier takes the schema's larger bound, so that no document AWS considers well-formed is refused, and keeps
//! every other bound tight. The real documents in the test vectors use at most 256 bytes (nonce) and certificates
//! of at most 797 bytes.

/// Largest whole document accepted, in bytes. Real documents are about 4.5 KiB; the worst case the schema allows
/// with [`MAX_CABUNDLE`] certificates of [`MAX_CERTIFICATE_LEN`] bytes plus every optional field at its maximum is
/// below this.
pub const MAX_DOCUMENT_LEN: usize = 32 * 1024;
/// Length of the ES384 COSE signature: r‖s, 48 bytes each.
pub const COSE_SIGNATURE_LEN: usize = 96;
/// Largest `module_id`, in bytes (real ones are 39).
pub const MAX_MODULE_ID_LEN: usize = 255;
/// Largest certificate (`certificate` and each `cabundle` entry), from the schema's `.size (1..1024)`.
pub const MAX_CERTIFICATE_LEN: usize = 1024;
/// Most certificates in `cabundle` (the root and up to seven intermediates; AWS sends four).
pub const MAX_CABUNDLE: usize = 8;
/// PCR indices run from 0 to 31.
pub const MAX_PCRS: usize = 32;
/// Largest `public_key`, from the schema.
pub const MAX_PUBLIC_KEY_LEN: usize = 1024;
/// Largest `user_data`, from the schema.
pub const MAX_USER_DATA_LEN: usize = 1024;
/// Largest `nonce`, from the schema.
pub const MAX_NONCE_LEN: usize = 1024;
/// How far in the future a document's timestamp may be, when the policy checks freshness.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;
