//! Pod key rotation: the per-document statements the old pod signs as it moves each stored document to the new
//! pod key, and the rotation certificate that commits to all of them under one Merkle root.
//!
//! ```text
//! item        = [1, mode, room_id: bstr32, doc_id: bstr, old_header_hash: bstr32, new_header_hash: bstr32,
//!                new_pod_fingerprint: bstr32]
//! signed_item = [item: bstr, signature]                  context "rotation-item", the old pod's receipt key
//! leaf        = labeled_hash("rotation", 0x00 ‖ signed_item)
//! node        = labeled_hash("rotation", 0x01 ‖ left ‖ right)
//! root        = the RFC 6962 Merkle tree hash over the leaves, items sorted by old_header_hash (strictly
//!               increasing, so a document appears once); the root of no items is labeled_hash("rotation", "")
//! certificate = [[1, mode, old_pod_fingerprint, new_pod_fingerprint, old_receipt_spki: bstr, count, root,
//!                 time_ms]: bstr, signature]             context "rotation", the old pod's receipt key
//! body_seal   = signature over new_header_hash ‖ SHA-256(new body)
//!                                                        context "rotation-body", the old pod's receipt key
//! ```
//!
//! In re-encrypt mode the body is new ciphertext that only the new pod key opens, so whoever stores the moved
//! document cannot check it. The pod therefore seals the body it produced: after the last chunk it signs the new
//! header hash with the SHA-256 of every body byte it emitted, and the answer ends with those 64 bytes. A parent
//! that changed, cut or reordered the body in transit is caught before the original is replaced.
//!
//! `mode` 1 is **rewrap** (routine rotation: the document's file key is unwrapped with the old pod key and wrapped
//! to the new one; the body is unchanged) and 2 is **re-encrypt** (after a compromise: a fresh file key, the body
//! decrypted and sealed again, so that nothing a thief of the old key could have derived still opens it).
//!
//! A header hash names a document: requests and receipts use it, and it commits to the wrapped file key. The
//! pod signs an item only after its audit entry is durable, and signs a certificate only over items that carry
//! its own signature, in order; the certificate carries the old receipt key so that it can be checked after the
//! old pod is gone (compare that key with the one the old pod's attestation or audit log showed).

use crate::Error;
use crate::keys::{HASH_LEN, SigningKey, VerifyingKey, decode_signed, encode_signed, labeled_hash};
use pod_cbor::{Decoder, Encoder, Len};

/// Length of a body seal (a raw P-256 `r ‖ s`).
pub const BODY_SEAL_LEN: usize = crate::keys::SIGNATURE_LEN;

fn body_seal_message(new_header_hash: &[u8; HASH_LEN], body_sha256: &[u8; HASH_LEN]) -> Vec<u8> {
    [new_header_hash.as_slice(), body_sha256].concat()
}

/// Seals a re-encrypted body: the old pod's receipt key signs the new header hash and the body's SHA-256.
pub fn seal_body(
    key: &SigningKey,
    new_header_hash: &[u8; HASH_LEN],
    body_sha256: &[u8; HASH_LEN],
) -> Result<[u8; BODY_SEAL_LEN], Error> {
    key.sign(
        "rotation-body",
        &body_seal_message(new_header_hash, body_sha256),
    )
}

/// Checks a body seal against the attested receipt key.
pub fn verify_body_seal(
    key: &VerifyingKey,
    new_header_hash: &[u8; HASH_LEN],
    body_sha256: &[u8; HASH_LEN],
    seal: &[u8],
) -> Result<(), Error> {
    key.verify(
        "rotation-body",
        &body_seal_message(new_header_hash, body_sha256),
        seal,
    )
}

/// Largest encoded signed item.
pub const MAX_ITEM_LEN: usize = 512;
/// Largest encoded certificate (the receipt key's SPKI is at most 1024 bytes).
pub const MAX_CERTIFICATE_LEN: usize = 1536;

/// How documents move to the new pod key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Same file key, wrapped to the new pod key; the body is unchanged.
    Rewrap = 1,
    /// A fresh file key; the body is decrypted and sealed again.
    ReEncrypt = 2,
}

