//! `pod-proxy local`: the whole pod on one machine. kms-local, a KMS key pinned to the mock enclave's PCRs, the
//! enclave with the mock NSM in its own process, the KMS relay (used, not bypassed), and the proxy on HTTPS with a
//! self-signed certificate. The enclave is restarted if it dies, and unseals again through KMS.

use crate::enclave::EnclaveAddr;
use crate::parent::{KmsSettings, Parent, ParentConfig};
use crate::relay;
use anyhow::{Context as _, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Options of `pod-proxy local`.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The HTTPS address.
    pub listen: String,
}

/// A child process, stopped with SIGTERM (then killed) when dropped.
struct Service {
    name: &'static str,
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::info!(service = self.name, "stopped");
    }
}

/// Finds a sibling binary, building it with cargo when it is missing and cargo is at hand.
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()?;
    let dir = here.parent().context("the executable has no directory")?;
    let path = dir.join(name);
    if path.exists() {
        return Ok(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = dir.ends_with("release");
    eprintln!("pod-proxy local: building {name} (first run)...");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--bin", name]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("running cargo to build the pod's binaries")?;
    if !status.success() || !path.exists() {
        bail!("{name} is not built and could not be built; run `cargo build --release --bins`");
    }
    Ok(path)
}

fn kms_call(addr: &str, op: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.{op}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (_, json) = response
        .split_once("\r\n\r\n")
        .context("malformed answer from kms-local")?;
    let v: serde_json::Value = serde_json::from_str(json)?;
    if let Some(kind) = v.get("__type") {
        bail!(
            "kms-local refused {op}: {kind} {}",
            v.get("message").cloned().unwrap_or_default()
        );
    }
    Ok(v)
}

/// A kms-local key whose policy is the one operators render (`podctl policy`) for these PCRs; kms-local has one
/// caller, so both principals are it.
fn create_key(kms_addr: &str, pcrs_text: &str, description: &str) -> anyhow::Result<String> {
    let policy = pod_client::policy::render(pcrs_text, "*", "*")?;
    let out = kms_call(
        kms_addr,
        "CreateKey",
        &serde_json::json!({"Description": description, "Policy": policy.to_string()}),
    )?;
    Ok(out
        .pointer("/KeyMetadata/KeyId")
        .and_then(serde_json::Value::as_str)
        .context("CreateKey answered no KeyId")?
        .to_owned())
}

fn start_kms(bin: &Path, state: &Path) -> anyhow::Result<(Service, String)> {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--no-aws-root", "--state-dir"])
        .arg(state.join("kms"))
        .arg("--root")
        .arg(state.join("mock-root.pem"))
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kms-local")?;
    let mut reader = BufReader::new(child.stderr.take().context("kms-local stderr")?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Keep forwarding kms-local's log: a closed pipe would kill it at its next log line.
    std::thread::spawn(move || {
        let mut rest = String::new();
        while reader.read_line(&mut rest).is_ok_and(|n| n > 0) {
            eprint!("kms-local: {rest}");
            rest.clear();
        }
    });
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .filter(|a| a.contains(':'))
        .context("kms-local did not say where it listens")?
        .to_owned();
    Ok((
        Service {
            name: "kms-local",
            child,
        },
        addr,
    ))
}

fn start_enclave(bin: &Path, state: &Path, kms_addr: &str) -> anyhow::Result<Service> {
    let child = Command::new(bin)
        .args([
            "serve",
            "--nsm",
            "mock",
            "--pod-key",
            "kms",
            "--mock-state-dir",
        ])
        .arg(state.join("nsm"))
        .arg("--listen")
        .arg(format!("unix:{}", state.join("enclave.sock").display()))
        .arg("--kms-endpoint")
        .arg(format!("http://{kms_addr}"))
        .arg("--kms-via")
        .arg(format!("unix:{}", state.join("kms-relay.sock").display()))
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the enclave")?;
    Ok(Service {
        name: "pod-enclave",
        child,
    })
}

fn self_signed_tls(state: &Path) -> anyhow::Result<(String, String)> {
    let dir = state.join("tls");
    std::fs::create_dir_all(&dir)?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert_path.exists() || !key_path.exists() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        let cert = params.self_signed(&key)?;
        std::fs::write(&cert_path, cert.pem())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&key_path)?;
            f.write_all(key.serialize_pem().as_bytes())?;
        }
    }
    Ok((
        std::fs::read_to_string(cert_path)?,
        std::fs::read_to_string(key_path)?,
    ))
}

