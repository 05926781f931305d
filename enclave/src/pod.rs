//! The pod: a state machine with no I/O (`sealed → ready → failed`) that decides every request.
//!
//! The binary feeds it bytes from the parent and sends back what it returns; everything here is testable with a
//! [`crate::clock::ManualClock`] and the mock NSM.
//!
//! # Audit before release
//!
//! [`Pod::re_encrypt`] never returns the re-encrypted header (which carries the wrapped key) or a way to produce
//! content. It returns a [`Pending`] holding a signed audit entry. Only when the parent acknowledges that the entry
//! is durable ([`Pod::audit_durable`], with the entry's exact hash) does [`Pending::release`] hand out the header,
//! the receipt and the [`Transcryptor`] that turns stored chunks into the user's chunks. Refusals go through the same
//! path, so every request leaves exactly one audit entry.
//!
//! # What the parent can still do
//!
//! It can drop requests, delay them, and lie about durability. A lie shows later: every receipt names its audit
//! entry's sequence number and hash, and [`pod_protocol::audit::verify_log`] fails on a log without it.

use crate::budget::{BudgetConfig, Budgets, Scope};
use crate::clock::Clock;
use crate::nsm::{AttestationRequest, Nsm, NsmError};
use crate::replay::{ReplayCache, ReplayError};
use pod_cbor::Encoder;
use pod_protocol::audit::{self, Decision, Receipt};
use pod_protocol::envelope::{self, Header, Kind, UnwrapKey};
use pod_protocol::keys::{HASH_LEN, SigningKey, VerifyingKey, fingerprint, labeled_hash};
use pod_protocol::membership::{Room, SignedEntry};
use pod_protocol::request::{Operation, SignedRequest};
use pod_protocol::rotation::{self, ItemFolder, Mode};
use pod_protocol::stream::{Opener, Sealer};
use pod_protocol::{Error as ProtocolError, hpke};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The version string bound into attestation documents (through the configuration hash).
pub const POD_VERSION: &str = concat!("secure-pod/", env!("CARGO_PKG_VERSION"));

/// Tunable limits of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodConfig {
    /// How old a request may be.
    pub freshness_ms: u64,
    /// How far in the future a request's time may be (client clock skew).
    pub future_skew_ms: u64,
    /// Live (user, nonce) pairs remembered; when full of live entries, requests are refused.
    pub replay_capacity: usize,
    /// Decryption budgets.
    pub budgets: BudgetConfig,
    /// Most rooms held in memory.
    pub max_rooms: usize,
    /// Most audit entries waiting for the parent's acknowledgement.
    pub max_pending_audit: usize,
}

impl Default for PodConfig {
    fn default() -> Self {
        Self {
            freshness_ms: 5 * 60 * 1000,
            future_skew_ms: 30 * 1000,
            replay_capacity: 1_000_000,
            budgets: BudgetConfig::default(),
            max_rooms: 100_000,
            max_pending_audit: 4096,
        }
    }
}

impl PodConfig {
    /// `labeled_hash("config", …)` over every limit and the version: clients see it in the attestation's
    /// `user_data` and so know the rules the pod enforces.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        let b = &self.budgets;
        let mut e = Encoder::new();
        e.array(12)
            .text(POD_VERSION)
            .u64(self.freshness_ms)
            .u64(self.future_skew_ms)
            .u64(self.replay_capacity as u64)
            .u64(self.max_rooms as u64)
            .u64(self.max_pending_audit as u64)
            .u64(b.per_user_room.hourly)
            .u64(b.per_user_room.daily)
            .u64(b.per_room.hourly)
            .u64(b.per_room.daily)
            .u64(b.global.hourly)
            .u64(b.global.daily);
        labeled_hash("config", e.as_bytes())
    }
}

/// The pod's keys: the pod key (HPKE P-256) and the receipt key (ECDSA P-256) derived from it, so that audit
/// signatures stay verifiable across restarts and across enclaves sharing the pod key.
pub struct PodKeys {
    pod: hpke::PrivateKey,
    receipt: SigningKey,
    pod_spki: Vec<u8>,
    fingerprint: [u8; HASH_LEN],
}

impl PodKeys {
    /// Wraps the pod key and derives the receipt key from it.
    pub fn new(pod: hpke::PrivateKey) -> Result<Self, ProtocolError> {
        let scalar = pod.to_scalar()?;
        let ikm = [b"secure-pod/v1/receipt-key\0".as_slice(), &scalar].concat();
        let ikm = zeroize::Zeroizing::new(ikm);
        let derived = hpke::PrivateKey::derive(&ikm)?;
        let receipt = SigningKey::from_scalar(&derived.to_scalar()?)?;
        let pod_spki = pod.public_key().to_spki_der();
        let fingerprint = fingerprint(&pod_spki);
        Ok(Self {
            pod,
            receipt,
            pod_spki,
            fingerprint,
        })
    }

    /// The pod key's SubjectPublicKeyInfo.
    pub fn pod_spki(&self) -> &[u8] {
        &self.pod_spki
    }
    /// SHA-256 of the pod key's SPKI.
    pub fn fingerprint(&self) -> &[u8; HASH_LEN] {
        &self.fingerprint
    }
    /// The receipt key's public half.
    pub fn receipt_key(&self) -> VerifyingKey {
        self.receipt.verifying_key()
    }
}

