//! Helpers for the end-to-end tests: locating the workspace's binaries and running them.
//!
//! The tests run the real binaries as a person would. `cargo test --workspace` builds every binary before any
//! test runs; [`bin`] finds them next to the test executable.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Standard base64, as the pod's JSON API carries bytes.
pub fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The path of a workspace binary built by the same `cargo test` run.
///
/// # Panics
/// When the binary has not been built, with a message saying how to build it (this is test-support code).
#[allow(clippy::panic, clippy::expect_used)]
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    // Test binaries live in target/<profile>/deps, tools in target/<profile>: look beside the executable, then
    // one level up.
    let here = exe.parent().expect("an executable has a directory");
    let path = [Some(here), here.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| here.join(name));
    if !path.exists() {
        panic!(
            "{} is not built; run the suite with `cargo test --workspace` (or `cargo build --bins` first)",
            path.display()
        );
    }
    path
}

/// Runs a binary with arguments and returns its output.
#[allow(clippy::expect_used)]
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .output()
        .expect("the binary starts")
}

/// The directory of the real attestation vectors shipped with the verifier's tests.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("attestation-verifier")
        .join("tests")
        .join("vectors")
}

/// A blocking stand-in for the parent's side of the enclave link, speaking the frames of `pod_protocol::link`.
/// (The real parent is the proxy; this client is what the tests use to drive an enclave process.)
pub mod parent {
    use pod_protocol::frame::{self, Frame};
    use pod_protocol::link::{self, kind};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::Duration;

    /// One connection to an enclave.
    pub struct Link {
        stream: UnixStream,
        next_id: u64,
        /// Audit entries the enclave asked to store, in order.
        pub audit_log: Vec<Vec<u8>>,
    }

    /// A reply frame.
    #[derive(Debug)]
    pub struct Reply {
        /// Message type.
        pub kind: u64,
        /// Body.
        pub body: Vec<u8>,
    }

    /// What a re-encryption gave.
    #[derive(Debug)]
    pub enum ReEncrypted {
        /// The user's document (prefix, header, chunks) and the receipt.
        Released { document: Vec<u8>, receipt: Vec<u8> },
        /// Refused with a code and a message.
        Refused { code: String, message: String },
        /// An error frame.
        Error { code: String, message: String },
    }

    /// A refusal or error frame as a [`ReEncrypted`].
    fn failure(reply: &Reply) -> std::io::Result<ReEncrypted> {
        let (code, message) =
            link::decode_code_message(&reply.body).map_err(std::io::Error::other)?;
        let (code, message) = (code.to_owned(), message.to_owned());
        Ok(if reply.kind == kind::REFUSED {
            ReEncrypted::Refused { code, message }
        } else {
            ReEncrypted::Error { code, message }
        })
    }

