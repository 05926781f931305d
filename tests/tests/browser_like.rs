//! The streaming endpoint against a client that behaves like a browser's `fetch` over HTTP/1.1: it sends the whole
//! request body before it reads a byte of the response. The proxy must neither deadlock (it spools its output) nor
//! answer a refusal with a reset connection (it drains the request first).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use pod_protocol::envelope::{self, Kind};
use pod_protocol::keys::EncryptionKey;
use pod_protocol::membership::Action;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use pod_tests::b64;

/// Sends `head` and all of `body`, and only then reads the whole answer (within 120 s). Returns whether the whole
/// body could be sent (a server that answers early and closes makes the send fail) and the answer.
async fn send_all_then_read(url: &str, cacert: &str, head: String, body: &[u8]) -> (bool, Vec<u8>) {
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let addr = url.strip_prefix("https://").unwrap();
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cacert.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), async {
        tls.write_all(head.as_bytes()).await.unwrap();
        let sent = tls.write_all(body).await.is_ok() && tls.flush().await.is_ok();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        (sent, answer)
    })
    .await
    .expect("the proxy and a client that sends everything first wait for each other (deadlock)")
}

fn head(len: usize, token: &[u8], user_key: &[u8]) -> String {
    format!(
        "POST /pod/re-encrypt/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n\
         x-pod-auth-token: {}\r\nx-pod-user-key: {}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        b64(token),
        b64(user_key)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_everything_first_gets_its_document_and_its_refusal() {
    let pod = pod_tests::local::start_unbudgeted();
    let s = &pod.state;
    let cacert = std::fs::read_to_string(s.join("tls/cert.pem")).unwrap();
    let c = pod.client();
    let verified = c.attest().await.unwrap();
    let (owner, member, room) = pod.room_with_member(&c).await;
    // 24 MiB: far more than the proxy holds in memory for one answer (1 MiB) and than socket buffers absorb.
    let plain: Vec<u8> = (0..24 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let sealed = envelope::seal(
        Kind::SealedToPod,
        &room,
        b"big",
        &EncryptionKey::HpkeP256(verified.pod_key.clone()),
        &plain,
    )
    .unwrap();
    let (header, _) = envelope::read_header(&sealed).unwrap().unwrap();
    let user_key = member.bundle.encryption_key().to_spki_der();

    let token = pod_tests::fixtures::request(&member, &room, &header, &verified.pod_key).unwrap();
    let (sent, answer) = send_all_then_read(
        &pod.url,
        &cacert,
        head(sealed.len(), token.as_bytes(), &user_key),
        &sealed,
    )
    .await;
    assert!(sent);
    let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The re-encrypted document (chunked transfer) is at least as long as the plaintext.
    assert!(
        answer.len() > plain.len(),
        "only {} bytes came back",
        answer.len()
    );
    // Nothing is left in the spool directory: its files are unlinked at creation.
    let spool = s.join("spool");
    assert!(!spool.exists() || std::fs::read_dir(&spool).unwrap().count() == 0);

    // Revoked: the refusal arrives as an answer, not as a reset, although the client sends all 24 MiB first.
    c.change(&room, &owner, Action::Revoke, member.bundle.id().to_vec())
        .await
        .unwrap();
    let token = pod_tests::fixtures::request(&member, &room, &header, &verified.pod_key).unwrap();
    let (sent, answer) = send_all_then_read(
        &pod.url,
        &cacert,
        head(sealed.len(), token.as_bytes(), &user_key),
        &sealed,
    )
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        sent,
        "the proxy stopped reading the upload to answer early: {text}"
    );
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("not_a_member"), "{text}");
}