impl Mode {
    /// From the wire value.
    pub fn from_u64(v: u64) -> Result<Self, Error> {
        match v {
            1 => Ok(Self::Rewrap),
            2 => Ok(Self::ReEncrypt),
            _ => Err(Error::Malformed("unknown rotation mode")),
        }
    }

    /// The name used in audit reasons, logs and the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rewrap => "rewrap",
            Self::ReEncrypt => "re-encrypt",
        }
    }

    /// The mode [`Mode::name`] names; `None` for any other text.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Rewrap, Self::ReEncrypt]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// One document moved to the new pod key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// How it was moved.
    pub mode: Mode,
    /// Its room.
    pub room: [u8; HASH_LEN],
    /// Its document id.
    pub doc: Vec<u8>,
    /// The header hash of the document before.
    pub old_header_hash: [u8; HASH_LEN],
    /// The header hash of the document after.
    pub new_header_hash: [u8; HASH_LEN],
    /// The fingerprint of the pod key it is sealed to now.
    pub new_pod: [u8; HASH_LEN],
}

fn hash32(d: &mut Decoder<'_>, what: &'static str) -> Result<[u8; HASH_LEN], Error> {
    d.bytes()?.try_into().map_err(|_| Error::Malformed(what))
}

impl Item {
    /// Signs the item with the old pod's receipt key.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedItem, Error> {
        let mut e = Encoder::new();
        e.array(7)
            .u64(1)
            .u64(self.mode as u64)
            .bytes(&self.room)
            .bytes(&self.doc)
            .bytes(&self.old_header_hash)
            .bytes(&self.new_header_hash)
            .bytes(&self.new_pod);
        let payload = e.into_bytes();
        let bytes = encode_signed(&payload, &key.sign("rotation-item", &payload)?);
        Ok(SignedItem {
            item: self.clone(),
            bytes,
        })
    }
}

/// A signed item, with its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedItem {
    item: Item,
    bytes: Vec<u8>,
}

impl SignedItem {
    /// Parses a signed item and checks its signature under the old pod's receipt key.
    pub fn parse_verified(bytes: &[u8], key: &VerifyingKey) -> Result<Self, Error> {
        let (payload, sig) = decode_signed(bytes, MAX_ITEM_LEN)?;
        key.verify("rotation-item", payload, &sig)?;
        let mut d = Decoder::new(payload);
        if d.array()? != Len::Definite(7) || d.u64()? != 1 {
            return Err(Error::Malformed(
                "a rotation item is [1, mode, room, doc, old, new, pod]",
            ));
        }
        let mode = Mode::from_u64(d.u64()?)?;
        let room = hash32(&mut d, "room id must be 32 bytes")?;
        let doc = d.bytes()?.to_vec();
        if doc.is_empty() || doc.len() > crate::envelope::MAX_DOC_ID_LEN {
            return Err(Error::Malformed("document id must be 1..=64 bytes"));
        }
        let old_header_hash = hash32(&mut d, "header hash must be 32 bytes")?;
        let new_header_hash = hash32(&mut d, "header hash must be 32 bytes")?;
        let new_pod = hash32(&mut d, "fingerprint must be 32 bytes")?;
        d.finish()?;
        Ok(Self {
            item: Item {
                mode,
                room,
                doc,
                old_header_hash,
                new_header_hash,
                new_pod,
            },
            bytes: bytes.to_vec(),
        })
    }

    /// The fields.
    pub fn item(&self) -> &Item {
        &self.item
    }
    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The Merkle leaf hash.
    pub fn leaf(&self) -> [u8; HASH_LEN] {
        labeled_hash("rotation", &[&[0u8][..], &self.bytes].concat())
    }
}

fn node(left: &[u8; HASH_LEN], right: &[u8; HASH_LEN]) -> [u8; HASH_LEN] {
    labeled_hash("rotation", &[&[1u8][..], left, right].concat())
}

/// Computes the RFC 6962 Merkle tree hash over leaves fed one at a time, in O(log n) memory: the enclave folds
/// items as they stream past and never holds the list.
#[derive(Debug, Default, Clone)]
pub struct MerkleBuilder {
    // Perfect subtrees, largest first: (number of leaves, hash).
    stack: Vec<(u64, [u8; HASH_LEN])>,
    count: u64,
}

