//! Sealed documents (what the storage server keeps, encrypted to the pod key) and re-encrypted documents (what a
//! user receives, encrypted to that user's key). Both have one layout:
//!
//! ```text
//! "SPD1" ‖ u32be(header_len) ‖ header ‖ STREAM body
//! header      = [kind, room_id: bstr32, doc_id: bstr(1..=64), recipient: bstr32, wrap_alg, wrapped_key: bstr]
//! header_core = [kind, room_id, doc_id, recipient, wrap_alg]              (the header without wrapped_key)
//! wrapped_key = Wrap(recipient key, info = labeled_hash("wrap", header_core), file_key)
//! payload_key = HKDF-SHA256(salt = labeled_hash("payload", [kind, room_id, doc_id]), ikm = file_key,
//!                           info = "secure-pod/v1/payload", 32)
//! body        = STREAM(payload_key, plaintext)
//! ```
//!
//! `kind` is 1 for a document sealed to the pod and 2 for a copy re-encrypted for a user. The room and document
//! ids are authenticated twice: the wrapped key opens only under the header it was made for (HPKE `info`, or the
//! OAEP label), and the payload key depends on the kind, room and document id. A blob of room A presented as
//! belonging to room B therefore opens under neither key.
//!
//! Why the payload key does not depend on the recipient or the wrapped key: so that a pod key rotation can
//! *rewrap* a stored document (unwrap its file key with the old pod key, wrap it to the new one) and keep its body
//! byte for byte. Nothing is lost by it: the file key is secret and fresh per document, and the header hash that
//! requests and receipts name still covers every header byte.

use crate::keys::{EncryptionAlgorithm, EncryptionKey, HASH_LEN, fingerprint, labeled_hash};
use crate::stream::{Opener, Sealer, StreamKey};
use crate::{Error, hpke, stream};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey};
use pod_cbor::{Decoder, Encoder, Len};
use zeroize::Zeroizing;

/// The first four bytes of every document.
pub const MAGIC: [u8; 4] = *b"SPD1";
/// Bytes before the header: magic and length.
pub const PREFIX_LEN: usize = 8;
/// Largest header (an RSA-4096 wrapped key is 512 bytes).
pub const MAX_HEADER_LEN: usize = 2048;
/// Largest document id.
pub const MAX_DOC_ID_LEN: usize = 64;
/// Length of a file key.
pub const FILE_KEY_LEN: usize = 32;

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stored, sealed to the pod key.
    SealedToPod = 1,
    /// Delivered, re-encrypted for one user.
    ReEncrypted = 2,
}

/// A parsed document header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    kind: Kind,
    room: [u8; HASH_LEN],
    doc: Vec<u8>,
    recipient: [u8; HASH_LEN],
    wrap_alg: EncryptionAlgorithm,
    wrapped_key: Vec<u8>,
    bytes: Vec<u8>,
}

fn core(
    kind: Kind,
    room: &[u8],
    doc: &[u8],
    recipient: &[u8],
    wrap_alg: EncryptionAlgorithm,
) -> Vec<u8> {
    let mut e = Encoder::new();
    e.array(5)
        .u64(kind as u64)
        .bytes(room)
        .bytes(doc)
        .bytes(recipient)
        .u64(wrap_alg as u64);
    e.into_bytes()
}

