//! A byte relay from the enclave (vsock, or a Unix socket / TCP in local mode) to one allowlisted TCP endpoint.

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the relay listens for the enclave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// vsock port on the parent (CID 3 from the enclave's side).
    Vsock(u32),
    /// A Unix socket (local mode).
    Unix(PathBuf),
    /// TCP (local mode).
    Tcp(String),
}

impl FromStr for ListenAddr {
    type Err = String;

    /// `vsock:PORT`, `unix:/path` or `tcp:HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("vsock:") {
            return p
                .parse()
                .map(Self::Vsock)
                .map_err(|_| format!("{p:?} is not a port"));
        }
        if let Some(p) = s.strip_prefix("unix:") {
            return if p.is_empty() {
                Err("unix: needs a path".into())
            } else {
                Ok(Self::Unix(p.into()))
            };
        }
        if let Some(a) = s.strip_prefix("tcp:") {
            return Ok(Self::Tcp(a.to_owned()));
        }
        Err(format!(
            "{s:?}: use vsock:PORT, unix:/path or tcp:HOST:PORT"
        ))
    }
}

/// The endpoints a relay may forward to, as `host:port` patterns where `*` matches one DNS label (in the host) or
/// any port. The defaults are AWS KMS over TLS in every region, and loopback for local mode.
#[derive(Debug, Clone)]
pub struct Allowlist(Vec<String>);

impl Default for Allowlist {
    fn default() -> Self {
        Self(vec![
            "kms.*.amazonaws.com:443".into(),
            "kms-fips.*.amazonaws.com:443".into(),
            "127.0.0.1:*".into(),
            "localhost:*".into(),
            "[::1]:*".into(),
        ])
    }
}

impl Allowlist {
    /// An allowlist of the given patterns.
    pub fn new(patterns: Vec<String>) -> Self {
        Self(patterns)
    }

    /// True when `target` (`host:port`) matches a pattern.
    pub fn allows(&self, target: &str) -> bool {
        let Some((host, port)) = target.rsplit_once(':') else {
            return false;
        };
        self.0.iter().any(|p| {
            let Some((ph, pp)) = p.rsplit_once(':') else {
                return false;
            };
            let port_ok = pp == "*" || pp == port;
            let labels: Vec<&str> = host.split('.').collect();
            let plabels: Vec<&str> = ph.split('.').collect();
            let host_ok = labels.len() == plabels.len()
                && labels
                    .iter()
                    .zip(&plabels)
                    .all(|(l, p)| (*p == "*" && !l.is_empty()) || l.eq_ignore_ascii_case(p));
            port_ok && host_ok
        })
    }
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The target is not on the allowlist.
    #[error("{0} is not on the relay's allowlist")]
    NotAllowed(String),
    /// Binding the listener failed.
    #[error("cannot listen on {addr:?}: {source}")]
    Bind {
        /// The address.
        addr: ListenAddr,
        /// The error.
        source: std::io::Error,
    },
}

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// A bound relay listener.
pub enum Listener {
    /// vsock.
    Vsock(tokio_vsock::VsockListener),
    /// Unix socket.
    Unix(tokio::net::UnixListener),
    /// TCP.
    Tcp(tokio::net::TcpListener),
}

impl Listener {
    /// Binds `addr` (removing a stale Unix socket file first).
    pub async fn bind(addr: &ListenAddr) -> Result<Self, RelayError> {
        let bind_err = |source| RelayError::Bind {
            addr: addr.clone(),
            source,
        };
        Ok(match addr {
            ListenAddr::Vsock(port) => Self::Vsock(
                tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(
                    tokio_vsock::VMADDR_CID_ANY,
                    *port,
                ))
                .map_err(bind_err)?,
            ),
            ListenAddr::Unix(p) => {
                if p.exists() {
                    std::fs::remove_file(p).map_err(bind_err)?;
                }
                Self::Unix(tokio::net::UnixListener::bind(p).map_err(bind_err)?)
            }
            ListenAddr::Tcp(a) => {
                Self::Tcp(tokio::net::TcpListener::bind(a).await.map_err(bind_err)?)
            }
        })
    }

    async fn accept(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(match self {
            Self::Vsock(l) => Box::new(l.accept().await?.0),
            Self::Unix(l) => Box::new(l.accept().await?.0),
            Self::Tcp(l) => Box::new(l.accept().await?.0),
        })
    }
}

/// Most connections relayed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// A relayed connection lives at most this long (a KMS call takes well under a second).
pub const MAX_CONNECTION_TIME: Duration = Duration::from_secs(120);

/// Checks `target` against `allowlist`; call before [`run`].
pub fn check_target(target: &str, allowlist: &Allowlist) -> Result<(), RelayError> {
    if allowlist.allows(target) {
        Ok(())
    } else {
        Err(RelayError::NotAllowed(target.to_owned()))
    }
}

/// Relays every connection on `listener` to `target` until `shutdown`. DNS is resolved for each connection.
pub async fn run(listener: Listener, target: String, shutdown: impl Future<Output = ()>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            _ = &mut shutdown => break,
            c = listener.accept() => c,
        };
        let mut inbound = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("relay connection limit reached; dropping a connection");
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let relayed = async {
                let mut outbound = tokio::net::TcpStream::connect(&target).await?;
                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
            };
            match tokio::time::timeout(MAX_CONNECTION_TIME, relayed).await {
                Ok(Ok((up, down))) => tracing::debug!(up, down, "relayed"),
                Ok(Err(e)) => tracing::warn!(error = %e, %target, "relay failed"),
                Err(_) => tracing::warn!(%target, "relayed connection cut after its time limit"),
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allowlist_admits_kms_and_loopback_only() {
        let a = Allowlist::default();
        assert!(a.allows("kms.us-east-1.amazonaws.com:443"));
        assert!(a.allows("kms-fips.eu-west-1.amazonaws.com:443"));
        assert!(a.allows("127.0.0.1:4599"));
        assert!(!a.allows("kms.us-east-1.amazonaws.com:80"));
        assert!(!a.allows("evil.example.com:443"));
        assert!(!a.allows("kms.us-east-1.amazonaws.com.evil.com:443"));
        assert!(!a.allows("s3.us-east-1.amazonaws.com:443"));
        assert!(!a.allows("10.0.0.1:443"));
        assert!(!a.allows("no-port"));
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            "vsock:8000".parse::<ListenAddr>().unwrap(),
            ListenAddr::Vsock(8000)
        );
        assert_eq!(
            "unix:/tmp/x".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/tmp/x".into())
        );
        assert!("udp:1".parse::<ListenAddr>().is_err());
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_through_a_unix_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("relay.sock");
        let listener = Listener::bind(&ListenAddr::Unix(sock.clone()))
            .await
            .unwrap();
        check_target(&target, &Allowlist::default()).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(run(listener, target, async {
            let _ = rx.await;
        }));
        let mut c = tokio::net::UnixStream::connect(&sock).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        drop(tx);
    }
}