impl MerkleBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: [u8; HASH_LEN]) {
        let mut cur = (1u64, leaf);
        while let Some(&(size, hash)) = self.stack.last() {
            if size != cur.0 {
                break;
            }
            self.stack.pop();
            cur = (size * 2, node(&hash, &cur.1));
        }
        self.stack.push(cur);
        self.count += 1;
    }

    /// Leaves so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The root: the subtrees folded right to left, which is RFC 6962's split at the largest power of two.
    pub fn root(&self) -> [u8; HASH_LEN] {
        let mut iter = self.stack.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return labeled_hash("rotation", b"");
        };
        for (_, left) in iter {
            acc = node(left, &acc);
        }
        acc
    }
}

/// The certificate's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// How the documents moved.
    pub mode: Mode,
    /// The old pod key's fingerprint.
    pub old_pod: [u8; HASH_LEN],
    /// The new pod key's fingerprint.
    pub new_pod: [u8; HASH_LEN],
    /// The old pod's receipt key (which signed the items and the certificate), SPKI.
    pub old_receipt_spki: Vec<u8>,
    /// Number of items.
    pub count: u64,
    /// Merkle root over the signed items.
    pub root: [u8; HASH_LEN],
    /// When the old pod signed it.
    pub time_ms: u64,
}

impl Certificate {
    /// Signs the certificate.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, Error> {
        let mut e = Encoder::new();
        e.array(8)
            .u64(1)
            .u64(self.mode as u64)
            .bytes(&self.old_pod)
            .bytes(&self.new_pod)
            .bytes(&self.old_receipt_spki)
            .u64(self.count)
            .bytes(&self.root)
            .u64(self.time_ms);
        let payload = e.into_bytes();
        Ok(encode_signed(&payload, &key.sign("rotation", &payload)?))
    }

    /// Parses a certificate and checks its signature under the receipt key it names. The caller must still
    /// compare [`Certificate::old_receipt_spki`] with the old pod's key it knows from elsewhere.
    pub fn parse_verified(bytes: &[u8]) -> Result<Self, Error> {
        let (payload, sig) = decode_signed(bytes, MAX_CERTIFICATE_LEN)?;
        let mut d = Decoder::new(payload);
        if d.array()? != Len::Definite(8) || d.u64()? != 1 {
            return Err(Error::Malformed(
                "a rotation certificate is [1, mode, old, new, receipt key, count, root, time]",
            ));
        }
        let mode = Mode::from_u64(d.u64()?)?;
        let old_pod = hash32(&mut d, "fingerprint must be 32 bytes")?;
        let new_pod = hash32(&mut d, "fingerprint must be 32 bytes")?;
        let old_receipt_spki = d.bytes()?.to_vec();
        let count = d.u64()?;
        let root = hash32(&mut d, "root must be 32 bytes")?;
        let time_ms = d.u64()?;
        d.finish()?;
        VerifyingKey::from_spki_der(&old_receipt_spki)?.verify("rotation", payload, &sig)?;
        Ok(Self {
            mode,
            old_pod,
            new_pod,
            old_receipt_spki,
            count,
            root,
            time_ms,
        })
    }

    /// Checks a certificate against the full list of signed items: every item signed by the certificate's
    /// receipt key, in the certificate's mode, to its new pod key, in strictly increasing order of old header
    /// hash, and the count and Merkle root equal. Returns the parsed items.
    pub fn check_items(&self, items: &[Vec<u8>]) -> Result<Vec<Item>, Error> {
        let key = VerifyingKey::from_spki_der(&self.old_receipt_spki)?;
        let mut folder = ItemFolder::new(self.mode, self.new_pod);
        let mut out = Vec::with_capacity(items.len().min(1 << 20));
        for bytes in items {
            out.push(folder.push(bytes, &key)?.item().clone());
        }
        if folder.count() != self.count || folder.root() != self.root {
            return Err(Error::Malformed(
                "the items do not match the certificate's count and root",
            ));
        }
        Ok(out)
    }
}

