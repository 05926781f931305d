//! `pod-proxy serve`: production on the EC2 parent instance.

use crate::config::{Config, CredentialSource};
use crate::parent::{Credentials, KmsSettings, Parent, ParentConfig};
use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;

/// Runs the proxy until SIGINT or SIGTERM: brings the enclave to ready (retrying with backoff while it is down or
/// KMS is unreachable), watches it, and unseals it again whenever it comes back from a restart.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let credentials = match config.kms.credentials {
        CredentialSource::Imds => Credentials::Imds {
            endpoint: config.kms.imds_endpoint.clone(),
        },
        CredentialSource::Static => Credentials::Static {
            access_key_id: std::env::var("AWS_ACCESS_KEY_ID")
                .context("credentials = \"static\" needs AWS_ACCESS_KEY_ID")?,
            secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY")
                .context("credentials = \"static\" needs AWS_SECRET_ACCESS_KEY")?,
            session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
        },
    };
    let parent = Arc::new(
        Parent::open(ParentConfig {
            key_factory: None,
            state_dir: config.state_dir.clone(),
            enclave: config
                .enclave
                .address
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?,
            kms: KmsSettings {
                key_id: config.kms.key_id.clone(),
                pod_name: config.kms.pod_name.clone(),
                credentials,
            },
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let cert = std::fs::read_to_string(&config.tls_cert)
        .with_context(|| format!("reading {}", config.tls_cert.display()))?;
    let key = std::fs::read_to_string(&config.tls_key)
        .with_context(|| format!("reading {}", config.tls_key.display()))?;
    let tls = crate::http::tls_config(&cert, &key)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, "serving; the enclave is brought up in the background");

    // The watcher: whenever the enclave is unreachable or sealed, (re)run the session start with backoff. Meanwhile
    // the API answers, with 503 for re-encryption.
    let watcher = {
        let parent = parent.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let ready = matches!(parent.health().await, Ok(h) if h.status == "ready");
                if ready {
                    backoff = Duration::from_millis(500);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                match parent.start_session().await {
                    Ok(h) if h.status == "ready" => {
                        tracing::info!(
                            fingerprint = h.key_fingerprint.unwrap_or_default(),
                            "pod ready"
                        );
                        continue;
                    }
                    Ok(h) => tracing::warn!(
                        status = h.status,
                        reason = h.sealed_reason.unwrap_or_default(),
                        "pod not ready"
                    ),
                    Err(e) => tracing::warn!(error = %e, "pod not ready"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        })
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    crate::http::run(listener, tls, parent, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    })
    .await;
    watcher.abort();
    Ok(())
}
