//! `pod-enclave`: the Secure Pod enclave binary.
//!
//! A thin shell over the `pod_enclave` library: it parses the command line, picks the NSM (real or mock) at run
//! time, and does I/O.

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use pod_enclave::budget::{BudgetConfig, Limits};
use pod_enclave::clock::SystemClock;
use pod_enclave::nsm::{self, AttestationRequest, MockPcrConfig, NsmConfig};
use pod_enclave::pod::{Pod, PodConfig};
use pod_enclave::server;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Parser, Debug)]
#[command(
    name = "pod-enclave",
    version,
    about = "The Secure Pod enclave: holds the pod key inside an AWS Nitro Enclave and re-encrypts documents \
             for authorised users.",
    long_about = "The Secure Pod enclave: holds the pod key inside an AWS Nitro Enclave and re-encrypts documents \
                  for authorised users.\n\nOn Nitro hardware it uses /dev/nsm (--nsm nitro). Without it, --nsm mock \
                  uses a mock Nitro Secure Module that signs real attestation documents with a local P-384 CA, \
                  which clients trust only when given its root (mock-root.pem in the mock's state directory)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the pod to the parent instance over vsock (production) or a Unix socket (local mode).
    Serve(ServeArgs),
    /// Ask the NSM for an attestation document and write it out.
    Attest(AttestArgs),
    /// Print the PCR file (JSON, PCR0..2) the mock NSM reports for an image, for `attest-verify --pcrs` and KMS
    /// key policies in local mode.
    MockPcrs {
        /// The image to measure; default: this binary.
        #[arg(long, value_name = "FILE")]
        image: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    nsm: NsmArgs,

    /// Where to listen: `vsock:PORT` inside a Nitro enclave, `unix:/path/to/socket` in local mode.
    #[arg(
        long,
        value_name = "ADDRESS",
        default_value = "vsock:5000",
        env = "POD_LISTEN"
    )]
    listen: server::Address,

    /// Where the pod key comes from. `kms`: the pod starts sealed and the parent asks it to run the key ceremony
    /// (first start) or to unseal the stored key, both through KMS with this enclave's attestation.
    /// `insecure-ephemeral`: a fresh key at every start, so nothing sealed to it survives a restart; for
    /// development and tests only.
    #[arg(long, value_enum, value_name = "SOURCE")]
    pod_key: PodKeySource,

    /// The KMS endpoint, e.g. `https://kms.us-east-1.amazonaws.com` (TLS runs inside the enclave), or the local
    /// emulator `http://127.0.0.1:4599`. Required with `--pod-key kms`.
    #[arg(long, value_name = "URL", env = "POD_KMS_ENDPOINT")]
    kms_endpoint: Option<String>,

    /// The KMS region (for request signing).
    #[arg(
        long,
        value_name = "REGION",
        default_value = "us-east-1",
        env = "POD_KMS_REGION"
    )]
    kms_region: String,

    /// How the enclave reaches KMS: the parent's relay at `vsock:PORT` (CID 3), or locally `unix:/path` or
    /// `tcp:HOST:PORT`.
    #[arg(
        long,
        value_name = "ADDRESS",
        default_value = "vsock:8000",
        env = "POD_KMS_VIA"
    )]
    kms_via: pod_enclave::kms::KmsVia,

    /// Connections served at once.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,

    /// Seconds a connection may stay silent, or take to send one frame.
    #[arg(long, default_value_t = 30)]
    frame_timeout_secs: u64,

    /// Decryptions per user per room, `HOURLY/DAILY`.
    #[arg(
        long,
        value_name = "H/D",
        default_value = "200/1000",
        env = "POD_BUDGET_USER_ROOM"
    )]
    budget_user_room: String,

    /// Decryptions per room, `HOURLY/DAILY`.
    #[arg(
        long,
        value_name = "H/D",
        default_value = "5000/50000",
        env = "POD_BUDGET_ROOM"
    )]
    budget_room: String,

    /// Decryptions for the whole pod, `HOURLY/DAILY`.
    #[arg(
        long,
        value_name = "H/D",
        default_value = "500000/5000000",
        env = "POD_BUDGET_GLOBAL"
    )]
    budget_global: String,

    /// How old a request may be, in seconds.
    #[arg(long, default_value_t = 300)]
    freshness_secs: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum PodKeySource {
    /// Released by KMS to this attested enclave (the ceremony on first start, unseal afterwards).
    Kms,
    /// A fresh random key at every start; nothing sealed to it survives a restart.
    InsecureEphemeral,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum NsmKind {
    /// /dev/nsm inside a Nitro enclave.
    Nitro,
    /// The mock NSM (local mode).
    Mock,
}

#[derive(Args, Debug)]
struct NsmArgs {
    /// Which NSM to use.
    #[arg(long, value_enum, default_value_t = NsmKind::Nitro, env = "POD_NSM")]
    nsm: NsmKind,

    /// Where the mock NSM keeps its CA (created on first use; the root clients pin is mock-root.pem there).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "pod-data/mock-nsm",
        env = "POD_MOCK_NSM_DIR"
    )]
    mock_state_dir: PathBuf,

    /// The file the mock NSM measures into PCR0..2; default: this binary.
    #[arg(long, value_name = "FILE")]
    mock_image: Option<PathBuf>,

    /// PCR3, PCR4 or PCR8 of the mock, `N=HEX` (48 bytes); repeatable.
    #[arg(long = "mock-pcr", value_name = "N=HEX")]
    mock_pcr: Vec<String>,
}

