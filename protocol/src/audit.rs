//! The audit log, its checkpoints and the receipts the pod hands out.
//!
//! ```text
//! entry        = [1, seq, prev: bstr32, time_ms, user: bstr32, room: bstr32, doc: bstr, decision, reason: text,
//!                 membership_head: bstr32, request_hash: bstr32]
//! signed_entry = [entry: bstr, signature: bstr64]     Sign(receipt key, "audit", entry)
//! entry_hash   = labeled_hash("audit", signed_entry); the first entry's prev is all zero
//! checkpoint   = [[1, seq, head: bstr32, time_ms]: bstr, signature]          Sign(receipt key, "checkpoint", …)
//! receipt      = [[1, request_hash, response_header_hash, audit_seq, audit_entry_hash]: bstr, signature]
//!                                                                            Sign(receipt key, "receipt", …)
//! ```
//!
//! The parent stores the log but cannot write it: every entry is signed by the pod's receipt key, whose public
//! half the attestation document binds. [`verify_log`] detects a deleted, altered, reordered or inserted entry
//! (the chain breaks) and, given a checkpoint or receipt newer than the log's end, a truncated tail.

use crate::Error;
use crate::keys::{HASH_LEN, SigningKey, VerifyingKey, decode_signed, encode_signed, labeled_hash};
use pod_cbor::{Decoder, Encoder, Len};

/// Largest encoded signed entry.
pub const MAX_ENTRY_LEN: usize = 2048;
/// Longest reason text.
pub const MAX_REASON_LEN: usize = 256;

/// What the pod decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The document was released.
    Allow = 1,
    /// The request was refused.
    Deny = 2,
    /// A security alert (e.g. a budget exhausted).
    Alert = 3,
}

/// One audit entry's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Hash of the previous signed entry (zeros for the first).
    pub prev: [u8; HASH_LEN],
    /// When the pod decided.
    pub time_ms: u64,
    /// Who asked.
    pub user: [u8; HASH_LEN],
    /// In which room.
    pub room: [u8; HASH_LEN],
    /// For which document.
    pub doc: Vec<u8>,
    /// What was decided.
    pub decision: Decision,
    /// Why, in a few words (never secret).
    pub reason: String,
    /// The room's membership head the decision was made against.
    pub membership_head: [u8; HASH_LEN],
    /// The request's hash.
    pub request_hash: [u8; HASH_LEN],
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.array(11)
            .u64(1)
            .u64(self.seq)
            .bytes(&self.prev)
            .u64(self.time_ms)
            .bytes(&self.user)
            .bytes(&self.room)
            .bytes(&self.doc)
            .u64(self.decision as u64)
            .text(&self.reason)
            .bytes(&self.membership_head)
            .bytes(&self.request_hash);
        e.into_bytes()
    }

    fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut d = Decoder::new(bytes);
        if d.array()? != Len::Definite(11) || d.u64()? != 1 {
            return Err(Error::Malformed(
                "an audit entry is an eleven-element array of version 1",
            ));
        }
        let h = |d: &mut Decoder<'_>| -> Result<[u8; HASH_LEN], Error> {
            d.bytes()?
                .try_into()
                .map_err(|_| Error::Malformed("hash must be 32 bytes"))
        };
        let seq = d.u64()?;
        let prev = h(&mut d)?;
        let time_ms = d.u64()?;
        let user = h(&mut d)?;
        let room = h(&mut d)?;
        let doc = d.bytes()?.to_vec();
        let decision = match d.u64()? {
            1 => Decision::Allow,
            2 => Decision::Deny,
            3 => Decision::Alert,
            _ => return Err(Error::Malformed("unknown decision")),
        };
        let reason = d.text()?;
        if reason.len() > MAX_REASON_LEN {
            return Err(Error::Malformed("reason too long"));
        }
        let membership_head = h(&mut d)?;
        let request_hash = h(&mut d)?;
        d.finish()?;
        Ok(Self {
            seq,
            prev,
            time_ms,
            user,
            room,
            doc,
            decision,
            reason: reason.to_owned(),
            membership_head,
            request_hash,
        })
    }
}

fn sign_pair(key: &SigningKey, context: &str, payload: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(encode_signed(payload, &key.sign(context, payload)?))
}

/// The sequence number a signed entry claims, read without checking its signature (for ordering entries in a
/// store; verification happens in [`verify_log`]).
pub fn entry_seq_unverified(bytes: &[u8]) -> Option<u64> {
    let (payload, _) = decode_signed(bytes, MAX_ENTRY_LEN).ok()?;
    let mut d = Decoder::new(payload);
    d.array().ok()?;
    d.u64().ok()?;
    d.u64().ok()
}

/// A signed audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    entry: Entry,
    bytes: Vec<u8>,
}

impl SignedEntry {
    /// Signs an entry with the pod's receipt key.
    pub fn sign(entry: Entry, key: &SigningKey) -> Result<Self, Error> {
        if entry.reason.len() > MAX_REASON_LEN {
            return Err(Error::Malformed("reason too long"));
        }
        let bytes = sign_pair(key, "audit", &entry.encode())?;
        Ok(Self { entry, bytes })
    }

    /// Parses and checks the signature.
    pub fn parse_verified(bytes: &[u8], key: &VerifyingKey) -> Result<Self, Error> {
        let (payload, sig) = decode_signed(bytes, MAX_ENTRY_LEN)?;
        key.verify("audit", payload, &sig)?;
        Ok(Self {
            entry: Entry::parse(payload)?,
            bytes: bytes.to_vec(),
        })
    }

    /// The fields.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }
    /// The encoded signed entry.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// `labeled_hash("audit", signed entry)`.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        labeled_hash("audit", &self.bytes)
    }
}