enum State {
    Sealed,
    Ready(Box<PodKeys>),
    Failed(String),
}

/// Whether the pod can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for its key.
    Sealed,
    /// Serving.
    Ready,
    /// Stopped for good (its key is gone).
    Failed,
}

/// What `health` reports. Nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The state.
    pub status: Status,
    /// The pod key's fingerprint, once ready.
    pub pod_key_fingerprint: Option<[u8; HASH_LEN]>,
    /// Why the pod failed, if it did.
    pub failure: Option<String>,
    /// While sealed: why the last attempt to obtain the pod key failed (KMS unreachable, access denied, ...).
    pub sealed_reason: Option<String>,
    /// The next audit sequence number.
    pub audit_next_seq: u64,
    /// Rooms in memory.
    pub rooms: usize,
    /// The configuration hash.
    pub config_hash: [u8; HASH_LEN],
    /// During a rotation: the fingerprint of the successor pod key the pod holds.
    pub next_key_fingerprint: Option<[u8; HASH_LEN]>,
}

/// Errors of pod operations (as opposed to refusals of requests, which are audited: see [`Refusal`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodError {
    /// The pod has no key yet.
    #[error("the pod is sealed: its key has not been released yet")]
    Sealed,
    /// The pod has failed and will not serve.
    #[error("the pod has failed: {0}")]
    Failed(String),
    /// The pod already holds a key.
    #[error("the pod is already unsealed")]
    AlreadyUnsealed,
    /// A membership log or entry was refused.
    #[error("membership refused: {0}")]
    Membership(ProtocolError),
    /// A membership log is older than one the pod has seen (a rollback) or forks from it.
    #[error(
        "membership log for this room is behind or forks from the head the pod has seen (seq {known_seq})"
    )]
    Rollback {
        /// The head sequence number the pod knows.
        known_seq: u64,
    },
    /// The room is not known to the pod.
    #[error("unknown room")]
    UnknownRoom,
    /// Too many rooms.
    #[error("the pod holds the maximum number of rooms")]
    TooManyRooms,
    /// Too many audit entries are waiting for acknowledgement.
    #[error("too many audit entries await acknowledgement; the audit store is not keeping up")]
    AuditBacklog,
    /// The audit log has no entry to checkpoint yet.
    #[error("the audit log is empty")]
    EmptyAuditLog,
    /// The audit chain has not been resumed from the parent's log since the pod started.
    #[error(
        "the audit log has not been loaded yet (the parent must send the last stored entry first)"
    )]
    AuditNotResumed,
    /// An acknowledgement does not match an entry the pod wrote.
    #[error("audit acknowledgement does not match the entry written")]
    AuditAckMismatch,
    /// Release was attempted before the audit entry was acknowledged as durable.
    #[error("the audit entry is not yet durable")]
    AuditNotDurable,
    /// The audit chain to resume from is not the pod's.
    #[error("the audit log to resume from does not verify under the pod's receipt key: {0}")]
    AuditResume(ProtocolError),
    /// The NSM failed.
    #[error(transparent)]
    Nsm(#[from] NsmError),
    /// A cryptographic operation failed.
    #[error("cryptographic failure: {0}")]
    Crypto(ProtocolError),
    /// A rotation step needs a successor pod key, and none is loaded.
    #[error("no successor pod key is loaded; prepare the rotation first")]
    NoSuccessor,
    /// A successor pod key is already loaded.
    #[error("a successor pod key is already loaded (fingerprint {0})")]
    SuccessorLoaded(String),
    /// The successor key is the pod key itself.
    #[error("the successor pod key is the current pod key")]
    SuccessorIsCurrent,
    /// The successor comes from a KMS key outside the pod key's account and region.
    #[error("the successor key comes from KMS key {got}, outside {expected}; refused")]
    SuccessorOrigin {
        /// The pod key's `arn:partition:kms:region:account`.
        expected: String,
        /// The successor's key ARN.
        got: String,
    },
    /// The items of a rotation certificate do not check out.
    #[error("rotation items refused: {0}")]
    RotationItems(ProtocolError),
}

/// Why a request was refused. The short code goes into the audit entry; the message to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request could not be parsed.
    Malformed,
    /// The room is not known to the pod.
    UnknownRoom,
    /// The user is not (or no longer) a member of the room.
    NotMember,
    /// The signature is not the member's.
    BadSignature,
    /// The request was made for another pod key.
    WrongPod,
    /// The request is too old.
    Expired,
    /// The request is dated in the future.
    FromTheFuture,
    /// The request was seen before.
    Replayed,
    /// The replay cache is full of live entries.
    Busy,
    /// The sealed document is not the one the request names, or not for this room.
    WrongDocument,
    /// The document does not decrypt under the pod key.
    CannotDecrypt,
    /// A decryption budget is spent.
    BudgetExhausted(Scope),
    /// Rotation: the document is already sealed to the successor key.
    AlreadyRotated,
    /// The stored document is sealed to another pod key (e.g. the successor, after a rotation).
    OtherPodKey,
}

