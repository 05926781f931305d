//! Signed requests: what a user sends to ask the pod for a document.
//!
//! ```text
//! request        = [1, op, room_id: bstr32, doc_id: bstr(1..=64), header_hash: bstr32, user_id: bstr32,
//!                   nonce: bstr(16..=32), issued_at_ms: uint, pod_key_fpr: bstr32]
//! signed_request = [request: bstr, signature: bstr64]     signature = Sign(user, "request", request)
//! request_hash   = labeled_hash("request", signed_request)
//! ```
//!
//! The request names the exact stored blob (by its header hash) and the pod key it was meant for, so a captured
//! request cannot be redirected to another document or another pod; the nonce and time let the pod refuse
//! replays; the signature is by the user's registered signing key.

use crate::keys::{
    HASH_LEN, SIGNATURE_LEN, SigningKey, VerifyingKey, decode_signed, encode_signed, labeled_hash,
};
use crate::{Error, envelope};
use pod_cbor::{Decoder, Encoder, Len};

/// Shortest nonce accepted.
pub const MIN_NONCE_LEN: usize = 16;
/// Longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 32;
/// Largest encoded signed request.
pub const MAX_SIGNED_REQUEST_LEN: usize = 1024;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Re-encrypt a sealed document for the requesting user.
    ReEncrypt = 1,
}

/// The fields of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What is asked.
    pub op: Operation,
    /// The room.
    pub room: [u8; HASH_LEN],
    /// The document.
    pub doc: Vec<u8>,
    /// `labeled_hash("header", …)` of the sealed document's header.
    pub header_hash: [u8; HASH_LEN],
    /// The requesting user's id.
    pub user: [u8; HASH_LEN],
    /// A fresh random value.
    pub nonce: Vec<u8>,
    /// When the client made the request.
    pub issued_at_ms: u64,
    /// Fingerprint of the pod key the client verified.
    pub pod_key: [u8; HASH_LEN],
}

impl Request {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.array(9)
            .u64(1)
            .u64(self.op as u64)
            .bytes(&self.room)
            .bytes(&self.doc)
            .bytes(&self.header_hash)
            .bytes(&self.user)
            .bytes(&self.nonce)
            .u64(self.issued_at_ms)
            .bytes(&self.pod_key);
        e.into_bytes()
    }

    fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut d = Decoder::new(bytes);
        if d.array()? != Len::Definite(9) || d.u64()? != 1 {
            return Err(Error::Malformed(
                "a request is [1, op, room, doc, header, user, nonce, time, pod]",
            ));
        }
        let op = match d.u64()? {
            1 => Operation::ReEncrypt,
            _ => return Err(Error::Malformed("unknown operation")),
        };
        let hash = |d: &mut Decoder<'_>, what: &'static str| -> Result<[u8; HASH_LEN], Error> {
            d.bytes()?.try_into().map_err(|_| Error::Malformed(what))
        };
        let room = hash(&mut d, "room id must be 32 bytes")?;
        let doc = d.bytes()?.to_vec();
        if doc.is_empty() || doc.len() > envelope::MAX_DOC_ID_LEN {
            return Err(Error::Malformed("document id must be 1..=64 bytes"));
        }
        let header_hash = hash(&mut d, "header hash must be 32 bytes")?;
        let user = hash(&mut d, "user id must be 32 bytes")?;
        let nonce = d.bytes()?.to_vec();
        if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()) {
            return Err(Error::Malformed("nonce must be 16..=32 bytes"));
        }
        let issued_at_ms = d.u64()?;
        let pod_key = hash(&mut d, "pod key fingerprint must be 32 bytes")?;
        d.finish()?;
        Ok(Self {
            op,
            room,
            doc,
            header_hash,
            user,
            nonce,
            issued_at_ms,
            pod_key,
        })
    }
}

/// A request with its signature, as received. Its fields can be read before the signature is checked (to find
/// the signer's key), but [`SignedRequest::verify`] must pass before anything is acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    request: Request,
    request_bytes: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
    bytes: Vec<u8>,
}

impl SignedRequest {
    /// Signs a request.
    pub fn sign(request: Request, key: &SigningKey) -> Result<Self, Error> {
        let request_bytes = request.encode();
        let signature = key.sign("request", &request_bytes)?;
        let bytes = encode_signed(&request_bytes, &signature);
        Ok(Self {
            request,
            request_bytes,
            signature,
            bytes,
        })
    }

    /// Parses a signed request (without checking the signature).
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (request_bytes, signature) = decode_signed(bytes, MAX_SIGNED_REQUEST_LEN)?;
        Ok(Self {
            request: Request::parse(request_bytes)?,
            request_bytes: request_bytes.to_vec(),
            signature,
            bytes: bytes.to_vec(),
        })
    }

    /// The claimed fields, not yet authenticated.
    pub fn unverified(&self) -> &Request {
        &self.request
    }

    /// Checks the signature with the user's registered key and returns the fields.
    pub fn verify(&self, key: &VerifyingKey) -> Result<&Request, Error> {
        key.verify("request", &self.request_bytes, &self.signature)?;
        Ok(&self.request)
    }

    /// The encoded signed request.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `labeled_hash("request", signed request)`.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        labeled_hash("request", &self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            op: Operation::ReEncrypt,
            room: [1; 32],
            doc: b"doc".to_vec(),
            header_hash: [2; 32],
            user: [3; 32],
            nonce: vec![4; 16],
            issued_at_ms: 1_700_000_000_000,
            pod_key: [5; 32],
        }
    }

    #[test]
    fn sign_parse_verify() {
        let k = SigningKey::generate().unwrap();
        let s = SignedRequest::sign(request(), &k).unwrap();
        let parsed = SignedRequest::parse(s.as_bytes()).unwrap();
        assert_eq!(parsed.verify(&k.verifying_key()).unwrap(), &request());
        assert_eq!(parsed.hash(), s.hash());
        let other = SigningKey::generate().unwrap();
        assert_eq!(
            parsed.verify(&other.verifying_key()),
            Err(Error::BadSignature)
        );
    }

    #[test]
    fn any_change_breaks_the_signature_or_the_parse() {
        let k = SigningKey::generate().unwrap();
        let s = SignedRequest::sign(request(), &k).unwrap();
        for i in 0..s.as_bytes().len() {
            let mut bad = s.as_bytes().to_vec();
            bad[i] ^= 1;
            let ok =
                SignedRequest::parse(&bad).and_then(|p| p.verify(&k.verifying_key()).map(|_| ()));
            assert!(ok.is_err(), "byte {i}");
        }
    }

    #[test]
    fn bounds_are_enforced() {
        let k = SigningKey::generate().unwrap();
        let mut r = request();
        r.nonce = vec![0; 8];
        let s = SignedRequest::sign(r, &k).unwrap();
        assert!(SignedRequest::parse(s.as_bytes()).is_err());
        assert!(SignedRequest::parse(&vec![0u8; 2000]).is_err());
    }
}
