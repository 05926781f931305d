//! `POST /pod/re-encrypt/stream`: documents of any size with bounded memory on the proxy and in the enclave.
//!
//! The request body is the sealed document as bytes; the signed request and the user's public key travel in the
//! `x-pod-auth-token` and `x-pod-user-key` headers (base64). The proxy reads the document's header, runs the
//! decision (audit entry durable before release), answers 200 with the receipt in `x-pod-receipt`, then moves one
//! sealed chunk at a time to the enclave and the re-encrypted chunk to the client. It holds at most one chunk of
//! look-ahead (to know which chunk is the last) and a small bounded queue towards the client, so a slow client
//! slows the stream instead of filling memory.

use crate::http::{Body, check_registered_key};
use crate::parent::{ApiError, Parent};
use base64::Engine as _;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use pod_protocol::stream::SEALED_CHUNK_SIZE;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of converted output held in memory per request before the spool file takes over.
const SPOOL_MEMORY: usize = 1024 * 1024;
/// How long one piece of the request body may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

fn header_b64(headers: &hyper::HeaderMap, name: &str) -> Result<Vec<u8>, ApiError> {
    let v = headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("the `{name}` header (base64) is required")))?;
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|_| ApiError::BadRequest(format!("`{name}` is not base64")))
}

/// Reads more of the body into `buf`; false at the end.
async fn fill(body: &mut Incoming, buf: &mut Vec<u8>) -> Result<bool, ApiError> {
    loop {
        let frame = tokio::time::timeout(READ_TIMEOUT, body.frame())
            .await
            .map_err(|_| ApiError::BadRequest("the document stopped arriving".into()))?;
        match frame {
            None => return Ok(false),
            Some(Err(e)) => return Err(ApiError::BadRequest(format!("reading the document: {e}"))),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    buf.extend_from_slice(&data);
                    return Ok(true);
                }
            }
        }
    }
}

/// Request bodies drained after an early refusal at most (beyond it the connection is simply closed).
const DRAIN_CAP: u64 = 256 * 1024 * 1024;

/// Handles one streaming re-encryption. On a refusal the rest of the request body is read and discarded before the
/// answer, so that a client still sending (a browser sends everything before it reads) receives the refusal
/// instead of a reset connection.
pub async fn re_encrypt(
    parent: Arc<Parent>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (parts, mut body) = req.into_parts();
    let mut buf = Vec::new();
    let started = async {
        let token = header_b64(&parts.headers, "x-pod-auth-token")?;
        let user_key = header_b64(&parts.headers, "x-pod-user-key")?;
        if let Err(e) = check_registered_key(&parent, &token, &user_key) {
            if !parent.is_ready().await {
                return Err(ApiError::Unavailable("the enclave is not ready".into()));
            }
            return Err(e);
        }
        let header = read_header(&mut body, &mut buf).await?;
        let p = parent.clone();
        tokio::spawn(async move { p.begin_re_encrypt(&token, &header).await })
            .await
            .map_err(|_| ApiError::Internal("the re-encryption task failed".into()))?
    }
    .await;
    answer(parent, started, body, buf, false, "x-pod-receipt").await
}

/// `POST /pod/rotate/stream` (`x-pod-rotation-mode: rewrap | re-encrypt`): moves one stored document to the
/// successor pod key. The answer carries the signed rotation item in `x-pod-rotation-item`; in re-encrypt mode the
/// moved document is followed by the enclave's 64-byte body seal (SPEC §9). In rewrap mode the
/// body does not change: the client may send only the prefix and header and keep its body, and whatever body it
/// does send comes back unchanged after the new header.
pub async fn rotate(
    parent: Arc<Parent>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (parts, mut body) = req.into_parts();
    let mut buf = Vec::new();
    let mode = parts
        .headers
        .get("x-pod-rotation-mode")
        .and_then(|v| v.to_str().ok())
        .and_then(pod_protocol::rotation::Mode::from_name);
    let started = async {
        let mode = mode.ok_or_else(|| {
            ApiError::BadRequest(
                "the `x-pod-rotation-mode` header must be `rewrap` or `re-encrypt`".into(),
            )
        })?;
        let header = read_header(&mut body, &mut buf).await?;
        let p = parent.clone();
        tokio::spawn(async move { p.begin_rotation(mode, &header).await })
            .await
            .map_err(|_| ApiError::Internal("the rotation task failed".into()))?
    }
    .await;
    let passthrough = mode == Some(pod_protocol::rotation::Mode::Rewrap);
    answer(
        parent,
        started,
        body,
        buf,
        passthrough,
        "x-pod-rotation-item",
    )
    .await
}