impl Refusal {
    /// A stable code for APIs.
    pub fn api_code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed_request",
            Self::UnknownRoom => "unknown_room",
            Self::NotMember => "not_a_member",
            Self::BadSignature => "bad_signature",
            Self::WrongPod => "wrong_pod_key",
            Self::Expired => "request_expired",
            Self::FromTheFuture => "request_from_the_future",
            Self::Replayed => "replayed_request",
            Self::Busy => "busy",
            Self::WrongDocument => "wrong_document",
            Self::CannotDecrypt => "cannot_decrypt",
            Self::BudgetExhausted(_) => "budget_exhausted",
            Self::AlreadyRotated => "already_rotated",
            Self::OtherPodKey => "sealed_to_another_pod_key",
        }
    }

    /// What to tell the person.
    pub fn message(self) -> &'static str {
        match self {
            Self::Malformed => "The request could not be read.",
            Self::UnknownRoom => "This data room is not known to the pod.",
            Self::NotMember => {
                "You do not have access to this data room (access may have been revoked)."
            }
            Self::BadSignature => "The request is not signed by your registered key.",
            Self::WrongPod => "The request was made for a different pod key; verify the pod again.",
            Self::Expired => "The request is too old; check your clock and try again.",
            Self::FromTheFuture => "The request is dated in the future; check your clock.",
            Self::Replayed => "This request was already used; send a new one.",
            Self::Busy => "The pod is busy; please try again shortly.",
            Self::WrongDocument => {
                "The document does not match the request or belongs to another room."
            }
            Self::CannotDecrypt => "The document cannot be decrypted by this pod.",
            Self::BudgetExhausted(_) => {
                "The decryption budget is spent; try again later or ask the room owner."
            }
            Self::AlreadyRotated => "The document is already sealed to the new pod key.",
            Self::OtherPodKey => {
                "The document is sealed to a different pod key; after a key rotation, open the rotated copy through the new pod."
            }
        }
    }

    /// The audit reason.
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed request",
            Self::UnknownRoom => "unknown room",
            Self::NotMember => "not a member",
            Self::BadSignature => "bad signature",
            Self::WrongPod => "request for another pod key",
            Self::Expired => "request expired",
            Self::FromTheFuture => "request from the future",
            Self::Replayed => "replayed request",
            Self::Busy => "replay cache full",
            Self::WrongDocument => "document does not match request",
            Self::CannotDecrypt => "document does not decrypt",
            Self::BudgetExhausted(s) => s.name(),
            Self::AlreadyRotated => "already rotated",
            Self::OtherPodKey => "document sealed to another pod key",
        }
    }
}

/// An acknowledgement from the parent that an audit entry is stored durably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditAck {
    /// The entry's sequence number.
    pub seq: u64,
    /// The entry's hash, proving the parent stored that exact entry.
    pub hash: [u8; HASH_LEN],
}

/// Turns the stored document's chunks into the user's chunks, in place, one chunk at a time.
pub struct Transcryptor {
    opener: Opener,
    sealer: Sealer,
}

impl Transcryptor {
    /// Decrypts a stored chunk and re-encrypts it for the user in the same buffer: the plaintext is overwritten
    /// by the new ciphertext before the buffer is returned. `last` says whether this is the final stored chunk.
    pub fn process(&mut self, chunk: &mut Vec<u8>, last: bool) -> Result<(), ProtocolError> {
        if let Err(e) = self.opener.open_in_place(chunk, last) {
            // Do not leave partial plaintext behind on failure.
            zeroize::Zeroize::zeroize(chunk);
            return Err(e);
        }
        self.sealer.seal_in_place(chunk, last)
    }

    /// True once the last chunk went through.
    pub fn is_done(&self) -> bool {
        self.sealer.is_done()
    }
}

/// What a released request yields.
pub struct Release {
    /// The re-encrypted document's prefix and header (the wrapped per-request key is inside).
    pub header: Vec<u8>,
    /// The signed receipt.
    pub receipt: Vec<u8>,
    /// The content converter; `None` when no content follows (a rotation that only rewraps the key).
    pub transcryptor: Option<Transcryptor>,
}

/// The outcome of a request once its audit entry is durable.
pub enum Outcome {
    /// The request is granted.
    Released(Release),
    /// The request is refused.
    Refused(Refusal),
}

enum PendingOutcome {
    Release(Release),
    Refuse(Refusal),
}

/// A decided request whose audit entry must become durable before anything leaves the enclave.
pub struct Pending {
    seq: u64,
    hash: [u8; HASH_LEN],
    audit_entry: Vec<u8>,
    outcome: PendingOutcome,
}

impl Pending {
    /// The signed audit entry for the parent to store.
    pub fn audit_entry(&self) -> &[u8] {
        &self.audit_entry
    }
    /// Its sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Its hash.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        self.hash
    }
    /// True if the request will be refused.
    pub fn is_refusal(&self) -> bool {
        matches!(self.outcome, PendingOutcome::Refuse(_))
    }

    /// The outcome, once `pod` has seen this very entry acknowledged.
    pub fn release(self, pod: &mut Pod) -> Result<Outcome, PodError> {
        if !pod.acked.remove(&self.seq) {
            return Err(PodError::AuditNotDurable);
        }
        Ok(match self.outcome {
            PendingOutcome::Release(r) => Outcome::Released(r),
            PendingOutcome::Refuse(r) => Outcome::Refused(r),
        })
    }
}

