//! `attest-verify`: checks an AWS Nitro Enclaves attestation document from the command line.

use anyhow::{Context, bail};
use attestation_verifier::{ExpectedPcrs, Policy, UnixTime, VerifiedAttestation, Verifier};
use base64::Engine as _;
use clap::{Parser, ValueEnum};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exit status when the document does not verify under the policy.
const EXIT_REFUSED: u8 = 1;
/// Exit status when the command line or the input cannot be used at all.
const EXIT_USAGE: u8 = 2;
/// Largest input read, before decoding; the verifier's own limit on the decoded document is 32 KiB.
const MAX_INPUT: u64 = 256 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "attest-verify",
    version,
    about = "Verify an AWS Nitro Enclaves attestation document before trusting the enclave that sent it.",
    long_about = "Verify an AWS Nitro Enclaves attestation document before trusting the enclave that sent it.\n\n\
        Checks the COSE_Sign1 structure and its ES384 signature, the certificate chain up to a pinned root \
        (the AWS Nitro Enclaves root G1 unless --root is given), every certificate's validity at the \
        verification time, and the policy given by the options: expected PCRs, nonce, maximum age, debug mode.\n\n\
        Exit status: 0 when the document verifies under the policy (the decoded fields are printed), \
        1 when it does not (the reason is printed), 2 when the command line or the input is unusable.",
    after_help = "Examples:\n  \
        attest-verify --pcrs pcrs.json --nonce 5f1c... --max-age 5m doc.cbor\n  \
        curl -s \"$POD_URL/pod/attestation?nonce=$N\" | jq -r .document | attest-verify --pcrs pcrs.json --nonce $N -\n  \
        attest-verify --insecure-any-pcrs --at 2024-02-26T07:05:00Z --json doc.cbor"
)]
struct Args {
    /// The attestation document: a file path, or `-` for standard input. Raw CBOR, hex or base64 (detected, or
    /// set with --format).
    input: String,

    /// How the input is encoded.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,

    /// Verify as of this time instead of now: RFC 3339 (`2024-02-26T07:05:00Z`) or milliseconds since the Unix
    /// epoch. Certificates, and the maximum age, are checked at this time.
    #[arg(long, value_name = "RFC3339|UNIX-MS")]
    at: Option<String>,

    /// A PCR file: JSON `{"PCR0": "<hex>", ...}` as published by eif/build.sh (nitro-cli's `{"Measurements":
    /// {...}}` is accepted too). Every PCR it names must match.
    #[arg(long, value_name = "FILE")]
    pcrs: Option<PathBuf>,

    /// An expected PCR value, `N=HEX` with N in 0..=31; repeatable, combined with --pcrs.
    #[arg(long = "pcr", value_name = "N=HEX")]
    pcr: Vec<String>,

    /// The nonce the document must carry (hex). A document without a nonce then fails.
    #[arg(long, value_name = "HEX")]
    nonce: Option<String>,

    /// The oldest document accepted, relative to the verification time, e.g. `30s`, `5m`, `1h`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    max_age: Option<Duration>,

    /// The public key the document must bind (hex of its bytes, e.g. a DER SubjectPublicKeyInfo).
    #[arg(long, value_name = "HEX")]
    public_key: Option<String>,

    /// The user data the document must carry (hex).
    #[arg(long, value_name = "HEX")]
    user_data: Option<String>,

    /// Pin this root certificate (PEM) instead of the AWS Nitro Enclaves root G1, e.g. the mock root a local pod
    /// writes to its state directory. The AWS root is then not accepted.
    #[arg(long, value_name = "PEM")]
    root: Option<PathBuf>,

    /// Accept a debug-mode enclave (PCR0, PCR1 and PCR2 all zero). Its memory is readable by the parent
    /// instance, so it protects nothing: for development only.
    #[arg(long)]
    allow_debug: bool,

