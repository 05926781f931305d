//! The membership log: a room's trust graph as a hash-chained log of signed entries.
//!
//! ```text
//! entry        = [1, room_id: bstr (empty in the genesis entry, else 32), seq: uint, prev: bstr32,
//!                 action: uint, subject: bstr, issued_at_ms: uint, signer: bstr32]
//! signed_entry = [entry: bstr, signature: bstr64]         signature = Sign(signer, "membership", entry)
//! entry_hash   = labeled_hash("membership", signed_entry)
//! room_id      = entry_hash of the genesis entry
//! ```
//!
//! Actions: 1 create the room (subject: the owner's key bundle; self-signed; seq 0; prev all zero), 2 grant
//! (subject: the member's bundle), 3 revoke (subject: a user id), 4 add an admin (subject: a bundle), 5 remove an
//! admin (subject: a user id). The owner may do everything; admins may grant and revoke ordinary members; nobody
//! revokes the owner. Every entry names the previous entry's hash and the next sequence number, and times never
//! go backwards, so the log can only grow at its head.

use crate::Error;
use crate::keys::{
    HASH_LEN, SIGNATURE_LEN, SigningKey, UserKeyBundle, decode_signed, encode_signed, labeled_hash,
};
use pod_cbor::{Decoder, Encoder, Len};
use std::collections::BTreeMap;

/// Largest encoded signed entry.
pub const MAX_ENTRY_LEN: usize = 4096;
/// Most members a room holds.
pub const MAX_MEMBERS: usize = 10_000;

/// A membership action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create the room (genesis).
    CreateRoom = 1,
    /// Grant a user access.
    Grant = 2,
    /// Revoke a user's access.
    Revoke = 3,
    /// Make a user an admin (and a member).
    AddAdmin = 4,
    /// Make an admin an ordinary member again.
    RemoveAdmin = 5,
}

/// One entry's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The room (empty for the genesis entry).
    pub room: Vec<u8>,
    /// Position in the log, from 0.
    pub seq: u64,
    /// Hash of the previous signed entry (zeros for genesis).
    pub prev: [u8; HASH_LEN],
    /// What the entry does.
    pub action: Action,
    /// A key bundle or a user id, depending on the action.
    pub subject: Vec<u8>,
    /// When the signer made it.
    pub issued_at_ms: u64,
    /// The signer's user id.
    pub signer: [u8; HASH_LEN],
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.array(8)
            .u64(1)
            .bytes(&self.room)
            .u64(self.seq)
            .bytes(&self.prev)
            .u64(self.action as u64)
            .bytes(&self.subject)
            .u64(self.issued_at_ms)
            .bytes(&self.signer);
        e.into_bytes()
    }

    fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut d = Decoder::new(bytes);
        if d.array()? != Len::Definite(8) || d.u64()? != 1 {
            return Err(Error::Malformed(
                "a membership entry is an eight-element array of version 1",
            ));
        }
        let room = d.bytes()?.to_vec();
        if !(room.is_empty() || room.len() == HASH_LEN) {
            return Err(Error::Malformed("room id must be 32 bytes"));
        }
        let seq = d.u64()?;
        let prev = d
            .bytes()?
            .try_into()
            .map_err(|_| Error::Malformed("prev must be 32 bytes"))?;
        let action = match d.u64()? {
            1 => Action::CreateRoom,
            2 => Action::Grant,
            3 => Action::Revoke,
            4 => Action::AddAdmin,
            5 => Action::RemoveAdmin,
            _ => return Err(Error::Malformed("unknown membership action")),
        };
        let subject = d.bytes()?.to_vec();
        let issued_at_ms = d.u64()?;
        let signer = d
            .bytes()?
            .try_into()
            .map_err(|_| Error::Malformed("signer must be 32 bytes"))?;
        d.finish()?;
        Ok(Self {
            room,
            seq,
            prev,
            action,
            subject,
            issued_at_ms,
            signer,
        })
    }
}

/// A signed entry as it travels and is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    entry: Entry,
    entry_bytes: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
    bytes: Vec<u8>,
}

impl SignedEntry {
    /// Signs an entry with the signer's key.
    pub fn sign(entry: Entry, key: &SigningKey) -> Result<Self, Error> {
        let entry_bytes = entry.encode();
        let signature = key.sign("membership", &entry_bytes)?;
        let bytes = encode_signed(&entry_bytes, &signature);
        Ok(Self {
            entry,
            entry_bytes,
            signature,
            bytes,
        })
    }

    /// Parses a signed entry (the signature is checked when it is applied to a room).
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (entry_bytes, signature) = decode_signed(bytes, MAX_ENTRY_LEN)?;
        Ok(Self {
            entry: Entry::parse(entry_bytes)?,
            entry_bytes: entry_bytes.to_vec(),
            signature,
            bytes: bytes.to_vec(),
        })
    }

    /// The entry's fields.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The encoded signed entry.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `labeled_hash("membership", signed entry)`.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        labeled_hash("membership", &self.bytes)
    }
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Their keys.
    pub bundle: UserKeyBundle,
    /// Whether they may grant and revoke.
    pub admin: bool,
}

/// A room's membership as of its log's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    id: [u8; HASH_LEN],
    owner: UserKeyBundle,
    members: BTreeMap<[u8; HASH_LEN], Member>,
    seq: u64,
    head: [u8; HASH_LEN],
    last_time_ms: u64,
}

fn refuse(reason: &'static str) -> Error {
    Error::Membership(reason)
}