struct RoomRecord {
    room: Room,
}

/// The pod. See the [module documentation](self).
pub struct Pod {
    config: PodConfig,
    clock: Arc<dyn Clock>,
    nsm: Arc<dyn Nsm>,
    state: State,
    rooms: HashMap<[u8; HASH_LEN], RoomRecord>,
    replay: ReplayCache,
    budgets: Budgets,
    next_seq: u64,
    prev_hash: [u8; HASH_LEN],
    unacked: BTreeMap<u64, [u8; HASH_LEN]>,
    acked: BTreeSet<u64>,
    audit_resumed: bool,
    sealed_reason: Option<String>,
    successor: Option<Box<PodKeys>>,
    /// Where the pod key came from: `None` when not from KMS; `Ok(arn:PARTITION:kms:REGION:ACCOUNT)` of the KMS key
    /// as KMS answered; `Err(the raw key id)` when that answer was not a key ARN.
    kms_origin: Option<Result<String, String>>,
}

impl Pod {
    /// A sealed pod.
    pub fn new(config: PodConfig, clock: Arc<dyn Clock>, nsm: Arc<dyn Nsm>) -> Self {
        let now = clock.now_ms();
        Self {
            replay: ReplayCache::new(config.replay_capacity),
            budgets: Budgets::new(config.budgets, now),
            config,
            clock,
            nsm,
            state: State::Sealed,
            rooms: HashMap::new(),
            next_seq: 0,
            prev_hash: [0; HASH_LEN],
            unacked: BTreeMap::new(),
            acked: BTreeSet::new(),
            audit_resumed: false,
            sealed_reason: None,
            successor: None,
            kms_origin: None,
        }
    }

    fn keys(&self) -> Result<&PodKeys, PodError> {
        match &self.state {
            State::Ready(k) => Ok(k),
            State::Sealed => Err(PodError::Sealed),
            State::Failed(r) => Err(PodError::Failed(r.clone())),
        }
    }

    /// Sealed → ready, with the pod key (which KMS released to this enclave).
    pub fn unseal(&mut self, pod_key: hpke::PrivateKey) -> Result<(), PodError> {
        match self.state {
            State::Sealed => {
                self.state =
                    State::Ready(Box::new(PodKeys::new(pod_key).map_err(PodError::Crypto)?));
                self.sealed_reason = None;
                tracing::info!("pod unsealed");
                Ok(())
            }
            State::Ready(_) => Err(PodError::AlreadyUnsealed),
            State::Failed(ref r) => Err(PodError::Failed(r.clone())),
        }
    }

    /// Records why obtaining the pod key failed, for `health`; the pod stays sealed and serves nothing.
    pub fn note_unseal_failure(&mut self, reason: &str) {
        if matches!(self.state, State::Sealed) {
            tracing::warn!(reason, "pod stays sealed");
            self.sealed_reason = Some(reason.to_owned());
        }
    }

    /// The NSM the pod uses (for the KMS steps, which attest an ephemeral key).
    pub fn nsm(&self) -> Arc<dyn Nsm> {
        self.nsm.clone()
    }

    /// True while the pod waits for its key.
    pub fn is_sealed(&self) -> bool {
        matches!(self.state, State::Sealed)
    }

    /// Any state → failed: the keys are dropped (aws-lc clears them) and the pod refuses everything from now on.
    pub fn fail(&mut self, reason: &str) {
        tracing::error!(reason, "pod failed closed");
        self.state = State::Failed(reason.to_owned());
    }

    /// The state and public facts.
    pub fn health(&self) -> Health {
        let (status, fpr, failure) = match &self.state {
            State::Sealed => (Status::Sealed, None, None),
            State::Ready(k) => (Status::Ready, Some(k.fingerprint), None),
            State::Failed(r) => (Status::Failed, None, Some(r.clone())),
        };
        Health {
            status,
            pod_key_fingerprint: fpr,
            failure,
            sealed_reason: self.sealed_reason.clone(),
            audit_next_seq: self.next_seq,
            rooms: self.rooms.len(),
            config_hash: self.config.hash(),
            next_key_fingerprint: self.successor.as_ref().map(|k| k.fingerprint),
        }
    }

    /// The public keys, once ready.
    pub fn keys_public(&self) -> Result<(Vec<u8>, VerifyingKey), PodError> {
        let k = self.keys()?;
        Ok((k.pod_spki.clone(), k.receipt_key()))
    }

