//! The Secure Pod enclave.
//!
//! * [`pod`]: the pod itself, a pure state machine that authorises, re-encrypts, budgets and audits;
//! * [`budget`] and [`replay`]: its decryption budgets and replay cache;
//! * [`nsm`]: the Nitro Secure Module seam (the real `/dev/nsm` or a mock that signs real attestation documents);
//! * [`clock`]: the time source every part reads, injected;
//! * [`server`]: the only I/O: frames over vsock or a Unix socket, with connection and time limits.

#![forbid(unsafe_code)]

pub mod budget;
pub mod clock;
pub mod kms;
pub mod nsm;
pub mod pod;
pub mod replay;
pub mod server;
