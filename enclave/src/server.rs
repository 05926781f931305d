//! The enclave's server: frames in, frames out, over vsock in production or a Unix socket in local mode.
//!
//! This is the only part of the enclave that does I/O. It holds no policy: every decision is the [`Pod`]'s. What
//! it adds is the shape of a hostile peer's worst case: a cap on connections, a deadline on every frame, frame
//! sizes checked before allocation, and no release before the audit acknowledgement (enforced by the pod's types).

use crate::kms::{self, Credentials, KmsConfig, KmsError};
use crate::pod::{AuditAck, Outcome, Pod, PodError, Status};
use pod_cbor::Encoder;
use pod_cbor::{Decoder, Len};
use pod_protocol::frame::{self, Frame, PREFIX_LEN};
use pod_protocol::link::{self, kind};
use pod_protocol::{envelope, rotation};
use sha2::Digest as _;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where the enclave listens: chosen at run time, never by `#[cfg]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A Unix socket (local mode).
    Unix(PathBuf),
    /// A vsock port; `cid` is normally `VMADDR_CID_ANY` inside an enclave.
    Vsock {
        /// Context id to bind.
        cid: u32,
        /// Port.
        port: u32,
    },
}

impl FromStr for Address {
    type Err = String;

    /// `unix:/path/to/socket`, `vsock:PORT` (any CID) or `vsock:CID:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("vsock:") {
            let parse = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| format!("{v:?} is not a number"))
            };
            return match rest.split_once(':') {
                Some((cid, port)) => Ok(Self::Vsock {
                    cid: parse(cid)?,
                    port: parse(port)?,
                }),
                None => Ok(Self::Vsock {
                    cid: tokio_vsock::VMADDR_CID_ANY,
                    port: parse(rest)?,
                }),
            };
        }
        Err(format!(
            "{s:?} is not an address: use unix:/path/to/socket or vsock:PORT (or vsock:CID:PORT)"
        ))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

/// A bound listener of either kind.
pub enum Listener {
    /// Unix socket.
    Unix(tokio::net::UnixListener),
    /// vsock.
    Vsock(tokio_vsock::VsockListener),
}

trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

impl Listener {
    /// Binds `address`. A stale Unix socket file from an earlier run is removed first.
    pub fn bind(address: &Address) -> std::io::Result<Self> {
        match address {
            Address::Unix(path) => {
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
                Ok(Self::Unix(tokio::net::UnixListener::bind(path)?))
            }
            Address::Vsock { cid, port } => Ok(Self::Vsock(tokio_vsock::VsockListener::bind(
                tokio_vsock::VsockAddr::new(*cid, *port),
            )?)),
        }
    }

    async fn accept(&self) -> std::io::Result<Box<dyn Connection>> {
        Ok(match self {
            Self::Unix(l) => Box::new(l.accept().await?.0),
            Self::Vsock(l) => Box::new(l.accept().await?.0),
        })
    }
}

/// Limits on what a peer can make the server hold.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// How long a connection may stay silent between requests, and how long one frame may take to arrive.
    pub frame_timeout: Duration,
    /// How long the parent has to acknowledge an audit entry before the request is abandoned (nothing released).
    pub audit_ack_timeout: Duration,
    /// On shutdown, how long running requests may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            frame_timeout: Duration::from_secs(30),
            audit_ack_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

fn lock(pod: &Mutex<Pod>) -> MutexGuard<'_, Pod> {
    // A panic while holding the lock cannot leave the pod half-updated in a way that matters more than the
    // panic itself; keep serving rather than poisoning every later request.
    pod.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves until `shutdown` completes, then stops accepting and gives running connections
