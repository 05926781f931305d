//! Configuration of `pod-proxy serve`: a TOML file, environment overrides, then command-line flags (each later
//! source wins), with defaults that suit an EC2 parent instance.
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! state_dir = "/var/lib/secure-pod"
//! tls_cert = "/etc/secure-pod/tls/cert.pem"
//! tls_key = "/etc/secure-pod/tls/key.pem"
//!
//! [enclave]
//! address = "vsock:16:5000"        # the enclave's CID and port (nitro-cli run-enclave --enclave-cid 16)
//!
//! [kms]
//! key_id = "arn:aws:kms:us-east-1:111122223333:key/…"
//! pod_name = "prod-pod-1"
//! credentials = "imds"             # "imds" (IMDSv2, the instance role) or "static" (AWS_ACCESS_KEY_ID, …)
//! imds_endpoint = "http://169.254.169.254"
//! ```
//!
//! Environment: `POD_PROXY_LISTEN`, `POD_PROXY_STATE_DIR`, `POD_PROXY_ENCLAVE`, `POD_PROXY_KMS_KEY_ID`,
//! `POD_PROXY_POD_NAME`, and for static credentials `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.

use serde::Deserialize;
use std::path::PathBuf;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTPS address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Stores.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// TLS certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// TLS private key (PEM).
    pub tls_key: PathBuf,
    /// The enclave.
    pub enclave: EnclaveSection,
    /// KMS.
    pub kms: KmsSection,
}

/// `[enclave]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnclaveSection {
    /// `vsock:CID:PORT` or `unix:/path`.
    pub address: String,
}

/// Where AWS credentials come from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CredentialSource {
    /// The instance role, through IMDSv2.
    Imds,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    Static,
}

/// `[kms]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KmsSection {
    /// The KMS key the pod key is sealed under.
    pub key_id: String,
    /// The pod's name (bound into the KMS encryption context).
    pub pod_name: String,
    /// Credential source.
    #[serde(default = "default_credentials")]
    pub credentials: CredentialSource,
    /// IMDS address.
    #[serde(default = "default_imds")]
    pub imds_endpoint: String,
}

fn default_listen() -> String {
    "0.0.0.0:8443".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/secure-pod".into()
}
fn default_credentials() -> CredentialSource {
    CredentialSource::Imds
}
fn default_imds() -> String {
    "http://169.254.169.254".into()
}

/// Reads the file, then applies environment overrides from `env` (a lookup, so tests need not touch the process
/// environment).
pub fn load(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
    let mut c: Config = toml::from_str(text).map_err(|e| format!("configuration: {e}"))?;
    if let Some(v) = env("POD_PROXY_LISTEN") {
        c.listen = v;
    }
    if let Some(v) = env("POD_PROXY_STATE_DIR") {
        c.state_dir = v.into();
    }
    if let Some(v) = env("POD_PROXY_ENCLAVE") {
        c.enclave.address = v;
    }
    if let Some(v) = env("POD_PROXY_KMS_KEY_ID") {
        c.kms.key_id = v;
    }
    if let Some(v) = env("POD_PROXY_POD_NAME") {
        c.kms.pod_name = v;
    }
    c.enclave
        .address
        .parse::<crate::enclave::EnclaveAddr>()
        .map_err(|e| format!("[enclave] address: {e}"))?;
    if c.kms.key_id.is_empty() {
        return Err("[kms] key_id is empty".into());
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
tls_cert = "/etc/pod/cert.pem"
tls_key = "/etc/pod/key.pem"
[enclave]
address = "vsock:16:5000"
[kms]
key_id = "arn:aws:kms:us-east-1:111122223333:key/abc"
pod_name = "prod-1"
"#;

    #[test]
    fn defaults_file_and_environment() {
        let c = load(FILE, |_| None).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8443");
        assert_eq!(c.kms.credentials, CredentialSource::Imds);
        assert_eq!(c.kms.imds_endpoint, "http://169.254.169.254");
        let c = load(FILE, |k| {
            (k == "POD_PROXY_LISTEN").then(|| "127.0.0.1:9443".to_owned())
        })
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9443");
    }

    #[test]
    fn mistakes_are_named() {
        let typo = FILE.replace("pod_name", "podname");
        assert!(load(&typo, |_| None).unwrap_err().contains("podname"));
        let bad = FILE.replace("vsock:16:5000", "tcp:1");
        assert!(
            load(&bad, |_| None)
                .unwrap_err()
                .contains("[enclave] address")
        );
    }
}
