//! The Secure Pod enclave.
//!
//! This crate holds what runs inside the enclave: the [`nsm`] seam (the real Nitro Secure Module or a mock that
//! signs real attestation documents) and the [`clock`] the rest of the code reads time from.

#![forbid(unsafe_code)]

pub mod clock;
pub mod nsm;
