//! The enclave's side of KMS: the key ceremony (`GenerateDataKeyPair` with `Recipient`) and unsealing at boot
//! (`Decrypt` with `Recipient`), through the real `aws-sdk-kms` client.
//!
//! An enclave has no network. Its HTTP connector dials the parent's relay — vsock in production, a Unix socket or
//! TCP locally, chosen at run time by [`KmsVia`] — whatever host the URL names, and runs TLS itself when the
//! endpoint is `https`, so TLS to KMS terminates inside the enclave and the parent relays only ciphertext. Each
//! call uses a fresh connection: the enclave calls KMS a handful of times per boot.
//!
//! The pod key's plaintext never exists outside the enclave: KMS returns it only as `CiphertextForRecipient`,
//! encrypted to an RSA-2048 key made for the call inside the enclave and bound into the attestation document
//! that KMS checks against the key policy.

use crate::nsm::{AttestationRequest, Nsm};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeyPairSpec, KeyEncryptionMechanism, RecipientInfo};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;
use pod_protocol::{cms, hpke, keys::fingerprint};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// How the enclave reaches KMS: the relay on the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsVia {
    /// vsock to the parent (CID 3) on `port`, in a Nitro enclave.
    Vsock {
        /// Context id (3 is the parent).
        cid: u32,
        /// The relay's port.
        port: u32,
    },
    /// A Unix socket (local mode's relay).
    Unix(PathBuf),
    /// TCP (local mode's relay, or the emulator directly in tests).
    Tcp(String),
}

impl FromStr for KmsVia {
    type Err = String;

    /// `vsock:PORT` (CID 3), `vsock:CID:PORT`, `unix:/path` or `tcp:HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            return if p.is_empty() {
                Err("unix: needs a path".into())
            } else {
                Ok(Self::Unix(p.into()))
            };
        }
        if let Some(a) = s.strip_prefix("tcp:") {
            return if a.contains(':') {
                Ok(Self::Tcp(a.to_owned()))
            } else {
                Err("tcp: needs HOST:PORT".into())
            };
        }
        if let Some(rest) = s.strip_prefix("vsock:") {
            let n = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| format!("{v:?} is not a number"))
            };
            return match rest.split_once(':') {
                Some((cid, port)) => Ok(Self::Vsock {
                    cid: n(cid)?,
                    port: n(port)?,
                }),
                None => Ok(Self::Vsock {
                    cid: 3,
                    port: n(rest)?,
                }),
            };
        }
        Err(format!(
            "{s:?}: use vsock:PORT, vsock:CID:PORT, unix:/path or tcp:HOST:PORT"
        ))
    }
}

/// Where KMS is and how to reach it.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// The endpoint URL, e.g. `https://kms.us-east-1.amazonaws.com` or `http://127.0.0.1:4599` locally.
    pub endpoint: String,
    /// The region for request signing.
    pub region: String,
    /// The path to the endpoint.
    pub via: KmsVia,
}

/// AWS credentials, handed over by the parent (IMDSv2 on EC2, static locally). Not `Debug`.
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret key.
    pub secret_access_key: Zeroizing<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<Zeroizing<String>>,
}

/// Errors of the KMS steps. Each says what a person must do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// KMS refused: the key policy does not allow this enclave (PCRs do not match, or no Recipient).
    #[error("KMS denied the request (does the key policy pin this enclave's PCRs?): {0}")]
    AccessDenied(String),
    /// KMS could not be reached or answered with a transport error; retrying may help.
    #[error("KMS is unreachable: {0}")]
    Unreachable(String),
    /// KMS answered with another error.
    #[error("KMS error {code}: {message}")]
    Service {
        /// The exception name.
        code: String,
        /// Its message.
        message: String,
    },
    /// KMS answered, but not with what the enclave asked for.
    #[error("unexpected KMS answer: {0}")]
    Unexpected(&'static str),
    /// The recovered key is not the expected pod key.
    #[error("the sealed pod key does not match the expected fingerprint; refusing it")]
    WrongKey,
    /// Producing the attestation or the ephemeral key failed.
    #[error("enclave-side failure: {0}")]
    Local(String),
}

impl KmsError {
    /// True when retrying later could help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_))
            || matches!(self, Self::Service { code, .. } if code == "KMSInternalException" || code == "ThrottlingException")
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_kms::error::SdkError<E, R>,
) -> KmsError {
    match e.as_service_error() {
        Some(s) => {
            let code = s.code().unwrap_or("Unknown").to_owned();
            let message = s.message().unwrap_or("").to_owned();
            if code == "AccessDeniedException" {
                KmsError::AccessDenied(message)
            } else {
                KmsError::Service { code, message }
            }
        }
        None => KmsError::Unreachable(format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        )),
    }
}

