//! The HTTPS API (hyper 1 over rustls). JSON in and out; binary fields in base64.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /pod/health` | | `{status, key_fingerprint, audit_entries, rooms, sealed_reason, enclave}` |
//! | `GET /pod/attestation?nonce=<hex>` | | `{document}` |
//! | `POST /pod/re-encrypt` | `{encrypted_blob, user_public_key, auth_token}` | `{re_encrypted_content, wrapped_key, receipt}` |
//! | `POST /pod/re-encrypt/stream` | the sealed document, binary; headers `x-pod-auth-token`, `x-pod-user-key` (base64) | the user's document, streamed; header `x-pod-receipt` |
//! | `POST /rooms` | `{entry}` (the signed genesis entry) | `{room_id, seq, head}` |
//! | `POST /rooms/<id>/entries` | `{entry}` | `{seq, head}` |
//! | `GET /rooms/<id>/log` | | `{entries}` |
//! | `GET /audit?from=<n>` | | `{entries, next}` |
//! | `GET /audit/checkpoint` | | `{checkpoint}` (signed by the pod's receipt key) |
//! | `GET /metrics` | | Prometheus text |
//! | `GET /app/…` | | the browser client (static files embedded in the binary; `GET /` redirects here) |
//! | `POST /admin/rotation/prepare` | `{kms_key_id}` or `{sealed_key}` (or `{}` in local mode) | `{next_key_fingerprint, pod_spki, kms_key_id}` |
//! | `POST /pod/rotate/stream` | a stored document (rewrap: its prefix and header suffice); header `x-pod-rotation-mode` | the moved document (re-encrypt: followed by the 64-byte body seal, SPEC §9); header `x-pod-rotation-item` |
//! | `POST /admin/rotation/certify` | `{mode, items}` (signed items, sorted) | `{certificate}` |
//!
//! The rotation routes (`/admin/…` and `/pod/rotate/…`) answer only to loopback peers: an operator on the parent
//! instance runs them (`podctl rotate`). That is not what makes them safe — the parent is untrusted anyway — but
//! it keeps an expensive batch operation off the public listener. What makes them safe is that the enclave moves
//! documents only to a successor key that KMS released to it under the successor key's policy.
//!
//! Errors are `{"error": <code>, "message": <text>}`; while the enclave is down or sealed, re-encrypt answers 503
//! `pod_unavailable`. Bodies are capped, headers must arrive within 10 s and a whole request within 60 s, and at
//! most [`MAX_CONNECTIONS`] connections are served at once. Logs carry a request id and never a body.

use crate::parent::{ApiError, Parent, b64};
use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Largest request body (a re-encrypt JSON body carries the whole document in base64).
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let (status, code, message) = match e {
        ApiError::Unavailable(detail) => {
            tracing::warn!(detail, "pod unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "pod_unavailable".to_owned(),
                "Data room temporarily unavailable, please try again".to_owned(),
            )
        }
        ApiError::Refused { code, message } => {
            (StatusCode::FORBIDDEN, code.clone(), message.clone())
        }
        ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request".into(), m.clone()),
        ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found".into(), m.clone()),
        ApiError::Internal(m) => {
            tracing::error!(error = m, "internal error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal".into(),
                "internal error; see the proxy's log".into(),
            )
        }
    };
    json_response(status, &json!({ "error": code, "message": message }))
}

fn bad_body(e: pod_protocol::api::BodyError) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