    /// Accept any enclave image (no PCR is checked). Proves only that some enclave on the pinned root's hardware
    /// signed the document; for inspection, never for trust.
    #[arg(long, conflicts_with_all = ["pcrs", "pcr"])]
    insecure_any_pcrs: bool,

    /// Print the result as JSON on standard output (also on failure).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Raw CBOR if it starts like a COSE_Sign1, else hex if it is all hex digits, else base64.
    Auto,
    /// Raw CBOR bytes.
    Cbor,
    /// Hex text.
    Hex,
    /// Base64 text (standard or URL-safe alphabet).
    Base64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let setup = (|| -> anyhow::Result<_> {
        let document = read_document(&args.input, args.format)?;
        let verifier = match &args.root {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("reading root certificate {}", path.display()))?;
                Verifier::with_root_pem(&pem)
                    .with_context(|| format!("root certificate {}", path.display()))?
            }
            None => Verifier::aws_nitro(),
        };
        let policy = build_policy(&args)?;
        let at = match &args.at {
            Some(text) => parse_time(text)?,
            None => now()?,
        };
        Ok((document, verifier, policy, at))
    })();
    let (document, verifier, policy, at) = match setup {
        Ok(v) => v,
        Err(e) => {
            report_error(json, "usage", &format!("{e:#}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match verifier.verify(&document, &policy, at) {
        Ok(verified) => {
            print_verified(&verified, json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            report_error(json, "refused", &e.to_string());
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

fn report_error(json: bool, kind: &str, message: &str) {
    if json {
        println!(
            "{}",
            serde_json::json!({"verified": false, "kind": kind, "error": message})
        );
    } else if kind == "refused" {
        eprintln!("attest-verify: REFUSED: {message}");
    } else {
        eprintln!("attest-verify: error: {message}");
    }
}

fn read_document(input: &str, format: Format) -> anyhow::Result<Vec<u8>> {
    let mut raw = Vec::new();
    if input == "-" {
        std::io::stdin()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut raw)
            .context("reading standard input")?;
    } else {
        std::fs::File::open(input)
            .with_context(|| format!("opening {input}"))?
            .take(MAX_INPUT + 1)
            .read_to_end(&mut raw)
            .with_context(|| format!("reading {input}"))?;
    }
    if raw.len() as u64 > MAX_INPUT {
        bail!("input is larger than {MAX_INPUT} bytes; an attestation document is about 5 KiB");
    }
    if raw.is_empty() {
        bail!("input is empty");
    }
    let format = match format {
        Format::Auto => detect(&raw),
        f => f,
    };
    match format {
        Format::Cbor | Format::Auto => Ok(raw),
        Format::Hex => {
            let text = std::str::from_utf8(&raw).context("hex input is not text")?;
            hex::decode(text.trim()).context("input is not valid hex")
        }
        Format::Base64 => {
            let text = std::str::from_utf8(&raw).context("base64 input is not text")?;
            let cleaned: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(&cleaned)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&cleaned))
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&cleaned))
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&cleaned))
                .context("input is not valid base64")
        }
    }
}

/// A COSE_Sign1 starts with tag 18 (0xd2) or a four-element array (0x84); neither is a hex digit or a base64
/// character, so the three encodings cannot be confused.
fn detect(raw: &[u8]) -> Format {
    match raw.first() {
        Some(0xd2) | Some(0x84) => Format::Cbor,
        _ => {
            let text = raw.trim_ascii();
            if !text.is_empty() && text.iter().all(u8::is_ascii_hexdigit) {
                Format::Hex
            } else {
                Format::Base64
            }
        }
    }
}

