//! `podctl`: the Secure Pod command line.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use pod_client::{PodClient, keyfile};
use pod_protocol::membership::Action;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "podctl",
    version,
    about = "Use a Secure Pod: verify it, manage a data room, seal documents to it and open them through it.",
    long_about = "Use a Secure Pod: verify it, manage a data room, seal documents to it and open them through it.\n\n\
        Every command that talks to the pod first verifies its attestation (a fresh nonce, the pinned root and the \
        published PCRs) and refuses a pod that does not verify, or whose key differs from the one pinned with \
        `podctl attest`.",
    after_help = "A local pod prints the environment to use:\n  \
        export POD_URL=https://127.0.0.1:8443 POD_CACERT=pod-data/tls/cert.pem POD_ROOT=pod-data/mock-root.pem POD_PCRS=pod-data/pcrs.json"
)]
struct Cli {
    #[command(flatten)]
    pod: PodArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct PodArgs {
    /// The pod's URL.
    #[arg(long, global = true, env = "POD_URL", value_name = "URL")]
    pod: Option<String>,
    /// The proxy's TLS certificate (PEM), for a pod with a self-signed certificate; default: the web PKI.
    #[arg(long, global = true, env = "POD_CACERT", value_name = "PEM")]
    cacert: Option<PathBuf>,
    /// The attestation root (PEM); default: the AWS Nitro Enclaves root G1.
    #[arg(long, global = true, env = "POD_ROOT", value_name = "PEM")]
    root: Option<PathBuf>,
    /// The published PCR file of the pod's enclave image.
    #[arg(long, global = true, env = "POD_PCRS", value_name = "FILE")]
    pcrs: Option<PathBuf>,
    /// Where the pinned pod key fingerprint is kept.
    #[arg(
        long,
        global = true,
        env = "POD_PIN",
        value_name = "FILE",
        default_value = "pod-pin.json"
    )]
    pin: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a key pair: NAME.key (private, mode 0600) and NAME.pub (give it to the room owner).
    Keygen {
        /// The base name of the two files.
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
    },
    /// Verify the pod and pin its key (later commands refuse a different key).
    Attest {
        /// Replace an existing pin (after a verified key rotation).
        #[arg(long)]
        repin: bool,
    },
    /// Data rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Encrypt a file to the pod for a room (the pod is verified first).
    Seal {
        /// The room id.
        #[arg(long)]
        room: String,
        /// The file to seal.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the sealed document.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The document id (default: the input file's name).
        #[arg(long)]
        doc: Option<String>,
    },
    /// Open a sealed document through the pod: signed request, re-encryption for you, receipt checked, decrypted here.
    Open {
        /// Your key file.
        #[arg(long, value_name = "NAME.key")]
        key: PathBuf,
        /// The sealed document.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the plaintext.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Rotate the pod key (operators, on the parent instance): prepare, move every document, certify, verify.
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// Print the KMS key policy for the published PCR file (for `aws kms create-key --policy file://...`).
    Policy {
        /// The role of the parent instance (the enclave's KMS calls are signed with its credentials).
        #[arg(long, value_name = "ARN")]
        role_arn: String,
        /// The principal that administers the key (never given a cryptographic operation).
        #[arg(long, value_name = "ARN")]
        admin_arn: String,
        /// During a rotation: the PCR file of the image that moves documents to this key (the old pod). It may only
        /// unseal the key (`kms:Decrypt`), never generate one; render the policy again without it afterwards.
        #[arg(long, value_name = "FILE")]
        rotation_source_pcrs: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum RoomCommand {
    /// Create a room; prints only its id.
    Create {
        /// The owner's key file.
        #[arg(long, value_name = "NAME.key")]
        owner: PathBuf,
    },
    /// Grant a user access (owner or admin).
    Grant(MemberArgs),
    /// Revoke a user's access (owner, or admin for ordinary members).
    Revoke(MemberArgs),
    /// Show the room's owner, members and admins.
    Show {
        /// The room id.
        #[arg(long)]
        room: String,
    },
}

#[derive(Args, Debug)]
struct MemberArgs {
    /// The key file of the owner (or an admin) signing the change.
    #[arg(long, value_name = "NAME.key")]
    owner: PathBuf,
    /// The room id.
    #[arg(long)]
    room: String,
    /// The user's public key file.
    #[arg(long, value_name = "NAME.pub")]
    user: PathBuf,
    /// Make (or unmake, with revoke) the user an admin.
    #[arg(long)]
    admin: bool,
}

#[derive(Subcommand, Debug)]
enum RotateCommand {
    /// Load the successor pod key into the running (old) pod: generated there under a new KMS key, or an existing
    /// sealed key made by the new pod. Local mode makes the KMS key itself when neither is given.
    Prepare {
        /// The KMS key (with the new key policy, `podctl policy`) to generate the successor under.
        #[arg(long, value_name = "ID", conflicts_with = "sealed_key")]
        kms_key_id: Option<String>,
        /// A sealed successor key (the new pod's `sealed-pod-key.json`), loaded through KMS.
        #[arg(long, value_name = "FILE")]
        sealed_key: Option<PathBuf>,
    },
    /// Move every sealed document under a directory to the successor key, in place. Resumable: run it again after
    /// an interruption and it finishes where it stopped; documents already moved are skipped.
    Run {
        /// The directory of sealed documents (searched recursively; other files are reported and left alone).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// `rewrap`: the routine rotation, the document keys are rewrapped and the content is unchanged.
        /// `re-encrypt`: after a compromise, fresh document keys and the content encrypted again.
        #[arg(long, value_parser = ["rewrap", "re-encrypt"])]
        mode: String,
        /// The journal that makes the job resumable and the certificate possible.
        #[arg(long, value_name = "FILE", default_value = "rotation-journal.jsonl")]
        journal: PathBuf,
        /// Where to write the signed rotation certificate once every document is moved.
        #[arg(long, value_name = "FILE", default_value = "rotation-certificate.cbor")]
        certificate: PathBuf,
    },
    /// Verify a rotation certificate: every item signed by the old pod, the Merkle root, the signature.
    Verify {
        /// The certificate file.
        #[arg(value_name = "FILE")]
        certificate: PathBuf,
        /// The old pod key's fingerprint (hex) the certificate must be from.
        #[arg(long, value_name = "HEX")]
        old_pod: String,
        /// The fingerprint (hex SHA-256 of the SPKI) of the old pod's receipt key, as its attestation showed it
        /// (`podctl attest` and `podctl rotate run` print it). Required: a certificate names its own signing key, so
        /// only this comparison ties it to the old pod.
        #[arg(long, value_name = "HEX")]
        old_receipt_key: String,
        /// Also check that every sealed document in this directory is named by the certificate.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Fetch the whole audit log and verify every signature and link; non-zero exit on any gap or tampering.
    Verify {
        /// Print every entry.
        #[arg(long)]
        show: bool,
        /// Where checkpoints seen before are kept, per pod key; the log must still reach every one (so truncation
        /// shows).
        #[arg(
            long,
            value_name = "FILE",
            default_value = "pod-audit-checkpoints.json",
            env = "POD_AUDIT_CHECKPOINTS"
        )]
        checkpoints: PathBuf,
        /// Receipts kept by clients (the browser client's "Export my receipts" file): each must name an entry the
        /// log still has, so a log the parent truncated or rewrote after handing them out is caught.
        #[arg(long, value_name = "FILE")]
        receipts: Option<PathBuf>,
    },
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))
}