async fn route(
    parent: &Arc<Parent>,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["pod", "health"]) => {
            let audit_entries = parent.audit_len();
            Ok(match parent.health().await {
                Ok(h) => json_response(
                    StatusCode::OK,
                    &json!({
                        "status": h.status, "key_fingerprint": h.key_fingerprint, "sealed_reason": h.sealed_reason,
                        "failure": h.failure, "rooms": h.rooms, "audit_entries": audit_entries,
                        "audit_next_seq": h.audit_next_seq, "config_hash": h.config_hash, "enclave": "up",
                        "next_key_fingerprint": h.next_key_fingerprint,
                    }),
                ),
                Err(e) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "status": "unavailable", "enclave": "down", "reason": e.to_string(), "audit_entries": audit_entries }),
                ),
            })
        }
        (Method::GET, ["pod", "attestation"]) => {
            let nonce = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("nonce="))
                .map(|n| {
                    hex::decode(n).map_err(|_| ApiError::BadRequest("nonce must be hex".into()))
                })
                .transpose()?;
            if nonce.as_ref().is_some_and(|n| n.len() > 512) {
                return Err(ApiError::BadRequest(
                    "nonce is longer than 512 bytes".into(),
                ));
            }
            let doc = parent.attestation(nonce).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "document": b64(&doc) }),
            ))
        }
        (Method::POST, ["pod", "re-encrypt"]) => {
            let pod_protocol::api::ReEncryptBody {
                encrypted_blob: blob,
                auth_token: token,
                user_public_key_der: user_spki,
            } = pod_protocol::api::ReEncryptBody::parse(body).map_err(bad_body)?;
            // The user's registered key must be the one named: the request names the user by id, and the pod checks
            // membership; here the proxy checks the caller's claim against the registered bundle in the room log.
            if let Err(e) = check_registered_key(parent, &token, &user_spki) {
                // A pod that is down or sealed answers 503 whatever the request, so clients retry rather than give up.
                if !parent.is_ready().await {
                    return Err(ApiError::Unavailable("the enclave is not ready".into()));
                }
                return Err(e);
            }
            // The conversation with the enclave runs in its own task: a client that disconnects mid-way must not
            // cancel it between the enclave's audit entry and its storage.
            let p = parent.clone();
            let (document, receipt) =
                tokio::spawn(async move { p.re_encrypt(&token, &blob).await })
                    .await
                    .map_err(|_| ApiError::Internal("the re-encryption task failed".into()))??;
            let (header, _) = pod_protocol::envelope::read_header(&document)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    ApiError::Internal("the enclave returned a malformed document".into())
                })?;
            let wrapped = wrapped_key(&header);
            Ok(json_response(
                StatusCode::OK,
                &json!({ "re_encrypted_content": b64(&document), "wrapped_key": b64(&wrapped), "receipt": b64(&receipt) }),
            ))
        }
        (Method::POST, ["rooms"]) => {
            let entry = pod_protocol::api::EntryBody::parse(body)
                .map_err(bad_body)?
                .entry;
            let (room, seq, head) = parent.create_room(&entry).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({ "room_id": room, "seq": seq, "head": head }),
            ))
        }
        (Method::POST, ["rooms", room, "entries"]) => {
            let entry = pod_protocol::api::EntryBody::parse(body)
                .map_err(bad_body)?
                .entry;
            let (seq, head) = parent.append_entry(room, &entry).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "seq": seq, "head": head }),
            ))
        }
        (Method::GET, ["rooms", room, "log"]) => {
            let entries: Vec<String> = parent.room_log(room)?.iter().map(|e| b64(e)).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({ "entries": entries }),
            ))
        }
        (Method::GET, ["audit"]) => {
            let from = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("from="))
                .map(|f| {
                    f.parse::<usize>()
                        .map_err(|_| ApiError::BadRequest("from must be a number".into()))
                })
                .transpose()?
                .unwrap_or(0);
            let entries: Vec<String> = parent
                .audit_entries(from, 1000)?
                .iter()
                .map(|e| b64(e))
                .collect();
            let next = from.saturating_add(entries.len());
            Ok(json_response(
                StatusCode::OK,
                &json!({ "entries": entries, "next": next }),
            ))
        }
        (Method::GET, ["audit", "checkpoint"]) => {
            let c = parent.checkpoint().await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "checkpoint": b64(&c) }),
            ))
        }
        (Method::POST, ["admin", "rotation", "prepare"]) => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
            let how = if let Some(k) = v.get("sealed_key") {
                crate::parent::PrepareRotation::Load(
                    serde_json::from_value(k.clone())
                        .map_err(|e| ApiError::BadRequest(format!("sealed_key: {e}")))?,
                )
            } else {
                crate::parent::PrepareRotation::Generate {
                    kms_key_id: v
                        .get("kms_key_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                }
            };
            let k = parent.prepare_rotation(how).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "next_key_fingerprint": k.fingerprint, "pod_spki": k.pod_spki, "kms_key_id": k.kms_key_id }),
            ))
        }
        (Method::POST, ["admin", "rotation", "certify"]) => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
            let mode = v
                .get("mode")
                .and_then(Value::as_str)
                .and_then(pod_protocol::rotation::Mode::from_name)
                .ok_or_else(|| {
                    ApiError::BadRequest("mode must be `rewrap` or `re-encrypt`".into())
                })?;
            let items = v
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    ApiError::BadRequest("items must be a list of base64 strings".into())
                })?
                .iter()
                .map(|i| {
                    i.as_str()
                        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                        .filter(|b| b.len() <= pod_protocol::rotation::MAX_ITEM_LEN)
                        .ok_or_else(|| {
                            ApiError::BadRequest("an item is not base64 or is too long".into())
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let c = parent.certify_rotation(mode, &items).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "certificate": b64(&c) }),
            ))
        }
        (Method::GET, ["metrics"]) => {
            let m = &parent.metrics;
            let text = format!(
                "# TYPE pod_reencrypt_released_total counter\npod_reencrypt_released_total {}\n\
                 # TYPE pod_reencrypt_refused_total counter\npod_reencrypt_refused_total {}\n\
                 # TYPE pod_unavailable_total counter\npod_unavailable_total {}\n\
                 # TYPE pod_audit_entries_total counter\npod_audit_entries_total {}\n\
                 # TYPE pod_audit_commits_total counter\npod_audit_commits_total {}\n",
                m.released.load(Ordering::Relaxed),
                m.refused.load(Ordering::Relaxed),
                m.unavailable.load(Ordering::Relaxed),
                m.audit_appended.load(Ordering::Relaxed),
                m.audit_commits.load(Ordering::Relaxed),
            );
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(r)
        }
        _ => Err(ApiError::NotFound(format!("no route for {method} {path}"))),
    }
}

