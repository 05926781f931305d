//! `pod-enclave`: the Secure Pod enclave binary.
//!
//! A thin shell over the `pod_enclave` library: it parses the command line, picks the NSM (real or mock) at run
//! time, and does I/O.

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use pod_enclave::nsm::{self, AttestationRequest, MockPcrConfig, NsmConfig};
use std::io::Write as _;
use std::path::PathBuf;

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