    /// An attestation document binding the pod key (`public_key`, its SPKI) and, in `user_data`, the CBOR array
    /// `[receipt key SPKI, configuration hash]`.
    pub fn attestation(&self, nonce: Option<Vec<u8>>) -> Result<Vec<u8>, PodError> {
        let k = self.keys()?;
        let mut user_data = Encoder::new();
        user_data
            .array(2)
            .bytes(&k.receipt_key().to_spki_der())
            .bytes(&self.config.hash());
        Ok(self.nsm.attest(&AttestationRequest {
            public_key: Some(k.pod_spki.clone()),
            user_data: Some(user_data.into_bytes()),
            nonce,
        })?)
    }

    /// Continues the audit chain after a restart from the last stored entry (`None` for a new log). The entry
    /// must verify under this pod's receipt key.
    pub fn resume_audit(&mut self, last_entry: Option<&[u8]>) -> Result<(), PodError> {
        let key = self.keys()?.receipt_key();
        match last_entry {
            None => {
                self.next_seq = 0;
                self.prev_hash = [0; HASH_LEN];
            }
            Some(bytes) => {
                let e = audit::SignedEntry::parse_verified(bytes, &key)
                    .map_err(PodError::AuditResume)?;
                self.next_seq = e.entry().seq.saturating_add(1);
                self.prev_hash = e.hash();
            }
        }
        self.unacked.clear();
        self.acked.clear();
        self.audit_resumed = true;
        Ok(())
    }