/// The answer to a started conversation, or, after draining the request, its refusal.
async fn answer(
    parent: Arc<Parent>,
    started: Result<crate::parent::Conversation, ApiError>,
    mut body: Incoming,
    buf: Vec<u8>,
    passthrough: bool,
    receipt_header: &'static str,
) -> Result<Response<Body>, ApiError> {
    match started {
        Ok(c) => Ok(respond(parent, c, body, buf, passthrough, receipt_header)),
        Err(e) => {
            crate::spool::drain(&mut body, DRAIN_CAP, READ_TIMEOUT).await;
            Err(e)
        }
    }
}

/// Reads the document's prefix and header (at most 2 KiB after the prefix) into `buf` and splits them off.
async fn read_header(body: &mut Incoming, buf: &mut Vec<u8>) -> Result<Vec<u8>, ApiError> {
    let header_end = loop {
        match pod_protocol::envelope::read_header(buf) {
            Ok(Some((_, end))) => break end,
            Ok(None) => {
                if buf.len()
                    > pod_protocol::envelope::MAX_HEADER_LEN + pod_protocol::envelope::PREFIX_LEN
                    || !fill(body, buf).await?
                {
                    return Err(ApiError::BadRequest(
                        "the document's header is incomplete".into(),
                    ));
                }
            }
            Err(e) => return Err(ApiError::BadRequest(format!("not a sealed document: {e}"))),
        }
    };
    Ok(buf.drain(..header_end).collect())
}

/// Answers 200 with the conversation's header, then the converted body: chunk by chunk through the enclave, or
/// (`passthrough`, a rewrap) the client's bytes unchanged. The conversation's receipt (or rotation item) goes
/// into the response header `receipt_header`.
fn respond(
    parent: Arc<Parent>,
    mut conversation: crate::parent::Conversation,
    mut body: Incoming,
    mut buf: Vec<u8>,
    passthrough: bool,
    receipt_header: &'static str,
) -> Response<Body> {
    let receipt = base64::engine::general_purpose::STANDARD.encode(&conversation.receipt);
    // Towards the client: a spool, not a bounded channel, so the upload always completes (see `crate::spool`).
    let (mut tx, rx) = crate::spool::channel(SPOOL_MEMORY, &parent.spool_dir());
    let first = Bytes::from(std::mem::take(&mut conversation.header));
    tokio::spawn(async move {
        if tx.send(first).await.is_err() {
            return;
        }
        if passthrough {
            parent.finish(conversation);
            loop {
                if !buf.is_empty()
                    && tx
                        .send(Bytes::from(std::mem::take(&mut buf)))
                        .await
                        .is_err()
                {
                    return;
                }
                match fill(&mut body, &mut buf).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => return tx.fail(e.to_string()),
                }
            }
        }
        let mut ended = false;
        loop {
            // Keep a whole chunk plus at least one more byte, or the end, before sending: then we know if it is last.
            while !ended && buf.len() <= SEALED_CHUNK_SIZE {
                match fill(&mut body, &mut buf).await {
                    Ok(true) => {}
                    Ok(false) => ended = true,
                    Err(e) => return tx.fail(e.to_string()),
                }
            }
            let take = buf.len().min(SEALED_CHUNK_SIZE);
            let chunk: Vec<u8> = buf.drain(..take).collect();
            let last = ended && buf.is_empty();
            match parent.stream_chunk(&mut conversation, &chunk, last).await {
                Ok(out) => {
                    if tx.send(Bytes::from(out)).await.is_err() {
                        return;
                    }
                }
                Err(e) => return tx.fail(e.to_string()),
            }
            if last {
                parent.finish(conversation);
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .map(|r| r.map(Frame::data));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&receipt) {
        headers.insert(receipt_header, v);
    }
    response
}