impl Header {
    /// Parses a header (the bytes between the prefix and the body).
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_HEADER_LEN {
            return Err(Error::Malformed("document header too large"));
        }
        let mut d = Decoder::new(bytes);
        if d.array()? != Len::Definite(6) {
            return Err(Error::Malformed("a document header is a six-element array"));
        }
        let kind = match d.u64()? {
            1 => Kind::SealedToPod,
            2 => Kind::ReEncrypted,
            _ => return Err(Error::Malformed("unknown document kind")),
        };
        let room: [u8; HASH_LEN] = d
            .bytes()?
            .try_into()
            .map_err(|_| Error::Malformed("room id must be 32 bytes"))?;
        let doc = d.bytes()?;
        if doc.is_empty() || doc.len() > MAX_DOC_ID_LEN {
            return Err(Error::Malformed("document id must be 1..=64 bytes"));
        }
        let recipient: [u8; HASH_LEN] = d
            .bytes()?
            .try_into()
            .map_err(|_| Error::Malformed("recipient must be 32 bytes"))?;
        let wrap_alg = match d.u64()? {
            1 => EncryptionAlgorithm::RsaOaep4096,
            2 => EncryptionAlgorithm::HpkeP256,
            _ => return Err(Error::Malformed("unknown wrapping algorithm")),
        };
        let wrapped_key = d.bytes()?.to_vec();
        d.finish()?;
        Ok(Self {
            kind,
            room,
            doc: doc.to_vec(),
            recipient,
            wrap_alg,
            wrapped_key,
            bytes: bytes.to_vec(),
        })
    }

    /// The document's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The room id.
    pub fn room(&self) -> &[u8; HASH_LEN] {
        &self.room
    }
    /// The document id.
    pub fn doc(&self) -> &[u8] {
        &self.doc
    }
    /// Fingerprint of the key the document is wrapped to.
    pub fn recipient(&self) -> &[u8; HASH_LEN] {
        &self.recipient
    }
    /// How the file key is wrapped.
    pub fn wrap_alg(&self) -> EncryptionAlgorithm {
        self.wrap_alg
    }
    /// The encoded header.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// `labeled_hash("header", header)`: what signed requests and receipts name.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        labeled_hash("header", &self.bytes)
    }
    fn wrap_info(&self) -> [u8; HASH_LEN] {
        labeled_hash(
            "wrap",
            &core(
                self.kind,
                &self.room,
                &self.doc,
                &self.recipient,
                self.wrap_alg,
            ),
        )
    }
    /// The prefix and header, as they start the document.
    pub fn to_prefixed(&self) -> Vec<u8> {
        let len = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        [MAGIC.as_slice(), &len.to_be_bytes(), &self.bytes].concat()
    }
}

