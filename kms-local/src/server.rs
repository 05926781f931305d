//! The HTTP side: `POST /` with `X-Amz-Target`, JSON 1.1 in and out. hyper 1 on tokio.

use crate::Kms;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body (KMS's largest field, a 4 KiB plaintext or a policy, base64-encoded, fits easily).
pub const MAX_BODY: usize = 1024 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 128;

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    r
}

fn error(kind: &str, message: &str) -> Response<Full<Bytes>> {
    reply(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "__type": kind, "message": message }).to_string(),
    )
}

async fn handle(
    kms: Arc<Kms>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.method() != hyper::Method::POST || req.uri().path() != "/" {
        return Ok(error(
            "UnknownOperationException",
            "KMS requests are POST /",
        ));
    }
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error(
                "ValidationException",
                "request body too large or unreadable",
            ));
        }
    };
    // The KMS work is CPU-bound and short; run it off the I/O threads anyway so a burst of RSA work cannot stall
    // connection handling.
    let result = tokio::task::spawn_blocking(move || kms.handle(&target, &body)).await;
    Ok(match result {
        Ok(Ok(value)) => reply(StatusCode::OK, value.to_string()),
        Ok(Err(e)) => {
            tracing::info!(kind = e.kind, "request refused");
            error(e.kind, &e.message)
        }
        Err(_) => error("KMSInternalException", "internal error"),
    })
}

/// Serves KMS on `listener` until `shutdown` completes.
pub async fn run(
    listener: tokio::net::TcpListener,
    kms: Arc<Kms>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let kms = kms.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(kms.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            // A connection may live five minutes at most, whatever the client does.
            match tokio::time::timeout(Duration::from_secs(300), conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
                Err(_) => tracing::debug!("connection closed after five minutes"),
            }
            drop(permit);
        });
    }
}