    impl Link {
        /// Connects, retrying for up to ten seconds while the enclave starts.
        pub fn connect(path: &Path) -> std::io::Result<Self> {
            let mut last = None;
            for _ in 0..200 {
                match UnixStream::connect(path) {
                    Ok(stream) => {
                        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                        return Ok(Self {
                            stream,
                            next_id: 1,
                            audit_log: Vec::new(),
                        });
                    }
                    Err(e) => {
                        last = Some(e);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other("no connection")))
        }

        /// Sends one frame.
        pub fn send(&mut self, kind: u64, body: &[u8]) -> std::io::Result<u64> {
            let id = self.next_id;
            self.next_id += 1;
            let bytes = frame::encode(&Frame {
                request_id: id,
                kind,
                body,
            })
            .map_err(std::io::Error::other)?;
            self.stream.write_all(&bytes)?;
            Ok(id)
        }

        /// Reads one frame.
        pub fn recv(&mut self) -> std::io::Result<Reply> {
            let mut prefix = [0u8; frame::PREFIX_LEN];
            self.stream.read_exact(&mut prefix)?;
            let len = frame::body_len(prefix).map_err(std::io::Error::other)?;
            let mut buf = vec![0u8; len];
            self.stream.read_exact(&mut buf)?;
            let f = frame::parse(&buf).map_err(std::io::Error::other)?;
            Ok(Reply {
                kind: f.kind,
                body: f.body.to_vec(),
            })
        }

        /// Sends a request and reads its reply.
        pub fn call(&mut self, kind: u64, body: &[u8]) -> std::io::Result<Reply> {
            self.send(kind, body)?;
            self.recv()
        }

        /// Resumes the enclave's audit chain from the entries this link has stored.
        pub fn resume_audit(&mut self) -> std::io::Result<Reply> {
            let last = self.audit_log.last().cloned();
            self.call(
                kind::RESUME_AUDIT,
                &link::encode_optional_bytes(last.as_deref()),
            )
        }

        /// Asks for an attestation document.
        pub fn attestation(&mut self, nonce: &[u8]) -> std::io::Result<Reply> {
            self.call(kind::ATTESTATION, &link::encode_optional_bytes(Some(nonce)))
        }

        /// Loads a room.
        pub fn sync_room(&mut self, entries: &[Vec<u8>]) -> std::io::Result<Reply> {
            let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
            self.call(kind::SYNC_ROOM, &link::encode_bytes_list(&refs))
        }

        /// Appends a membership entry.
        pub fn append(&mut self, entry: &[u8]) -> std::io::Result<Reply> {
            self.call(kind::APPEND_MEMBERSHIP, entry)
        }

        /// Runs a whole re-encryption of `sealed` (prefix, header and body held in memory).
        pub fn re_encrypt(
            &mut self,
            request: &[u8],
            sealed: &[u8],
        ) -> std::io::Result<ReEncrypted> {
            let (_, start) = pod_protocol::envelope::read_header(sealed)
                .map_err(std::io::Error::other)?
                .ok_or_else(|| std::io::Error::other("short document"))?;
            let header = sealed.get(..start).unwrap_or_default();
            let body = sealed.get(start..).unwrap_or_default();
            let chunks: Vec<&[u8]> = body
                .chunks(pod_protocol::stream::SEALED_CHUNK_SIZE)
                .collect();
            let count = chunks.len();
            let mut it = chunks
                .into_iter()
                .enumerate()
                .map(|(i, c)| (c.to_vec(), i + 1 == count));
            let mut pieces: Vec<Vec<u8>> = Vec::new();
            let outcome = self.re_encrypt_stream(
                request,
                header,
                || it.next(),
                |piece| pieces.push(piece.to_vec()),
            )?;
            Ok(match outcome {
                ReEncrypted::Released { receipt, .. } => ReEncrypted::Released {
                    document: pieces.concat(),
                    receipt,
                },
                other => other,
            })
        }

        /// Runs a re-encryption chunk by chunk: `next_chunk` yields stored chunks with their last flag; `output`
        /// receives the re-encrypted document's prefix and header first, then each re-encrypted chunk. On success
        /// `document` holds only the prefix and header.
        pub fn re_encrypt_stream(
            &mut self,
            request: &[u8],
            header: &[u8],
            mut next_chunk: impl FnMut() -> Option<(Vec<u8>, bool)>,
            mut output: impl FnMut(&[u8]),
        ) -> std::io::Result<ReEncrypted> {
            let reply = self.call(
                kind::RE_ENCRYPT,
                &link::encode_bytes_list(&[request, header]),
            )?;
            if reply.kind == kind::ERROR {
                return failure(&reply);
            }
            if reply.kind != kind::AUDIT_APPEND {
                return Err(std::io::Error::other(
                    "the enclave must ask for the audit entry first",
                ));
            }
            let (seq, entry) =
                link::decode_seq_bytes(&reply.body).map_err(std::io::Error::other)?;
            self.audit_log.push(entry.to_vec());
            let hash = pod_protocol::keys::labeled_hash("audit", entry);
            let reply = self.call(kind::AUDIT_ACK, &link::encode_seq_bytes(seq, &hash))?;
            match reply.kind {
                kind::REFUSED | kind::ERROR => return failure(&reply),
                kind::RELEASED => {}
                other => return Err(std::io::Error::other(format!("unexpected reply {other}"))),
            }
            let parts = link::decode_bytes_n(&reply.body, 2).map_err(std::io::Error::other)?;
            let (Some(header), Some(receipt)) = (parts.first(), parts.get(1)) else {
                return Err(std::io::Error::other("released without header and receipt"));
            };
            let document = header.to_vec();
            let receipt = receipt.to_vec();
            output(&document);
            while let Some((chunk, last)) = next_chunk() {
                let reply = self.call(if last { kind::LAST_CHUNK } else { kind::CHUNK }, &chunk)?;
                if reply.kind == kind::ERROR {
                    return failure(&reply);
                }
                output(&reply.body);
                if last {
                    break;
                }
            }
            Ok(ReEncrypted::Released { document, receipt })
        }
    }
}

/// Rooms, users and requests as the tests and tools need them.
pub mod fixtures {
    use pod_protocol::envelope::Header;
    use pod_protocol::hpke;
    use pod_protocol::keys::{UserSecrets, fingerprint};
    use pod_protocol::membership::{Action, Room, SignedEntry, genesis_entry};
    use pod_protocol::request::{Operation, Request, SignedRequest};
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Milliseconds since the epoch, from the system clock.
    pub fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// A room with its owner and one member.
    pub struct RoomFixture {
        /// The owner.
        pub owner: UserSecrets,
        /// The member.
        pub member: UserSecrets,
        /// The membership log: genesis and the grant.
        pub log: Vec<SignedEntry>,
    }

