//! Keys: user key bundles and ids, ECDSA P-256 signatures with domain separation, and key wrapping to a user
//! (RSA-OAEP-4096/SHA-256 or HPKE P-256).
//!
//! Signatures are raw `r ‖ s` (64 bytes), the encoding WebCrypto produces, over
//! `"secure-pod/v1/" ‖ context ‖ 0x00 ‖ message`, so that a signature made for one purpose (a request) can never
//! be replayed as another (a membership entry).

use crate::{Error, hpke};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use pod_cbor::{Decoder, Encoder, Len};
use zeroize::Zeroizing;

/// SHA-256 length.
pub const HASH_LEN: usize = 32;
/// Length of a raw P-256 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Largest SPKI accepted in a bundle (an RSA-4096 SPKI is 550 bytes).
pub const MAX_SPKI_LEN: usize = 1024;
/// RSA encryption keys must have exactly this many bits.
pub const RSA_BITS: usize = 4096;

/// DER prefix of a P-256 SubjectPublicKeyInfo.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut ctx = aws_lc_rs::digest::Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `SHA-256("secure-pod/v1/" ‖ label ‖ 0x00 ‖ data)`: every hash in the protocol is labelled.
pub fn labeled_hash(label: &str, data: &[u8]) -> [u8; HASH_LEN] {
    sha256(&[b"secure-pod/v1/", label.as_bytes(), &[0], data])
}

fn signing_input(context: &str, message: &[u8]) -> Vec<u8> {
    [
        b"secure-pod/v1/".as_slice(),
        context.as_bytes(),
        &[0],
        message,
    ]
    .concat()
}

/// Encodes `[payload: bstr, signature: bstr64]`, the shape of every signed structure in the protocol.
pub(crate) fn encode_signed(payload: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.array(2).bytes(payload).bytes(signature);
    e.into_bytes()
}

/// Splits `[payload: bstr, signature: bstr64]` of at most `max` bytes (the signature is not checked here).
pub(crate) fn decode_signed(
    bytes: &[u8],
    max: usize,
) -> Result<(&[u8], [u8; SIGNATURE_LEN]), Error> {
    if bytes.len() > max {
        return Err(Error::Malformed("signed structure too large"));
    }
    let mut d = Decoder::new(bytes);
    if d.array()? != Len::Definite(2) {
        return Err(Error::Malformed(
            "a signed structure is [payload, signature]",
        ));
    }
    let payload = d.bytes()?;
    let signature = d
        .bytes()?
        .try_into()
        .map_err(|_| Error::Malformed("signature must be 64 bytes"))?;
    d.finish()?;
    Ok((payload, signature))
}

/// An ECDSA P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    point: [u8; 65],
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", hex_prefix(&self.point[1..]))
    }
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter()
        .take(6)
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
        + "…"
}

impl VerifyingKey {
    /// From a P-256 SubjectPublicKeyInfo (WebCrypto `exportKey("spki")`).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        let point = der
            .strip_prefix(SPKI_P256_PREFIX.as_slice())
            .ok_or(Error::InvalidPublicKey)?;
        // Reuse HPKE's on-curve check: the same curve, the same encoding.
        hpke::PublicKey::from_sec1(point)?;
        let mut p = [0u8; 65];
        p.copy_from_slice(point);
        Ok(Self { point: p })
    }

    /// The SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        [SPKI_P256_PREFIX.as_slice(), &self.point].concat()
    }

    /// Checks a raw `r ‖ s` signature made for `context`.
    pub fn verify(&self, context: &str, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        if signature.len() != SIGNATURE_LEN {
            return Err(Error::BadSignature);
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(&signing_input(context, message), signature)
            .map_err(|_| Error::BadSignature)
    }
}

/// An ECDSA P-256 signing key. No `Debug`; aws-lc clears the scalar on drop.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, Error> {
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| Error::Crypto)?;
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// From PKCS#8 or RFC 5915 DER.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| Error::InvalidPrivateKey)?;
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// From a 32-byte scalar (and its public point, which is checked against it).
    pub fn from_scalar(scalar: &[u8]) -> Result<Self, Error> {
        let public = hpke::PrivateKey::from_scalar(scalar)?;
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            scalar,
            public.public_key().as_bytes(),
        )
        .map_err(|_| Error::InvalidPrivateKey)?;
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        let mut point = [0u8; 65];
        point.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey { point }
    }

    /// Signs `message` for `context`; returns raw `r ‖ s`.
    pub fn sign(&self, context: &str, message: &[u8]) -> Result<[u8; SIGNATURE_LEN], Error> {
        let sig = self
            .pair
            .sign(&self.rng, &signing_input(context, message))
            .map_err(|_| Error::Crypto)?;
        sig.as_ref().try_into().map_err(|_| Error::Crypto)
    }
}

