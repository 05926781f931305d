//! HPKE (RFC 9180), base mode, single shot, with one suite: DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM
//! (KEM 0x0010, KDF 0x0001, AEAD 0x0002).
//!
//! Built on aws-lc-rs primitives (P-256 ECDH, HMAC-SHA256, AES-256-GCM): the enclave unwraps one key per request
//! with this code, and aws-lc-rs is the fastest constant-time implementation available to it. The encoding of a
//! sealed message is `enc ‖ ciphertext` (65 + len + 16 bytes), which is also what Python's `cryptography`
//! `hpke.Suite.encrypt` produces; the tests check both directions against it.

use crate::Error;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, UnparsedPublicKey};
use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::hmac;
use zeroize::{Zeroize, Zeroizing};

/// Length of an encapsulated key (an uncompressed P-256 point).
pub const ENC_LEN: usize = 65;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of a P-256 private scalar.
pub const SCALAR_LEN: usize = 32;

const KEM_ID: [u8; 2] = [0x00, 0x10];
const KDF_ID: [u8; 2] = [0x00, 0x01];
const AEAD_ID: [u8; 2] = [0x00, 0x02];
const MODE_BASE: u8 = 0x00;

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, uncompressed point follows).
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn kem_suite() -> Vec<u8> {
    [b"KEM".as_slice(), &KEM_ID].concat()
}

fn hpke_suite() -> Vec<u8> {
    [b"HPKE".as_slice(), &KEM_ID, &KDF_ID, &AEAD_ID].concat()
}

/// HKDF-Extract with HMAC-SHA256. An empty salt is HashLen zero bytes, which HMAC treats like an empty key.
pub(crate) fn extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let mut ctx = hmac::Context::with_key(&key);
    for part in ikm {
        ctx.update(part);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// HKDF-Expand with HMAC-SHA256, for outputs of at most 255 blocks.
pub(crate) fn expand(prk: &[u8], info: &[&[u8]], len: usize) -> Zeroizing<Vec<u8>> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, prk);
    let mut out = Zeroizing::new(Vec::with_capacity(len.saturating_add(32)));
    let mut previous: Vec<u8> = Vec::new();
    let mut counter = 1u8;
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&previous);
        for part in info {
            ctx.update(part);
        }
        ctx.update(&[counter]);
        previous.zeroize();
        previous = ctx.sign().as_ref().to_vec();
        out.extend_from_slice(&previous);
        counter = counter.wrapping_add(1);
    }
    previous.zeroize();
    out.truncate(len);
    out
}

fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    extract(salt, &[b"HPKE-v1", suite, label, ikm])
}

fn labeled_expand(
    suite: &[u8],
    prk: &[u8],
    label: &[u8],
    info: &[u8],
    len: u16,
) -> Zeroizing<Vec<u8>> {
    expand(
        prk,
        &[&len.to_be_bytes(), b"HPKE-v1", suite, label, info],
        usize::from(len),
    )
}

/// An HPKE recipient's public key: an uncompressed P-256 point.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; ENC_LEN]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey(")?;
        for b in self.0.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl PublicKey {
    /// From the 65-byte uncompressed SEC1 encoding; the point is checked to be on the curve.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, Error> {
        let arr: [u8; ENC_LEN] = bytes.try_into().map_err(|_| Error::InvalidPublicKey)?;
        if arr[0] != 0x04 {
            return Err(Error::InvalidPublicKey);
        }
        // Validate by doing a throwaway agreement: aws-lc-rs rejects points not on the curve.
        let probe = agreement::PrivateKey::generate(&ECDH_P256).map_err(|_| Error::Crypto)?;
        agreement::agree(
            &probe,
            UnparsedPublicKey::new(&ECDH_P256, &arr),
            Error::InvalidPublicKey,
            |_| Ok(()),
        )?;
        Ok(Self(arr))
    }

    /// From a DER SubjectPublicKeyInfo, as WebCrypto's `exportKey("spki")` writes it.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        let point = der
            .strip_prefix(SPKI_P256_PREFIX.as_slice())
            .ok_or(Error::InvalidPublicKey)?;
        Self::from_sec1(point)
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        [SPKI_P256_PREFIX.as_slice(), &self.0].concat()
    }

    /// The uncompressed point.
    pub fn as_bytes(&self) -> &[u8; ENC_LEN] {
        &self.0
    }
}