    impl RoomFixture {
        /// A new room owned by a new user, with a second new user granted.
        pub fn new() -> Result<Self, pod_protocol::Error> {
            let owner = UserSecrets::generate()?;
            let member = UserSecrets::generate()?;
            let genesis =
                SignedEntry::sign(genesis_entry(&owner.bundle, now_ms()), &owner.signing)?;
            let room = Room::genesis(&genesis)?;
            let grant = SignedEntry::sign(
                room.next_entry(
                    Action::Grant,
                    member.bundle.as_bytes().to_vec(),
                    now_ms(),
                    *owner.bundle.id(),
                ),
                &owner.signing,
            )?;
            Ok(Self {
                owner,
                member,
                log: vec![genesis, grant],
            })
        }

        /// The room as of the log's head.
        pub fn room(&self) -> Result<Room, pod_protocol::Error> {
            Room::replay(&self.log)
        }

        /// The room id.
        pub fn id(&self) -> [u8; 32] {
            self.log.first().map(SignedEntry::hash).unwrap_or_default()
        }

        /// Creates the room at the pod behind `client` and appends the rest of the log, through the HTTP API;
        /// an error names the step and the pod's answer.
        pub async fn register(&self, client: &crate::https::Client) -> Result<(), String> {
            let room_hex = hex::encode(self.id());
            for e in &self.log {
                let (path, want) = if e.entry().seq == 0 {
                    ("/rooms".to_owned(), 201)
                } else {
                    (format!("/rooms/{room_hex}/entries"), 200)
                };
                let body = serde_json::json!({"entry": base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    e.as_bytes()
                )});
                let (status, answer) = client
                    .call("POST", &path, Some(&body))
                    .await
                    .map_err(|e| format!("POST {path}: {e}"))?;
                if status != want {
                    return Err(format!("POST {path}: {status} {answer}"));
                }
            }
            Ok(())
        }

        /// The log as bytes, for a sync.
        pub fn log_bytes(&self) -> Vec<Vec<u8>> {
            self.log.iter().map(|e| e.as_bytes().to_vec()).collect()
        }

        /// The owner signs the next entry (which is appended to the fixture's log) and returns it.
        pub fn owner_signs(
            &mut self,
            action: Action,
            subject: Vec<u8>,
        ) -> Result<SignedEntry, pod_protocol::Error> {
            let entry = self
                .room()?
                .next_entry(action, subject, now_ms(), *self.owner.bundle.id());
            let signed = SignedEntry::sign(entry, &self.owner.signing)?;
            self.log.push(signed.clone());
            Ok(signed)
        }
    }

    /// A fresh re-encrypt request by `user` for the document with `header`, made now, for `pod`.
    pub fn request(
        user: &UserSecrets,
        room: &[u8; 32],
        header: &Header,
        pod: &hpke::PublicKey,
    ) -> Result<SignedRequest, pod_protocol::Error> {
        let mut nonce = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| pod_protocol::Error::Crypto)?;
        SignedRequest::sign(
            Request {
                op: Operation::ReEncrypt,
                room: *room,
                doc: header.doc().to_vec(),
                header_hash: header.hash(),
                user: *user.bundle.id(),
                nonce,
                issued_at_ms: now_ms(),
                pod_key: fingerprint(&pod.to_spki_der()),
            },
            &user.signing,
        )
    }
}

/// The HTTPS client lives in `pod_client::https`; re-exported for the tests.
pub use pod_client::https;

