//! A minimal HTTPS JSON client: one request per connection, hyper over rustls.
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::sync::Arc;

/// An HTTPS client for one pod.
pub struct Client {
    addr: String,
    host: String,
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    /// A client for the pod at `url` (`https://host[:port]`), trusting `cacert_pem` (the proxy's own
    /// certificate, for a local pod) or, without it, the web PKI.
    pub fn new(url: &str, cacert_pem: Option<&str>) -> Result<Self, Box<dyn std::error::Error>> {
        use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
        let rest = url
            .strip_prefix("https://")
            .ok_or("the pod URL must start with https://")?
            .trim_end_matches('/');
        let addr = if rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            rest.to_owned()
        } else {
            format!("{rest}:443")
        };
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .unwrap_or_else(|| addr.clone());
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        match cacert_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(cert?)?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            addr,
            host,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Sends a request; returns the status and the body parsed as JSON (or as a JSON string for text).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error>> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        // Requests are small writes followed by a wait for the answer: without NODELAY, Nagle's algorithm and the
        // peer's delayed ACK add ~40 ms to each.
        tcp.set_nodelay(true)?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())?;
        let tls = self.tls.connect(name, tcp).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        Ok((status, value))
    }
}

/// A streaming exchange: the request body comes from `body_chunks`, the response body is handed to `on_data`
/// piece by piece. Returns the status, the response headers and, for an error status, the (small) error body.
pub async fn stream(
    client: &Client,
    path: &str,
    headers: &[(&str, String)],
    body_chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    mut on_data: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(u16, hyper::HeaderMap, Vec<u8>), Box<dyn std::error::Error>> {
    use futures_util::StreamExt as _;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let tcp = tokio::net::TcpStream::connect(&client.addr).await?;
    tcp.set_nodelay(true)?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(client.host.clone())?;
    let tls = client.tls.connect(name, tcp).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let pieces = futures_util::stream::unfold(body_chunks, |mut rx| async move {
        rx.recv().await.map(|b| (b, rx))
    })
    .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(b))));
    let mut builder = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", &client.host);
    for (k, v) in headers {
        builder = builder.header(*k, v);
    }
    let req = builder.body(StreamBody::new(pieces))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut error_body = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if status == 200 {
                on_data(&data)?;
            } else if error_body.len() < 64 * 1024 {
                error_body.extend_from_slice(&data);
            }
        }
    }
    Ok((status, headers, error_body))
}