/// The wrapped key inside a re-encrypted header (the user unwraps it with their key).
fn wrapped_key(header: &pod_protocol::envelope::Header) -> Vec<u8> {
    let mut d = pod_cbor::Decoder::new(header.as_bytes());
    let mut out = Vec::new();
    if d.array().is_ok() {
        for _ in 0..5 {
            if d.skip().is_err() {
                return out;
            }
        }
        if let Ok(b) = d.bytes() {
            out = b.to_vec();
        }
    }
    out
}

/// Checks that `user_spki` is the encryption or signing key of the user the request names, in the room's log.
pub(crate) fn check_registered_key(
    parent: &Parent,
    token: &[u8],
    user_spki: &[u8],
) -> Result<(), ApiError> {
    let request = pod_protocol::request::SignedRequest::parse(token)
        .map_err(|e| ApiError::BadRequest(format!("auth_token: {e}")))?;
    let claimed = request.unverified();
    let log = parent.room_log(&hex::encode(claimed.room))?;
    let entries: Vec<pod_protocol::membership::SignedEntry> = log
        .iter()
        .filter_map(|e| pod_protocol::membership::SignedEntry::parse(e).ok())
        .collect();
    // Every bundle ever registered for this user id in the room (grants and the owner's genesis).
    let registered = entries.iter().any(|e| {
        pod_protocol::keys::UserKeyBundle::parse(&e.entry().subject).is_ok_and(|b| {
            b.id() == &claimed.user
                && (b.encryption_key().to_spki_der() == user_spki
                    || b.signing_key().to_spki_der() == user_spki)
        })
    });
    if registered {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "`user_public_key` is not the key registered for this user in this room".into(),
        ))
    }
}

/// The response body: whole JSON, or a stream of re-encrypted chunks.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn boxed(r: Response<Full<Bytes>>) -> Response<Body> {
    r.map(|b| b.map_err(|never| match never {}).boxed())
}

