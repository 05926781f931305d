//! The one error type of this crate.

use core::fmt;

/// Where in the certificate chain a certificate sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertPosition {
    /// The document's `certificate` field (the signing certificate).
    Leaf,
    /// `cabundle[i]`; index 0 is the root.
    Bundle(usize),
    /// The pinned root given to the verifier.
    PinnedRoot,
}

impl fmt::Display for CertPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Leaf => f.write_str("the leaf certificate"),
            Self::Bundle(0) => f.write_str("cabundle[0] (the root)"),
            Self::Bundle(i) => write!(f, "cabundle[{i}]"),
            Self::PinnedRoot => f.write_str("the pinned root certificate"),
        }
    }
}

/// Why an attestation document was refused.
///
/// Variants are grouped by the stage that failed: shape (CBOR/COSE), payload schema, certificate chain, signature,
/// and policy. Nothing in an error repeats attacker-controlled bytes beyond small numbers, so errors are safe to
/// log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The document is larger than [`crate::limits::MAX_DOCUMENT_LEN`] bytes.
    #[error("document is {len} bytes, more than the {max}-byte limit")]
    DocumentTooLarge {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not well-formed CBOR, or not of the CBOR type the schema calls for.
    #[error("malformed CBOR: {0}")]
    Cbor(#[from] pod_cbor::Error),
    /// The document is tagged with something other than COSE_Sign1's tag 18.
    #[error("unexpected CBOR tag {tag} (only COSE_Sign1 tag 18 is accepted)")]
    UnexpectedTag {
        /// The tag found.
        tag: u64,
    },
    /// The outer structure is not a four-element COSE_Sign1 array.
    #[error("not a COSE_Sign1 structure: {0}")]
    NotCoseSign1(&'static str),
    /// The protected header is not exactly `{1: -35}` (alg ES384).
    #[error("protected header must be exactly {{1: -35}} (ES384)")]
    ProtectedHeader,
    /// The unprotected header is not an empty map.
    #[error("unprotected header must be empty")]
    UnprotectedHeaderNotEmpty,
    /// The COSE signature is not 96 bytes (r‖s of P-384).
    #[error("COSE signature must be 96 bytes (P-384 r||s), got {len}")]
    SignatureLength {
        /// Length found.
        len: usize,
    },
    /// The payload map names the same field twice.
    #[error("payload field `{0}` appears more than once")]
    DuplicateField(&'static str),
    /// The payload map has a key outside AWS's schema.
    #[error("payload has a field outside the attestation document schema")]
    UnknownField,
    /// A required payload field is absent or `null`.
    #[error("required payload field `{0}` is missing or null")]
    MissingField(&'static str),
    /// A payload field has a size outside its limit.
    #[error("payload field `{field}` has size {len}, outside {min}..={max}")]
    FieldSize {
        /// The field.
        field: &'static str,
        /// Its size (bytes, or entries for `pcrs` and `cabundle`).
        len: usize,
        /// Smallest size accepted.
        min: usize,
        /// Largest size accepted.
        max: usize,
    },
    /// `digest` is not `"SHA384"`.
    #[error("payload digest must be \"SHA384\"")]
    UnsupportedDigest,
    /// A PCR index is above 31 or appears twice.
    #[error("PCR index {index} is out of range or repeated")]
    PcrIndex {
        /// The index.
        index: u64,
    },
    /// A certificate could not be parsed as X.509 v3 DER.
    #[error("{position} is not a valid X.509 v3 certificate: {reason}")]
    CertificateParse {
        /// Which certificate.
        position: CertPosition,
        /// What is wrong.
        reason: &'static str,
    },
    /// `cabundle[0]` is not byte for byte the pinned root.
    #[error("the document's root certificate is not the pinned root")]
    WrongRoot,
    /// A certificate is outside its validity period at the verification time.
    #[error(
        "{position} is not valid at {at_ms} ms (valid {not_before_ms}..={not_after_ms} ms since the Unix epoch)"
    )]
    CertificateNotValidAt {
        /// Which certificate.
        position: CertPosition,
        /// The verification time.
        at_ms: u64,
        /// Start of validity.
        not_before_ms: u64,
        /// End of validity.
        not_after_ms: u64,
    },
    /// A certificate's issuer name is not its parent's subject name.
    #[error("{position} was not issued by the certificate above it (issuer/subject mismatch)")]
    IssuerMismatch {
        /// Which certificate.
        position: CertPosition,
    },
    /// A certificate uses a signature algorithm or key other than ECDSA P-384 with SHA-384.
    #[error("{position} uses an unsupported algorithm: {reason}")]
    UnsupportedAlgorithm {
        /// Which certificate.
        position: CertPosition,
        /// What is unsupported.
        reason: &'static str,
    },
    /// A certificate's signature does not verify under its issuer's key.
    #[error("the signature on {position} does not verify")]
    CertificateSignature {
        /// Which certificate.
        position: CertPosition,
    },
    /// basicConstraints, keyUsage, pathLen or a critical extension forbids this chain.
    #[error("{position} violates a certificate constraint: {reason}")]
    Constraint {
        /// Which certificate.
        position: CertPosition,
        /// Which constraint.
        reason: &'static str,
    },
    /// The document's `timestamp` lies outside its own signing certificate's validity.
    #[error("document timestamp lies outside the leaf certificate's validity")]
    TimestampOutsideLeafValidity,
    /// The COSE_Sign1 signature does not verify under the leaf certificate's key.
    #[error("the document's COSE signature does not verify")]
    Signature,
    /// The policy has no expected PCRs; use [`crate::Policy::insecure_any_pcrs`] to accept any image.
    #[error(
        "the policy expects no PCR values; refusing (use an insecure_ API to accept any enclave image)"
    )]
    EmptyPcrPolicy,
    /// An expected PCR is absent from the document.
    #[error("PCR{index} is expected but absent from the document")]
    PcrMissing {
        /// The index.
        index: u8,
    },
    /// A PCR differs from its expected value.
    #[error("PCR{index} does not match the expected value")]
    PcrMismatch {
        /// The index.
        index: u8,
    },
    /// PCR0, PCR1 and PCR2 are all zero: the enclave runs in debug mode, and its memory is readable by the parent.
    #[error(
        "the enclave runs in debug mode (PCR0, PCR1 and PCR2 are zero); its memory is open to the parent"
    )]
    DebugMode,
    /// The policy expects a nonce and the document has none.
    #[error("the policy expects a nonce but the document has none")]
    NonceMissing,
    /// The document's nonce differs from the expected one.
    #[error("the document's nonce differs from the expected nonce")]
    NonceMismatch,
    /// The document is older than the policy's maximum age.
    #[error("the document is {age_ms} ms old, more than the {max_ms} ms allowed")]
    Stale {
        /// Age at the verification time.
        age_ms: u64,
        /// The policy's maximum.
        max_ms: u64,
    },
    /// The document's timestamp is later than the verification time plus the allowed clock skew.
    #[error("the document's timestamp is {ahead_ms} ms in the future")]
    FromTheFuture {
        /// How far ahead.
        ahead_ms: u64,
    },
    /// The policy expects a `public_key` and the document has none.
    #[error("the policy expects a public_key but the document has none")]
    PublicKeyMissing,
    /// The document's `public_key` differs from the expected one.
    #[error("the document's public_key differs from the expected key")]
    PublicKeyMismatch,
    /// The policy expects `user_data` and the document has none.
    #[error("the policy expects user_data but the document has none")]
    UserDataMissing,
    /// The document's `user_data` differs from the expected value.
    #[error("the document's user_data differs from the expected value")]
    UserDataMismatch,
    /// A PCR file or PCR value given to the policy is malformed.
    #[error("invalid expected PCRs: {0}")]
    InvalidPcrPolicy(String),
    /// The root certificate given to the verifier is unusable.
    #[error("invalid pinned root: {0}")]
    InvalidRoot(&'static str),
}
