//! The parent instance's side of Secure Pod.
//!
//! Today: [`relay`], the KMS relay. The enclave has no network; it reaches KMS through the parent, which forwards
//! bytes (TLS from the enclave to KMS, so the parent sees only ciphertext) to an allowlisted endpoint, resolving DNS
//! afresh for every connection — the role AWS's `vsock-proxy` plays. The HTTPS API comes with issue 5.

#![forbid(unsafe_code)]

pub mod enclave;
pub mod http;
pub mod local;
pub mod parent;
pub mod relay;
pub mod store;
pub mod stream;