impl Room {
    /// Creates a room from its genesis entry.
    pub fn genesis(signed: &SignedEntry) -> Result<Self, Error> {
        let e = &signed.entry;
        if e.action != Action::CreateRoom
            || e.seq != 0
            || !e.room.is_empty()
            || e.prev != [0; HASH_LEN]
        {
            return Err(refuse(
                "the first entry must create the room (seq 0, no room id, zero prev)",
            ));
        }
        let owner = UserKeyBundle::parse(&e.subject)?;
        if owner.id() != &e.signer {
            return Err(refuse("the room must be created by its owner"));
        }
        owner
            .signing_key()
            .verify("membership", &signed.entry_bytes, &signed.signature)?;
        let id = signed.hash();
        let mut members = BTreeMap::new();
        members.insert(
            *owner.id(),
            Member {
                bundle: owner.clone(),
                admin: true,
            },
        );
        Ok(Self {
            id,
            owner,
            members,
            seq: 0,
            head: id,
            last_time_ms: e.issued_at_ms,
        })
    }

    /// Replays a whole log.
    pub fn replay<'a>(entries: impl IntoIterator<Item = &'a SignedEntry>) -> Result<Self, Error> {
        let mut it = entries.into_iter();
        let first = it.next().ok_or(refuse("an empty log has no room"))?;
        let mut room = Self::genesis(first)?;
        for e in it {
            room.apply(e)?;
        }
        Ok(room)
    }

    /// Applies the next entry, checking its link, its signer's authority and its signature.
    pub fn apply(&mut self, signed: &SignedEntry) -> Result<(), Error> {
        let e = &signed.entry;
        if e.room.as_slice() != self.id.as_slice() {
            return Err(refuse("the entry belongs to another room"));
        }
        if Some(e.seq) != self.seq.checked_add(1) || e.prev != self.head {
            return Err(refuse("the entry does not extend the log's head"));
        }
        if e.issued_at_ms < self.last_time_ms {
            return Err(refuse("the entry is dated before the one it follows"));
        }
        let signer = self
            .members
            .get(&e.signer)
            .ok_or(refuse("the signer is not a member of the room"))?;
        let signer_is_owner = &e.signer == self.owner.id();
        if !signer.admin {
            return Err(refuse("only the owner and admins may change membership"));
        }
        signer
            .bundle
            .signing_key()
            .verify("membership", &signed.entry_bytes, &signed.signature)?;

        match e.action {
            Action::CreateRoom => return Err(refuse("a room is created only once")),
            Action::Grant | Action::AddAdmin => {
                let admin = e.action == Action::AddAdmin;
                if admin && !signer_is_owner {
                    return Err(refuse("only the owner may add admins"));
                }
                let bundle = UserKeyBundle::parse(&e.subject)?;
                match self.members.get_mut(bundle.id()) {
                    Some(existing) if admin && !existing.admin => existing.admin = true,
                    Some(_) => return Err(refuse("the user is already a member")),
                    None => {
                        if self.members.len() >= MAX_MEMBERS {
                            return Err(refuse("the room is full"));
                        }
                        self.members.insert(*bundle.id(), Member { bundle, admin });
                    }
                }
            }
            Action::Revoke | Action::RemoveAdmin => {
                let target: [u8; HASH_LEN] = e
                    .subject
                    .as_slice()
                    .try_into()
                    .map_err(|_| refuse("the subject must be a user id"))?;
                if &target == self.owner.id() {
                    return Err(refuse("the owner cannot be revoked"));
                }
                let member = self
                    .members
                    .get_mut(&target)
                    .ok_or(refuse("the user is not a member"))?;
                if member.admin && !signer_is_owner {
                    return Err(refuse("only the owner may revoke or demote an admin"));
                }
                if e.action == Action::RemoveAdmin {
                    if !member.admin {
                        return Err(refuse("the user is not an admin"));
                    }
                    member.admin = false;
                } else {
                    self.members.remove(&target);
                }
            }
        }
        self.seq = e.seq;
        self.head = signed.hash();
        self.last_time_ms = e.issued_at_ms;
        Ok(())
    }

    /// The room id.
    pub fn id(&self) -> &[u8; HASH_LEN] {
        &self.id
    }
    /// The owner.
    pub fn owner(&self) -> &UserKeyBundle {
        &self.owner
    }
    /// A member, if `user` is one now.
    pub fn member(&self, user: &[u8; HASH_LEN]) -> Option<&Member> {
        self.members.get(user)
    }
    /// Number of members, owner included.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
    /// Sequence number of the head entry.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Hash of the head entry.
    pub fn head(&self) -> &[u8; HASH_LEN] {
        &self.head
    }

    /// The next entry's skeleton (room, seq, prev), for a signer to fill in.
    pub fn next_entry(
        &self,
        action: Action,
        subject: Vec<u8>,
        issued_at_ms: u64,
        signer: [u8; HASH_LEN],
    ) -> Entry {
        Entry {
            room: self.id.to_vec(),
            seq: self.seq.saturating_add(1),
            prev: self.head,
            action,
            subject,
            issued_at_ms,
            signer,
        }
    }
}

/// The genesis entry for a room owned by `owner`.
pub fn genesis_entry(owner: &UserKeyBundle, issued_at_ms: u64) -> Entry {
    Entry {
        room: Vec::new(),
        seq: 0,
        prev: [0; HASH_LEN],
        action: Action::CreateRoom,
        subject: owner.as_bytes().to_vec(),
        issued_at_ms,
        signer: *owner.id(),
    }
}