/// Checks signed items one at a time, in order, and folds them into a Merkle root: what the pod runs before it
/// signs a certificate, and what a verifier runs after.
#[derive(Debug, Clone)]
pub struct ItemFolder {
    mode: Mode,
    new_pod: [u8; HASH_LEN],
    last: Option<[u8; HASH_LEN]>,
    tree: MerkleBuilder,
}

impl ItemFolder {
    /// Expects items of `mode` moving documents to `new_pod`.
    pub fn new(mode: Mode, new_pod: [u8; HASH_LEN]) -> Self {
        Self {
            mode,
            new_pod,
            last: None,
            tree: MerkleBuilder::new(),
        }
    }

    /// Verifies and folds the next item.
    pub fn push(&mut self, bytes: &[u8], key: &VerifyingKey) -> Result<SignedItem, Error> {
        let signed = SignedItem::parse_verified(bytes, key)?;
        let item = signed.item();
        if item.mode != self.mode || item.new_pod != self.new_pod {
            return Err(Error::Malformed(
                "an item is for another mode or another new pod key",
            ));
        }
        if self.last.is_some_and(|l| item.old_header_hash <= l) {
            return Err(Error::Malformed(
                "items must be sorted by old header hash, each document once",
            ));
        }
        self.last = Some(item.old_header_hash);
        self.tree.push(signed.leaf());
        Ok(signed)
    }

    /// Items folded.
    pub fn count(&self) -> u64 {
        self.tree.count()
    }

    /// The Merkle root so far.
    pub fn root(&self) -> [u8; HASH_LEN] {
        self.tree.root()
    }
}

/// The file `podctl rotate` writes: `[certificate: bstr, [signed_item: bstr, …]]`.
pub fn encode_certificate_file(certificate: &[u8], items: &[Vec<u8>]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.array(2).bytes(certificate).array(items.len() as u64);
    for i in items {
        e.bytes(i);
    }
    e.into_bytes()
}

/// Reads and checks a certificate file; `max_items` bounds the list before anything is allocated for it.
pub fn verify_certificate_file(
    bytes: &[u8],
    max_items: u64,
) -> Result<(Certificate, Vec<Item>), Error> {
    let mut d = Decoder::new(bytes);
    if d.array()? != Len::Definite(2) {
        return Err(Error::Malformed(
            "a certificate file is [certificate, [items]]",
        ));
    }
    let certificate = Certificate::parse_verified(d.bytes()?)?;
    let Len::Definite(n) = d.array()? else {
        return Err(Error::Malformed(
            "the item list must have a definite length",
        ));
    };
    if n > max_items || n != certificate.count {
        return Err(Error::Malformed(
            "the item list's length does not match the certificate",
        ));
    }
    let mut items = Vec::new();
    for _ in 0..n {
        items.push(d.bytes()?.to_vec());
    }
    d.finish()?;
    let parsed = certificate.check_items(&items)?;
    Ok((certificate, parsed))
}

#[cfg(test)]
mod body_seal_tests {
    use super::*;