/// A signed statement "the log had `seq + 1` entries and its head was `head`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Sequence number of the head entry.
    pub seq: u64,
    /// Hash of the head entry.
    pub head: [u8; HASH_LEN],
    /// When it was made.
    pub time_ms: u64,
}

impl Checkpoint {
    /// Signs a checkpoint.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, Error> {
        let mut e = Encoder::new();
        e.array(4)
            .u64(1)
            .u64(self.seq)
            .bytes(&self.head)
            .u64(self.time_ms);
        sign_pair(key, "checkpoint", &e.into_bytes())
    }

    /// Parses a signed checkpoint and checks its signature.
    pub fn parse_verified(bytes: &[u8], key: &VerifyingKey) -> Result<Self, Error> {
        let (payload, sig) = decode_signed(bytes, 256)?;
        key.verify("checkpoint", payload, &sig)?;
        let mut d = Decoder::new(payload);
        if d.array()? != Len::Definite(4) || d.u64()? != 1 {
            return Err(Error::Malformed("a checkpoint is [1, seq, head, time]"));
        }
        let seq = d.u64()?;
        let head = d
            .bytes()?
            .try_into()
            .map_err(|_| Error::Malformed("head must be 32 bytes"))?;
        let time_ms = d.u64()?;
        d.finish()?;
        Ok(Self { seq, head, time_ms })
    }
}

/// What the pod hands back with every response: proof that the response was logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The request's hash.
    pub request_hash: [u8; HASH_LEN],
    /// `labeled_hash("header", …)` of the re-encrypted document's header.
    pub response_header_hash: [u8; HASH_LEN],
    /// The audit entry's sequence number.
    pub audit_seq: u64,
    /// The audit entry's hash.
    pub audit_entry_hash: [u8; HASH_LEN],
}

impl Receipt {
    /// Signs a receipt.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, Error> {
        let mut e = Encoder::new();
        e.array(5)
            .u64(1)
            .bytes(&self.request_hash)
            .bytes(&self.response_header_hash)
            .u64(self.audit_seq)
            .bytes(&self.audit_entry_hash);
        sign_pair(key, "receipt", &e.into_bytes())
    }

    /// Parses a signed receipt and checks its signature.
    pub fn parse_verified(bytes: &[u8], key: &VerifyingKey) -> Result<Self, Error> {
        let (payload, sig) = decode_signed(bytes, 256)?;
        key.verify("receipt", payload, &sig)?;
        let mut d = Decoder::new(payload);
        if d.array()? != Len::Definite(5) || d.u64()? != 1 {
            return Err(Error::Malformed(
                "a receipt is [1, request, header, seq, entry]",
            ));
        }
        let h = |d: &mut Decoder<'_>| -> Result<[u8; HASH_LEN], Error> {
            d.bytes()?
                .try_into()
                .map_err(|_| Error::Malformed("hash must be 32 bytes"))
        };
        let request_hash = h(&mut d)?;
        let response_header_hash = h(&mut d)?;
        let audit_seq = d.u64()?;
        let audit_entry_hash = h(&mut d)?;
        d.finish()?;
        Ok(Self {
            request_hash,
            response_header_hash,
            audit_seq,
            audit_entry_hash,
        })
    }
}

/// What a verified log showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// Entries checked.
    pub entries: u64,
    /// Hash of the last entry (zeros for an empty log).
    pub head: [u8; HASH_LEN],
}

/// Verifies a whole audit log from its first entry: every signature, every link, consecutive sequence numbers.
/// Each `checkpoint` must name an entry in the log with that exact hash, so a log cut short before a checkpoint
/// (or altered before it) fails; each `receipt` likewise must match its entry.
pub fn verify_log(
    entries: &[Vec<u8>],
    key: &VerifyingKey,
    checkpoints: &[Checkpoint],
    receipts: &[Receipt],
) -> Result<LogSummary, Error> {
    let mut hashes: Vec<[u8; HASH_LEN]> = Vec::with_capacity(entries.len());
    let mut prev = [0u8; HASH_LEN];
    for (i, bytes) in entries.iter().enumerate() {
        let seq = i as u64;
        let bad = |reason| Error::Audit { seq, reason };
        let signed = SignedEntry::parse_verified(bytes, key)
            .map_err(|_| bad("signature or format invalid"))?;
        if signed.entry.seq != seq {
            return Err(bad(
                "sequence number out of order (an entry was deleted, inserted or moved)",
            ));
        }
        if signed.entry.prev != prev {
            return Err(bad("does not link to the previous entry"));
        }
        prev = signed.hash();
        hashes.push(prev);
    }
    let find = |seq: u64| usize::try_from(seq).ok().and_then(|i| hashes.get(i));
    for c in checkpoints {
        match find(c.seq) {
            Some(h) if *h == c.head => {}
            Some(_) => {
                return Err(Error::Audit {
                    seq: c.seq,
                    reason: "differs from a signed checkpoint",
                });
            }
            None => {
                return Err(Error::Audit {
                    seq: c.seq,
                    reason: "log ends before a signed checkpoint (truncated)",
                });
            }
        }
    }
    for r in receipts {
        match find(r.audit_seq) {
            Some(h) if *h == r.audit_entry_hash => {}
            Some(_) => {
                return Err(Error::Audit {
                    seq: r.audit_seq,
                    reason: "differs from a signed receipt",
                });
            }
            None => {
                return Err(Error::Audit {
                    seq: r.audit_seq,
                    reason: "log ends before a receipt's entry (truncated)",
                });
            }
        }
    }
    Ok(LogSummary {
        entries: entries.len() as u64,
        head: prev,
    })
}