fn build_policy(args: &Args) -> anyhow::Result<Policy> {
    let mut policy = if args.insecure_any_pcrs {
        Policy::insecure_any_pcrs()
    } else {
        let mut expected = match &args.pcrs {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading PCR file {}", path.display()))?;
                ExpectedPcrs::from_json(&text)
                    .with_context(|| format!("PCR file {}", path.display()))?
            }
            None => ExpectedPcrs::new(),
        };
        for item in &args.pcr {
            let (index, value) = item
                .split_once('=')
                .with_context(|| format!("--pcr {item:?} is not N=HEX"))?;
            let index: u8 = index
                .trim()
                .parse()
                .with_context(|| format!("--pcr {item:?}: {index:?} is not a PCR index"))?;
            expected
                .insert_hex(index, value)
                .with_context(|| format!("--pcr {item:?}"))?;
        }
        if expected.is_empty() {
            bail!(
                "no expected PCRs: give --pcrs FILE or --pcr N=HEX (or --insecure-any-pcrs to inspect a \
                 document without trusting it)"
            );
        }
        Policy::new(expected)?
    };
    if args.allow_debug {
        policy = policy.insecure_allow_debug();
    }
    if let Some(n) = &args.nonce {
        policy = policy.nonce(hex::decode(n.trim()).context("--nonce is not hex")?);
    }
    if let Some(age) = args.max_age {
        policy = policy.max_age(age);
    }
    if let Some(k) = &args.public_key {
        policy = policy.public_key(hex::decode(k.trim()).context("--public-key is not hex")?);
    }
    if let Some(u) = &args.user_data {
        policy = policy.user_data(hex::decode(u.trim()).context("--user-data is not hex")?);
    }
    Ok(policy)
}

fn parse_time(text: &str) -> anyhow::Result<UnixTime> {
    if let Ok(ms) = text.trim().parse::<u64>() {
        return Ok(UnixTime::from_millis(ms));
    }
    let t = humantime::parse_rfc3339_weak(text.trim()).with_context(|| {
        format!("--at {text:?} is neither RFC 3339 nor milliseconds since the epoch")
    })?;
    system_time_to_unix(t)
}

fn now() -> anyhow::Result<UnixTime> {
    system_time_to_unix(SystemTime::now())
}

fn system_time_to_unix(t: SystemTime) -> anyhow::Result<UnixTime> {
    let d = t
        .duration_since(UNIX_EPOCH)
        .context("time is before the Unix epoch")?;
    Ok(UnixTime::from_millis(u64::try_from(d.as_millis())?))
}

fn rfc3339(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

fn opt_hex(v: Option<&[u8]>) -> serde_json::Value {
    v.map_or(serde_json::Value::Null, |b| hex::encode(b).into())
}

fn print_verified(v: &VerifiedAttestation, json: bool) {
    let ts = v.timestamp().as_millis();
    if json {
        let pcrs: serde_json::Map<String, serde_json::Value> = v
            .pcrs()
            .map(|(i, value)| (format!("PCR{i}"), hex::encode(value).into()))
            .collect();
        let out = serde_json::json!({
            "verified": true,
            "module_id": v.module_id(),
            "timestamp_ms": ts,
            "timestamp": rfc3339(ts),
            "debug": v.is_debug(),
            "root_sha256": hex::encode(v.root_sha256()),
            "pcrs": pcrs,
            "public_key": opt_hex(v.public_key()),
            "user_data": opt_hex(v.user_data()),
            "nonce": opt_hex(v.nonce()),
        });
        println!("{out}");
        return;
    }
    println!("OK: attestation document verified");
    println!("module_id:   {}", v.module_id());
    println!("timestamp:   {} ({ts} ms)", rfc3339(ts));
    println!("root sha256: {}", hex::encode(v.root_sha256()));
    if v.is_debug() {
        println!("debug mode:  YES (allowed by --allow-debug; this enclave protects nothing)");
    }
    for (i, value) in v.pcrs() {
        println!("PCR{i:<2}        {}", hex::encode(value));
    }
    let show = |name: &str, value: Option<&[u8]>| match value {
        Some(b) => println!("{name:<12} {} ({} bytes)", hex::encode(b), b.len()),
        None => println!("{name:<12} (absent)"),
    };
    show("public_key:", v.public_key());
    show("user_data:", v.user_data());
    show("nonce:", v.nonce());
}