/// The whole local pod, started for a test.
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod local {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt as _;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// A running `pod-proxy local`.
    pub struct LocalPod {
        child: Child,
        _dir: tempfile::TempDir,
        /// Its state directory.
        pub state: std::path::PathBuf,
        /// Its URL.
        pub url: String,
        /// The extra environment it was started with (kept for restarts).
        env: Vec<(String, String)>,
    }

    impl Drop for LocalPod {
        fn drop(&mut self) {
            stop(&mut self.child);
        }
    }

    /// `podctl` in `dir` against the local pod whose state directory is `state`, at `url` (the URL changes when the
    /// pod restarts; the trust files in the state directory do not). Arguments are the caller's.
    pub fn podctl(dir: &std::path::Path, state: &std::path::Path, url: &str) -> Command {
        let mut c = Command::new(crate::bin("podctl"));
        c.current_dir(dir)
            .env("POD_URL", url)
            .env("POD_CACERT", state.join("tls/cert.pem"))
            .env("POD_ROOT", state.join("mock-root.pem"))
            .env("POD_PCRS", state.join("pcrs.json"));
        c
    }

    /// Starts `pod-proxy local` on a free port in a temporary directory.
    pub fn start() -> LocalPod {
        start_with(&[])
    }

    impl LocalPod {
        /// The `pod-proxy` process id.
        pub fn pid(&self) -> u32 {
            self.child.id()
        }

        /// A `PodClient` for this pod: its TLS certificate, the mock root and its PCR file.
        pub fn client(&self) -> pod_client::PodClient {
            let read = |name: &str| std::fs::read_to_string(self.state.join(name)).unwrap();
            pod_client::PodClient::new(
                &self.url,
                Some(&read("tls/cert.pem")),
                Some(&read("mock-root.pem")),
                &read("pcrs.json"),
            )
            .unwrap()
        }

        /// A new room owned by a fresh user, with a second fresh user granted: `(owner, member, room id)`.
        pub async fn room_with_member(
            &self,
            c: &pod_client::PodClient,
        ) -> (
            pod_protocol::keys::UserSecrets,
            pod_protocol::keys::UserSecrets,
            [u8; 32],
        ) {
            let owner = pod_protocol::keys::UserSecrets::generate().unwrap();
            let member = pod_protocol::keys::UserSecrets::generate().unwrap();
            let room = c.create_room(&owner).await.unwrap();
            let bundle = member.bundle.as_bytes().to_vec();
            c.change(
                &room,
                &owner,
                pod_protocol::membership::Action::Grant,
                bundle,
            )
            .await
            .unwrap();
            (owner, member, room)
        }

        /// The process id of the enclave this pod started (empty when it is not running).
        pub fn enclave_pid(&self) -> String {
            let out = Command::new("pgrep")
                .args(["-f", &format!("{}/enclave.sock", self.state.display())])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    }

    /// A pod with every decryption budget lifted (0 means no limit), for load and soak runs; the variables reach
    /// the enclave through `pod-proxy local`.
    pub fn start_unbudgeted() -> LocalPod {
        start_with(&[
            ("POD_BUDGET_USER_ROOM", "0/0"),
            ("POD_BUDGET_ROOM", "0/0"),
            ("POD_BUDGET_GLOBAL", "0/0"),
        ])
    }

    /// A memory figure of a process in KiB from `/proc/<pid>/status` (`field` is e.g. `VmRSS` or `VmHWM`); 0 when
    /// the process or the field is gone.
    pub fn status_kib(pid: &str, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// [`start`] with extra environment for the pod's processes (e.g. the enclave's budget variables).
    pub fn start_with(env: &[(&str, &str)]) -> LocalPod {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("pod-data");
        let (child, url) = spawn(&state, env);
        let state = std::fs::canonicalize(&state).unwrap();
        LocalPod {
            child,
            _dir: dir,
            state,
            url,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn spawn<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        state: &std::path::Path,
        env: &[(K, V)],
    ) -> (Child, String) {
        // Its own process group, so a test can kill the proxy and the services it started at once, as a power cut
        // or the OOM killer would.
        let mut child = Command::new(crate::bin("pod-proxy"))
            .args(["local", "--listen", "127.0.0.1:0", "--state-dir"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg(state)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut url = None;
        for _ in 0..5 {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if let Some(rest) = line.trim().strip_prefix("export POD_URL=") {
                url = Some(rest.split_whitespace().next().unwrap().to_owned());
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        (child, url.expect("pod-proxy local printed the export line"))
    }

    impl LocalPod {
        /// Stops the pod and starts it again on the same state directory (a new port).
        pub fn restart(&mut self) {
            stop(&mut self.child);
            let (child, url) = spawn(&self.state, &self.env);
            self.child = child;
            self.url = url;
        }

        /// Stops the pod, runs `between` (e.g. to tamper with its state as a hostile parent would), and starts it
        /// again on the same state directory.
        pub fn restart_with(&mut self, between: impl FnOnce()) {
            stop(&mut self.child);
            between();
            let (child, url) = spawn(&self.state, &self.env);
            self.child = child;
            self.url = url;
        }

        /// Kills the pod and everything it started with SIGKILL (no shutdown path runs), then starts it again on
        /// the same state directory.
        pub fn crash_and_restart(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
            let (child, url) = spawn(&self.state, &self.env);
            self.child = child;
            self.url = url;
        }
    }

    fn stop(child: &mut Child) {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The pod's processes started one by one (kms-local, the enclave in KMS mode), for tests that need them apart.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
pub mod services {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    /// A child process killed when dropped.
    pub struct Proc(pub Child);

    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Starts kms-local on a free port and returns it with its address.
    pub fn start_kms(state: &Path, root: &Path) -> (Proc, String) {
        let mut child = Command::new(crate::bin("kms-local"))
            .args(["--listen", "127.0.0.1:0", "--no-aws-root", "--state-dir"])
            .arg(state)
            .arg("--root")
            .arg(root)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
        (Proc(child), addr)
    }

    /// One KMS JSON 1.1 call over plain HTTP (test set-up only; the pod's own calls go through aws-sdk-kms).
    pub fn kms_call(addr: &str, op: &str, body: &serde_json::Value) -> serde_json::Value {
        let body = body.to_string();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.{op}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let (_, json) = response.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(json).unwrap()
    }

    pub fn create_pinned_key(addr: &str, pcr0: &str) -> String {
        let policy = serde_json::json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": ["kms:GenerateDataKeyPair", "kms:Decrypt"], "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0}}},
            {"Effect": "Deny", "Principal": "*", "Action": ["kms:Encrypt", "kms:ReEncrypt*"], "Resource": "*"}
        ]});
        let out = kms_call(
            addr,
            "CreateKey",
            &serde_json::json!({"Policy": policy.to_string()}),
        );
        out["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
    }

    pub fn start_enclave(dir: &Path, kms_addr: &str) -> (Proc, crate::parent::Link) {
        let socket = dir.join("enclave.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(crate::bin("pod-enclave"))
            .args([
                "serve",
                "--nsm",
                "mock",
                "--pod-key",
                "kms",
                "--mock-state-dir",
            ])
            .arg(dir.join("nsm"))
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--kms-endpoint")
            .arg(format!("http://{kms_addr}"))
            .arg("--kms-via")
            .arg(format!("unix:{}", dir.join("relay.sock").display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proc = Proc(child);
        let link = crate::parent::Link::connect(&socket).unwrap();
        (proc, link)
    }

    /// Creates the mock NSM's CA in `d/nsm` (so KMS can be told to trust its root before the enclave starts).
    pub fn mock_ca(d: &Path) {
        let made = Command::new(crate::bin("pod-enclave"))
            .args([
                "attest",
                "--nsm",
                "mock",
                "--out",
                "/dev/null",
                "--mock-state-dir",
            ])
            .arg(d.join("nsm"))
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }

    /// PCR0 the mock NSM reports for the built enclave binary, hex.
    pub fn enclave_pcr0() -> String {
        let image = std::fs::read(crate::bin("pod-enclave")).unwrap();
        hex::encode(&pod_enclave::nsm::mock_pcrs_for_image(&image)[0])
    }

    /// `pod-proxy kms-relay` from `d/relay.sock` to `to`.
    pub fn start_relay(d: &Path, to: &str) -> Proc {
        Proc(
            Command::new(crate::bin("pod-proxy"))
                .args(["kms-relay", "--listen"])
                .arg(format!("unix:{}", d.join("relay.sock").display()))
                .args(["--to", to])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// A self-signed end-entity certificate for 127.0.0.1 as `d/cert.pem` and `d/key.pem` (rustls refuses a CA
    /// certificate as a server certificate, so basicConstraints says so).
    pub fn tls_files(d: &Path) {
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .output()
            .expect("openssl makes the test certificate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pod-proxy serve` from a configuration written to `d/pod-proxy.toml` (enclave at `d/enclave.sock`, static
    /// credentials); returns the process and the URL.
    pub fn start_serve(d: &Path, key_id: &str) -> (Proc, String) {
        tls_files(d);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            d.join("pod-proxy.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
                 [enclave]\naddress = \"unix:{}\"\n[kms]\nkey_id = \"{key_id}\"\npod_name = \"test-pod\"\ncredentials = \"static\"\n",
                d.join("parent").display(),
                d.join("cert.pem").display(),
                d.join("key.pem").display(),
                d.join("enclave.sock").display()
            ),
        )
        .unwrap();
        let proxy = Proc(
            Command::new(crate::bin("pod-proxy"))
                .args(["serve", "--config"])
                .arg(d.join("pod-proxy.toml"))
                .env("AWS_ACCESS_KEY_ID", "AKIDLOCAL")
                .env("AWS_SECRET_ACCESS_KEY", "local")
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        (proxy, format!("https://127.0.0.1:{port}"))
    }
}