/// Runs the local pod until Ctrl-C.
pub async fn run(opts: LocalOptions) -> anyhow::Result<()> {
    let state = std::fs::canonicalize(&opts.state_dir)
        .or_else(|_| {
            std::fs::create_dir_all(&opts.state_dir)?;
            std::fs::canonicalize(&opts.state_dir)
        })
        .context("creating the state directory")?;
    let enclave_bin = binary("pod-enclave")?;
    let kms_bin = binary("kms-local")?;

    // The mock NSM's CA and the PCRs of this enclave binary.
    let made = Command::new(&enclave_bin)
        .args([
            "attest",
            "--nsm",
            "mock",
            "--out",
            "/dev/null",
            "--mock-state-dir",
        ])
        .arg(state.join("nsm"))
        .output()?;
    if !made.status.success() {
        bail!(
            "the mock NSM could not start: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    std::fs::copy(state.join("nsm/mock-root.pem"), state.join("mock-root.pem"))?;
    let pcrs = Command::new(&enclave_bin)
        .args(["mock-pcrs", "--image"])
        .arg(&enclave_bin)
        .output()?;
    let pcrs_text = String::from_utf8(pcrs.stdout)?;
    let pcrs_json: serde_json::Value = serde_json::from_str(&pcrs_text)?;
    std::fs::write(state.join("pcrs.json"), &pcrs_text)?;

    let (kms, kms_addr) = start_kms(&kms_bin, &state)?;
    let key_file = state.join("kms-key.json");
    let key_id = match std::fs::read_to_string(&key_file)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        Some(k) => {
            if k.get("pcrs") != Some(&pcrs_json) {
                bail!(
                    "the enclave binary changed since this pod's KMS key was created, so its PCRs no longer match the \
                     key policy and KMS will not release the pod key to it. Documents sealed to the old pod key need \
                     the rotation procedure; to start over locally, remove {}",
                    state.display()
                );
            }
            k.get("key_id")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        }
        None => {
            let id = create_key(&kms_addr, &pcrs_text, "Secure Pod local pod key")?;
            std::fs::write(
                &key_file,
                serde_json::json!({"key_id": id, "pcrs": pcrs_json}).to_string(),
            )?;
            id
        }
    };

    // The KMS relay, in this process: the enclave reaches kms-local only through it.
    let relay_listener =
        relay::Listener::bind(&relay::ListenAddr::Unix(state.join("kms-relay.sock"))).await?;
    relay::check_target(&kms_addr, &relay::Allowlist::default())?;
    tokio::spawn(relay::run(
        relay_listener,
        kms_addr.clone(),
        std::future::pending(),
    ));

    let mut enclave = start_enclave(&enclave_bin, &state, &kms_addr)?;
    let parent = Arc::new(
        Parent::open(ParentConfig {
            state_dir: state.clone(),
            enclave: EnclaveAddr::Unix(state.join("enclave.sock")),
            key_factory: Some({
                let addr = kms_addr.clone();
                let pcrs_text = pcrs_text.clone();
                Arc::new(move || {
                    create_key(&addr, &pcrs_text, "Secure Pod local successor pod key")
                        .map_err(|e| e.to_string())
                })
            }),
            kms: KmsSettings {
                key_id,
                pod_name: "local-pod".into(),
                credentials: crate::parent::Credentials::Static {
                    access_key_id: "AKIDLOCAL".into(),
                    secret_access_key: "local".into(),
                    session_token: None,
                },
            },
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    start_session(&parent).await?;

    let (cert, key) = self_signed_tls(&state)?;
    let tls = crate::http::tls_config(&cert, &key)?;
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::run(listener, tls, parent.clone(), async {
        let _ = stop_rx.await;
    }));
    println!("Secure Pod is running locally (Ctrl-C stops it). In another shell:");
    println!(
        "export POD_URL=https://{addr} POD_CACERT={s}/tls/cert.pem POD_ROOT={s}/mock-root.pem POD_PCRS={s}/pcrs.json",
        s = state.display()
    );
    let _ = std::io::stdout().flush();

    // Supervise the enclave: restart it when it dies and unseal again.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Ok(Some(status)) = enclave.child.try_wait() {
                    eprintln!("pod-proxy local: the enclave stopped ({status}); restarting it");
                    enclave = start_enclave(&enclave_bin, &state, &kms_addr)?;
                    if let Err(e) = start_session(&parent).await {
                        eprintln!("pod-proxy local: the restarted enclave is not ready: {e}");
                    }
                }
            }
        }
    }
    eprintln!("pod-proxy local: stopping");
    let _ = stop_tx.send(());
    let _ = server.await;
    drop(enclave);
    drop(kms);
    Ok(())
}

/// Waits for the enclave's socket and brings it to ready.
async fn start_session(parent: &Parent) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..100 {
        match parent.start_session().await {
            Ok(h) if h.status == "ready" => {
                eprintln!(
                    "pod-proxy local: pod ready, key fingerprint {}",
                    h.key_fingerprint.unwrap_or_default()
                );
                return Ok(());
            }
            Ok(h) => {
                last = Some(format!(
                    "enclave {}: {}",
                    h.status,
                    h.sealed_reason.unwrap_or_default()
                ))
            }
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the enclave did not become ready: {}",
        last.unwrap_or_default()
    )
}