#[derive(Args, Debug)]
struct AttestArgs {
    #[command(flatten)]
    nsm: NsmArgs,

    /// A nonce to bind (hex, at most 512 bytes).
    #[arg(long, value_name = "HEX")]
    nonce: Option<String>,

    /// User data to bind (hex, at most 512 bytes).
    #[arg(long, value_name = "HEX")]
    user_data: Option<String>,

    /// A public key to bind: a file holding its DER bytes (at most 512 bytes).
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,

    /// Where to write the document; `-` for standard output.
    #[arg(long, short, value_name = "FILE", default_value = "-")]
    out: String,

    /// How to write the document.
    #[arg(long, value_enum, default_value_t = OutFormat::Cbor)]
    format: OutFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutFormat {
    /// Raw CBOR bytes.
    Cbor,
    /// Hex text.
    Hex,
    /// Base64 text.
    Base64,
}

fn nsm_config(args: &NsmArgs) -> anyhow::Result<NsmConfig> {
    Ok(match args.nsm {
        NsmKind::Nitro => NsmConfig::Nitro,
        NsmKind::Mock => {
            let mut pcrs = MockPcrConfig::default();
            for item in &args.mock_pcr {
                let (index, value) = item
                    .split_once('=')
                    .with_context(|| format!("--mock-pcr {item:?} is not N=HEX"))?;
                let value = hex::decode(value.trim())
                    .with_context(|| format!("--mock-pcr {item:?}: not hex"))?;
                match index.trim() {
                    "3" => pcrs.pcr3 = Some(value),
                    "4" => pcrs.pcr4 = Some(value),
                    "8" => pcrs.pcr8 = Some(value),
                    other => bail!(
                        "--mock-pcr: PCR{other} cannot be set (only 3, 4 and 8; 0..2 are measured)"
                    ),
                }
            }
            NsmConfig::Mock {
                state_dir: args.mock_state_dir.clone(),
                image: image_path(args.mock_image.clone())?,
                pcrs,
            }
        }
    })
}

fn image_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => std::env::current_exe().context("locating this binary to measure it"),
    }
}

fn decode_hex(name: &str, value: Option<&String>) -> anyhow::Result<Option<Vec<u8>>> {
    value
        .map(|v| hex::decode(v.trim()).with_context(|| format!("--{name} is not hex")))
        .transpose()
}

fn attest(args: AttestArgs) -> anyhow::Result<()> {
    let nsm = nsm::open(&nsm_config(&args.nsm)?)?;
    let public_key = args
        .public_key
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let request = AttestationRequest {
        user_data: decode_hex("user-data", args.user_data.as_ref())?,
        nonce: decode_hex("nonce", args.nonce.as_ref())?,
        public_key,
    };
    let document = nsm.attest(&request)?;
    tracing::info!(
        nsm = nsm.kind(),
        bytes = document.len(),
        "attestation document issued"
    );
    let bytes = match args.format {
        OutFormat::Cbor => document,
        OutFormat::Hex => format!("{}\n", hex::encode(&document)).into_bytes(),
        OutFormat::Base64 => format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(&document)
        )
        .into_bytes(),
    };
    if args.out == "-" {
        std::io::stdout()
            .write_all(&bytes)
            .context("writing to standard output")?;
    } else {
        std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out))?;
    }
    Ok(())
}