fn client(args: &PodArgs) -> anyhow::Result<PodClient> {
    client_pinned(args, true)
}

fn client_pinned(args: &PodArgs, use_pin: bool) -> anyhow::Result<PodClient> {
    let url = args
        .pod
        .as_deref()
        .context("no pod: give --pod URL or set POD_URL")?;
    let cacert = args
        .cacert
        .as_ref()
        .map(|p| read(p, "--cacert"))
        .transpose()?;
    let root = args.root.as_ref().map(|p| read(p, "--root")).transpose()?;
    let pcrs = read(
        args.pcrs
            .as_ref()
            .context("no PCR file: give --pcrs FILE or set POD_PCRS")?,
        "--pcrs",
    )?;
    let mut c = PodClient::new(url, cacert.as_deref(), root.as_deref(), &pcrs)?;
    if let Some(text) = use_pin
        .then(|| std::fs::read_to_string(&args.pin).ok())
        .flatten()
    {
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a pin file", args.pin.display()))?;
        let fpr = v
            .get("pod_key_fingerprint")
            .and_then(|f| f.as_str())
            .and_then(|f| hex::decode(f).ok())
            .and_then(|f| <[u8; 32]>::try_from(f).ok())
            .with_context(|| format!("{} has no pod_key_fingerprint", args.pin.display()))?;
        c.pin(fpr);
    }
    Ok(c)
}