/// The HTTP client the SDK uses: one connection per request over [`KmsVia`], TLS when the URL is `https`.
#[derive(Debug, Clone)]
struct ViaClient {
    via: KmsVia,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

impl ViaClient {
    fn new(via: KmsVia) -> Self {
        let roots = tokio_rustls::rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let tls = match tls {
            Ok(c) => c,
            // The default protocol versions are always available with the aws-lc provider; fall back to a
            // config that cannot connect rather than panic.
            Err(_) => tokio_rustls::rustls::ClientConfig::builder()
                .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        Self {
            via,
            tls: Arc::new(tls),
        }
    }

    async fn dial(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(match &self.via {
            KmsVia::Vsock { cid, port } => Box::new(
                tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port)).await?,
            ),
            KmsVia::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            KmsVia::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
        })
    }

    async fn send(self, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let io_err = |e: std::io::Error| ConnectorError::io(e.into());
        let request = request
            .try_into_http1x()
            .map_err(|e| ConnectorError::other(e.into(), None))?;
        let uri = request.uri().clone();
        let stream = self.dial().await.map_err(io_err)?;
        let stream: Box<dyn Stream> = if uri.scheme_str() == Some("https") {
            let host = uri.host().unwrap_or_default().to_owned();
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, stream)
                .await
                .map_err(io_err)?;
            Box::new(tls)
        } else {
            stream
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| ConnectorError::io(e.into()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ConnectorError::io(e.into()))?;
        let (parts, body) = response.into_parts();
        // KMS answers are small; a cap keeps a misbehaving relay from filling memory.
        let body = http_body_util::Limited::new(body, 1 << 20)
            .collect()
            .await
            .map_err(ConnectorError::io)?
            .to_bytes();
        let response = http::Response::from_parts(parts, SdkBody::from(body));
        HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
    }
}

impl HttpConnector for ViaClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let this = self.clone();
        HttpConnectorFuture::new(async move {
            tokio::time::timeout(Duration::from_secs(30), this.send(request))
                .await
                .map_err(|_| ConnectorError::timeout("KMS did not answer within 30 s".into()))?
        })
    }
}

impl HttpClient for ViaClient {
    fn http_connector(
        &self,
        _: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// An `aws-sdk-kms` client that reaches KMS through `config.via`.
pub fn client(config: &KmsConfig, credentials: &Credentials) -> aws_sdk_kms::Client {
    let creds = aws_sdk_kms::config::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.as_str().to_owned(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.as_str().to_owned()),
        None,
        "secure-pod-parent",
    );
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(config.region.clone()))
        .credentials_provider(creds)
        .endpoint_url(config.endpoint.clone())
        .http_client(ViaClient::new(config.via.clone()))
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// An ephemeral RSA-2048 key and an attestation document binding its SPKI: what KMS encrypts its answer to.
struct Recipient {
    key: OaepPrivateDecryptingKey,
    spki: Vec<u8>,
    info: RecipientInfo,
}

fn recipient(nsm: &dyn Nsm) -> Result<Recipient, KmsError> {
    let local = |e: &dyn std::fmt::Display| KmsError::Local(e.to_string());
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|e| local(&e))?;
    let spki = AsDer::<PublicKeyX509Der<'_>>::as_der(&key.public_key())
        .map_err(|e| local(&e))?
        .as_ref()
        .to_vec();
    let doc = nsm
        .attest(&AttestationRequest {
            public_key: Some(spki.clone()),
            ..Default::default()
        })
        .map_err(|e| local(&e))?;
    let info = RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .attestation_document(Blob::new(doc))
        .build();
    Ok(Recipient {
        key: OaepPrivateDecryptingKey::new(key).map_err(|e| local(&e))?,
        spki,
        info,
    })
}

/// The encryption context every pod key is bound to.
pub fn pod_key_context(pod_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("secure-pod:pod".to_owned(), pod_name.to_owned()),
        ("secure-pod:purpose".to_owned(), "pod-key".to_owned()),
    ])
}

/// What the ceremony produces: the pod key (inside the enclave only) and what the parent stores.
pub struct Provisioned {
    /// The pod key.
    pub key: hpke::PrivateKey,
    /// `PrivateKeyCiphertextBlob`: the pod key sealed under the KMS key, for the parent to store.
    pub sealed: Vec<u8>,
    /// The pod key's SPKI.
    pub public_spki: Vec<u8>,
    /// The ARN of the KMS key that made it, as KMS answered (not as the parent asked).
    pub key_arn: String,
}

