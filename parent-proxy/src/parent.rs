//! The parent's state and the operations the HTTPS API exposes: stores on disk, the enclave link, the audit
//! group-commit writer, and the start-up sequence (resume the audit chain, obtain the pod key through KMS, load the
//! rooms).

use crate::enclave::{EnclaveAddr, EnclaveClient, EnclaveHealth, LinkError, Reply, decode_health};
use crate::store::{RecordLog, StoreError};
use base64::Engine as _;
use pod_cbor::Encoder;
use pod_protocol::keys::labeled_hash;
use pod_protocol::link::{self, kind};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Where the credentials handed to the enclave come from.
#[derive(Clone)]
pub enum Credentials {
    /// Fixed credentials (local mode, or from the environment).
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
        /// Session token.
        session_token: Option<String>,
    },
    /// The instance role through IMDSv2, fetched afresh at every unseal.
    Imds {
        /// The IMDS endpoint.
        endpoint: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static { access_key_id, .. } => write!(f, "Static({access_key_id}, …)"),
            Self::Imds { endpoint } => write!(f, "Imds({endpoint})"),
        }
    }
}

/// How the parent obtains the pod key from KMS, through the enclave.
#[derive(Debug, Clone)]
pub struct KmsSettings {
    /// The KMS key the pod key is sealed under.
    pub key_id: String,
    /// The pod's name, bound into the encryption context.
    pub pod_name: String,
    /// The credentials the enclave signs its KMS calls with.
    pub credentials: Credentials,
}

/// The parent's configuration.
#[derive(Debug, Clone)]
pub struct ParentConfig {
    /// Where the stores live.
    pub state_dir: PathBuf,
    /// Where the enclave listens.
    pub enclave: EnclaveAddr,
    /// KMS settings.
    pub kms: KmsSettings,
}

/// What the sealed-key store holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SealedKey {
    /// The KMS key id.
    pub kms_key_id: String,
    /// The pod's name.
    pub pod_name: String,
    /// `PrivateKeyCiphertextBlob`, base64.
    pub sealed: String,
    /// The pod key's SPKI, base64.
    pub pod_spki: String,
    /// SHA-256 of the SPKI, hex.
    pub fingerprint: String,
}

/// Errors surfaced to API callers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The enclave is down, restarting or sealed: try again.
    #[error("Data room temporarily unavailable, please try again")]
    Unavailable(String),
    /// The request was refused by the pod (and audited).
    #[error("{message}")]
    Refused {
        /// Stable code.
        code: String,
        /// Message for the person.
        message: String,
    },
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Not found.
    #[error("{0}")]
    NotFound(String),
    /// The parent itself failed (stores).
    #[error("{0}")]
    Internal(String),
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// Where the writer answers a conversation: durable, or why not.
type AuditReply = oneshot::Sender<Result<(), String>>;
type AuditJob = (u64, Vec<u8>, AuditReply);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Re-encryptions released.
    pub released: AtomicU64,
    /// Requests refused by the pod.
    pub refused: AtomicU64,
    /// Requests that failed because the pod was unavailable.
    pub unavailable: AtomicU64,
    /// Audit entries made durable.
    pub audit_appended: AtomicU64,
    /// fsyncs of the audit log (group commits).
    pub audit_commits: AtomicU64,
}

/// The parent.
pub struct Parent {
    config: ParentConfig,
    enclave: EnclaveClient,
    audit: Arc<Mutex<RecordLog>>,
    audit_tx: std::sync::mpsc::Sender<AuditJob>,
    rooms: Mutex<HashMap<String, RecordLog>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parent")
            .field("state_dir", &self.config.state_dir)
            .finish_non_exhaustive()
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| ApiError::BadRequest("not valid base64".into()))
}

