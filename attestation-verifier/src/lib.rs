//! Verification of AWS Nitro Enclaves attestation documents.
//!
//! A client must check an enclave's attestation document before it trusts anything the enclave says, and this
//! crate is that check. It is pure Rust with no I/O, no clock, no async runtime and no C code, so the same code
//! runs in the pod's client, in the KMS emulator and (compiled to WebAssembly) in a browser.
//!
//! ```no_run
//! use attestation_verifier::{ExpectedPcrs, Policy, UnixTime, Verifier};
//! # fn main() -> Result<(), attestation_verifier::Error> {
//! # let document: Vec<u8> = Vec::new();
//! # let pcr_file = "{}";
//! # let nonce = vec![0u8; 32];
//! # let now_ms = 0;
//! let policy = Policy::new(ExpectedPcrs::from_json(pcr_file)?)?
//!     .nonce(nonce)
//!     .max_age(std::time::Duration::from_secs(300));
//! let verified = Verifier::aws_nitro().verify(&document, &policy, UnixTime::from_millis(now_ms))?;
//! let pod_key = verified.public_key();
//! # let _ = pod_key; Ok(()) }
//! ```
//!
//! # What is checked, in order
//!
//! 1. **Shape.** The input is at most [`limits::MAX_DOCUMENT_LEN`] bytes of CBOR: an optional tag 18, then a
//!    COSE_Sign1 array `[protected, unprotected, payload, signature]` with nothing after it. The protected header
//!    must decode to exactly `{1: -35}` (ES384), the unprotected header must be empty, the signature 96 bytes.
//! 2. **Payload schema.** A map (definite or indefinite length) with AWS's fields, each at most once, none
//!    unknown; `null` stands for an absent optional field (real hardware writes `null`, whatever AWS's text says)
//!    and makes a required field missing. Sizes are bounded as [`limits`] explains.
//! 3. **Chain.** `cabundle[0]` must equal the pinned root byte for byte (the document's own copy is never trusted
//!    on its own account); then leaf → `cabundle[N]` → … → `cabundle[1]` → root, each link ECDSA P-384 with
//!    SHA-384, issuer name equal to the parent's subject, every certificate (root included) valid at the
//!    caller's time, CA certificates with basicConstraints cA, keyUsage keyCertSign and pathLenConstraint
//!    respected, the leaf not a CA, no unknown critical extension. The document's own timestamp must also lie
//!    inside the leaf's validity.
//! 4. **Signature.** The COSE signature over the Sig_structure built from the *original* protected and payload
//!    bytes (never a re-encoding), as raw r‖s. High-S signatures are accepted: real documents have them.
//! 5. **Policy.** Debug mode (PCR0..2 zero) refused unless allowed; expected PCRs compared (an empty expectation
//!    is refused unless the caller uses [`Policy::insecure_any_pcrs`]); nonce; freshness; `public_key`;
//!    `user_data`.
//!
//! Only when all of that holds does the caller get a [`VerifiedAttestation`]; a failure gives an [`Error`] and
//! nothing else, so that no code path can use a document that did not verify.
//!
//! # Time
//!
//! Leaf certificates live three hours, so "valid" depends on *when*. The caller passes the time as a
//! [`UnixTime`]; this crate never reads a clock, which is what lets tests verify real documents at their own
//! timestamps and lets a browser use its own clock.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod chain;
mod document;
mod error;
pub mod limits;
mod policy;

pub use error::{CertPosition, Error};
pub use policy::{ExpectedPcrs, Policy};

use p384::ecdsa::Signature;
use p384::ecdsa::signature::Verifier as _;
use sha2::{Digest, Sha256};

/// The AWS Nitro Enclaves root certificate (G1), DER. Its SHA-256 fingerprint is
/// [`AWS_NITRO_ROOT_G1_SHA256`]; AWS publishes it at
/// <https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip>.
pub const AWS_NITRO_ROOT_G1_DER: &[u8] = include_bytes!("roots/aws-nitro-root-g1.der");

/// SHA-256 of [`AWS_NITRO_ROOT_G1_DER`], as AWS documents it.
pub const AWS_NITRO_ROOT_G1_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// A point in time, in milliseconds since the Unix epoch. The verifier never reads a clock: callers pass one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixTime(u64);

impl UnixTime {
    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

/// Checks attestation documents against one pinned root certificate.
#[derive(Debug, Clone)]
pub struct Verifier {
    root_der: Vec<u8>,
    root_sha256: [u8; 32],
}

impl Verifier {
    /// A verifier pinned to the AWS Nitro Enclaves root G1.
    pub fn aws_nitro() -> Self {
        Self {
            root_der: AWS_NITRO_ROOT_G1_DER.to_vec(),
            root_sha256: Sha256::digest(AWS_NITRO_ROOT_G1_DER).into(),
        }
    }

