//! The parent's side of the enclave link: frames over vsock (or a Unix socket locally), a small pool of idle
//! connections, and the re-encryption conversation with the audit entry stored durably before it is acknowledged.

use pod_protocol::frame::{self, Frame, PREFIX_LEN};
use pod_protocol::link::{self, kind};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where the enclave listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnclaveAddr {
    /// A Unix socket (local mode).
    Unix(PathBuf),
    /// vsock `cid:port` (the enclave's CID, given at `nitro-cli run-enclave`).
    Vsock {
        /// The enclave's context id.
        cid: u32,
        /// Its port.
        port: u32,
    },
}

impl FromStr for EnclaveAddr {
    type Err = String;

    /// `unix:/path` or `vsock:CID:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Self::Unix(p.into()));
        }
        if let Some((cid, port)) = s.strip_prefix("vsock:").and_then(|r| r.split_once(':')) {
            let n = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| format!("{v:?} is not a number"))
            };
            return Ok(Self::Vsock {
                cid: n(cid)?,
                port: n(port)?,
            });
        }
        Err(format!("{s:?}: use unix:/path or vsock:CID:PORT"))
    }
}

/// Link errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The enclave cannot be reached (not running, restarting).
    #[error("the enclave is unreachable: {0}")]
    Unreachable(std::io::Error),
    /// The enclave took too long.
    #[error("the enclave did not answer in time")]
    Timeout,
    /// The enclave sent something that is not a valid frame or message.
    #[error("the enclave sent a malformed answer: {0}")]
    Protocol(String),
}

/// A reply frame.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The message kind.
    pub kind: u64,
    /// Its body.
    pub body: Vec<u8>,
}