/// An HPKE recipient's private key. Not `Debug`, not `Clone`; the scalar lives inside aws-lc, which clears it
/// when the key is dropped.
pub struct PrivateKey {
    inner: agreement::PrivateKey,
    public: PublicKey,
}

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> Result<Self, Error> {
        Self::wrap(agreement::PrivateKey::generate(&ECDH_P256).map_err(|_| Error::Crypto)?)
    }

    fn wrap(inner: agreement::PrivateKey) -> Result<Self, Error> {
        let public = inner.compute_public_key().map_err(|_| Error::Crypto)?;
        let public = PublicKey(public.as_ref().try_into().map_err(|_| Error::Crypto)?);
        Ok(Self { inner, public })
    }

    /// From a 32-byte big-endian scalar.
    pub fn from_scalar(scalar: &[u8]) -> Result<Self, Error> {
        Self::wrap(
            agreement::PrivateKey::from_private_key(&ECDH_P256, scalar)
                .map_err(|_| Error::InvalidPrivateKey)?,
        )
    }

    /// From DER: PKCS#8 (what KMS `GenerateDataKeyPair` returns) or RFC 5915 ECPrivateKey.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        Self::wrap(
            agreement::PrivateKey::from_private_key_der(&ECDH_P256, der)
                .map_err(|_| Error::InvalidPrivateKey)?,
        )
    }

    /// RFC 9180 §7.1.3 DeriveKeyPair: a key determined by `ikm` (for test vectors and key derivation).
    pub fn derive(ikm: &[u8]) -> Result<Self, Error> {
        let suite = kem_suite();
        let dkp_prk = labeled_extract(&suite, b"", b"dkp_prk", ikm);
        for counter in 0u8..=255 {
            let candidate = labeled_expand(&suite, &*dkp_prk, b"candidate", &[counter], 32);
            // from_private_key refuses zero and values not below the group order: exactly the loop's condition.
            if let Ok(inner) = agreement::PrivateKey::from_private_key(&ECDH_P256, &candidate) {
                return Self::wrap(inner);
            }
        }
        Err(Error::InvalidPrivateKey)
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The scalar, for sealing the key away (e.g. under KMS).
    pub fn to_scalar(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let be = AsBigEndian::<aws_lc_rs::encoding::EcPrivateKeyBin<'_>>::as_be_bytes(&self.inner)
            .map_err(|_| Error::Crypto)?;
        Ok(Zeroizing::new(be.as_ref().to_vec()))
    }

    fn dh(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        agreement::agree(
            &self.inner,
            UnparsedPublicKey::new(&ECDH_P256, peer),
            Error::InvalidPublicKey,
            |shared| Ok(Zeroizing::new(shared.to_vec())),
        )
    }
}

fn kem_shared_secret(dh: &[u8], enc: &[u8], pk_r: &[u8]) -> Zeroizing<Vec<u8>> {
    let suite = kem_suite();
    let kem_context = [enc, pk_r].concat();
    let eae_prk = labeled_extract(&suite, b"", b"eae_prk", dh);
    labeled_expand(&suite, &*eae_prk, b"shared_secret", &kem_context, 32)
}

/// The AEAD key and nonce of a base-mode context.
fn key_schedule(shared_secret: &[u8], info: &[u8]) -> Result<(LessSafeKey, [u8; 12]), Error> {
    let suite = hpke_suite();
    let psk_id_hash = labeled_extract(&suite, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(&suite, b"", b"info_hash", info);
    let context = [[MODE_BASE].as_slice(), &*psk_id_hash, &*info_hash].concat();
    let secret = labeled_extract(&suite, shared_secret, b"secret", b"");
    let key = labeled_expand(&suite, &*secret, b"key", &context, 32);
    let nonce = labeled_expand(&suite, &*secret, b"base_nonce", &context, 12);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).map_err(|_| Error::Crypto)?);
    let nonce: [u8; 12] = nonce.as_slice().try_into().map_err(|_| Error::Crypto)?;
    Ok((key, nonce))
}

/// Seals `plaintext` to `recipient`, binding `info` (key schedule) and `aad` (AEAD). Returns `enc ‖ ciphertext`.
pub fn seal(
    recipient: &PublicKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    seal_with_ephemeral(&PrivateKey::generate()?, recipient, info, aad, plaintext)
}