fn parse_limits(name: &str, text: &str) -> anyhow::Result<Limits> {
    let (h, d) = text
        .split_once('/')
        .with_context(|| format!("--{name} {text:?} is not HOURLY/DAILY"))?;
    Ok(Limits {
        hourly: h
            .trim()
            .parse()
            .with_context(|| format!("--{name}: {h:?} is not a number"))?,
        daily: d
            .trim()
            .parse()
            .with_context(|| format!("--{name}: {d:?} is not a number"))?,
    })
}

/// Process hardening that needs no privileges: no core dumps (they would hold the pod key), not ptrace-able by
/// other processes of the same user, and key pages kept out of swap where the memory-lock limit allows it.
fn harden() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "could not mark the process non-dumpable");
    }
    // MCL_FUTURE under a small RLIMIT_MEMLOCK would make later allocations fail, so lock only when the limit
    // is unlimited or large (root in an enclave, or a service given the capability).
    let enough = getrlimit(Resource::RLIMIT_MEMLOCK)
        .map(|(soft, _)| soft == nix::sys::resource::RLIM_INFINITY || soft >= 1 << 30)
        .unwrap_or(false);
    if enough {
        use nix::sys::mman::{MlockAllFlags, mlockall};
        match mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
            Ok(()) => tracing::info!("memory locked"),
            Err(e) => tracing::warn!(error = %e, "could not lock memory"),
        }
    } else {
        tracing::warn!(
            "RLIMIT_MEMLOCK is small: memory is not locked (keys could reach swap if the host swaps)"
        );
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    harden();
    let nsm = nsm::open(&nsm_config(&args.nsm)?)?;
    let config = PodConfig {
        freshness_ms: args.freshness_secs.saturating_mul(1000),
        budgets: BudgetConfig {
            per_user_room: parse_limits("budget-user-room", &args.budget_user_room)?,
            per_room: parse_limits("budget-room", &args.budget_room)?,
            global: parse_limits("budget-global", &args.budget_global)?,
        },
        ..PodConfig::default()
    };
    let mut pod = Pod::new(config, Arc::new(SystemClock), nsm.clone());
    let kms = match args.pod_key {
        PodKeySource::InsecureEphemeral => {
            tracing::warn!(
                "using an ephemeral pod key: documents sealed to it cannot be opened after a restart"
            );
            pod.unseal(pod_protocol::hpke::PrivateKey::generate()?)?;
            None
        }
        PodKeySource::Kms => Some(pod_enclave::kms::KmsConfig {
            endpoint: args.kms_endpoint.clone().context(
                "--pod-key kms needs --kms-endpoint (e.g. https://kms.us-east-1.amazonaws.com)",
            )?,
            region: args.kms_region.clone(),
            via: args.kms_via.clone(),
        }),
    };
    let health = pod.health();
    let limits = server::ServerLimits {
        max_connections: args.max_connections,
        frame_timeout: std::time::Duration::from_secs(args.frame_timeout_secs),
        ..server::ServerLimits::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = server::Listener::bind(&args.listen)
            .with_context(|| format!("binding {}", args.listen))?;
        eprintln!(
            "pod-enclave: serving on {} (nsm: {}, pod key: {})",
            args.listen,
            nsm.kind(),
            health
                .pod_key_fingerprint
                .map(hex::encode)
                .unwrap_or_else(|| "sealed, waiting for the parent to provision or unseal it through KMS".into())
        );
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
            }
            tracing::info!("shutdown requested");
        };
        server::run(listener, Arc::new(Mutex::new(pod)), limits, kms, shutdown).await;
        anyhow::Ok(())
    })?;
    eprintln!("pod-enclave: stopped; keys dropped");
    Ok(())
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
        Command::Attest(args) => attest(args),
        Command::Serve(args) => serve(args),
        Command::MockPcrs { image } => {
            let path = image_path(image)?;
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let [p0, p1, p2] = nsm::mock_pcrs_for_image(&bytes);
            println!(
                "{}",
                serde_json::json!({
                    "PCR0": hex::encode(p0),
                    "PCR1": hex::encode(p1),
                    "PCR2": hex::encode(p2),
                })
            );
            Ok(())
        }
    }
}
