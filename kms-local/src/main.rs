//! `kms-local`: run the KMS emulator.

use anyhow::Context as _;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "kms-local",
    version,
    about = "A local AWS KMS emulator that enforces Nitro Enclaves attestation conditions (for Secure Pod's local mode).",
    long_about = "A local AWS KMS emulator that enforces Nitro Enclaves attestation conditions (for Secure Pod's \
                  local mode).\n\nIt speaks the KMS JSON 1.1 protocol, so aws-sdk-kms and the AWS CLI work against it \
                  with an endpoint override. Requests with a Recipient must carry an attestation document signed by a \
                  root given with --root (or the AWS Nitro root); key policies' kms:RecipientAttestation:ImageSha384 \
                  and PCR<n> conditions are enforced. It does not check SigV4 signatures or IAM: it is for one \
                  machine, on loopback, never a substitute for KMS."
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4599", env = "KMS_LOCAL_LISTEN")]
    listen: String,

    /// Where keys are kept (kms-keys.json, mode 0600).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "pod-data/kms",
        env = "KMS_LOCAL_STATE_DIR"
    )]
    state_dir: PathBuf,

    /// An attestation root to trust (PEM), e.g. the mock NSM's mock-root.pem; repeatable.
    #[arg(long = "root", value_name = "PEM")]
    roots: Vec<PathBuf>,

    /// Do not trust the AWS Nitro Enclaves root (only the --root certificates).
    #[arg(long)]
    no_aws_root: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let roots = args
        .roots
        .iter()
        .map(|p| {
            std::fs::read_to_string(p).with_context(|| format!("reading root {}", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kms = Arc::new(kms_local::Kms::open(
        &args.state_dir,
        &roots,
        !args.no_aws_root,
    )?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        eprintln!("kms-local: listening on http://{}", listener.local_addr()?);
        kms_local::server::run(listener, kms, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        anyhow::Ok(())
    })
}
