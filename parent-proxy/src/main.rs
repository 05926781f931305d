//! `pod-proxy`: the parent instance's side of Secure Pod.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pod_proxy::relay::{self, Allowlist, ListenAddr};

#[derive(Parser, Debug)]
#[command(
    name = "pod-proxy",
    version,
    about = "Secure Pod on the EC2 parent instance."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Relay the enclave's KMS connections to KMS (the enclave runs TLS end to end; this only moves bytes).
    KmsRelay {
        /// Where the enclave connects: `vsock:PORT` on EC2, `unix:/path` or `tcp:HOST:PORT` locally.
        #[arg(long, value_name = "ADDRESS", default_value = "vsock:8000")]
        listen: ListenAddr,
        /// The endpoint to forward to, `host:port`, e.g. `kms.us-east-1.amazonaws.com:443`. DNS is resolved for
        /// every connection.
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
        /// Allowed endpoints (`host:port`, `*` for one DNS label or any port); repeatable. Default: KMS in any
        /// region on 443, and loopback.
        #[arg(long = "allow", value_name = "PATTERN")]
        allow: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::KmsRelay { listen, to, allow } => {
            let allowlist = if allow.is_empty() {
                Allowlist::default()
            } else {
                Allowlist::new(allow)
            };
            relay::check_target(&to, &allowlist)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = relay::Listener::bind(&listen)
                    .await
                    .context("starting the KMS relay")?;
                eprintln!("pod-proxy kms-relay: {listen:?} -> {to}");
                relay::run(listener, to, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await;
                anyhow::Ok(())
            })
        }
    }
}
