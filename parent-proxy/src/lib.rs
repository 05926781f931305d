//! The parent instance's side of Secure Pod.
//!
//! [`http`] serves the API over TLS; [`parent`] keeps the stores and talks to the enclave; [`local`] runs the
//! whole pod on one machine; [`config`] and [`imds`] serve production; [`relay`] is the KMS relay. The enclave has no network; it reaches KMS through the parent, which forwards
//! bytes (TLS from the enclave to KMS, so the parent sees only ciphertext) to an allowlisted endpoint, resolving DNS
//! afresh for every connection — the role AWS's `vsock-proxy` plays. The HTTPS API comes with issue 5.

#![forbid(unsafe_code)]

pub mod config;
pub mod enclave;
pub mod http;
pub mod imds;
pub mod local;
pub mod parent;
pub mod relay;
pub mod serve;
pub mod spool;
pub mod store;
pub mod stream;
pub mod webapp;