impl Reply {
    /// `(code, message)` of an error or refusal.
    pub fn code_message(&self) -> (String, String) {
        link::decode_code_message(&self.body)
            .map(|(c, m)| (c.to_owned(), m.to_owned()))
            .unwrap_or_else(|_| ("error".into(), "malformed error from the enclave".into()))
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection to the enclave.
pub struct Connection {
    io: Box<dyn Io>,
}

const TIMEOUT: Duration = Duration::from_secs(60);

impl Connection {
    /// Sends one frame.
    pub async fn send(&mut self, request_id: u64, kind: u64, body: &[u8]) -> Result<(), LinkError> {
        let bytes = frame::encode(&Frame {
            request_id,
            kind,
            body,
        })
        .map_err(|e| LinkError::Protocol(e.to_string()))?;
        tokio::time::timeout(TIMEOUT, self.io.write_all(&bytes))
            .await
            .map_err(|_| LinkError::Timeout)?
            .map_err(LinkError::Unreachable)
    }

    /// Reads one frame.
    pub async fn recv(&mut self) -> Result<Reply, LinkError> {
        let read = async {
            let mut prefix = [0u8; PREFIX_LEN];
            self.io
                .read_exact(&mut prefix)
                .await
                .map_err(LinkError::Unreachable)?;
            let len = frame::body_len(prefix).map_err(|e| LinkError::Protocol(e.to_string()))?;
            let mut buf = vec![0u8; len];
            self.io
                .read_exact(&mut buf)
                .await
                .map_err(LinkError::Unreachable)?;
            let f = frame::parse(&buf).map_err(|e| LinkError::Protocol(e.to_string()))?;
            Ok(Reply {
                kind: f.kind,
                body: f.body.to_vec(),
            })
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .map_err(|_| LinkError::Timeout)?
    }
}

/// A client for the enclave with a pool of idle connections.
pub struct EnclaveClient {
    addr: EnclaveAddr,
    idle: Mutex<Vec<Connection>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for EnclaveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 32;

impl EnclaveClient {
    /// A client for the enclave at `addr` (nothing is dialled yet).
    pub fn new(addr: EnclaveAddr) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// A request id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// An idle connection, or a new one.
    pub async fn connection(&self) -> Result<Connection, LinkError> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let io: Box<dyn Io> = match &self.addr {
            EnclaveAddr::Unix(p) => Box::new(
                tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(LinkError::Unreachable)?,
            ),
            EnclaveAddr::Vsock { cid, port } => Box::new(
                tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port))
                    .await
                    .map_err(LinkError::Unreachable)?,
            ),
        };
        Ok(Connection { io })
    }

    /// Returns a connection that finished a conversation cleanly.
    pub fn give_back(&self, c: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }

    /// Forgets pooled connections (after the enclave restarted).
    pub fn reset(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// One request, one reply, never sent twice: for messages that must not be repeated blindly (a second
    /// PROVISION_NEXT after a lost answer would meet a successor whose sealed form was never stored).
    pub async fn call_once(&self, kind: u64, body: &[u8]) -> Result<Reply, LinkError> {
        let mut c = self.connection().await?;
        let id = self.next_id();
        c.send(id, kind, body).await?;
        let reply = c.recv().await?;
        self.give_back(c);
        Ok(reply)
    }

    /// One request, one reply.
    pub async fn call(&self, kind: u64, body: &[u8]) -> Result<Reply, LinkError> {
        let mut c = self.connection().await?;
        let id = self.next_id();
        let result = async {
            c.send(id, kind, body).await?;
            c.recv().await
        }
        .await;
        match result {
            Ok(reply) => {
                self.give_back(c);
                Ok(reply)
            }
            Err(e) => {
                // A broken pooled connection may just be stale: retry once on a fresh one.
                self.reset();
                let mut c = self.connection().await.map_err(|_| e)?;
                c.send(id, kind, body).await?;
                let reply = c.recv().await?;
                self.give_back(c);
                Ok(reply)
            }
        }
    }
}

/// Health as the enclave reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnclaveHealth {
    /// `sealed`, `ready` or `failed`.
    pub status: String,
    /// Hex SHA-256 of the pod key's SPKI, once ready.
    pub key_fingerprint: Option<String>,
    /// The next audit sequence number.
    pub audit_next_seq: u64,
    /// Rooms loaded.
    pub rooms: u64,
    /// Hex configuration hash.
    pub config_hash: String,
    /// Why the enclave failed.
    pub failure: Option<String>,
    /// Why it is still sealed.
    pub sealed_reason: Option<String>,
    /// During a rotation: hex fingerprint of the successor pod key.
    pub next_key_fingerprint: Option<String>,
}

/// Decodes a health report.
pub fn decode_health(body: &[u8]) -> Result<EnclaveHealth, LinkError> {
    let bad = |_| LinkError::Protocol("malformed health report".into());
    let mut d = pod_cbor::Decoder::new(body);
    d.array().map_err(bad)?;
    let status = d.text().map_err(bad)?.to_owned();
    let key_fingerprint = if d.null().map_err(bad)? {
        None
    } else {
        Some(hex::encode(d.bytes().map_err(bad)?))
    };
    let audit_next_seq = d.u64().map_err(bad)?;
    let rooms = d.u64().map_err(bad)?;
    let config_hash = hex::encode(d.bytes().map_err(bad)?);
    let failure = if d.null().map_err(bad)? {
        None
    } else {
        Some(d.text().map_err(bad)?.to_owned())
    };
    let sealed_reason = if d.null().map_err(bad)? {
        None
    } else {
        Some(d.text().map_err(bad)?.to_owned())
    };
    let next_key_fingerprint = if d.null().map_err(bad)? {
        None
    } else {
        Some(hex::encode(d.bytes().map_err(bad)?))
    };
    Ok(EnclaveHealth {
        next_key_fingerprint,
        status,
        key_fingerprint,
        audit_next_seq,
        rooms,
        config_hash,
        failure,
        sealed_reason,
    })
}

/// `kind` is the code of the message sent; used by callers to tell an error frame from an answer.
pub fn is_error(reply: &Reply) -> bool {
    reply.kind == kind::ERROR || reply.kind == kind::REFUSED
}
