//! The Nitro Secure Module seam.
//!
//! The pod needs four things from the NSM: attestation documents, random bytes, and PCR reads and extensions. In
//! production they come from `/dev/nsm` ([`NitroNsm`]); in local mode and tests from [`MockNsm`], which keeps PCR
//! state and signs *real* COSE_Sign1 documents with a P-384 chain of its own, so that what it produces goes through
//! exactly the same verifier code as an AWS document and verifies only against the mock root.
//!
//! The choice is made at run time from an [`NsmConfig`], never with `#[cfg]`: the same binary runs in both worlds
//! and the code that is tested locally is the code that runs on Nitro.

mod mock;
mod nitro;

pub use mock::{MockNsm, MockPcrConfig, mock_pcrs_for_image};
pub use nitro::NitroNsm;

use std::path::PathBuf;
use std::sync::Arc;

/// The largest `user_data`, `nonce` or `public_key` the NSM accepts in an attestation request (AWS's driver limit).
pub const MAX_ATTESTATION_FIELD: usize = 512;
/// Number of PCRs an NSM has.
pub const PCR_COUNT: u16 = 32;
/// PCRs below this index are set at enclave launch and locked.
pub const FIRST_USER_PCR: u16 = 16;
/// Length of a SHA-384 PCR.
pub const PCR_LEN: usize = 48;

/// What an attestation document should bind, besides the PCRs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestationRequest {
    /// Data the verifier will see in `user_data`.
    pub user_data: Option<Vec<u8>>,
    /// The verifier's challenge, echoed in `nonce`.
    pub nonce: Option<Vec<u8>>,
    /// A public key (DER) the verifier can encrypt to, e.g. the RSA key KMS wraps secrets for.
    pub public_key: Option<Vec<u8>>,
}

impl AttestationRequest {
    /// Checks the size limits the real NSM enforces, so that local mode refuses what production would.
    pub fn check(&self) -> Result<(), NsmError> {
        for (name, field) in [
            ("user_data", &self.user_data),
            ("nonce", &self.nonce),
            ("public_key", &self.public_key),
        ] {
            if field
                .as_ref()
                .is_some_and(|f| f.len() > MAX_ATTESTATION_FIELD)
            {
                return Err(NsmError::InvalidArgument(format!(
                    "{name} is longer than {MAX_ATTESTATION_FIELD} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// A PCR's value and whether it can still be extended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrState {
    /// True once the PCR is locked.
    pub locked: bool,
    /// The current value.
    pub value: Vec<u8>,
}

/// Errors from either NSM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NsmError {
    /// `/dev/nsm` could not be opened: this is not a Nitro enclave.
    #[error("cannot open /dev/nsm: not running inside a Nitro enclave")]
    DeviceUnavailable,
    /// The NSM refused the request's arguments.
    #[error("invalid NSM request: {0}")]
    InvalidArgument(String),
    /// The PCR index is out of range.
    #[error("PCR index {0} is out of range")]
    InvalidIndex(u16),
    /// The PCR is locked and cannot be extended.
    #[error("PCR{0} is locked")]
    ReadOnlyIndex(u16),
    /// The NSM answered with an error code.
    #[error("the NSM returned an error: {0}")]
    Device(String),
    /// The NSM answered with a response of the wrong kind.
    #[error("the NSM answered with an unexpected response")]
    UnexpectedResponse,
    /// The mock NSM's state directory could not be read or written.
    #[error("mock NSM state in {path}: {message}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Creating a key or certificate, or signing, failed in the mock NSM.
    #[error("mock NSM crypto failure: {0}")]
    Crypto(String),
}

/// The Nitro Secure Module, real or mock.
pub trait Nsm: Send + Sync {
    /// A signed attestation document (COSE_Sign1, CBOR bytes) binding `request`.
    fn attest(&self, request: &AttestationRequest) -> Result<Vec<u8>, NsmError>;

    /// Fills `buf` with random bytes from the NSM's generator.
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), NsmError>;

    /// Reads PCR `index`.
    fn describe_pcr(&self, index: u16) -> Result<PcrState, NsmError>;

    /// Extends PCR `index` with `data` (new = SHA-384(old ‖ data)) and returns the new value.
    fn extend_pcr(&self, index: u16, data: &[u8]) -> Result<Vec<u8>, NsmError>;

    /// Locks PCR `index` against further extension.
    fn lock_pcr(&self, index: u16) -> Result<(), NsmError>;

    /// A short name for logs: `nitro` or `mock`.
    fn kind(&self) -> &'static str;
}

/// Which NSM to use; chosen at run time (a command-line flag or configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsmConfig {
    /// `/dev/nsm` inside a Nitro enclave.
    Nitro,
    /// The mock NSM, keeping its CA in `state_dir` and measuring `image` (normally the running binary) into
    /// PCR0..2.
    Mock {
        /// Where the mock CA lives.
        state_dir: PathBuf,
        /// The file measured as the enclave image.
        image: PathBuf,
        /// PCR3, PCR4 and PCR8 values, if not zero.
        pcrs: MockPcrConfig,
    },
}

/// Opens the NSM an [`NsmConfig`] names.
pub fn open(config: &NsmConfig) -> Result<Arc<dyn Nsm>, NsmError> {
    Ok(match config {
        NsmConfig::Nitro => Arc::new(NitroNsm::open()?),
        NsmConfig::Mock {
            state_dir,
            image,
            pcrs,
        } => {
            let image_bytes = std::fs::read(image).map_err(|e| NsmError::State {
                path: image.clone(),
                message: format!("cannot read the image to measure: {e}"),
            })?;
            Arc::new(MockNsm::open(
                state_dir,
                &image_bytes,
                pcrs.clone(),
                Arc::new(crate::clock::SystemClock),
            )?)
        }
    })
}

/// PCR extension as the NSM does it: SHA-384(old ‖ data).
pub fn extend(old: &[u8], data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut h = sha2::Sha384::new();
    h.update(old);
    h.update(data);
    h.finalize().to_vec()
}