/// How a user receives per-request keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionAlgorithm {
    /// RSA-OAEP with SHA-256 and MGF1-SHA-256, 4096-bit keys (existing browser PKI).
    RsaOaep4096 = 1,
    /// HPKE base mode, DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (the default: ~80× cheaper to open).
    HpkeP256 = 2,
}

impl EncryptionAlgorithm {
    fn from_code(code: u64) -> Result<Self, Error> {
        match code {
            1 => Ok(Self::RsaOaep4096),
            2 => Ok(Self::HpkeP256),
            _ => Err(Error::Malformed("unknown encryption algorithm")),
        }
    }
}

/// A user's encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncryptionKey {
    /// An RSA-4096 public key (its SPKI).
    RsaOaep4096(Vec<u8>),
    /// A P-256 HPKE public key.
    HpkeP256(hpke::PublicKey),
}

impl EncryptionKey {
    fn parse(alg: EncryptionAlgorithm, spki: &[u8]) -> Result<Self, Error> {
        match alg {
            EncryptionAlgorithm::HpkeP256 => {
                Ok(Self::HpkeP256(hpke::PublicKey::from_spki_der(spki)?))
            }
            EncryptionAlgorithm::RsaOaep4096 => {
                let key =
                    PublicEncryptingKey::from_der(spki).map_err(|_| Error::InvalidPublicKey)?;
                if key.key_size_bits() != RSA_BITS {
                    return Err(Error::InvalidPublicKey);
                }
                Ok(Self::RsaOaep4096(spki.to_vec()))
            }
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> EncryptionAlgorithm {
        match self {
            Self::RsaOaep4096(_) => EncryptionAlgorithm::RsaOaep4096,
            Self::HpkeP256(_) => EncryptionAlgorithm::HpkeP256,
        }
    }

    /// The SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        match self {
            Self::RsaOaep4096(spki) => spki.clone(),
            Self::HpkeP256(pk) => pk.to_spki_der(),
        }
    }

    /// Wraps a (32-byte) key to this recipient. For HPKE, `info` binds the wrapped key to its context; RSA-OAEP
    /// uses `info` as the OAEP label.
    pub fn wrap(&self, info: &[u8], key: &[u8]) -> Result<Vec<u8>, Error> {
        match self {
            Self::HpkeP256(pk) => hpke::seal(pk, info, b"", key),
            Self::RsaOaep4096(spki) => {
                let public =
                    PublicEncryptingKey::from_der(spki).map_err(|_| Error::InvalidPublicKey)?;
                let oaep = OaepPublicEncryptingKey::new(public).map_err(|_| Error::Crypto)?;
                let mut out = vec![0u8; oaep.ciphertext_size()];
                let len = oaep
                    .encrypt(&OAEP_SHA256_MGF1SHA256, key, &mut out, Some(info))
                    .map_err(|_| Error::Crypto)?
                    .len();
                out.truncate(len);
                Ok(out)
            }
        }
    }
}

/// A user's public key bundle: `[1, enc_alg, enc_spki, sign_spki]` in deterministic CBOR. The user id is
/// `labeled_hash("user-id", bundle bytes)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKeyBundle {
    bytes: Vec<u8>,
    encryption: EncryptionKey,
    signing: VerifyingKey,
    id: [u8; HASH_LEN],
}

impl UserKeyBundle {
    /// Builds a bundle from its keys.
    pub fn new(encryption: EncryptionKey, signing: VerifyingKey) -> Self {
        let mut e = Encoder::new();
        e.array(4)
            .u64(1)
            .u64(encryption.algorithm() as u64)
            .bytes(&encryption.to_spki_der())
            .bytes(&signing.to_spki_der());
        let bytes = e.into_bytes();
        let id = labeled_hash("user-id", &bytes);
        Self {
            bytes,
            encryption,
            signing,
            id,
        }
    }

    /// Parses a bundle; SPKIs exported by WebCrypto are accepted as they are.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut d = Decoder::new(bytes);
        if d.array()? != Len::Definite(4) {
            return Err(Error::Malformed("a key bundle is a four-element array"));
        }
        if d.u64()? != 1 {
            return Err(Error::Malformed("unknown key bundle version"));
        }
        let alg = EncryptionAlgorithm::from_code(d.u64()?)?;
        let enc = d.bytes()?;
        let sign = d.bytes()?;
        d.finish()?;
        if enc.len() > MAX_SPKI_LEN || sign.len() > MAX_SPKI_LEN {
            return Err(Error::Malformed("key too large"));
        }
        let bundle = Self::new(
            EncryptionKey::parse(alg, enc)?,
            VerifyingKey::from_spki_der(sign)?,
        );
        // Re-encoding must give the same bytes, so that a user has exactly one id.
        if bundle.bytes != bytes {
            return Err(Error::Malformed(
                "key bundle is not in deterministic encoding",
            ));
        }
        Ok(bundle)
    }

    /// The encoded bundle.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The user id.
    pub fn id(&self) -> &[u8; HASH_LEN] {
        &self.id
    }

    /// The key per-request keys are wrapped to.
    pub fn encryption_key(&self) -> &EncryptionKey {
        &self.encryption
    }

    /// The key the user signs requests with.
    pub fn signing_key(&self) -> &VerifyingKey {
        &self.signing
    }
}