/// Reads the prefix and header from the start of `buf`: `Ok(None)` when more bytes are needed, else the header
/// and the offset where the body starts.
pub fn read_header(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let Some(prefix) = buf.get(..PREFIX_LEN) else {
        return Ok(None);
    };
    if prefix.get(..4) != Some(MAGIC.as_slice()) {
        return Err(Error::Malformed("not a Secure Pod document (bad magic)"));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(prefix.get(4..8).unwrap_or(&[0; 4]));
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_HEADER_LEN {
        return Err(Error::Malformed("document header too large"));
    }
    let end = PREFIX_LEN.saturating_add(len);
    match buf.get(PREFIX_LEN..end) {
        Some(h) => Ok(Some((Header::parse(h)?, end))),
        None => Ok(None),
    }
}

fn payload_key(header: &Header, file_key: &[u8]) -> Result<StreamKey, Error> {
    let mut e = Encoder::new();
    e.array(3)
        .u64(header.kind as u64)
        .bytes(&header.room)
        .bytes(&header.doc);
    let salt = labeled_hash("payload", &e.into_bytes());
    let prk = hpke::extract(&salt, &[file_key]);
    let okm = hpke::expand(&*prk, &[b"secure-pod/v1/payload"], stream::KEY_LEN);
    StreamKey::from_bytes(&okm)
}

/// Starts a new document for `recipient`: returns the prefixed header and the body's sealer. The file key is
/// fresh and leaves this function only wrapped.
pub fn begin(
    kind: Kind,
    room: &[u8; HASH_LEN],
    doc: &[u8],
    recipient: &EncryptionKey,
) -> Result<(Header, Sealer), Error> {
    if doc.is_empty() || doc.len() > MAX_DOC_ID_LEN {
        return Err(Error::Malformed("document id must be 1..=64 bytes"));
    }
    let mut file_key = Zeroizing::new([0u8; FILE_KEY_LEN]);
    SystemRandom::new()
        .fill(file_key.as_mut())
        .map_err(|_| Error::Crypto)?;
    let header = wrap_header(kind, room, doc, recipient, file_key.as_ref())?;
    let sealer = Sealer::new(&payload_key(&header, file_key.as_ref())?)?;
    Ok((header, sealer))
}

fn wrap_header(
    kind: Kind,
    room: &[u8; HASH_LEN],
    doc: &[u8],
    recipient: &EncryptionKey,
    file_key: &[u8],
) -> Result<Header, Error> {
    let recipient_fpr = fingerprint(&recipient.to_spki_der());
    let wrap_alg = recipient.algorithm();
    let info = labeled_hash("wrap", &core(kind, room, doc, &recipient_fpr, wrap_alg));
    let wrapped_key = recipient.wrap(&info, file_key)?;
    let mut e = Encoder::new();
    e.array(6)
        .u64(kind as u64)
        .bytes(room)
        .bytes(doc)
        .bytes(&recipient_fpr)
        .u64(wrap_alg as u64)
        .bytes(&wrapped_key);
    Header::parse(&e.into_bytes())
}

/// Rewraps a document's file key to `new_recipient` (a pod key rotation): the returned header names the new
/// recipient and holds the same file key wrapped to it, so the document's body stays valid byte for byte. The
/// file key exists in plaintext only inside this function.
pub fn rewrap(
    header: &Header,
    key: UnwrapKey<'_>,
    new_recipient: &EncryptionKey,
) -> Result<Header, Error> {
    let file_key = unwrap_file_key(header, key)?;
    wrap_header(
        header.kind,
        &header.room,
        &header.doc,
        new_recipient,
        &file_key,
    )
}

/// A private key that can unwrap file keys.
pub enum UnwrapKey<'a> {
    /// The pod's (or a user's) HPKE key.
    Hpke(&'a hpke::PrivateKey),
    /// A user's RSA-OAEP-4096 key.
    Rsa(&'a OaepPrivateDecryptingKey),
}

/// Unwraps the file key of `header` and returns the body's opener. Any failure is [`Error::Decrypt`].
pub fn unwrap(header: &Header, key: UnwrapKey<'_>) -> Result<Opener, Error> {
    let file_key = unwrap_file_key(header, key)?;
    Opener::new(&payload_key(header, &file_key)?)
}

fn unwrap_file_key(header: &Header, key: UnwrapKey<'_>) -> Result<Zeroizing<Vec<u8>>, Error> {
    let info = header.wrap_info();
    let file_key = match (key, header.wrap_alg) {
        (UnwrapKey::Hpke(sk), EncryptionAlgorithm::HpkeP256) => {
            if fingerprint(&sk.public_key().to_spki_der()) != header.recipient {
                return Err(Error::Decrypt);
            }
            hpke::open(sk, &info, b"", &header.wrapped_key)?
        }
        (UnwrapKey::Rsa(sk), EncryptionAlgorithm::RsaOaep4096) => {
            let mut out = Zeroizing::new(vec![0u8; sk.min_output_size()]);
            let len = sk
                .decrypt(
                    &OAEP_SHA256_MGF1SHA256,
                    &header.wrapped_key,
                    &mut out,
                    Some(&info),
                )
                .map_err(|_| Error::Decrypt)?
                .len();
            out.truncate(len);
            out
        }
        _ => return Err(Error::Decrypt),
    };
    if file_key.len() != FILE_KEY_LEN {
        return Err(Error::Decrypt);
    }
    Ok(file_key)
}

/// Seals a whole document held in memory.
pub fn seal(
    kind: Kind,
    room: &[u8; HASH_LEN],
    doc: &[u8],
    recipient: &EncryptionKey,
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let (header, mut sealer) = begin(kind, room, doc, recipient)?;
    let mut out = header.to_prefixed();
    let mut chunks = plaintext.chunks(stream::CHUNK_SIZE).peekable();
    if chunks.peek().is_none() {
        let mut empty = Vec::new();
        sealer.seal_in_place(&mut empty, true)?;
        out.extend_from_slice(&empty);
    }
    while let Some(chunk) = chunks.next() {
        let mut buf = chunk.to_vec();
        sealer.seal_in_place(&mut buf, chunks.peek().is_none())?;
        out.extend_from_slice(&buf);
    }
    Ok(out)
}

/// Opens a whole document held in memory; returns its header and plaintext.
pub fn open(document: &[u8], key: UnwrapKey<'_>) -> Result<(Header, Zeroizing<Vec<u8>>), Error> {
    let (header, body_start) = read_header(document)?.ok_or(Error::Truncated)?;
    let mut opener = unwrap(&header, key)?;
    let body = document.get(body_start..).ok_or(Error::Truncated)?;
    let mut out = Zeroizing::new(Vec::with_capacity(body.len()));
    let mut chunks = body.chunks(stream::SEALED_CHUNK_SIZE).peekable();
    while let Some(chunk) = chunks.next() {
        let mut buf = Zeroizing::new(chunk.to_vec());
        opener.open_in_place(&mut buf, chunks.peek().is_none())?;
        out.extend_from_slice(&buf);
    }
    opener.finish()?;
    Ok((header, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> hpke::PrivateKey {
        hpke::PrivateKey::generate().unwrap()
    }

    #[test]
    fn sealed_documents_open_with_the_pod_key_only() {
        let pod = pod();
        let to_pod = EncryptionKey::HpkeP256(pod.public_key().clone());
        let room = [1u8; 32];
        let plain = vec![9u8; stream::CHUNK_SIZE * 2 + 3];
        let doc = seal(Kind::SealedToPod, &room, b"term-sheet", &to_pod, &plain).unwrap();
        let (h, opened) = open(&doc, UnwrapKey::Hpke(&pod)).unwrap();
        assert_eq!(*opened, plain);
        assert_eq!(h.room(), &room);
        assert_eq!(h.doc(), b"term-sheet");
        assert_eq!(h.kind(), Kind::SealedToPod);
        let other = hpke::PrivateKey::generate().unwrap();
        assert_eq!(
            open(&doc, UnwrapKey::Hpke(&other)).unwrap_err(),
            Error::Decrypt
        );
    }

    #[test]
    fn changing_the_room_or_document_id_breaks_the_document() {
        let pod = pod();
        let to_pod = EncryptionKey::HpkeP256(pod.public_key().clone());
        let doc = seal(Kind::SealedToPod, &[1u8; 32], b"doc-a", &to_pod, b"secret").unwrap();
        let (header, start) = read_header(&doc).unwrap().unwrap();
        // Rebuild the header claiming room B, keeping the wrapped key and body.
        let mut e = Encoder::new();
        e.array(6)
            .u64(1)
            .bytes(&[2u8; 32])
            .bytes(header.doc())
            .bytes(header.recipient())
            .u64(2)
            .bytes(&header.wrapped_key);
        let forged_header = Header::parse(&e.into_bytes()).unwrap();
        let forged = [forged_header.to_prefixed().as_slice(), &doc[start..]].concat();
        assert_eq!(
            open(&forged, UnwrapKey::Hpke(&pod)).unwrap_err(),
            Error::Decrypt
        );
        // Any single flipped byte anywhere fails.
        for i in 0..doc.len() {
            let mut bad = doc.clone();
            bad[i] ^= 0x20;
            assert!(open(&bad, UnwrapKey::Hpke(&pod)).is_err(), "byte {i}");
        }
    }

    #[test]
    fn malformed_prefixes_are_refused() {
        assert_eq!(read_header(b"SPD").unwrap(), None);
        assert!(read_header(b"XXXX\0\0\0\x01\x00").is_err());
        assert!(read_header(b"SPD1\xff\xff\xff\xff").is_err());
        assert_eq!(read_header(b"SPD1\0\0\0\x10abc").unwrap(), None);
    }
}