async fn handle(
    parent: Arc<Parent>,
    req: Request<Incoming>,
    loopback: bool,
) -> Result<Response<Body>, std::convert::Infallible> {
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let started = std::time::Instant::now();
    // One spelling per route: `//admin/…` or `/pod//rotate` must not slip past the check below (the router itself
    // ignores empty segments).
    if path.contains("//") || !path.starts_with('/') {
        return Ok(boxed(error_response(&ApiError::BadRequest(
            "empty path segments are not accepted".into(),
        ))));
    }
    if is_admin_path(&path) && !loopback {
        tracing::warn!(
            request_id = id,
            path,
            "rotation route refused to a non-loopback peer"
        );
        return Ok(boxed(json_response(
            StatusCode::FORBIDDEN,
            &json!({ "error": "admin_only", "message": "rotation routes answer only on the parent instance itself (loopback)" }),
        )));
    }
    if method == Method::GET && (path == "/" || path == "/app" || path.starts_with("/app/")) {
        return Ok(boxed(static_file(&path)));
    }
    if method == Method::POST && path == "/pod/rotate/stream" {
        let response = match crate::stream::rotate(parent, req).await {
            Ok(r) => r,
            Err(e) => boxed(error_response(&e)),
        };
        tracing::info!(request_id = id, %method, path, status = response.status().as_u16(), "rotation request");
        return Ok(response);
    }
    if method == Method::POST && path == "/pod/re-encrypt/stream" {
        let response = match crate::stream::re_encrypt(parent, req).await {
            Ok(r) => r,
            Err(e) => boxed(error_response(&e)),
        };
        tracing::info!(request_id = id, %method, path, status = response.status().as_u16(), "streaming request");
        return Ok(response);
    }
    let body = match tokio::time::timeout(
        Duration::from_secs(60),
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return Ok(boxed(error_response(&ApiError::BadRequest(format!(
                "the body is larger than {MAX_BODY} bytes"
            )))));
        }
        Err(_) => {
            return Ok(boxed(error_response(&ApiError::BadRequest(
                "the body took too long to arrive".into(),
            ))));
        }
    };
    let response = boxed(match route(&parent, &method, &path, &query, &body).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    });
    tracing::info!(request_id = id, %method, path, status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64, "request");
    Ok(response)
}

/// The routes that answer only on the parent instance itself.
fn is_admin_path(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(segments.as_slice(), ["admin", ..] | ["pod", "rotate", ..])
}

/// The browser client's files, with headers that keep the page to its own origin.
fn static_file(path: &str) -> Response<Full<Bytes>> {
    let rel = path.strip_prefix("/app/");
    let Some((bytes, content_type)) = rel.and_then(crate::webapp::get) else {
        if rel.is_none() {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
            r.headers_mut().insert(
                hyper::header::LOCATION,
                hyper::header::HeaderValue::from_static("/app/"),
            );
            return r;
        }
        return error_response(&ApiError::NotFound(format!("no file {path}")));
    };
    let mut r = Response::new(Full::new(Bytes::from_static(bytes)));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    h.insert(
        "content-security-policy",
        hyper::header::HeaderValue::from_static(crate::webapp::CSP),
    );
    h.insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "referrer-policy",
        hyper::header::HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    r
}

/// TLS settings: a certificate chain and key, PEM.
pub fn tls_config(
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Arc<tokio_rustls::rustls::ServerConfig>> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Serves the API over TLS on `listener` until `shutdown`.
pub async fn run(
    listener: tokio::net::TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    parent: Arc<Parent>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let Ok((tcp, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached; refusing a connection");
            continue;
        };
        // Answers are written as a head and then body pieces: without NODELAY, Nagle's algorithm holds the second
        // write until the client's delayed ACK (~40 ms).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let parent = parent.clone();
        tokio::spawn(async move {
            // The TLS handshake must finish quickly: a slow client cannot hold a connection slot open.
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            // `::ffff:127.0.0.1` (an IPv4 peer on a dual-stack listener) is loopback too.
            let loopback = peer.ip().to_canonical().is_loopback();
            let service =
                hyper::service::service_fn(move |req| handle(parent.clone(), req, loopback));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), service);
            let _ = tokio::time::timeout(Duration::from_secs(600), conn).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_spelling_of_an_admin_route_is_one() {
        for p in [
            "/admin/rotation/prepare",
            "/admin",
            "/pod/rotate/stream",
            "/pod/rotate",
        ] {
            assert!(super::is_admin_path(p), "{p}");
        }
        for p in [
            "/pod/re-encrypt/stream",
            "/pod/health",
            "/app/admin",
            "/rooms/admin/log",
        ] {
            assert!(!super::is_admin_path(p), "{p}");
        }
    }
}
