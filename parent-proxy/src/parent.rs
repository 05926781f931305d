//! The parent's state and the operations the HTTPS API exposes: stores on disk, the enclave link, the audit
//! group-commit writer, and the start-up sequence (resume the audit chain, obtain the pod key through KMS, load the
//! rooms).

use crate::enclave::{EnclaveAddr, EnclaveClient, EnclaveHealth, LinkError, Reply, decode_health};
use crate::store::{RecordLog, StoreError};
use base64::Engine as _;
use pod_cbor::Encoder;
use pod_protocol::keys::labeled_hash;
use pod_protocol::link::{self, kind};
use std::collections::{HashMap, HashSet};
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
#[derive(Clone)]
pub struct ParentConfig {
    /// Where the stores live.
    pub state_dir: PathBuf,
    /// Where the enclave listens.
    pub enclave: EnclaveAddr,
    /// KMS settings.
    pub kms: KmsSettings,
    /// Local mode only: makes a new KMS key (with the same key policy) for a rotation's successor pod key, so that
    /// `POST /admin/rotation/prepare` needs no key id. In production the operator creates the key and names it.
    pub key_factory: Option<KeyFactory>,
}

/// Creates a KMS key and returns its id.
pub type KeyFactory = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// What the sealed-key store holds.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
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

impl std::fmt::Debug for SealedKey {
    /// Without the sealed blob: it is ciphertext, but nothing gains from it in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKey")
            .field("kms_key_id", &self.kms_key_id)
            .field("pod_name", &self.pod_name)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
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
    /// Fingerprints of pod keys retired by a rotation: documents still sealed to them get a clear refusal.
    retired: HashSet<[u8; 32]>,
    /// Held while the parent runs, so that two proxies, or a promotion, never share a state directory.
    _lock: std::fs::File,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// One retired pod key, as `retired-keys.json` lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RetiredKey {
    /// Hex SHA-256 of the retired pod key's SPKI.
    pub fingerprint: String,
    /// The key that replaced it.
    pub successor: String,
    /// When it was retired (ms since the epoch).
    pub retired_at_ms: u64,
}

/// Takes the state directory's lock, or explains who holds it.
pub fn lock_state_dir(dir: &std::path::Path) -> Result<std::fs::File, ApiError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ApiError::Internal(format!("{}: {e}", dir.display())))?;
    let path = dir.join("proxy.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ApiError::Internal(format!(
            "{} is in use by another pod-proxy; stop it first",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(ApiError::Internal(format!("{}: {e}", path.display())))
        }
    }
}

/// Replaces `path` with `bytes` so that a crash at any moment leaves either the old file or the new one, complete,
/// and the new one durable once this returns: write a temporary file, sync it, rename it over `path`, sync the
/// directory. The sealed pod keys are the only copy of what KMS returned; a key lost in the page cache after
/// documents were moved to it would take those documents with it.
pub fn write_durably(path: &std::path::Path, bytes: &[u8]) -> Result<(), ApiError> {
    use std::io::Write as _;
    let err = |e: std::io::Error| ApiError::Internal(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    sync_dir(path.parent().unwrap_or(std::path::Path::new(".")))
}

/// Makes the renames and creations in `dir` durable.
fn sync_dir(dir: &std::path::Path) -> Result<(), ApiError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ApiError::Internal(format!("syncing {}: {e}", dir.display())))
}

/// Reads a sealed key file: `None` when it does not exist, an error when it exists but cannot be read or parsed —
/// never `None` for a damaged file, which the caller would take for "no key" and replace.
fn read_sealed_key(path: &std::path::Path) -> Result<Option<SealedKey>, ApiError> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
            ApiError::Internal(format!(
                "{} is damaged ({e}); restore it from backup — do not delete it, documents are sealed to that key",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ApiError::Internal(format!("{}: {e}", path.display()))),
    }
}