impl Parent {
    /// Opens the stores and starts the audit writer.
    pub fn open(config: ParentConfig) -> Result<Self, ApiError> {
        std::fs::create_dir_all(config.state_dir.join("rooms"))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let (audit_log, recovery) = RecordLog::open(&config.state_dir.join("audit.log"))?;
        if let Some((offset, len, saved)) = &recovery.torn {
            tracing::error!(offset, len, saved = %saved.display(), "the audit log had a torn last record");
        }
        let audit = Arc::new(Mutex::new(audit_log));
        let mut rooms = HashMap::new();
        for entry in std::fs::read_dir(config.state_dir.join("rooms"))
            .map_err(|e| ApiError::Internal(e.to_string()))?
        {
            let path = entry.map_err(|e| ApiError::Internal(e.to_string()))?.path();
            if path.extension().is_some_and(|e| e == "log") {
                let id = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_owned();
                let (log, _) = RecordLog::open(&path)?;
                rooms.insert(id, log);
            }
        }
        let metrics = Arc::new(Metrics::default());
        let (audit_tx, rx) = std::sync::mpsc::channel::<AuditJob>();
        let next_seq = audit_log_next_seq(&audit);
        let writer_log = audit.clone();
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || audit_writer(rx, writer_log, writer_metrics, next_seq))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Self {
            enclave: EnclaveClient::new(config.enclave.clone()),
            config,
            audit,
            audit_tx,
            rooms: Mutex::new(rooms),
            metrics,
        })
    }

    fn key_path(&self) -> PathBuf {
        self.config.state_dir.join("sealed-pod-key.json")
    }

    /// The sealed pod key, once provisioned.
    pub fn sealed_key(&self) -> Option<SealedKey> {
        std::fs::read_to_string(self.key_path())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Brings the enclave to ready: resumes the audit chain, provisions or unseals the pod key, loads every room.
    /// Safe to call again after the enclave restarts.
    pub async fn start_session(&self) -> Result<EnclaveHealth, ApiError> {
        self.enclave.reset();
        let last = self
            .audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .map(<[u8]>::to_vec);
        let health = self.health().await?;
        if health.status == "sealed" {
            let kms = &self.config.kms;
            let (access_key_id, secret_access_key, session_token) = match &kms.credentials {
                Credentials::Static {
                    access_key_id,
                    secret_access_key,
                    session_token,
                } => (
                    access_key_id.clone(),
                    secret_access_key.clone(),
                    session_token.clone(),
                ),
                Credentials::Imds { endpoint } => {
                    let c = crate::imds::role_credentials(endpoint)
                        .await
                        .map_err(ApiError::Unavailable)?;
                    (c.access_key_id, c.secret_access_key, Some(c.token))
                }
            };
            let push_creds = |e: &mut Encoder| {
                e.text(&access_key_id).text(&secret_access_key);
                match &session_token {
                    Some(t) => e.text(t),
                    None => e.null(),
                };
            };
            let mut creds = Encoder::new();
            let reply = match self.sealed_key() {
                Some(k) => {
                    creds
                        .array(6)
                        .bytes(&unb64(&k.sealed)?)
                        .bytes(
                            &hex::decode(&k.fingerprint)
                                .map_err(|_| ApiError::Internal("bad fingerprint".into()))?,
                        )
                        .text(&k.pod_name);
                    push_creds(&mut creds);
                    self.enclave.call(kind::UNSEAL, creds.as_bytes()).await?
                }
                None => {
                    creds.array(5).text(&kms.key_id).text(&kms.pod_name);
                    push_creds(&mut creds);
                    self.enclave.call(kind::PROVISION, creds.as_bytes()).await?
                }
            };
            match reply.kind {
                kind::OK => {}
                kind::PROVISIONED => {
                    let parts = link::decode_bytes_n(&reply.body, 3)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    let (Some(sealed), Some(spki)) = (parts.first(), parts.get(1)) else {
                        return Err(ApiError::Internal("malformed ceremony result".into()));
                    };
                    let stored = SealedKey {
                        kms_key_id: kms.key_id.clone(),
                        pod_name: kms.pod_name.clone(),
                        sealed: b64(sealed),
                        pod_spki: b64(spki),
                        fingerprint: hex::encode(pod_protocol::keys::fingerprint(spki)),
                    };
                    let tmp = self.key_path().with_extension("tmp");
                    let text = serde_json::to_string_pretty(&stored)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    std::fs::write(&tmp, text)
                        .and_then(|()| std::fs::rename(&tmp, self.key_path()))
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    tracing::info!(fingerprint = %stored.fingerprint, "pod key provisioned and stored sealed");
                }
                _ => {
                    let (code, message) = reply.code_message();
                    return Err(ApiError::Unavailable(format!("{code}: {message}")));
                }
            }
        }
        let reply = self
            .enclave
            .call(
                kind::RESUME_AUDIT,
                &link::encode_optional_bytes(last.as_deref()),
            )
            .await?;
        if reply.kind != kind::OK {
            let (code, message) = reply.code_message();
            return Err(ApiError::Internal(format!(
                "resuming the audit chain: {code}: {message}"
            )));
        }
        let logs: Vec<Vec<Vec<u8>>> = {
            let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms
                .values()
                .map(|l| l.read_all())
                .collect::<Result<_, _>>()?
        };
        for entries in logs {
            let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
            let reply = self
                .enclave
                .call(kind::SYNC_ROOM, &link::encode_bytes_list(&refs))
                .await?;
            if reply.kind != kind::ROOM_HEAD {
                let (code, message) = reply.code_message();
                tracing::error!(code, message, "a stored room was refused by the enclave");
            }
        }
        self.health().await
    }

    /// True when the enclave answers and holds its key.
    pub async fn is_ready(&self) -> bool {
        matches!(self.health().await, Ok(h) if h.status == "ready")
    }

    /// The enclave's health.
    pub async fn health(&self) -> Result<EnclaveHealth, ApiError> {
        let reply = self.enclave.call(kind::HEALTH, &[]).await?;
        Ok(decode_health(&reply.body)?)
    }

    /// An attestation document for `nonce`.
    pub async fn attestation(&self, nonce: Option<Vec<u8>>) -> Result<Vec<u8>, ApiError> {
        let reply = self
            .enclave
            .call(
                kind::ATTESTATION,
                &link::encode_optional_bytes(nonce.as_deref()),
            )
            .await?;
        if reply.kind != kind::DOCUMENT {
            return Err(ApiError::Unavailable(reply.code_message().1));
        }
        Ok(reply.body)
    }

    fn room_reply(&self, reply: &Reply) -> Result<(String, u64, String), ApiError> {
        if reply.kind != kind::ROOM_HEAD {
            let (code, message) = reply.code_message();
            return Err(if code == "sealed" {
                ApiError::Unavailable(message)
            } else {
                ApiError::Refused { code, message }
            });
        }
        let mut d = pod_cbor::Decoder::new(&reply.body);
        let bad = |_| ApiError::Internal("malformed room head".into());
        d.array().map_err(bad)?;
        let room = hex::encode(d.bytes().map_err(bad)?);
        let seq = d.u64().map_err(bad)?;
        let head = hex::encode(d.bytes().map_err(bad)?);
        Ok((room, seq, head))
    }

    /// Creates a room from its signed genesis entry; returns (room id, seq, head).
    pub async fn create_room(&self, genesis: &[u8]) -> Result<(String, u64, String), ApiError> {
        let reply = self
            .enclave
            .call(kind::SYNC_ROOM, &link::encode_bytes_list(&[genesis]))
            .await?;
        let (room, seq, head) = self.room_reply(&reply)?;
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if !rooms.contains_key(&room) {
            let (mut log, _) = RecordLog::open(
                &self
                    .config
                    .state_dir
                    .join("rooms")
                    .join(format!("{room}.log")),
            )?;
            if log.is_empty() {
                log.append_all(&[genesis.to_vec()])?;
            }
            rooms.insert(room.clone(), log);
        }
        Ok((room, seq, head))
    }

    /// Appends a signed membership entry, once the enclave has accepted it.
    pub async fn append_entry(&self, room: &str, entry: &[u8]) -> Result<(u64, String), ApiError> {
        if !self
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(room)
        {
            return Err(ApiError::NotFound(format!("unknown room {room}")));
        }
        let reply = self.enclave.call(kind::APPEND_MEMBERSHIP, entry).await?;
        let (_, seq, head) = self.room_reply(&reply)?;
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = rooms.get_mut(room) {
            log.append_all(&[entry.to_vec()])?;
        }
        Ok((seq, head))
    }

    /// A room's membership log.
    pub fn room_log(&self, room: &str) -> Result<Vec<Vec<u8>>, ApiError> {
        self.rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .ok_or_else(|| ApiError::NotFound(format!("unknown room {room}")))?
            .read_all()
            .map_err(ApiError::from)
    }

    /// A signed checkpoint of the audit chain (retried briefly while entries are in flight).
    pub async fn checkpoint(&self) -> Result<Vec<u8>, ApiError> {
        for _ in 0..50 {
            let reply = self.enclave.call(kind::CHECKPOINT, &[]).await?;
            if reply.kind == kind::CHECKPOINT_SIGNED {
                return Ok(reply.body);
            }
            let (code, message) = reply.code_message();
            if code != "audit_backlog" {
                return Err(ApiError::Unavailable(format!("{code}: {message}")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(ApiError::Unavailable(
            "the audit log is too busy to checkpoint; try again".into(),
        ))
    }

    /// Audit entries from `from` on (at most `limit`).
    pub fn audit_entries(&self, from: usize, limit: usize) -> Result<Vec<Vec<u8>>, ApiError> {
        let log = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        Ok(log.read_range(from, limit)?)
    }

    /// Number of audit entries stored.
    pub fn audit_len(&self) -> usize {
        self.audit.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn append_audit(&self, seq: u64, entry: Vec<u8>) -> Result<(), ApiError> {
        let (tx, rx) = oneshot::channel();
        self.audit_tx
            .send((seq, entry, tx))
            .map_err(|_| ApiError::Internal("the audit writer stopped".into()))?;
        rx.await
            .map_err(|_| ApiError::Internal("the audit writer stopped".into()))?
            .map_err(|e| {
                ApiError::Unavailable(format!(
                    "the audit log cannot be written, so nothing is released: {e}"
                ))
            })
    }

    /// Starts a re-encryption: decision, durable audit entry, acknowledgement. Returns the open conversation with
    /// the user's document header and the receipt; chunks then go through [`Parent::stream_chunk`].
    pub async fn begin_re_encrypt(
        &self,
        request: &[u8],
        header: &[u8],
    ) -> Result<Conversation, ApiError> {
        let mut conn = self.enclave.connection().await?;
        let id = self.enclave.next_id();
        conn.send(
            id,
            kind::RE_ENCRYPT,
            &link::encode_bytes_list(&[request, header]),
        )
        .await?;
        let reply = conn.recv().await?;
        if reply.kind != kind::AUDIT_APPEND {
            let (code, message) = reply.code_message();
            self.metrics.unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(if code == "sealed" || code == "audit_backlog" {
                ApiError::Unavailable(message)
            } else {
                ApiError::Internal(format!("{code}: {message}"))
            });
        }
        let (seq, entry) =
            link::decode_seq_bytes(&reply.body).map_err(|e| ApiError::Internal(e.to_string()))?;
        let hash = labeled_hash("audit", entry);
        // Durable first; only then acknowledged. If the write fails the connection is dropped unacknowledged and
        // the enclave releases nothing.
        self.append_audit(seq, entry.to_vec()).await?;
        conn.send(id, kind::AUDIT_ACK, &link::encode_seq_bytes(seq, &hash))
            .await?;
        let reply = conn.recv().await?;
        match reply.kind {
            kind::RELEASED => {}
            kind::REFUSED => {
                self.enclave.give_back(conn);
                self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                let (code, message) = reply.code_message();
                return Err(ApiError::Refused { code, message });
            }
            _ => {
                let (code, message) = reply.code_message();
                return Err(ApiError::Internal(format!("{code}: {message}")));
            }
        }
        let parts =
            link::decode_bytes_n(&reply.body, 2).map_err(|e| ApiError::Internal(e.to_string()))?;
        let (Some(header), Some(receipt)) = (parts.first(), parts.get(1)) else {
            return Err(ApiError::Internal("released without a header".into()));
        };
        Ok(Conversation {
            conn,
            id,
            header: header.to_vec(),
            receipt: receipt.to_vec(),
        })
    }

    /// One stored chunk in, the user's chunk out. After the last chunk the conversation is finished.
    pub async fn stream_chunk(
        &self,
        c: &mut Conversation,
        chunk: &[u8],
        last: bool,
    ) -> Result<Vec<u8>, ApiError> {
        c.conn
            .send(
                c.id,
                if last { kind::LAST_CHUNK } else { kind::CHUNK },
                chunk,
            )
            .await?;
        let r = c.conn.recv().await?;
        if r.kind == kind::ERROR {
            let (code, message) = r.code_message();
            return Err(ApiError::Refused { code, message });
        }
        Ok(r.body)
    }

    /// Returns a finished conversation's connection to the pool.
    pub fn finish(&self, c: Conversation) {
        self.enclave.give_back(c.conn);
        self.metrics.released.fetch_add(1, Ordering::Relaxed);
    }

    /// The whole re-encryption of a document held in memory: returns (re-encrypted document, receipt).
    pub async fn re_encrypt(
        &self,
        request: &[u8],
        document: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
        let (_, body_start) = pod_protocol::envelope::read_header(document)
            .map_err(|e| ApiError::BadRequest(format!("encrypted_blob: {e}")))?
            .ok_or_else(|| ApiError::BadRequest("encrypted_blob is truncated".into()))?;
        let header = document.get(..body_start).unwrap_or_default();
        let body = document.get(body_start..).unwrap_or_default();
        let chunks: Vec<&[u8]> = body
            .chunks(pod_protocol::stream::SEALED_CHUNK_SIZE)
            .collect();
        if chunks.is_empty() {
            return Err(ApiError::BadRequest("encrypted_blob has no content".into()));
        }
        let mut c = self.begin_re_encrypt(request, header).await?;
        let mut out = c.header.clone();
        for (i, chunk) in chunks.iter().enumerate() {
            out.extend_from_slice(
                &self
                    .stream_chunk(&mut c, chunk, i + 1 == chunks.len())
                    .await?,
            );
        }
        let receipt = c.receipt.clone();
        self.finish(c);
        Ok((out, receipt))
    }
}

/// An open re-encryption with the enclave, after release.
pub struct Conversation {
    conn: crate::enclave::Connection,
    id: u64,
    /// The user's document prefix and header.
    pub header: Vec<u8>,
    /// The signed receipt.
    pub receipt: Vec<u8>,
}

fn audit_log_next_seq(log: &Mutex<RecordLog>) -> u64 {
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .last()
        .and_then(pod_protocol::audit::entry_seq_unverified)
        .map_or(0, |s| s.saturating_add(1))
}

/// How long the writer waits for a missing entry before writing past the gap.
const GAP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The group-commit writer. Conversations deliver entries in any order; the writer puts them in sequence order
/// (the order the enclave chained them), writes every contiguous run it has with one fsync, and answers each.
/// An entry that never arrives (its conversation died between the enclave and here; its request was never
/// released) is waited for [`GAP_WAIT`], then written past, and the verifier will report the gap. A write that fails
/// (disk full, read-only) answers its callers with the error — so nothing is released — and is retried until it
/// succeeds, keeping the chain whole; such an entry then records a decision whose delivery did not happen.
fn audit_writer(
    rx: std::sync::mpsc::Receiver<AuditJob>,
    log: Arc<Mutex<RecordLog>>,
    metrics: Arc<Metrics>,
    mut next: u64,
) {
    use std::collections::BTreeMap;
    use std::sync::mpsc::RecvTimeoutError;
    // A reply is None once answered: an entry whose write failed stays here, unanswered callers already told.
    let mut waiting: BTreeMap<u64, (Vec<u8>, Option<AuditReply>)> = BTreeMap::new();
    let mut gap_since: Option<std::time::Instant> = None;
    let mut failing = false;
    loop {
        let wait = if failing {
            std::time::Duration::from_millis(500)
        } else if waiting.is_empty() {
            std::time::Duration::from_secs(3600)
        } else {
            std::time::Duration::from_millis(50)
        };
        match rx.recv_timeout(wait) {
            Ok((seq, entry, reply)) => {
                if seq < next && !waiting.contains_key(&next) {
                    // A restarted enclave resumed below what we hold: take its numbering.
                    next = seq;
                }
                waiting.insert(seq, (entry, Some(reply)));
                while let Ok((seq, entry, reply)) = rx.try_recv() {
                    waiting.insert(seq, (entry, Some(reply)));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let mut seqs = Vec::new();
        let mut cursor = next;
        while waiting.contains_key(&cursor) {
            seqs.push(cursor);
            cursor = cursor.saturating_add(1);
        }
        if seqs.is_empty() {
            if let Some(&first) = waiting.keys().next() {
                let since = *gap_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= GAP_WAIT {
                    tracing::error!(
                        missing_from = next,
                        resumes_at = first,
                        "audit entries never arrived; writing past the gap"
                    );
                    next = first;
                    gap_since = None;
                }
            }
            continue;
        }
        gap_since = None;
        let entries: Vec<Vec<u8>> = seqs
            .iter()
            .filter_map(|s| waiting.get(s).map(|(e, _)| e.clone()))
            .collect();
        let result = log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append_all(&entries)
            .map_err(|e| e.to_string());
        match &result {
            Ok(()) => {
                failing = false;
                metrics
                    .audit_appended
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                metrics.audit_commits.fetch_add(1, Ordering::Relaxed);
                next = cursor;
                for s in &seqs {
                    if let Some((_, Some(reply))) = waiting.remove(s) {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                // Nothing is acknowledged, so nothing is released; the entries stay queued and are written when the
                // disk comes back, so the chain has no hole.
                if !failing {
                    tracing::error!(error = %e, "audit append failed; nothing is released until it succeeds");
                }
                failing = true;
                for s in &seqs {
                    if let Some((_, reply)) = waiting.get_mut(s) {
                        if let Some(r) = reply.take() {
                            let _ = r.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }
}
