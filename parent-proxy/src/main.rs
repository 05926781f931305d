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
    /// Serve the pod on the EC2 parent instance (configuration: a TOML file, then environment, then flags).
    Serve {
        /// The configuration file (see the `config` module documentation for its keys).
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/etc/secure-pod/pod-proxy.toml",
            env = "POD_PROXY_CONFIG"
        )]
        config: std::path::PathBuf,
        /// Overrides `listen`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Overrides `state_dir`.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<std::path::PathBuf>,
    },
    /// Run the whole pod on this machine: kms-local, the enclave with a mock NSM, the KMS relay and the HTTPS proxy.
    Local {
        /// Where the pod keeps its state (keys sealed by KMS, logs, certificates).
        #[arg(long, value_name = "DIR", default_value = "pod-data")]
        state_dir: std::path::PathBuf,
        /// The HTTPS address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
        listen: String,
    },
    /// End a key rotation, with the proxy stopped: the successor key becomes the pod key; the old sealed key and the
    /// old audit log move to `retired/<fingerprint>/`; documents still sealed to the old key are refused from now on
    /// with `retired_pod_key`. Run it after `podctl rotate run` has moved every document and the rotation certificate
    /// verifies. Afterwards schedule the old KMS key's deletion (docs/OPERATIONS.md).
    Promote {
        /// The proxy's state directory.
        #[arg(long, value_name = "DIR")]
        state_dir: std::path::PathBuf,
    },
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
        Command::Serve {
            config,
            listen,
            state_dir,
        } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let mut c = pod_proxy::config::load(&text, |k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!(e))?;
            if let Some(l) = listen {
                c.listen = l;
            }
            if let Some(d) = state_dir {
                c.state_dir = d;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(pod_proxy::serve::run(c))
        }
        Command::Local { state_dir, listen } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(pod_proxy::local::run(pod_proxy::local::LocalOptions {
                state_dir,
                listen,
            }))
        }
        Command::Promote { state_dir } => {
            let p = pod_proxy::parent::promote(&state_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("retired pod key {}", p.retired);
            println!("pod key is now  {}", p.current);
            println!(
                "the old audit log and sealed key are in {}; start the proxy to unseal the new key",
                p.archive.display()
            );
            Ok(())
        }
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