    #[test]
    fn a_body_seal_names_one_header_and_one_body_under_one_key() {
        let key = SigningKey::generate().unwrap();
        let (h, b) = ([1u8; HASH_LEN], [2u8; HASH_LEN]);
        let seal = seal_body(&key, &h, &b).unwrap();
        verify_body_seal(&key.verifying_key(), &h, &b, &seal).unwrap();
        let other = SigningKey::generate().unwrap().verifying_key();
        assert!(verify_body_seal(&other, &h, &b, &seal).is_err());
        assert!(verify_body_seal(&key.verifying_key(), &b, &h, &seal).is_err());
        assert!(verify_body_seal(&key.verifying_key(), &h, &[3; HASH_LEN], &seal).is_err());
        assert!(verify_body_seal(&key.verifying_key(), &h, &b, &seal[..63]).is_err());
        // Another context's signature over the same bytes is not a seal.
        let item_sig = key.sign("rotation-item", &[h, b].concat()).unwrap();
        assert!(verify_body_seal(&key.verifying_key(), &h, &b, &item_sig).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_root(leaves: &[[u8; HASH_LEN]]) -> [u8; HASH_LEN] {
        match leaves.len() {
            0 => labeled_hash("rotation", b""),
            1 => leaves[0],
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn incremental_root_matches_the_recursive_definition() {
        for n in 0..70usize {
            let leaves: Vec<[u8; HASH_LEN]> = (0..n)
                .map(|i| labeled_hash("x", &i.to_be_bytes()))
                .collect();
            let mut b = MerkleBuilder::new();
            for l in &leaves {
                b.push(*l);
            }
            assert_eq!(b.root(), reference_root(&leaves), "n = {n}");
            assert_eq!(b.count(), n as u64);
        }
    }

    fn items(key: &SigningKey, n: usize, new_pod: [u8; 32]) -> Vec<Vec<u8>> {
        let mut v: Vec<Item> = (0..n)
            .map(|i| Item {
                mode: Mode::Rewrap,
                room: [7; 32],
                doc: format!("doc-{i}").into_bytes(),
                old_header_hash: labeled_hash("old", &i.to_be_bytes()),
                new_header_hash: labeled_hash("new", &i.to_be_bytes()),
                new_pod,
            })
            .collect();
        v.sort_by_key(|i| i.old_header_hash);
        v.iter()
            .map(|i| i.sign(key).unwrap().as_bytes().to_vec())
            .collect()
    }

    fn certify(key: &SigningKey, items: &[Vec<u8>], new_pod: [u8; 32]) -> Vec<u8> {
        let mut f = ItemFolder::new(Mode::Rewrap, new_pod);
        for i in items {
            f.push(i, &key.verifying_key()).unwrap();
        }
        Certificate {
            mode: Mode::Rewrap,
            old_pod: [1; 32],
            new_pod,
            old_receipt_spki: key.verifying_key().to_spki_der(),
            count: f.count(),
            root: f.root(),
            time_ms: 5,
        }
        .sign(key)
        .unwrap()
    }

    #[test]
    fn certificate_file_verifies_and_every_tampering_is_caught() {
        let key = SigningKey::generate().unwrap();
        let list = items(&key, 9, [2; 32]);
        let cert = certify(&key, &list, [2; 32]);
        let file = encode_certificate_file(&cert, &list);
        let (c, parsed) = verify_certificate_file(&file, 100).unwrap();
        assert_eq!(c.count, 9);
        assert_eq!(parsed.len(), 9);
        // Every single-byte change of the file is refused.
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            assert!(verify_certificate_file(&bad, 100).is_err(), "byte {i}");
        }
        // A dropped, duplicated or reordered item is refused.
        let mut fewer = list.clone();
        fewer.remove(3);
        assert!(verify_certificate_file(&encode_certificate_file(&cert, &fewer), 100).is_err());
        let mut dup = list.clone();
        dup.insert(3, list[3].clone());
        assert!(verify_certificate_file(&encode_certificate_file(&cert, &dup), 100).is_err());
        let mut swapped = list.clone();
        swapped.swap(1, 2);
        assert!(verify_certificate_file(&encode_certificate_file(&cert, &swapped), 100).is_err());
        // Items signed by another key, certified by that key, do not pass as this pod's: the certificate names
        // its key, and the caller compares it.
        let other = SigningKey::generate().unwrap();
        let other_items = items(&other, 9, [2; 32]);
        let forged = certify(&other, &other_items, [2; 32]);
        let (c2, _) =
            verify_certificate_file(&encode_certificate_file(&forged, &other_items), 100).unwrap();
        assert_ne!(c2.old_receipt_spki, key.verifying_key().to_spki_der());
        // Too many items for the caller's bound.
        assert!(verify_certificate_file(&file, 8).is_err());
    }

    #[test]
    fn items_for_another_pod_or_mode_are_refused() {
        let key = SigningKey::generate().unwrap();
        let list = items(&key, 2, [2; 32]);
        let mut f = ItemFolder::new(Mode::Rewrap, [3; 32]);
        assert!(f.push(&list[0], &key.verifying_key()).is_err());
        let mut f = ItemFolder::new(Mode::ReEncrypt, [2; 32]);
        assert!(f.push(&list[0], &key.verifying_key()).is_err());
        let mut f = ItemFolder::new(Mode::Rewrap, [2; 32]);
        assert!(
            f.push(&list[0], &SigningKey::generate().unwrap().verifying_key())
                .is_err()
        );
    }
}