    /// A verifier pinned to another root, given as DER (for the pod's mock NSM in local mode, or a future AWS
    /// root). The root must be a P-384 CA certificate.
    pub fn with_root_der(root_der: &[u8]) -> Result<Self, Error> {
        if root_der.len() > limits::MAX_CERTIFICATE_LEN {
            return Err(Error::InvalidRoot("larger than a Nitro certificate can be"));
        }
        let parsed = chain::parse(root_der, CertPosition::PinnedRoot)
            .map_err(|_| Error::InvalidRoot("not an X.509 v3 DER certificate"))?;
        chain::p384_key(&parsed).map_err(|_| Error::InvalidRoot("its key is not a P-384 key"))?;
        Ok(Self {
            root_der: root_der.to_vec(),
            root_sha256: Sha256::digest(root_der).into(),
        })
    }

    /// A verifier pinned to a root given as PEM (`-----BEGIN CERTIFICATE-----`).
    pub fn with_root_pem(pem: &str) -> Result<Self, Error> {
        let (label, der_bytes) = der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|_| Error::InvalidRoot("not a PEM document"))?;
        if label != "CERTIFICATE" {
            return Err(Error::InvalidRoot("the PEM label is not CERTIFICATE"));
        }
        Self::with_root_der(&der_bytes)
    }

    /// SHA-256 of the pinned root's DER.
    pub fn root_sha256(&self) -> [u8; 32] {
        self.root_sha256
    }

    /// Verifies `document` (raw CBOR bytes) at time `now` under `policy`.
    pub fn verify(
        &self,
        document: &[u8],
        policy: &Policy,
        now: UnixTime,
    ) -> Result<VerifiedAttestation, Error> {
        let cose = document::parse_cose_sign1(document)?;
        let payload = document::parse_payload(cose.payload)?;

        let (leaf, leaf_key) =
            chain::verify_chain(payload.certificate, &payload.cabundle, &self.root_der, now)?;
        let (leaf_from, leaf_until) = chain::validity_ms(&leaf);
        if payload.timestamp_ms < leaf_from || payload.timestamp_ms > leaf_until {
            return Err(Error::TimestampOutsideLeafValidity);
        }

        let signature = Signature::from_slice(cose.signature).map_err(|_| Error::Signature)?;
        leaf_key
            .verify(&document::sig_structure(&cose), &signature)
            .map_err(|_| Error::Signature)?;

        policy.check(
            &payload.pcrs,
            payload.timestamp_ms,
            payload.nonce,
            payload.public_key,
            payload.user_data,
            now.as_millis(),
        )?;

        Ok(VerifiedAttestation {
            module_id: payload.module_id.to_owned(),
            timestamp: UnixTime::from_millis(payload.timestamp_ms),
            pcrs: payload.pcrs.iter().map(|(i, v)| (*i, v.to_vec())).collect(),
            certificate: payload.certificate.to_vec(),
            public_key: payload.public_key.map(<[u8]>::to_vec),
            user_data: payload.user_data.map(<[u8]>::to_vec),
            nonce: payload.nonce.map(<[u8]>::to_vec),
            root_sha256: self.root_sha256,
            debug: policy::is_debug(&payload.pcrs),
        })
    }
}

/// An attestation document that has passed every check of [`Verifier::verify`].
///
/// It can only be obtained from a successful verification, so holding one is the proof that the checks ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAttestation {
    module_id: String,
    timestamp: UnixTime,
    pcrs: Vec<(u8, Vec<u8>)>,
    certificate: Vec<u8>,
    public_key: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    root_sha256: [u8; 32],
    debug: bool,
}

impl VerifiedAttestation {
    /// The enclave's module id (instance and enclave ids on AWS).
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// When the NSM produced the document.
    pub fn timestamp(&self) -> UnixTime {
        self.timestamp
    }

    /// Every PCR in the document, in index order.
    pub fn pcrs(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.pcrs.iter().map(|(i, v)| (*i, v.as_slice()))
    }

    /// PCR `index`, if the document has it.
    pub fn pcr(&self, index: u8) -> Option<&[u8]> {
        self.pcrs
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, v)| v.as_slice())
    }

    /// The leaf (signing) certificate, DER.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The key the enclave bound into the document, if any.
    pub fn public_key(&self) -> Option<&[u8]> {
        self.public_key.as_deref()
    }

    /// The user data the enclave bound into the document, if any.
    pub fn user_data(&self) -> Option<&[u8]> {
        self.user_data.as_deref()
    }

    /// The nonce the document carries, if any.
    pub fn nonce(&self) -> Option<&[u8]> {
        self.nonce.as_deref()
    }

    /// SHA-256 of the root the chain ended in.
    pub fn root_sha256(&self) -> [u8; 32] {
        self.root_sha256
    }

    /// True for a debug-mode enclave (only possible under [`Policy::insecure_allow_debug`]).
    pub fn is_debug(&self) -> bool {
        self.debug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_aws_root_has_the_published_fingerprint() {
        assert_eq!(
            hex::encode(Sha256::digest(AWS_NITRO_ROOT_G1_DER)),
            AWS_NITRO_ROOT_G1_SHA256
        );
        assert_eq!(
            hex::encode(Verifier::aws_nitro().root_sha256()),
            AWS_NITRO_ROOT_G1_SHA256
        );
        // The embedded root is accepted by the same checks as a root passed in.
        Verifier::with_root_der(AWS_NITRO_ROOT_G1_DER).unwrap();
    }
}