/// The key ceremony: KMS makes a P-256 key pair and returns the private key only to this attested enclave.
pub async fn provision(
    client: &aws_sdk_kms::Client,
    key_id: &str,
    context: &BTreeMap<String, String>,
    nsm: &dyn Nsm,
) -> Result<Provisioned, KmsError> {
    let r = recipient(nsm)?;
    let mut req = client
        .generate_data_key_pair()
        .key_id(key_id)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .recipient(r.info);
    for (k, v) in context {
        req = req.encryption_context(k, v);
    }
    let out = req.send().await.map_err(classify)?;
    if out.private_key_plaintext().is_some() {
        // KMS must never hand the plaintext out, even to us, when a Recipient is given.
        return Err(KmsError::Unexpected(
            "KMS returned the private key in plaintext",
        ));
    }
    let envelope = out
        .ciphertext_for_recipient()
        .ok_or(KmsError::Unexpected("no CiphertextForRecipient"))?;
    let pkcs8 = cms::decrypt(envelope.as_ref(), &r.key, &r.spki)
        .map_err(|_| KmsError::Unexpected("undecryptable CiphertextForRecipient"))?;
    let key = hpke::PrivateKey::from_der(&pkcs8)
        .map_err(|_| KmsError::Unexpected("the key pair is not P-256"))?;
    let public_spki = out
        .public_key()
        .ok_or(KmsError::Unexpected("no PublicKey"))?
        .as_ref()
        .to_vec();
    if key.public_key().to_spki_der() != public_spki {
        return Err(KmsError::Unexpected(
            "the private key does not match the public key",
        ));
    }
    let sealed = out
        .private_key_ciphertext_blob()
        .ok_or(KmsError::Unexpected("no PrivateKeyCiphertextBlob"))?
        .as_ref()
        .to_vec();
    let key_arn = out
        .key_id()
        .ok_or(KmsError::Unexpected("no KeyId"))?
        .to_owned();
    Ok(Provisioned {
        key,
        sealed,
        public_spki,
        key_arn,
    })
}

/// Unseals the pod key at boot: `Decrypt` with `Recipient`, then a check that the key is the one the pod
/// published (`expected_fingerprint`, SHA-256 of its SPKI). A blob sealed under another KMS key or context fails in
/// KMS; a blob that decrypts to another key (a substituted key) fails the fingerprint check.
pub async fn unseal(
    client: &aws_sdk_kms::Client,
    sealed: &[u8],
    context: &BTreeMap<String, String>,
    expected_fingerprint: &[u8; 32],
    nsm: &dyn Nsm,
) -> Result<(hpke::PrivateKey, String), KmsError> {
    let r = recipient(nsm)?;
    let mut req = client
        .decrypt()
        .ciphertext_blob(Blob::new(sealed.to_vec()))
        .recipient(r.info);
    for (k, v) in context {
        req = req.encryption_context(k, v);
    }
    let out = req.send().await.map_err(classify)?;
    if out.plaintext().is_some() {
        return Err(KmsError::Unexpected("KMS returned the key in plaintext"));
    }
    let envelope = out
        .ciphertext_for_recipient()
        .ok_or(KmsError::Unexpected("no CiphertextForRecipient"))?;
    let pkcs8 = cms::decrypt(envelope.as_ref(), &r.key, &r.spki)
        .map_err(|_| KmsError::Unexpected("undecryptable CiphertextForRecipient"))?;
    let key = hpke::PrivateKey::from_der(&pkcs8).map_err(|_| KmsError::WrongKey)?;
    if &fingerprint(&key.public_key().to_spki_der()) != expected_fingerprint {
        return Err(KmsError::WrongKey);
    }
    let key_arn = out
        .key_id()
        .ok_or(KmsError::Unexpected("no KeyId"))?
        .to_owned();
    Ok((key, key_arn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_addresses_parse() {
        assert_eq!(
            "vsock:8000".parse::<KmsVia>().unwrap(),
            KmsVia::Vsock { cid: 3, port: 8000 }
        );
        assert_eq!(
            "vsock:16:8000".parse::<KmsVia>().unwrap(),
            KmsVia::Vsock {
                cid: 16,
                port: 8000
            }
        );
        assert_eq!(
            "unix:/tmp/r.sock".parse::<KmsVia>().unwrap(),
            KmsVia::Unix("/tmp/r.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:4599".parse::<KmsVia>().unwrap(),
            KmsVia::Tcp("127.0.0.1:4599".into())
        );
        for bad in ["tcp:nohost", "unix:", "vsock:x", "http://x"] {
            assert!(bad.parse::<KmsVia>().is_err(), "{bad}");
        }
    }

    #[test]
    fn transient_errors_are_told_apart() {
        assert!(KmsError::Unreachable("x".into()).is_transient());
        assert!(!KmsError::AccessDenied("x".into()).is_transient());
        assert!(
            KmsError::Service {
                code: "ThrottlingException".into(),
                message: String::new()
            }
            .is_transient()
        );
        assert!(!KmsError::WrongKey.is_transient());
    }
}