    /// Loads or refreshes a room from its whole membership log. A log behind the head the pod has already seen,
    /// or one that forks from it, is refused: membership never goes backwards.
    pub fn sync_room(&mut self, entries: &[Vec<u8>]) -> Result<[u8; HASH_LEN], PodError> {
        self.keys()?;
        let parsed = entries
            .iter()
            .map(|e| SignedEntry::parse(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(PodError::Membership)?;
        let room = Room::replay(&parsed).map_err(PodError::Membership)?;
        let id = *room.id();
        if let Some(known) = self.rooms.get(&id) {
            let known_seq = known.room.seq();
            let on_chain = usize::try_from(known_seq)
                .ok()
                .and_then(|i| parsed.get(i))
                .is_some_and(|e| e.hash() == *known.room.head());
            if room.seq() < known_seq || !on_chain {
                return Err(PodError::Rollback { known_seq });
            }
        } else if self.rooms.len() >= self.config.max_rooms {
            return Err(PodError::TooManyRooms);
        }
        self.rooms.insert(id, RoomRecord { room });
        Ok(id)
    }

    /// Appends one entry to a known room.
    pub fn append_membership(&mut self, entry: &[u8]) -> Result<[u8; HASH_LEN], PodError> {
        self.keys()?;
        let signed = SignedEntry::parse(entry).map_err(PodError::Membership)?;
        let room_id: [u8; HASH_LEN] = signed
            .entry()
            .room
            .as_slice()
            .try_into()
            .map_err(|_| PodError::UnknownRoom)?;
        let record = self.rooms.get_mut(&room_id).ok_or(PodError::UnknownRoom)?;
        record.room.apply(&signed).map_err(PodError::Membership)?;
        Ok(room_id)
    }

    /// The head (sequence number and hash) of a room's membership log, as the pod knows it.
    pub fn room_head(&self, room: &[u8; HASH_LEN]) -> Option<(u64, [u8; HASH_LEN])> {
        self.rooms.get(room).map(|r| (r.room.seq(), *r.room.head()))
    }

    /// Decides a re-encryption request for the stored document whose prefix and header are `sealed_header`.
    /// Returns the pending outcome and its audit entry; see the module documentation.
    pub fn re_encrypt(
        &mut self,
        signed_request: &[u8],
        sealed_header: &[u8],
    ) -> Result<Pending, PodError> {
        self.keys()?;
        if !self.audit_resumed {
            return Err(PodError::AuditNotResumed);
        }
        self.make_room_for_pending();
        let now = self.clock.now_ms();
        let request = SignedRequest::parse(signed_request).ok();
        let request_hash = request.as_ref().map_or([0; HASH_LEN], SignedRequest::hash);
        let (user, room, doc) =
            request
                .as_ref()
                .map_or(([0; HASH_LEN], [0; HASH_LEN], Vec::new()), |r| {
                    let u = r.unverified();
                    (u.user, u.room, u.doc.clone())
                });
        let head = self
            .rooms
            .get(&room)
            .map_or([0; HASH_LEN], |r| *r.room.head());

        let decision = match request {
            None => Err(Refusal::Malformed),
            Some(req) => self.decide(&req, sealed_header, now),
        };
        let (audit_decision, reason, outcome) = match decision {
            Ok(release) => (Decision::Allow, "released", Ok(release)),
            Err(r @ Refusal::BudgetExhausted(_)) => (Decision::Alert, r.code(), Err(r)),
            Err(r) => (Decision::Deny, r.code(), Err(r)),
        };
        let (seq, hash, audit_entry) = self.record(audit::Entry {
            seq: 0,
            prev: [0; HASH_LEN],
            time_ms: now,
            user,
            room,
            doc,
            decision: audit_decision,
            reason: reason.to_owned(),
            membership_head: head,
            request_hash,
        })?;
        let outcome = match outcome {
            Ok((header, transcryptor)) => {
                let receipt = Receipt {
                    request_hash,
                    response_header_hash: header.hash(),
                    audit_seq: seq,
                    audit_entry_hash: hash,
                }
                .sign(&self.keys()?.receipt)
                .map_err(PodError::Crypto)?;
                PendingOutcome::Release(Release {
                    header: header.to_prefixed(),
                    receipt,
                    transcryptor: Some(transcryptor),
                })
            }
            Err(r) => PendingOutcome::Refuse(r),
        };
        tracing::info!(seq, decision = reason, "request decided");
        Ok(Pending {
            seq,
            hash,
            audit_entry,
            outcome,
        })
    }

    /// Signs an audit entry at the head of the chain (its `seq` and `prev` are filled in here), advances the chain
    /// and marks the entry as awaiting the parent's acknowledgement.
    fn record(
        &mut self,
        mut entry: audit::Entry,
    ) -> Result<(u64, [u8; HASH_LEN], Vec<u8>), PodError> {
        entry.seq = self.next_seq;
        entry.prev = self.prev_hash;
        let signed =
            audit::SignedEntry::sign(entry, &self.keys()?.receipt).map_err(PodError::Crypto)?;
        let seq = self.next_seq;
        let hash = signed.hash();
        self.next_seq = self.next_seq.saturating_add(1);
        self.prev_hash = hash;
        self.unacked.insert(seq, hash);
        Ok((seq, hash, signed.as_bytes().to_vec()))
    }

    fn make_room_for_pending(&mut self) {
        if self.unacked.len() >= self.config.max_pending_audit {
            // The oldest entry's request was abandoned (its conversation died before the acknowledgement). Forget
            // it: its Pending can then never be released, which is the safe side.
            if let Some((&oldest, _)) = self.unacked.iter().next() {
                tracing::warn!(
                    seq = oldest,
                    "audit entry never acknowledged; its request will not be released"
                );
                self.unacked.remove(&oldest);
            }
        }
    }

    /// Records which KMS key (as KMS named it in its answer) released the pod key.
    ///
    /// A key id that does not parse as a KMS key ARN is kept as such: no successor is accepted then (fail closed),
    /// since the check below could not say where one came from.
    pub fn set_kms_origin(&mut self, key_arn: &str) {
        self.kms_origin = Some(kms_scope(key_arn).ok_or_else(|| key_arn.to_owned()));
        if let Some(Err(_)) = self.kms_origin {
            tracing::warn!(
                "KMS answered a key id that is not a KMS key ARN; no successor key will be accepted"
            );
        }
    }

    /// Loads the successor pod key for a rotation (KMS released it to this enclave under the new key's policy).
    ///
    /// `key_arn` is the KMS key that released it, as KMS answered. When the pod key came from KMS, the successor
    /// must come from a key of the same partition, region and account: the parent names the KMS key, the blob and
    /// the credentials, and without this check it could pass a key made in an account of its own, whose private
    /// half it knows, and have every document rewrapped to it.
    pub fn set_successor(
        &mut self,
        key: hpke::PrivateKey,
        key_arn: Option<&str>,
    ) -> Result<[u8; HASH_LEN], PodError> {
        let current = *self.keys()?.fingerprint();
        if let Some(origin) = &self.kms_origin {
            let theirs = key_arn.and_then(kms_scope);
            let expected = match origin {
                Ok(scope) => scope.clone(),
                Err(raw) => format!("a KMS key ARN (the pod key's KMS answer named {raw:?})"),
            };
            if origin.is_err() || theirs.as_deref() != origin.as_ref().ok().map(String::as_str) {
                return Err(PodError::SuccessorOrigin {
                    expected,
                    got: key_arn.unwrap_or("none").to_owned(),
                });
            }
        }
        if let Some(k) = &self.successor {
            return Err(PodError::SuccessorLoaded(hex::encode(k.fingerprint)));
        }
        let next = PodKeys::new(key).map_err(PodError::Crypto)?;
        if next.fingerprint == current {
            return Err(PodError::SuccessorIsCurrent);
        }
        let fpr = next.fingerprint;
        self.successor = Some(Box::new(next));
        tracing::info!("successor pod key loaded");
        Ok(fpr)
    }

    /// Moves one stored document (its prefix and header) to the successor key: decides, and returns the pending
    /// outcome with its audit entry, exactly like [`Pod::re_encrypt`]. Released, it yields the new prefixed header,
    /// the signed rotation item in place of a receipt and, in re-encrypt mode, the transcryptor for the body.
    /// Decryption budgets are not charged: nothing leaves the enclave but ciphertext for the successor key.
    pub fn rotate(&mut self, mode: Mode, sealed_header: &[u8]) -> Result<Pending, PodError> {
        self.keys()?;
        if self.successor.is_none() {
            return Err(PodError::NoSuccessor);
        }
        if !self.audit_resumed {
            return Err(PodError::AuditNotResumed);
        }
        self.make_room_for_pending();
        let now = self.clock.now_ms();
        let header = envelope::read_header(sealed_header)
            .ok()
            .flatten()
            .map(|(h, _)| h);
        let (room, doc, old_hash) = header
            .as_ref()
            .map_or(([0; HASH_LEN], Vec::new(), [0; HASH_LEN]), |h| {
                (*h.room(), h.doc().to_vec(), h.hash())
            });
        let head = self
            .rooms
            .get(&room)
            .map_or([0; HASH_LEN], |r| *r.room.head());
        let decision = match &header {
            None => Err(Refusal::WrongDocument),
            Some(h) => self.decide_rotation(mode, h),
        };
        let reason = match &decision {
            Ok(_) => format!("rotated ({})", mode.name()),
            Err(r) => format!("rotation refused: {}", r.code()),
        };
        let (seq, hash, audit_entry) = self.record(audit::Entry {
            seq: 0,
            prev: [0; HASH_LEN],
            time_ms: now,
            user: [0; HASH_LEN],
            room,
            doc,
            decision: if decision.is_ok() {
                Decision::Allow
            } else {
                Decision::Deny
            },
            reason: reason.clone(),
            membership_head: head,
            request_hash: old_hash,
        })?;
        let outcome = match decision {
            Ok((new_header, transcryptor, item)) => PendingOutcome::Release(Release {
                header: new_header.to_prefixed(),
                receipt: item,
                transcryptor,
            }),
            Err(r) => PendingOutcome::Refuse(r),
        };
        tracing::info!(seq, decision = reason, "rotation decided");
        Ok(Pending {
            seq,
            hash,
            audit_entry,
            outcome,
        })
    }

    /// The new header, the transcryptor (re-encrypt mode) and the signed item.
    fn decide_rotation(
        &self,
        mode: Mode,
        header: &Header,
    ) -> Result<(Header, Option<Transcryptor>, Vec<u8>), Refusal> {
        let (State::Ready(keys), Some(next)) = (&self.state, &self.successor) else {
            return Err(Refusal::WrongPod);
        };
        if header.kind() != Kind::SealedToPod {
            return Err(Refusal::WrongDocument);
        }
        if header.recipient() == &next.fingerprint {
            return Err(Refusal::AlreadyRotated);
        }
        if header.recipient() != &keys.fingerprint {
            return Err(Refusal::OtherPodKey);
        }
        let next_key = pod_protocol::keys::EncryptionKey::HpkeP256(next.pod.public_key().clone());
        let (new_header, transcryptor) = match mode {
            Mode::Rewrap => (
                envelope::rewrap(header, UnwrapKey::Hpke(&keys.pod), &next_key)
                    .map_err(|_| Refusal::CannotDecrypt)?,
                None,
            ),
            Mode::ReEncrypt => {
                let opener = envelope::unwrap(header, UnwrapKey::Hpke(&keys.pod))
                    .map_err(|_| Refusal::CannotDecrypt)?;
                let (h, sealer) =
                    envelope::begin(Kind::SealedToPod, header.room(), header.doc(), &next_key)
                        .map_err(|_| Refusal::CannotDecrypt)?;
                (h, Some(Transcryptor { opener, sealer }))
            }
        };
        let item = rotation::Item {
            mode,
            room: *header.room(),
            doc: header.doc().to_vec(),
            old_header_hash: header.hash(),
            new_header_hash: new_header.hash(),
            new_pod: next.fingerprint,
        }
        .sign(&keys.receipt)
        .map_err(|_| Refusal::CannotDecrypt)?;
        Ok((new_header, transcryptor, item.as_bytes().to_vec()))
    }

    /// What checking a rotation certificate's items needs: a folder for `mode` to the successor key and the
    /// receipt key that signed the items. The items are checked outside the pod's lock.
    pub fn certifier(&self, mode: Mode) -> Result<(ItemFolder, VerifyingKey), PodError> {
        let keys = self.keys()?;
        let next = self.successor.as_ref().ok_or(PodError::NoSuccessor)?;
        Ok((ItemFolder::new(mode, next.fingerprint), keys.receipt_key()))
    }

    /// Seals a re-encrypted body the rotation streamed out (SPEC §9): the receipt key signs the new header hash and
    /// the SHA-256 of the body bytes emitted.
    pub fn seal_rotated_body(
        &self,
        new_header_hash: &[u8; HASH_LEN],
        body_sha256: &[u8; HASH_LEN],
    ) -> Result<[u8; rotation::BODY_SEAL_LEN], PodError> {
        rotation::seal_body(&self.keys()?.receipt, new_header_hash, body_sha256)
            .map_err(PodError::Crypto)
    }

    /// Signs the rotation certificate over the items `folder` checked.
    pub fn sign_certificate(&self, mode: Mode, folder: &ItemFolder) -> Result<Vec<u8>, PodError> {
        let keys = self.keys()?;
        let next = self.successor.as_ref().ok_or(PodError::NoSuccessor)?;
        rotation::Certificate {
            mode,
            old_pod: keys.fingerprint,
            new_pod: next.fingerprint,
            old_receipt_spki: keys.receipt_key().to_spki_der(),
            count: folder.count(),
            root: folder.root(),
            time_ms: self.clock.now_ms(),
        }
        .sign(&keys.receipt)
        .map_err(PodError::Crypto)
    }

    fn decide(
        &mut self,
        signed: &SignedRequest,
        sealed_header: &[u8],
        now: u64,
    ) -> Result<(Header, Transcryptor), Refusal> {
        let claimed = signed.unverified();
        let record = self.rooms.get(&claimed.room).ok_or(Refusal::UnknownRoom)?;
        // Membership is read now, at the moment of the request: a revoked user is refused here.
        let member = record
            .room
            .member(&claimed.user)
            .ok_or(Refusal::NotMember)?;
        let req = signed
            .verify(member.bundle.signing_key())
            .map_err(|_| Refusal::BadSignature)?;
        let recipient = member.bundle.encryption_key().clone();
        if req.op != Operation::ReEncrypt {
            return Err(Refusal::Malformed);
        }
        let keys = match &self.state {
            State::Ready(k) => k,
            _ => return Err(Refusal::WrongPod),
        };
        if req.pod_key != keys.fingerprint {
            return Err(Refusal::WrongPod);
        }
        if req.issued_at_ms.saturating_add(self.config.freshness_ms) < now {
            return Err(Refusal::Expired);
        }
        if req.issued_at_ms > now.saturating_add(self.config.future_skew_ms) {
            return Err(Refusal::FromTheFuture);
        }
        let (header, _) = envelope::read_header(sealed_header)
            .ok()
            .flatten()
            .ok_or(Refusal::WrongDocument)?;
        if header.kind() != Kind::SealedToPod
            || header.room() != &req.room
            || header.doc() != req.doc.as_slice()
            || header.hash() != req.header_hash
        {
            return Err(Refusal::WrongDocument);
        }
        if header.recipient() != &keys.fingerprint {
            return Err(Refusal::OtherPodKey);
        }
        let opener = envelope::unwrap(&header, UnwrapKey::Hpke(&keys.pod))
            .map_err(|_| Refusal::CannotDecrypt)?;
        // The nonce is spent only by a request that got this far, so a forged request cannot burn a user's nonce.
        let expires = req.issued_at_ms.saturating_add(self.config.freshness_ms);
        self.replay
            .insert(req.user, &req.nonce, expires, now)
            .map_err(|e| match e {
                ReplayError::Replayed => Refusal::Replayed,
                ReplayError::Full => Refusal::Busy,
            })?;
        self.budgets
            .charge(&req.user, &req.room, now)
            .map_err(Refusal::BudgetExhausted)?;
        let (new_header, sealer) =
            envelope::begin(Kind::ReEncrypted, &req.room, &req.doc, &recipient)
                .map_err(|_| Refusal::CannotDecrypt)?;
        Ok((new_header, Transcryptor { opener, sealer }))
    }

    /// Records the parent's acknowledgement that the entry `ack.seq` is durable.
    pub fn audit_durable(&mut self, ack: &AuditAck) -> Result<(), PodError> {
        // Each conversation acknowledges its own entry; they may arrive in any order.
        match self.unacked.get(&ack.seq) {
            Some(h) if *h == ack.hash => {}
            _ => return Err(PodError::AuditAckMismatch),
        }
        self.unacked.remove(&ack.seq);
        if self.acked.len() >= self.config.max_pending_audit {
            // Acknowledged but never released (the conversation died after the acknowledgement).
            self.acked.pop_first();
        }
        self.acked.insert(ack.seq);
        Ok(())
    }

    /// A signed checkpoint of the audit chain's head, for truncation detection. Only when every entry is
    /// acknowledged, so that the checkpoint never names an entry the parent may not have stored yet.
    pub fn checkpoint(&self) -> Result<Vec<u8>, PodError> {
        let keys = self.keys()?;
        if !self.audit_resumed {
            return Err(PodError::AuditNotResumed);
        }
        if !self.unacked.is_empty() {
            return Err(PodError::AuditBacklog);
        }
        let seq = self
            .next_seq
            .checked_sub(1)
            .ok_or(PodError::EmptyAuditLog)?;
        audit::Checkpoint {
            seq,
            head: self.prev_hash,
            time_ms: self.clock.now_ms(),
        }
        .sign(&keys.receipt)
        .map_err(PodError::Crypto)
    }

    /// Housekeeping: forget budget buckets that have refilled.
    pub fn prune(&mut self) {
        let now = self.clock.now_ms();
        self.budgets.prune(now);
    }
}

/// `arn:PARTITION:kms:REGION:ACCOUNT` of a KMS key ARN (`…:key/ID`), or `None` when it is not one.
fn kms_scope(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "kms", region, account, rest]
            if !partition.is_empty()
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && rest.starts_with("key/") =>
        {
            Some(format!("arn:{partition}:kms:{region}:{account}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kms_scopes_are_partition_region_and_account() {
        assert_eq!(
            super::kms_scope("arn:aws:kms:us-east-1:111122223333:key/1234abcd").as_deref(),
            Some("arn:aws:kms:us-east-1:111122223333")
        );
        for bad in [
            "1234abcd",
            "alias/pod",
            "arn:aws:kms:us-east-1:111122223333:alias/pod",
            "arn:aws:kms:us-east-1:12345:key/x",
            "arn:aws:iam::111122223333:role/x",
        ] {
            assert_eq!(super::kms_scope(bad), None, "{bad}");
        }
    }
}