/// Refuses a state directory whose stored pod key is already listed as retired: `promote` lists the old key before
/// it swaps the files, so that is an interrupted promotion. Serving that key would refuse its own documents as
/// retired and fork its audit chain.
pub fn refuse_interrupted_promotion(state_dir: &std::path::Path) -> Result<(), ApiError> {
    let key_path = state_dir.join("sealed-pod-key.json");
    // A missing pod key in a directory that has rotated before is a promotion that archived the old key and died
    // before the successor took its place, not a new pod: a fresh key here would orphan every document.
    if !key_path.exists()
        && (state_dir.join("sealed-pod-key.next.json").exists()
            || !read_retired(state_dir)?.is_empty())
    {
        return Err(ApiError::Internal(format!(
            "{} is missing but this state directory holds a rotation (a successor or retired keys): a promotion \
             was interrupted; run `pod-proxy promote --state-dir {}` again to finish it",
            key_path.display(),
            state_dir.display()
        )));
    }
    if let Some(k) = read_sealed_key(&key_path)?
        && read_retired(state_dir)?
            .iter()
            .any(|r| r.fingerprint == k.fingerprint)
    {
        return Err(ApiError::Internal(format!(
            "the stored pod key {} is listed in retired-keys.json: a promotion was interrupted; run `pod-proxy \
             promote --state-dir {}` again to finish it",
            k.fingerprint,
            state_dir.display()
        )));
    }
    Ok(())
}