impl From<pod_cbor::Error> for Error {
    fn from(_: pod_cbor::Error) -> Self {
        Error::Malformed("malformed CBOR")
    }
}

/// A private scalar on its way to a key file; zeroized on drop.
pub type Scalar = Zeroizing<Vec<u8>>;

/// A user's private keys with their public bundle: what a client holds. HPKE P-256 for encryption (the
/// default; see docs/SPEC.md for why) and ECDSA P-256 for signing.
pub struct UserSecrets {
    /// Signs requests and membership entries.
    pub signing: SigningKey,
    /// Opens re-encrypted documents.
    pub decryption: hpke::PrivateKey,
    /// The public bundle to register.
    pub bundle: UserKeyBundle,
}

impl UserSecrets {
    /// Keys from their two P-256 scalars (signing, decryption), as a key file stores them.
    pub fn from_scalars(signing: &[u8], decryption: &[u8]) -> Result<Self, Error> {
        let signing = SigningKey::from_scalar(signing)?;
        let decryption = hpke::PrivateKey::from_scalar(decryption)?;
        let bundle = UserKeyBundle::new(
            EncryptionKey::HpkeP256(decryption.public_key().clone()),
            signing.verifying_key(),
        );
        Ok(Self {
            signing,
            decryption,
            bundle,
        })
    }

    /// Fresh keys, with their scalars (signing, decryption) for storing; the scalars are zeroized on drop.
    pub fn generate_exportable() -> Result<(Self, Scalar, Scalar), Error> {
        let s = hpke::PrivateKey::generate()?.to_scalar()?;
        let d = hpke::PrivateKey::generate()?.to_scalar()?;
        Ok((Self::from_scalars(&s, &d)?, s, d))
    }

    /// Fresh keys.
    pub fn generate() -> Result<Self, Error> {
        let signing = SigningKey::generate()?;
        let decryption = hpke::PrivateKey::generate()?;
        let bundle = UserKeyBundle::new(
            EncryptionKey::HpkeP256(decryption.public_key().clone()),
            signing.verifying_key(),
        );
        Ok(Self {
            signing,
            decryption,
            bundle,
        })
    }
}

/// Hash of an SPKI: the fingerprint of the pod key, and of a user's encryption key in headers.
pub fn fingerprint(spki: &[u8]) -> [u8; HASH_LEN] {
    digest(&SHA256, spki)
        .as_ref()
        .try_into()
        .unwrap_or([0u8; HASH_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_domain_separated() {
        let k = SigningKey::generate().unwrap();
        let sig = k.sign("request", b"m").unwrap();
        k.verifying_key().verify("request", b"m", &sig).unwrap();
        assert_eq!(
            k.verifying_key().verify("membership", b"m", &sig),
            Err(Error::BadSignature)
        );
        assert_eq!(
            k.verifying_key().verify("request", b"n", &sig),
            Err(Error::BadSignature)
        );
        let spki = k.verifying_key().to_spki_der();
        assert_eq!(
            VerifyingKey::from_spki_der(&spki).unwrap(),
            k.verifying_key()
        );
    }

    #[test]
    fn bundles_round_trip_and_ids_are_stable() {
        let hpke_key = hpke::PrivateKey::generate().unwrap();
        let sign = SigningKey::generate().unwrap();
        let b = UserKeyBundle::new(
            EncryptionKey::HpkeP256(hpke_key.public_key().clone()),
            sign.verifying_key(),
        );
        let parsed = UserKeyBundle::parse(b.as_bytes()).unwrap();
        assert_eq!(parsed, b);
        assert_eq!(parsed.id(), b.id());
        let mut bad = b.as_bytes().to_vec();
        bad.push(0);
        assert!(UserKeyBundle::parse(&bad).is_err());
    }

    #[test]
    fn derived_signing_key_matches_its_scalar() {
        let sk = hpke::PrivateKey::generate().unwrap();
        let s = SigningKey::from_scalar(&sk.to_scalar().unwrap()).unwrap();
        assert_eq!(
            s.verifying_key().to_spki_der(),
            sk.public_key().to_spki_der()
        );
    }
}