/// [`seal`] with a given ephemeral key; only for reproducible test vectors (an ephemeral key must never be
/// reused).
pub fn seal_with_ephemeral(
    ephemeral: &PrivateKey,
    recipient: &PublicKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let enc = ephemeral.public_key().as_bytes();
    let dh = ephemeral.dh(recipient.as_bytes())?;
    let shared = kem_shared_secret(&dh, enc, recipient.as_bytes());
    let (key, nonce) = key_schedule(&shared, info)?;
    let mut out = Vec::with_capacity(ENC_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(enc);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| Error::Crypto)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens `enc ‖ ciphertext` with the recipient's key. Every failure is the same [`Error::Decrypt`], so that a
/// caller cannot learn which step failed.
pub fn open(
    recipient: &PrivateKey,
    info: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    if sealed.len() < ENC_LEN + TAG_LEN {
        return Err(Error::Decrypt);
    }
    let (enc, ciphertext) = sealed.split_at(ENC_LEN);
    let dh = recipient.dh(enc).map_err(|_| Error::Decrypt)?;
    let shared = kem_shared_secret(&dh, enc, recipient.public_key().as_bytes());
    let (key, nonce) = key_schedule(&shared, info)?;
    let mut body = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| Error::Decrypt)?
        .len();
    body.truncate(len);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let sk = PrivateKey::generate().unwrap();
        let sealed = seal(sk.public_key(), b"info", b"aad", b"secret").unwrap();
        assert_eq!(sealed.len(), ENC_LEN + 6 + TAG_LEN);
        assert_eq!(&*open(&sk, b"info", b"aad", &sealed).unwrap(), b"secret");
        assert!(matches!(
            open(&sk, b"other", b"aad", &sealed),
            Err(Error::Decrypt)
        ));
        assert!(matches!(
            open(&sk, b"info", b"other", &sealed),
            Err(Error::Decrypt)
        ));
        let other = PrivateKey::generate().unwrap();
        assert!(matches!(
            open(&other, b"info", b"aad", &sealed),
            Err(Error::Decrypt)
        ));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(
                matches!(open(&sk, b"info", b"aad", &bad), Err(Error::Decrypt)),
                "byte {i}"
            );
        }
        assert!(matches!(
            open(&sk, b"info", b"aad", &sealed[..80]),
            Err(Error::Decrypt)
        ));
    }

    #[test]
    fn keys_round_trip_through_their_encodings() {
        let sk = PrivateKey::generate().unwrap();
        let again = PrivateKey::from_scalar(&sk.to_scalar().unwrap()).unwrap();
        assert_eq!(again.public_key(), sk.public_key());
        let spki = sk.public_key().to_spki_der();
        assert_eq!(spki.len(), 91);
        assert_eq!(&PublicKey::from_spki_der(&spki).unwrap(), sk.public_key());
        let mut off_curve = *sk.public_key().as_bytes();
        off_curve[64] ^= 1;
        assert!(PublicKey::from_sec1(&off_curve).is_err());
        assert!(PrivateKey::from_scalar(&[0u8; 32]).is_err());
        assert!(PrivateKey::from_scalar(&[0xff; 32]).is_err());
    }

    #[test]
    fn derive_key_pair_is_deterministic() {
        let a = PrivateKey::derive(b"seed").unwrap();
        let b = PrivateKey::derive(b"seed").unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(
            PrivateKey::derive(b"other seed").unwrap().public_key(),
            a.public_key()
        );
    }

    /// RFC 9180 Appendix A.3.1 (DHKEM(P-256, HKDF-SHA256), base mode): DeriveKeyPair and the KEM's shared secret.
    /// (The appendix's AEAD there is AES-128-GCM; the KEM steps are the same for every AEAD.)
    #[test]
    fn rfc9180_a3_kem_vector() {
        let ikm_e = hex::decode("4270e54ffd08d79d5928020af4686d8f6b7d35dbe470265f1f5aa22816ce860e")
            .unwrap();
        let ikm_r = hex::decode("668b37171f1072f3cf12ea8a236a45df23fc13b82af3609ad1e354f6ef817550")
            .unwrap();
        let sk_e = PrivateKey::derive(&ikm_e).unwrap();
        let sk_r = PrivateKey::derive(&ikm_r).unwrap();
        assert_eq!(
            hex::encode(sk_e.public_key().as_bytes()),
            "04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325ac98536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4"
        );
        assert_eq!(
            hex::encode(sk_r.public_key().as_bytes()),
            "04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a826a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72ea0"
        );
        assert_eq!(
            hex::encode(&*sk_r.to_scalar().unwrap()),
            "f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2"
        );
        assert_eq!(
            hex::encode(&*sk_e.to_scalar().unwrap()),
            "4995788ef4b9d6132b249ce59a77281493eb39af373d236a1fe415cb0c2d7beb"
        );
        let dh = sk_e.dh(sk_r.public_key().as_bytes()).unwrap();
        let shared = kem_shared_secret(
            &dh,
            sk_e.public_key().as_bytes(),
            sk_r.public_key().as_bytes(),
        );
        assert_eq!(
            hex::encode(&*shared),
            "c0d26aeab536609a572b07695d933b589dcf363ff9d93c93adea537aeabb8cb8"
        );
    }
}