/// Reads `retired-keys.json` (empty when absent).
pub fn read_retired(dir: &std::path::Path) -> Result<Vec<RetiredKey>, ApiError> {
    match std::fs::read_to_string(dir.join("retired-keys.json")) {
        Ok(t) => serde_json::from_str(&t)
            .map_err(|e| ApiError::Internal(format!("retired-keys.json: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ApiError::Internal(format!("retired-keys.json: {e}"))),
    }
}

/// What a promotion did.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// The retired key's fingerprint.
    pub retired: String,
    /// The new pod key's fingerprint.
    pub current: String,
    /// Where the old key's audit log and sealed key were moved.
    pub archive: PathBuf,
}

/// Ends a rotation with the proxy stopped: the successor key becomes the pod key, the old sealed key and the
/// old audit log (whose chain is signed by the old key's receipt key) move to `retired/<fingerprint>/`, and the
/// old fingerprint is listed in `retired-keys.json`. The next start unseals the new key and begins a new audit
/// chain under it.
pub fn promote(state_dir: &std::path::Path) -> Result<Promotion, ApiError> {
    let _lock = lock_state_dir(state_dir)?;
    let io = |what: &str, e: std::io::Error| ApiError::Internal(format!("{what}: {e}"));
    let read_key = |p: &std::path::Path| -> Result<SealedKey, ApiError> {
        read_sealed_key(p)?
            .ok_or_else(|| ApiError::Internal(format!("{} does not exist", p.display())))
    };
    let current_path = state_dir.join("sealed-pod-key.json");
    let next_path = state_dir.join("sealed-pod-key.next.json");
    if !next_path.exists() {
        return Err(ApiError::BadRequest(format!(
            "{} does not exist: prepare a rotation first (POST /admin/rotation/prepare)",
            next_path.display()
        )));
    }
    let next = read_key(&next_path)?;
    // Resumable: a promotion interrupted after the old key was archived finds it there, through the retired list.
    let current = match read_sealed_key(&current_path)? {
        Some(k) => k,
        None => {
            let r = read_retired(state_dir)?
                .into_iter()
                .find(|r| r.successor == next.fingerprint)
                .ok_or_else(|| {
                    ApiError::Internal(format!(
                        "{} is missing and no retired key names {} as its successor",
                        current_path.display(),
                        next.fingerprint
                    ))
                })?;
            read_key(
                &state_dir
                    .join("retired")
                    .join(&r.fingerprint)
                    .join("sealed-pod-key.json"),
            )?
        }
    };
    let archive = state_dir.join("retired").join(&current.fingerprint);
    std::fs::create_dir_all(&archive).map_err(|e| io("creating the archive", e))?;
    sync_dir(&state_dir.join("retired"))?;
    sync_dir(state_dir)?;
    let mut retired = read_retired(state_dir)?;
    if !retired.iter().any(|r| r.fingerprint == current.fingerprint) {
        retired.push(RetiredKey {
            fingerprint: current.fingerprint.clone(),
            successor: next.fingerprint.clone(),
            retired_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        });
    }
    let text =
        serde_json::to_string_pretty(&retired).map_err(|e| ApiError::Internal(e.to_string()))?;
    write_durably(&state_dir.join("retired-keys.json"), text.as_bytes())?;
    for name in ["audit.log", "checkpoints.log"] {
        let from = state_dir.join(name);
        let to = archive.join(name);
        if !from.exists() {
            continue;
        }
        if to.exists() {
            // Archived by an interrupted run. An empty file here is one something created since (a proxy start
            // opens its log): drop it. Anything else is refused: the archived chain is never overwritten.
            let empty = std::fs::metadata(&from)
                .map(|m| m.len() == 0)
                .unwrap_or(false);
            if !empty {
                return Err(ApiError::Internal(format!(
                    "both {} and {} exist: refusing to overwrite the archived audit chain; keep both and find \
                     out which pod key wrote the newer one",
                    from.display(),
                    to.display()
                )));
            }
            std::fs::remove_file(&from).map_err(|e| io(name, e))?;
            continue;
        }
        std::fs::rename(&from, &to).map_err(|e| io(name, e))?;
    }
    if current_path.exists() {
        std::fs::rename(&current_path, archive.join("sealed-pod-key.json"))
            .map_err(|e| io("archiving the sealed key", e))?;
    }
    // Everything archived is durable before the successor takes the pod key's place.
    sync_dir(&archive)?;
    sync_dir(state_dir)?;
    std::fs::rename(&next_path, &current_path).map_err(|e| io("promoting the successor", e))?;
    sync_dir(state_dir)?;
    Ok(Promotion {
        retired: current.fingerprint,
        current: next.fingerprint,
        archive,
    })
}

/// `POST /admin/rotation/prepare`: where the successor pod key comes from.
#[derive(Debug, Clone)]
pub enum PrepareRotation {
    /// Run the key ceremony in this enclave under another KMS key (routine rotation); `None` in local mode makes
    /// one.
    Generate {
        /// The KMS key whose policy governs the successor.
        kms_key_id: Option<String>,
    },
    /// Load a successor key generated elsewhere (e.g. by the new, patched image after a compromise), through KMS.
    Load(SealedKey),
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parent")
            .field("state_dir", &self.config.state_dir)
            .finish_non_exhaustive()
    }
}

/// Standard base64, as the API's JSON carries bytes.
pub(crate) fn b64(b: &[u8]) -> String {
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
        let lock = lock_state_dir(&config.state_dir)?;
        // Spool files are unlinked at creation; one can outlive only a crash in between. Nothing else uses them.
        let _ = std::fs::remove_dir_all(config.state_dir.join("spool"));
        std::fs::create_dir_all(config.state_dir.join("rooms"))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut retired = HashSet::new();
        for r in read_retired(&config.state_dir)? {
            let f: [u8; 32] = hex::decode(&r.fingerprint)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| ApiError::Internal("retired-keys.json: bad fingerprint".into()))?;
            retired.insert(f);
        }
        // Before anything is created here (opening the audit log creates it): an interrupted promotion must be
        // finished by `pod-proxy promote`, or a fresh empty log would stand in the archived one's place.
        refuse_interrupted_promotion(&config.state_dir)?;
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
            retired,
            _lock: lock,
            metrics,
        })
    }

    /// Where streaming answers spool when the client does not read as fast as it sends.
    pub fn spool_dir(&self) -> PathBuf {
        self.config.state_dir.join("spool")
    }

    fn next_key_path(&self) -> PathBuf {
        self.config.state_dir.join("sealed-pod-key.next.json")
    }

    /// The successor key of a rotation in progress, once prepared (an error when its file is damaged).
    pub fn next_sealed_key(&self) -> Result<Option<SealedKey>, ApiError> {
        read_sealed_key(&self.next_key_path())
    }

    async fn credentials(&self) -> Result<(String, String, Option<String>), ApiError> {
        Ok(match &self.config.kms.credentials {
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
        })
    }

    /// The body of a PROVISION or PROVISION_NEXT message: the key ceremony under KMS key `key_id`.
    async fn provision_body(&self, key_id: &str) -> Result<Vec<u8>, ApiError> {
        let (id, secret, token) = self.credentials().await?;
        let mut e = Encoder::new();
        e.array(5)
            .text(key_id)
            .text(&self.config.kms.pod_name)
            .text(&id)
            .text(&secret);
        match &token {
            Some(t) => e.text(t),
            None => e.null(),
        };
        Ok(e.into_bytes())
    }

    /// The body of an UNSEAL or UNSEAL_NEXT message for a stored key.
    async fn unseal_body(&self, k: &SealedKey) -> Result<Vec<u8>, ApiError> {
        let (id, secret, token) = self.credentials().await?;
        let mut e = Encoder::new();
        e.array(6)
            .bytes(&unb64(&k.sealed)?)
            .bytes(
                &hex::decode(&k.fingerprint)
                    .map_err(|_| ApiError::Internal("bad fingerprint".into()))?,
            )
            .text(&k.pod_name)
            .text(&id)
            .text(&secret);
        match &token {
            Some(t) => e.text(t),
            None => e.null(),
        };
        Ok(e.into_bytes())
    }

    /// Loads the successor pod key into the enclave: generated there under `kms_key_id`, or an existing one
    /// unsealed through KMS. The sealed successor is stored beside the pod key, so that an enclave restart during
    /// the rotation loads it again. Returns it.
    pub async fn prepare_rotation(&self, how: PrepareRotation) -> Result<SealedKey, ApiError> {
        // Any file at that path, even a damaged one, means a successor may already hold documents.
        if self.next_key_path().exists() {
            let fingerprint = match self.next_sealed_key() {
                Ok(Some(k)) => k.fingerprint,
                _ => "a key whose file cannot be read (restore it from backup)".to_owned(),
            };
            return Err(ApiError::BadRequest(format!(
                "a rotation to {} is already prepared ({}); finish it with `podctl rotate run` and `pod-proxy \
                 promote`. Do not delete that file while documents may already be sealed to that key.",
                fingerprint,
                self.next_key_path().display()
            )));
        }
        let stored = match how {
            PrepareRotation::Generate { kms_key_id } => {
                let kms_key_id = match (kms_key_id, &self.config.key_factory) {
                    (Some(k), _) => k,
                    (None, Some(factory)) => {
                        let factory = factory.clone();
                        tokio::task::spawn_blocking(move || factory())
                            .await
                            .map_err(|e| ApiError::Internal(e.to_string()))?
                            .map_err(ApiError::Unavailable)?
                    }
                    (None, None) => {
                        return Err(ApiError::BadRequest(
                            "kms_key_id is required: create a KMS key for the successor with the new key policy \
                             (podctl policy) and name it"
                                .into(),
                        ));
                    }
                };
                let body = self.provision_body(&kms_key_id).await?;
                let reply = self.enclave.call_once(kind::PROVISION_NEXT, &body).await?;
                if reply.kind != kind::PROVISIONED {
                    let (code, message) = reply.code_message();
                    return Err(ApiError::Refused { code, message });
                }
                let parts = link::decode_bytes_n(&reply.body, 3)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let (Some(sealed), Some(spki)) = (parts.first(), parts.get(1)) else {
                    return Err(ApiError::Internal("malformed ceremony result".into()));
                };
                SealedKey {
                    kms_key_id,
                    pod_name: self.config.kms.pod_name.clone(),
                    sealed: b64(sealed),
                    pod_spki: b64(spki),
                    fingerprint: hex::encode(pod_protocol::keys::fingerprint(spki)),
                }
            }
            PrepareRotation::Load(k) => {
                let body = self.unseal_body(&k).await?;
                let reply = self.enclave.call_once(kind::UNSEAL_NEXT, &body).await?;
                if reply.kind != kind::OK {
                    let (code, message) = reply.code_message();
                    return Err(ApiError::Refused { code, message });
                }
                k
            }
        };
        let text =
            serde_json::to_string_pretty(&stored).map_err(|e| ApiError::Internal(e.to_string()))?;
        write_durably(&self.next_key_path(), text.as_bytes())?;
        tracing::info!(successor = %stored.fingerprint, "rotation prepared: successor pod key loaded");
        Ok(stored)
    }

    /// Signs a rotation certificate over `items` (sorted by old header hash), streamed to the enclave in frames.
    pub async fn certify_rotation(
        &self,
        mode: pod_protocol::rotation::Mode,
        items: &[Vec<u8>],
    ) -> Result<Vec<u8>, ApiError> {
        let mut conn = self.enclave.connection().await?;
        let id = self.enclave.next_id();
        conn.send(
            id,
            kind::CERTIFY_ROTATION,
            &link::encode_u64_pair(mode as u64, items.len() as u64),
        )
        .await?;
        let per_frame = usize::try_from(link::MAX_ITEMS_PER_FRAME).unwrap_or(512);
        let mut batches: Vec<&[Vec<u8>]> = items.chunks(per_frame).collect();
        if batches.is_empty() {
            batches.push(&[]);
        }
        let n = batches.len();
        for (i, batch) in batches.into_iter().enumerate() {
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            let k = if i + 1 == n {
                kind::LAST_CHUNK
            } else {
                kind::CHUNK
            };
            conn.send(id, k, &link::encode_bytes_list(&refs)).await?;
        }
        let reply = conn.recv().await?;
        if reply.kind != kind::ROTATION_CERTIFICATE {
            let (code, message) = reply.code_message();
            return Err(ApiError::Refused { code, message });
        }
        self.enclave.give_back(conn);
        Ok(reply.body)
    }

    /// Refuses a document sealed to a retired pod key with an error that says so.
    fn check_not_retired(&self, header: &[u8]) -> Result<(), ApiError> {
        if let Ok(Some((h, _))) = pod_protocol::envelope::read_header(header)
            && self.retired.contains(h.recipient())
        {
            return Err(ApiError::Refused {
                code: "retired_pod_key".into(),
                message: format!(
                    "This document is sealed to pod key {}, which was retired by a key rotation; it was not \
                         rotated. Ask the operator for the rotated copy.",
                    hex::encode(h.recipient())
                ),
            });
        }
        Ok(())
    }

    fn key_path(&self) -> PathBuf {
        self.config.state_dir.join("sealed-pod-key.json")
    }

    /// The sealed pod key, once provisioned (an error when its file is damaged).
    pub fn sealed_key(&self) -> Result<Option<SealedKey>, ApiError> {
        read_sealed_key(&self.key_path())
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
        refuse_interrupted_promotion(&self.config.state_dir)?;
        let health = self.health().await?;
        if health.status == "sealed" {
            let kms = &self.config.kms;
            let reply = match self.sealed_key()? {
                Some(k) => {
                    let body = self.unseal_body(&k).await?;
                    self.enclave.call(kind::UNSEAL, &body).await?
                }
                // No key and no rotation here (refuse_interrupted_promotion above): a new pod, its key born now.
                None => {
                    let body = self.provision_body(&kms.key_id).await?;
                    self.enclave.call(kind::PROVISION, &body).await?
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
                    let text = serde_json::to_string_pretty(&stored)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    write_durably(&self.key_path(), text.as_bytes())?;
                    tracing::info!(fingerprint = %stored.fingerprint, "pod key provisioned and stored sealed");
                }
                _ => {
                    let (code, message) = reply.code_message();
                    return Err(ApiError::Unavailable(format!("{code}: {message}")));
                }
            }
        }
        // The enclave must hold the stored pod key: after a promotion, an enclave still running the old key would
        // start a new audit chain under the old receipt key.
        let ready = self.health().await?;
        if let (Some(stored), Some(held)) = (self.sealed_key()?, ready.key_fingerprint.as_ref())
            && &stored.fingerprint != held
        {
            return Err(ApiError::Unavailable(format!(
                "the enclave holds pod key {held}, not the stored pod key {}: restart the enclave",
                stored.fingerprint
            )));
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
        // A rotation in progress survives an enclave restart: load the successor again.
        let health = self.health().await?;
        if let (Some(next), None) = (self.next_sealed_key()?, &health.next_key_fingerprint) {
            let body = self.unseal_body(&next).await?;
            let reply = self.enclave.call(kind::UNSEAL_NEXT, &body).await?;
            if reply.kind != kind::OK {
                let (code, message) = reply.code_message();
                tracing::error!(
                    code,
                    message,
                    "the successor pod key of the rotation in progress did not load"
                );
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
        self.check_not_retired(header)?;
        self.begin(
            kind::RE_ENCRYPT,
            &link::encode_bytes_list(&[request, header]),
        )
        .await
    }

    /// Starts moving one stored document (its prefix and header) to the successor key: decision, durable audit
    /// entry, acknowledgement. The conversation's `receipt` is the signed rotation item; in re-encrypt mode the
    /// body's chunks then go through [`Parent::stream_chunk`], in rewrap mode the body is unchanged.
    pub async fn begin_rotation(
        &self,
        mode: pod_protocol::rotation::Mode,
        header: &[u8],
    ) -> Result<Conversation, ApiError> {
        // Nothing moves to a successor whose sealed form is not stored here: after the next enclave restart that key
        // would be gone, and every document moved to it with it.
        let stored = self.next_sealed_key()?.map(|k| k.fingerprint);
        let loaded = self.health().await?.next_key_fingerprint;
        if stored.is_none() || stored != loaded {
            return Err(ApiError::BadRequest(format!(
                "the successor key in the enclave ({}) is not the one stored in {} ({}); prepare the rotation again \
                 (podctl rotate prepare) or restart the enclave to reload the stored one",
                loaded.as_deref().unwrap_or("none"),
                self.next_key_path().display(),
                stored.as_deref().unwrap_or("none")
            )));
        }
        let mut c = self
            .begin(kind::ROTATE, &link::encode_seq_bytes(mode as u64, header))
            .await?;
        c.seal_follows = mode == pod_protocol::rotation::Mode::ReEncrypt;
        Ok(c)
    }

    async fn begin(&self, kind_code: u64, body: &[u8]) -> Result<Conversation, ApiError> {
        let mut conn = self.enclave.connection().await?;
        let id = self.enclave.next_id();
        conn.send(id, kind_code, body).await?;
        let reply = conn.recv().await?;
        if reply.kind != kind::AUDIT_APPEND {
            let (code, message) = reply.code_message();
            self.metrics.unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(if code == "sealed" || code == "audit_backlog" {
                ApiError::Unavailable(message)
            } else if code == "no_successor" {
                ApiError::BadRequest(message)
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
            seal_follows: false,
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
        let mut out = r.body;
        if last && c.seal_follows {
            // The body seal goes to the client after the document; it is what lets the client check the body.
            let seal = c.conn.recv().await?;
            match seal.kind {
                kind::ROTATION_BODY_SEAL => out.extend_from_slice(&seal.body),
                kind::ERROR => {
                    let (code, message) = seal.code_message();
                    return Err(ApiError::Refused { code, message });
                }
                _ => {
                    return Err(ApiError::Internal(
                        "the enclave did not seal the rotated body".into(),
                    ));
                }
            }
        }
        Ok(out)
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
    /// A re-encrypt-mode rotation: the enclave's body seal follows the last chunk and ends the answer.
    seal_follows: bool,
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
                    if let Some((_, reply)) = waiting.get_mut(s)
                        && let Some(r) = reply.take()
                    {
                        let _ = r.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}
