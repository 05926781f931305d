//! The real NSM, through `/dev/nsm` and AWS's `aws-nitro-enclaves-nsm-api` driver.

use super::{AttestationRequest, Nsm, NsmError, PcrState};
use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Request, Response};
use aws_nitro_enclaves_nsm_api::driver;
use serde_bytes::ByteBuf;

/// The NSM device of a Nitro enclave.
#[derive(Debug)]
pub struct NitroNsm {
    fd: i32,
}

impl NitroNsm {
    /// Opens `/dev/nsm`. Fails outside a Nitro enclave.
    pub fn open() -> Result<Self, NsmError> {
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(NsmError::DeviceUnavailable);
        }
        Ok(Self { fd })
    }

    fn call(&self, request: Request) -> Result<Response, NsmError> {
        match driver::nsm_process_request(self.fd, request) {
            Response::Error(code) => Err(map_error(code)),
            other => Ok(other),
        }
    }
}

impl Drop for NitroNsm {
    fn drop(&mut self) {
        driver::nsm_exit(self.fd);
    }
}

fn map_error(code: ErrorCode) -> NsmError {
    match code {
        ErrorCode::InvalidArgument => NsmError::InvalidArgument("rejected by the NSM".into()),
        ErrorCode::InvalidIndex => NsmError::InvalidIndex(u16::MAX),
        ErrorCode::ReadOnlyIndex => NsmError::ReadOnlyIndex(u16::MAX),
        other => NsmError::Device(format!("{other:?}")),
    }
}

impl Nsm for NitroNsm {
    fn attest(&self, request: &AttestationRequest) -> Result<Vec<u8>, NsmError> {
        request.check()?;
        let response = self.call(Request::Attestation {
            user_data: request.user_data.clone().map(ByteBuf::from),
            nonce: request.nonce.clone().map(ByteBuf::from),
            public_key: request.public_key.clone().map(ByteBuf::from),
        })?;
        match response {
            Response::Attestation { document } => Ok(document),
            _ => Err(NsmError::UnexpectedResponse),
        }
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), NsmError> {
        // GetRandom returns a device-chosen number of bytes (up to 256); call until the buffer is full.
        let mut filled = 0;
        while filled < buf.len() {
            let Response::GetRandom { random } = self.call(Request::GetRandom)? else {
                return Err(NsmError::UnexpectedResponse);
            };
            if random.is_empty() {
                return Err(NsmError::Device("GetRandom returned no bytes".into()));
            }
            let rest = buf.get_mut(filled..).unwrap_or_default();
            let n = rest.len().min(random.len());
            if let (Some(dst), Some(src)) = (rest.get_mut(..n), random.get(..n)) {
                dst.copy_from_slice(src);
            }
            filled = filled.saturating_add(n);
        }
        Ok(())
    }

    fn describe_pcr(&self, index: u16) -> Result<PcrState, NsmError> {
        match self.call(Request::DescribePCR { index }) {
            Ok(Response::DescribePCR { lock, data }) => Ok(PcrState {
                locked: lock,
                value: data,
            }),
            Ok(_) => Err(NsmError::UnexpectedResponse),
            Err(NsmError::InvalidIndex(_)) => Err(NsmError::InvalidIndex(index)),
            Err(e) => Err(e),
        }
    }

    fn extend_pcr(&self, index: u16, data: &[u8]) -> Result<Vec<u8>, NsmError> {
        match self.call(Request::ExtendPCR {
            index,
            data: data.to_vec(),
        }) {
            Ok(Response::ExtendPCR { data }) => Ok(data),
            Ok(_) => Err(NsmError::UnexpectedResponse),
            Err(NsmError::InvalidIndex(_)) => Err(NsmError::InvalidIndex(index)),
            Err(NsmError::ReadOnlyIndex(_)) => Err(NsmError::ReadOnlyIndex(index)),
            Err(e) => Err(e),
        }
    }

    fn lock_pcr(&self, index: u16) -> Result<(), NsmError> {
        match self.call(Request::LockPCR { index }) {
            Ok(Response::LockPCR) => Ok(()),
            Ok(_) => Err(NsmError::UnexpectedResponse),
            Err(NsmError::InvalidIndex(_)) => Err(NsmError::InvalidIndex(index)),
            Err(e) => Err(e),
        }
    }

    fn kind(&self) -> &'static str {
        "nitro"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_outside_an_enclave_fails_cleanly() {
        // This machine has no /dev/nsm; the real driver must report that, not panic.
        if std::path::Path::new("/dev/nsm").exists() {
            return;
        }
        assert!(matches!(NitroNsm::open(), Err(NsmError::DeviceUnavailable)));
    }

    #[test]
    fn error_codes_map_to_errors() {
        assert!(matches!(
            map_error(ErrorCode::InvalidArgument),
            NsmError::InvalidArgument(_)
        ));
        assert!(matches!(
            map_error(ErrorCode::ReadOnlyIndex),
            NsmError::ReadOnlyIndex(_)
        ));
        assert!(matches!(
            map_error(ErrorCode::InternalError),
            NsmError::Device(_)
        ));
    }
}
