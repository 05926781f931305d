//! AWS credentials of the instance role through IMDSv2 (a session token first, then the role's credentials),
//! fetched afresh whenever the enclave needs to reach KMS, so they are never stale.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

/// Temporary credentials.
#[derive(Clone)]
pub struct RoleCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret key.
    pub secret_access_key: String,
    /// Session token.
    pub token: String,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("RoleCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

async fn call(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<String, String> {
    let authority = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .map_err(|_| format!("IMDS at {endpoint} did not answer"))?
    .map_err(|e| format!("IMDS at {endpoint}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = sender
        .send_request(b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("IMDS {path}: HTTP {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| "IMDS answered non-UTF-8".into())
}

/// The instance role's credentials.
pub async fn role_credentials(endpoint: &str) -> Result<RoleCredentials, String> {
    let token = call(
        endpoint,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "300")],
    )
    .await?;
    let auth = [("x-aws-ec2-metadata-token", token.trim())];
    let roles = call(
        endpoint,
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &auth,
    )
    .await?;
    let role = roles
        .lines()
        .next()
        .filter(|r| !r.is_empty())
        .ok_or("the instance has no IAM role")?;
    let json = call(
        endpoint,
        "GET",
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
        &auth,
    )
    .await?;
    let v: serde_json::Value =
        serde_json::from_str(&json).map_err(|_| "IMDS credentials are not JSON".to_owned())?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("IMDS credentials lack {k}"))
    };
    Ok(RoleCredentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        token: field("Token")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in IMDS on loopback that insists on the IMDSv2 session token.
    async fn fake_imds() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            let token_ok = req
                                .headers()
                                .get("x-aws-ec2-metadata-token")
                                .is_some_and(|t| t == "tok");
                            let (status, body) = match (req.method().as_str(), req.uri().path()) {
                            ("PUT", "/latest/api/token") => (200, "tok".to_owned()),
                            (_, _) if !token_ok => (401, String::new()),
                            ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "pod-role\n".into()),
                            ("GET", "/latest/meta-data/iam/security-credentials/pod-role") => (
                                200,
                                r#"{"AccessKeyId":"ASIA","SecretAccessKey":"s3cr3t","Token":"t0k","Expiration":"x"}"#.into(),
                            ),
                            _ => (404, String::new()),
                        };
                            let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn credentials_come_through_an_imdsv2_session() {
        let endpoint = fake_imds().await;
        let c = role_credentials(&endpoint).await.unwrap();
        assert_eq!(
            (
                c.access_key_id.as_str(),
                c.secret_access_key.as_str(),
                c.token.as_str()
            ),
            ("ASIA", "s3cr3t", "t0k")
        );
        assert!(!format!("{c:?}").contains("s3cr3t"), "no secret in Debug");
        assert!(role_credentials("http://127.0.0.1:1").await.is_err());
    }
}