/// The receipts for pod key `pod_key` (hex) in a `secure-pod-receipts/v1` file:
/// `{"format": …, "receipts": {"<pod key fingerprint>": ["<base64 receipt>", …]}}`.
fn read_receipts(path: &PathBuf, pod_key: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_str(&read(path, "--receipts")?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    if v.get("format").and_then(|f| f.as_str()) != Some("secure-pod-receipts/v1") {
        bail!("{} is not a secure-pod-receipts/v1 file", path.display());
    }
    let list = v
        .pointer(&format!("/receipts/{pod_key}"))
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|r| {
            r.as_str()
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                .with_context(|| format!("{}: a receipt is not base64", path.display()))
        })
        .collect()
}

fn room_id(text: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("{text:?} is not a room id (64 hex digits)"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { out } => {
            let secrets = keyfile::generate(&out)?;
            println!(
                "wrote {} and {}",
                out.with_extension("key").display(),
                out.with_extension("pub").display()
            );
            println!("user id {}", hex::encode(secrets.bundle.id()));
        }
        Command::Attest { repin } => {
            let pod = client_pinned(&cli.pod, !repin)?.attest().await?;
            let fpr = hex::encode(pod.fingerprint);
            std::fs::write(
                &cli.pod.pin,
                serde_json::json!({"pod_key_fingerprint": fpr}).to_string(),
            )
            .with_context(|| format!("writing {}", cli.pod.pin.display()))?;
            println!(
                "pod verified: attestation signed by the pinned root, PCRs match, nonce fresh"
            );
            println!("pod key   {fpr} (pinned in {})", cli.pod.pin.display());
            println!(
                "receipts  {} (the receipt key's fingerprint: audit entries, receipts, rotation certificates)",
                hex::encode(pod_protocol::keys::fingerprint(
                    &pod.receipt_key.to_spki_der()
                ))
            );
            println!("config    {}", hex::encode(&pod.config_hash));
        }
        Command::Room(RoomCommand::Create { owner }) => {
            let owner = keyfile::read_key(&owner)?;
            let c = client(&cli.pod)?;
            c.attest().await?;
            println!("{}", hex::encode(c.create_room(&owner).await?));
        }
        Command::Room(cmd @ (RoomCommand::Grant(_) | RoomCommand::Revoke(_))) => {
            let (grant, m) = match cmd {
                RoomCommand::Grant(m) => (true, m),
                RoomCommand::Revoke(m) => (false, m),
                _ => bail!("unreachable"),
            };
            let by = keyfile::read_key(&m.owner)?;
            let user = keyfile::parse_public(&read(&m.user, "--user")?)?;
            let room = room_id(&m.room)?;
            let c = client(&cli.pod)?;
            c.attest().await?;
            let (action, subject) = match (grant, m.admin) {
                (true, false) => (Action::Grant, user.as_bytes().to_vec()),
                (true, true) => (Action::AddAdmin, user.as_bytes().to_vec()),
                (false, false) => (Action::Revoke, user.id().to_vec()),
                (false, true) => (Action::RemoveAdmin, user.id().to_vec()),
            };
            let seq = c.change(&room, &by, action, subject).await?;
            println!(
                "{action:?} {} (membership log entry {seq})",
                hex::encode(user.id())
            );
        }
        Command::Room(RoomCommand::Show { room }) => {
            let c = client(&cli.pod)?;
            let r = c.room(&room_id(&room)?).await?;
            println!("room    {}", hex::encode(r.id()));
            println!("owner   {}", hex::encode(r.owner().id()));
            println!(
                "log     {} entries, head {}",
                r.seq() + 1,
                hex::encode(r.head())
            );
            println!("members {}", r.member_count());
        }
        Command::Seal {
            room,
            input,
            out,
            doc,
        } => {
            let plaintext =
                std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let doc = doc.unwrap_or_else(|| {
                input
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            let c = client(&cli.pod)?;
            let sealed = c.seal(&room_id(&room)?, doc.as_bytes(), &plaintext).await?;
            std::fs::write(&out, &sealed).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "sealed {} ({} bytes) to the verified pod key as {doc:?} → {}",
                input.display(),
                plaintext.len(),
                out.display()
            );
        }
        Command::Open { key, input, out } => {
            let user = keyfile::read_key(&key)?;
            let c = client(&cli.pod)?;
            // Streamed: bounded memory whatever the size; a progress line for large files on a terminal.
            let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let progress = move |done: u64, total: u64| {
                if show && total > 4 << 20 {
                    eprint!(
                        "\r  {:.1} / {:.1} MiB sent",
                        done as f64 / 1048576.0,
                        total as f64 / 1048576.0
                    );
                    if done >= total {
                        eprintln!();
                    }
                }
            };
            let n = c.open_stream(&user, &input, &out, progress).await?;
            println!(
                "opened {} ({n} bytes, receipt verified) → {}",
                input.display(),
                out.display()
            );
        }
        Command::Rotate(RotateCommand::Prepare {
            kms_key_id,
            sealed_key,
        }) => {
            let c = client(&cli.pod)?;
            let sealed = sealed_key
                .map(|p| -> anyhow::Result<serde_json::Value> {
                    Ok(serde_json::from_str(&read(&p, "--sealed-key")?)?)
                })
                .transpose()?;
            let fpr = c.prepare_rotation(kms_key_id.as_deref(), sealed).await?;
            println!(
                "successor pod key {fpr} loaded; next: podctl rotate run --dir DIR --mode rewrap|re-encrypt"
            );
        }
        Command::Rotate(RotateCommand::Run {
            dir,
            mode,
            journal,
            certificate,
        }) => {
            // clap's value parser admits only the two names.
            let mode = pod_protocol::rotation::Mode::from_name(&mode)
                .ok_or_else(|| anyhow::anyhow!("--mode must be rewrap or re-encrypt"))?;
            let c = client(&cli.pod)?;
            let started = std::time::Instant::now();
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut last_print = std::time::Instant::now();
            let mut progress = |done: u64, total: u64| {
                // A bar on a terminal; a line every ~2 s otherwise (logs of a long job).
                let every = if tty { 100 } else { 2000 };
                if done < total && last_print.elapsed().as_millis() < every {
                    return;
                }
                last_print = std::time::Instant::now();
                let width = 30u64;
                let filled = (done * width).checked_div(total).unwrap_or(width);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                let eta = (total - done) as f64 / rate.max(0.001);
                let line = format!(
                    "[{}{}] {done}/{total} documents, {rate:.0}/s, about {eta:.0} s left",
                    "#".repeat(filled as usize),
                    ".".repeat((width - filled) as usize)
                );
                if tty {
                    eprint!("\r{line}");
                    if done >= total {
                        eprintln!();
                    }
                } else {
                    eprintln!("{line}");
                }
            };
            let report = c.rotate_dir(&dir, mode, &journal, &mut progress).await?;
            for (p, why) in &report.skipped {
                eprintln!("not moved {}: {why}", p.display());
            }
            for p in &report.ignored {
                eprintln!("ignored {} (not a sealed document)", p.display());
            }
            println!(
                "moved {} documents ({} already moved, {} interrupted moves finished, {} not moved, {} other files; {:.1} MB of sealed documents) in {:.1} s",
                report.rotated,
                report.already,
                report.resumed,
                report.skipped.len(),
                report.ignored.len(),
                report.bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            let (file, cert) = c.certify_rotation(&dir, &journal).await?;
            std::fs::write(&certificate, &file)
                .with_context(|| format!("writing {}", certificate.display()))?;
            println!(
                "rotation certificate: {} documents, {} → {}, Merkle root {} → {}",
                cert.count,
                hex::encode(cert.old_pod),
                hex::encode(cert.new_pod),
                hex::encode(cert.root),
                certificate.display()
            );
            println!(
                "old receipt key {} (keep it with the certificate: `podctl rotate verify` needs it)",
                hex::encode(pod_protocol::keys::fingerprint(&cert.old_receipt_spki))
            );
            if !report.skipped.is_empty() {
                bail!(
                    "{} files were not moved (listed above)",
                    report.skipped.len()
                );
            }
        }
        Command::Rotate(RotateCommand::Verify {
            certificate,
            old_pod,
            old_receipt_key,
            dir,
        }) => {
            let bytes = std::fs::read(&certificate)
                .with_context(|| format!("reading {}", certificate.display()))?;
            let fpr = |h: &str, what: &str| {
                hex::decode(h.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .with_context(|| format!("{what} is not a fingerprint (64 hex digits)"))
            };
            let old = fpr(&old_pod, "--old-pod")?;
            let receipt = fpr(&old_receipt_key, "--old-receipt-key")?;
            let (c, items) =
                pod_client::rotate::verify_certificate(&bytes, &old, &receipt, dir.as_deref())?;
            println!(
                "rotation certificate verified: {} documents ({:?}), {} → {}, root {}, receipt key {}",
                items.len(),
                c.mode,
                hex::encode(c.old_pod),
                hex::encode(c.new_pod),
                hex::encode(c.root),
                hex::encode(pod_protocol::keys::fingerprint(&c.old_receipt_spki))
            );
            if dir.is_some() {
                println!("every sealed document in the directory is named by the certificate");
            }
        }
        Command::Policy {
            role_arn,
            admin_arn,
            rotation_source_pcrs,
        } => {
            let pcrs = read(
                cli.pod
                    .pcrs
                    .as_ref()
                    .context("no PCR file: give --pcrs FILE or set POD_PCRS")?,
                "--pcrs",
            )?;
            let source = rotation_source_pcrs
                .map(|p| read(&p, "--rotation-source-pcrs"))
                .transpose()?;
            let policy = pod_client::policy::render_for_aws(
                &pcrs,
                source.as_deref(),
                &role_arn,
                &admin_arn,
            )?;
            println!("{}", serde_json::to_string_pretty(&policy)?);
        }
        Command::Audit(AuditCommand::Verify {
            show,
            checkpoints,
            receipts,
        }) => {
            let c = client(&cli.pod)?;
            // Checkpoints are kept per pod key: each key signs its own audit chain, and a rotation starts a new one.
            let pod_key = hex::encode(c.attest().await?.fingerprint);
            let mut all: serde_json::Map<String, serde_json::Value> =
                match std::fs::read_to_string(&checkpoints)
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                {
                    Some(serde_json::Value::Object(m)) => m,
                    // The earlier format: a plain list, for the one pod this client knew.
                    Some(list @ serde_json::Value::Array(_)) => {
                        std::iter::once((pod_key.clone(), list)).collect()
                    }
                    _ => serde_json::Map::new(),
                };
            let mut saved: Vec<String> = all
                .get(&pod_key)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let earlier: Vec<Vec<u8>> = saved.iter().filter_map(|h| hex::decode(h).ok()).collect();
            let kept = receipts
                .map(|p| read_receipts(&p, &pod_key))
                .transpose()?
                .unwrap_or_default();
            let (entries, summary, current) = c.audit_with(&earlier, &kept).await?;
            if !kept.is_empty() {
                println!(
                    "{} kept receipts checked: each names an entry the log has",
                    kept.len()
                );
            }
            if let Some(cp) = current {
                saved.push(hex::encode(cp));
                // Keep the latest few: each one pins the log's length at its time.
                let keep = saved.len().saturating_sub(16);
                saved.drain(..keep);
                all.insert(pod_key, serde_json::json!(saved));
                std::fs::write(&checkpoints, serde_json::Value::Object(all).to_string())
                    .with_context(|| format!("writing {}", checkpoints.display()))?;
            }
            if show {
                for e in &entries {
                    println!(
                        "{:>6} {} user {}… room {}… membership {}… doc {:?} {:?}: {}",
                        e.seq,
                        e.time_ms,
                        hex::encode(&e.user[..4]),
                        hex::encode(&e.room[..4]),
                        hex::encode(&e.membership_head[..4]),
                        String::from_utf8_lossy(&e.doc),
                        e.decision,
                        e.reason
                    );
                }
            }
            let refused = entries
                .iter()
                .filter(|e| e.decision != pod_protocol::audit::Decision::Allow)
                .count();
            println!(
                "audit log verified: {} entries ({refused} refused or alerts), every signature and link intact, head {}",
                summary.entries,
                hex::encode(summary.head)
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("podctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