/// [`ServerLimits::shutdown_grace`] to finish.
pub async fn run(
    listener: Listener,
    pod: Arc<Mutex<Pod>>,
    limits: ServerLimits,
    kms: Option<KmsConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let kms = Arc::new(kms);
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let conn = tokio::select! {
            _ = &mut shutdown => break,
            c = listener.accept() => c,
        };
        match conn {
            Ok(conn) => {
                let pod = pod.clone();
                let kms = kms.clone();
                tasks.spawn(async move {
                    if let Err(e) = serve_connection(conn, pod, limits, kms).await {
                        tracing::debug!(error = %e, "connection closed");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Reap finished connections so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    tracing::info!(running = tasks.len(), "shutting down");
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame: {0}")]
    Frame(#[from] pod_protocol::Error),
    #[error("timed out")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

struct OwnedFrame {
    request_id: u64,
    kind: u64,
    body: Vec<u8>,
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<OwnedFrame>, ConnError> {
    let mut prefix = [0u8; PREFIX_LEN];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    // Checked before the buffer is allocated.
    let len = frame::body_len(prefix)?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    let f = frame::parse(&buf)?;
    Ok(Some(OwnedFrame {
        request_id: f.request_id,
        kind: f.kind,
        body: f.body.to_vec(),
    }))
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    request_id: u64,
    kind: u64,
    body: &[u8],
) -> Result<(), ConnError> {
    let bytes = frame::encode(&Frame {
        request_id,
        kind,
        body,
    })?;
    w.write_all(&bytes).await?;
    Ok(())
}

async fn timed<T>(
    d: Duration,
    f: impl Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| ConnError::Timeout)?
}

fn health_body(pod: &Pod) -> Vec<u8> {
    let h = pod.health();
    let mut e = Encoder::new();
    e.array(8).text(match h.status {
        Status::Sealed => "sealed",
        Status::Ready => "ready",
        Status::Failed => "failed",
    });
    match h.pod_key_fingerprint {
        Some(f) => e.bytes(&f),
        None => e.null(),
    };
    e.u64(h.audit_next_seq)
        .u64(h.rooms as u64)
        .bytes(&h.config_hash);
    match &h.failure {
        Some(f) => e.text(f),
        None => e.null(),
    };
    match &h.sealed_reason {
        Some(r) => e.text(r),
        None => e.null(),
    };
    match &h.next_key_fingerprint {
        Some(f) => e.bytes(f),
        None => e.null(),
    };
    e.into_bytes()
}

fn error_body(e: &PodError) -> Vec<u8> {
    let code = match e {
        PodError::Sealed => "sealed",
        PodError::Failed(_) => "failed",
        PodError::Rollback { .. } => "membership_rollback",
        PodError::Membership(_) => "membership_refused",
        PodError::UnknownRoom => "unknown_room",
        PodError::AuditBacklog => "audit_backlog",
        PodError::NoSuccessor => "no_successor",
        PodError::SuccessorLoaded(_) => "successor_loaded",
        PodError::SuccessorIsCurrent => "successor_is_current",
        PodError::SuccessorOrigin { .. } => "successor_origin_refused",
        PodError::RotationItems(_) => "rotation_items_refused",
        _ => "error",
    };
    link::encode_code_message(code, &e.to_string())
}

async fn serve_connection(
    conn: Box<dyn Connection>,
    pod: Arc<Mutex<Pod>>,
    limits: ServerLimits,
    kms: Arc<Option<KmsConfig>>,
) -> Result<(), ConnError> {
    let (mut r, mut w) = tokio::io::split(conn);
    loop {
        let Some(f) = timed(limits.frame_timeout, read_frame(&mut r))
            .await
            .or_else(|e| match e {
                // A connection idle past the deadline is simply closed.
                ConnError::Timeout => Ok(None),
                other => Err(other),
            })?
        else {
            return Ok(());
        };
        let id = f.request_id;
        match f.kind {
            kind::HEALTH => {
                let body = health_body(&lock(&pod));
                write_frame(&mut w, id, kind::HEALTH_REPORT, &body).await?;
            }
            kind::ATTESTATION => {
                let nonce = link::decode_optional_bytes(&f.body)?.map(<[u8]>::to_vec);
                let result = lock(&pod).attestation(nonce);
                match result {
                    Ok(doc) => write_frame(&mut w, id, kind::DOCUMENT, &doc).await?,
                    Err(e) => write_frame(&mut w, id, kind::ERROR, &error_body(&e)).await?,
                }
            }
            kind::SYNC_ROOM => {
                let entries: Vec<Vec<u8>> =
                    link::decode_bytes_list(&f.body, link::MAX_SYNC_ENTRIES)?
                        .into_iter()
                        .map(<[u8]>::to_vec)
                        .collect();
                let result = {
                    let mut p = lock(&pod);
                    p.sync_room(&entries).map(|room| (room, p.room_head(&room)))
                };
                reply_room(&mut w, id, result).await?;
            }
            kind::APPEND_MEMBERSHIP => {
                let result = {
                    let mut p = lock(&pod);
                    p.append_membership(&f.body)
                        .map(|room| (room, p.room_head(&room)))
                };
                reply_room(&mut w, id, result).await?;
            }
            kind::RESUME_AUDIT => {
                let last = link::decode_optional_bytes(&f.body)?;
                let result = lock(&pod).resume_audit(last);
                match result {
                    Ok(()) => write_frame(&mut w, id, kind::OK, &[]).await?,
                    Err(e) => write_frame(&mut w, id, kind::ERROR, &error_body(&e)).await?,
                }
            }
            kind::RE_ENCRYPT | kind::ROTATE => {
                conversation(&mut r, &mut w, id, f.kind, &f.body, &pod, limits).await?;
            }
            kind::CERTIFY_ROTATION => {
                certify_rotation(&mut r, &mut w, id, &f.body, &pod, limits).await?
            }
            kind::CHECKPOINT => {
                let result = lock(&pod).checkpoint();
                match result {
                    Ok(c) => write_frame(&mut w, id, kind::CHECKPOINT_SIGNED, &c).await?,
                    Err(e) => write_frame(&mut w, id, kind::ERROR, &error_body(&e)).await?,
                }
            }
            kind::PROVISION | kind::UNSEAL | kind::PROVISION_NEXT | kind::UNSEAL_NEXT => {
                let (reply_kind, body) = match kms.as_ref() {
                    None => (
                        kind::ERROR,
                        link::encode_code_message(
                            "kms_not_configured",
                            "this enclave was started without KMS (--pod-key kms)",
                        ),
                    ),
                    Some(config) => obtain_pod_key(f.kind, &f.body, &pod, config).await,
                };
                write_frame(&mut w, id, reply_kind, &body).await?;
            }
            _ => {
                write_frame(
                    &mut w,
                    id,
                    kind::ERROR,
                    &link::encode_code_message(
                        "unexpected_message",
                        "this message is not valid here",
                    ),
                )
                .await?;
                return Err(ConnError::Protocol("unexpected message"));
            }
        }
    }
}

/// A room id with its head (sequence number and hash), if the room is known.
type RoomReply = ([u8; 32], Option<(u64, [u8; 32])>);

async fn reply_room<W: AsyncWrite + Unpin>(
    w: &mut W,
    id: u64,
    result: Result<RoomReply, PodError>,
) -> Result<(), ConnError> {
    match result {
        Ok((room, Some((seq, head)))) => {
            let mut e = Encoder::new();
            e.array(3).bytes(&room).u64(seq).bytes(&head);
            write_frame(w, id, kind::ROOM_HEAD, e.as_bytes()).await
        }
        Ok((_, None)) => {
            write_frame(
                w,
                id,
                kind::ERROR,
                &link::encode_code_message("error", "room vanished"),
            )
            .await
        }
        Err(e) => write_frame(w, id, kind::ERROR, &error_body(&e)).await,
    }
}

/// A re-encryption or a rotation step: decide, audit, wait for the acknowledgement, release, stream.
async fn conversation<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    id: u64,
    kind_code: u64,
    body: &[u8],
    pod: &Mutex<Pod>,
    limits: ServerLimits,
) -> Result<(), ConnError> {
    let decided = if kind_code == kind::ROTATE {
        let (mode, header) = link::decode_seq_bytes(body)?;
        let mode = rotation::Mode::from_u64(mode)?;
        lock(pod).rotate(mode, header)
    } else {
        let parts = link::decode_bytes_n(body, 2)?;
        let (Some(request), Some(header)) = (parts.first(), parts.get(1)) else {
            return Err(ConnError::Protocol(
                "re-encrypt needs a request and a header",
            ));
        };
        lock(pod).re_encrypt(request, header)
    };
    let pending = match decided {
        Ok(p) => p,
        Err(e) => return write_frame(w, id, kind::ERROR, &error_body(&e)).await,
    };
    write_frame(
        w,
        id,
        kind::AUDIT_APPEND,
        &link::encode_seq_bytes(pending.seq(), pending.audit_entry()),
    )
    .await?;

    // Nothing more leaves until the parent says the entry is durable. On timeout the request is dropped: its
    // entry may or may not be stored, but no content or key was released, which is the side that matters.
    let ack = timed(limits.audit_ack_timeout, read_frame(r))
        .await?
        .ok_or(ConnError::Protocol(
            "connection closed before the audit acknowledgement",
        ))?;
    if ack.kind != kind::AUDIT_ACK {
        return Err(ConnError::Protocol("expected an audit acknowledgement"));
    }
    let (seq, hash) = link::decode_seq_bytes(&ack.body)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| ConnError::Protocol("audit hash must be 32 bytes"))?;
    let outcome = {
        let mut p = lock(pod);
        p.audit_durable(&AuditAck { seq, hash })
            .and_then(|()| pending.release(&mut p))
    };
    let mut release = match outcome {
        Err(e) => return write_frame(w, id, kind::ERROR, &error_body(&e)).await,
        Ok(Outcome::Refused(refusal)) => {
            return write_frame(
                w,
                id,
                kind::REFUSED,
                &link::encode_code_message(refusal.api_code(), refusal.message()),
            )
            .await;
        }
        Ok(Outcome::Released(release)) => release,
    };
    write_frame(
        w,
        id,
        kind::RELEASED,
        &link::encode_bytes_list(&[&release.header, &release.receipt]),
    )
    .await?;
    if release.transcryptor.is_none() {
        // A rewrap: the body does not change and does not pass through the enclave.
        return Ok(());
    }
    // A re-encrypt-mode rotation ends with a seal over the body it emitted (SPEC §9): the moved document's body is
    // ciphertext its keeper cannot check, and the parent must not be able to change it unnoticed.
    let mut body_seal = if kind_code == kind::ROTATE {
        let new_header_hash = envelope::read_header(&release.header)
            .ok()
            .flatten()
            .map(|(h, _)| h.hash())
            .ok_or(ConnError::Protocol("the rotated header does not parse"))?;
        Some((new_header_hash, sha2::Sha256::new()))
    } else {
        None
    };

    // Stream: one stored chunk in, one re-encrypted chunk out, never more than one chunk held.
    loop {
        let f = timed(limits.frame_timeout, read_frame(r))
            .await?
            .ok_or(ConnError::Protocol("connection closed mid-stream"))?;
        let last = match f.kind {
            kind::CHUNK => false,
            kind::LAST_CHUNK => true,
            _ => return Err(ConnError::Protocol("expected a chunk")),
        };
        let mut chunk = f.body;
        let Some(transcryptor) = release.transcryptor.as_mut() else {
            return Err(ConnError::Protocol("no content follows this release"));
        };
        if let Err(e) = transcryptor.process(&mut chunk, last) {
            tracing::warn!(error = %e, "stored document failed to decrypt mid-stream");
            return write_frame(
                w,
                id,
                kind::ERROR,
                &link::encode_code_message(
                    "stream_corrupt",
                    "the stored document is truncated, reordered or damaged",
                ),
            )
            .await;
        }
        if let Some((_, hasher)) = body_seal.as_mut() {
            hasher.update(&chunk);
        }
        write_frame(
            w,
            id,
            if last { kind::LAST_CHUNK } else { kind::CHUNK },
            &chunk,
        )
        .await?;
        if last {
            let Some((new_header_hash, hasher)) = body_seal.take() else {
                return Ok(());
            };
            let digest: [u8; 32] = hasher.finalize().into();
            let sealed = lock(pod).seal_rotated_body(&new_header_hash, &digest);
            return match sealed {
                Ok(seal) => write_frame(w, id, kind::ROTATION_BODY_SEAL, &seal).await,
                Err(e) => write_frame(w, id, kind::ERROR, &error_body(&e)).await,
            };
        }
    }
}

/// Checks the signed items of a rotation certificate as they stream past (O(log n) memory) and signs the
/// certificate. The items are verified outside the pod's lock; only the final signature takes it.
async fn certify_rotation<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    id: u64,
    body: &[u8],
    pod: &Mutex<Pod>,
    limits: ServerLimits,
) -> Result<(), ConnError> {
    let (mode, count) = link::decode_u64_pair(body)?;
    let mode = rotation::Mode::from_u64(mode)?;
    let started = lock(pod).certifier(mode);
    // A refusal here (no successor, sealed) is still answered after the items: the parent sends every frame before
    // it reads the reply, and an answer in the middle would turn the next frame into a protocol error and the real
    // reason into a broken link.
    let (mut folder, key, mut failure) = match started {
        Ok((folder, key)) => (Some(folder), Some(key), None),
        Err(e) => (None, None, Some(e)),
    };
    loop {
        let f = timed(limits.frame_timeout, read_frame(r))
            .await?
            .ok_or(ConnError::Protocol("connection closed mid-certificate"))?;
        let last = match f.kind {
            kind::CHUNK => false,
            kind::LAST_CHUNK => true,
            _ => return Err(ConnError::Protocol("expected a chunk of rotation items")),
        };
        if let (None, Some(folder), Some(key)) = (&failure, folder.as_mut(), key.as_ref()) {
            match link::decode_bytes_list(&f.body, link::MAX_ITEMS_PER_FRAME) {
                Ok(items) => {
                    for item in items {
                        if let Err(e) = folder.push(item, key) {
                            failure = Some(PodError::RotationItems(e));
                            break;
                        }
                    }
                }
                Err(e) => failure = Some(PodError::RotationItems(e)),
            }
        }
        if last {
            break;
        }
    }
    let result = match (failure, folder) {
        (Some(e), _) => Err(e),
        (None, Some(folder)) if folder.count() != count => Err(PodError::RotationItems(
            pod_protocol::Error::Malformed("the number of items differs from the count announced"),
        )),
        (None, Some(folder)) => lock(pod).sign_certificate(mode, &folder),
        (None, None) => Err(PodError::RotationItems(pod_protocol::Error::Malformed(
            "no certificate in progress",
        ))),
    };
    match result {
        Ok(c) => write_frame(w, id, kind::ROTATION_CERTIFICATE, &c).await,
        Err(e) => write_frame(w, id, kind::ERROR, &error_body(&e)).await,
    }
}

/// The fields of a PROVISION or UNSEAL request.
struct KeyRequest {
    sealed: Vec<u8>,
    expected_fingerprint: [u8; 32],
    key_id: String,
    pod_name: String,
    credentials: Credentials,
}

/// PROVISION: `[key_id, pod_name, access_key_id, secret_access_key, session_token|null]`;
/// UNSEAL: `[sealed, expected_fingerprint, pod_name, access_key_id, secret_access_key, session_token|null]`.
fn parse_key_request(kind_code: u64, body: &[u8]) -> Result<KeyRequest, pod_cbor::Error> {
    let mut d = Decoder::new(body);
    let provision = kind_code == kind::PROVISION || kind_code == kind::PROVISION_NEXT;
    let n = if provision { 5 } else { 6 };
    if d.array()? != Len::Definite(n) {
        return Err(pod_cbor::Error::Malformed {
            offset: 0,
            reason: "wrong number of fields",
        });
    }
    let mut req = KeyRequest {
        sealed: Vec::new(),
        expected_fingerprint: [0; 32],
        key_id: String::new(),
        pod_name: String::new(),
        credentials: Credentials {
            access_key_id: String::new(),
            secret_access_key: zeroize::Zeroizing::new(String::new()),
            session_token: None,
        },
    };
    if provision {
        req.key_id = d.text()?.to_owned();
    } else {
        req.sealed = d.bytes()?.to_vec();
        req.expected_fingerprint =
            d.bytes()?
                .try_into()
                .map_err(|_| pod_cbor::Error::Malformed {
                    offset: 0,
                    reason: "fingerprint must be 32 bytes",
                })?;
    }
    req.pod_name = d.text()?.to_owned();
    req.credentials.access_key_id = d.text()?.to_owned();
    req.credentials.secret_access_key = zeroize::Zeroizing::new(d.text()?.to_owned());
    if !d.null()? {
        req.credentials.session_token = Some(zeroize::Zeroizing::new(d.text()?.to_owned()));
    }
    d.finish()?;
    Ok(req)
}

/// How many times a transient KMS failure is retried, and the first wait (doubled each time).
const KMS_ATTEMPTS: u32 = 4;
const KMS_FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Runs the ceremony or the unseal, retrying transient failures, and unseals the pod on success. Returns the reply.
async fn obtain_pod_key(
    kind_code: u64,
    body: &[u8],
    pod: &Mutex<Pod>,
    config: &KmsConfig,
) -> (u64, Vec<u8>) {
    let req = match parse_key_request(kind_code, body) {
        Ok(r) => r,
        Err(_) => {
            return (
                kind::ERROR,
                link::encode_code_message("malformed_request", "malformed key request"),
            );
        }
    };
    let next = kind_code == kind::PROVISION_NEXT || kind_code == kind::UNSEAL_NEXT;
    let (nsm, sealed) = {
        let p = lock(pod);
        (p.nsm(), p.is_sealed())
    };
    if next && sealed {
        return (
            kind::ERROR,
            link::encode_code_message(
                "sealed",
                "the pod must hold its own key before it can load a successor",
            ),
        );
    }
    if !next && !sealed {
        return (
            kind::ERROR,
            link::encode_code_message("already_unsealed", "the pod already holds its key"),
        );
    }
    let client = kms::client(config, &req.credentials);
    let context = kms::pod_key_context(&req.pod_name);
    let mut wait = KMS_FIRST_BACKOFF;
    let mut attempt = 1;
    let outcome = loop {
        let result = if kind_code == kind::PROVISION || kind_code == kind::PROVISION_NEXT {
            kms::provision(&client, &req.key_id, &context, nsm.as_ref())
                .await
                .map(|p| (p.key, p.key_arn, Some((p.sealed, p.public_spki))))
        } else {
            kms::unseal(
                &client,
                &req.sealed,
                &context,
                &req.expected_fingerprint,
                nsm.as_ref(),
            )
            .await
            .map(|(k, arn)| (k, arn, None))
        };
        match result {
            Err(e) if e.is_transient() && attempt < KMS_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "KMS call failed; retrying");
                lock(pod).note_unseal_failure(&format!(
                    "{e} (attempt {attempt} of {KMS_ATTEMPTS}, retrying)"
                ));
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
                attempt += 1;
            }
            other => break other,
        }
    };
    let (key, key_arn, provisioned) = match outcome {
        Ok(v) => v,
        Err(e) => {
            let code = match &e {
                KmsError::AccessDenied(_) => "kms_access_denied",
                KmsError::Unreachable(_) => "kms_unreachable",
                KmsError::WrongKey => "wrong_pod_key",
                _ => "kms_error",
            };
            lock(pod).note_unseal_failure(&e.to_string());
            return (kind::ERROR, link::encode_code_message(code, &e.to_string()));
        }
    };
    let mut p = lock(pod);
    let loaded = if next {
        p.set_successor(key, Some(&key_arn)).map(|_| ())
    } else {
        p.unseal(key).map(|()| p.set_kms_origin(&key_arn))
    };
    if let Err(e) = loaded {
        return (kind::ERROR, error_body(&e));
    }
    match provisioned {
        None => (kind::OK, Vec::new()),
        Some((sealed_blob, spki)) => match p.attestation(None) {
            Ok(doc) => (
                kind::PROVISIONED,
                link::encode_bytes_list(&[&sealed_blob, &spki, &doc]),
            ),
            Err(e) => (kind::ERROR, error_body(&e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print() {
        assert_eq!(
            "unix:/tmp/pod.sock".parse::<Address>().unwrap(),
            Address::Unix("/tmp/pod.sock".into())
        );
        assert_eq!(
            "vsock:5000".parse::<Address>().unwrap(),
            Address::Vsock {
                cid: tokio_vsock::VMADDR_CID_ANY,
                port: 5000
            }
        );
        assert_eq!(
            "vsock:16:5000".parse::<Address>().unwrap().to_string(),
            "vsock:16:5000"
        );
        assert!("tcp:1".parse::<Address>().is_err());
        assert!("vsock:x".parse::<Address>().is_err());
        assert!("unix:".parse::<Address>().is_err());
    }
}
