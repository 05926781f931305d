//! The CMS EnvelopedData that AWS KMS returns in `CiphertextForRecipient`, parsed and decrypted, and built (for the
//! local KMS emulator) in exactly the shape KMS sends.
//!
//! ```text
//! ContentInfo (BER, indefinite) { envelopedData, [0] EnvelopedData {
//!   version 2,
//!   recipientInfos SET { KeyTransRecipientInfo { version 2, rid [0] SKI = SHA-256(recipient SPKI),
//!       RSAES-OAEP { SHA-256, MGF1-SHA-256, no label }, encryptedKey } },
//!   encryptedContentInfo { data, AES-256-CBC { IV }, [0] encryptedContent (primitive, or constructed chunks) } } }
//! ```
//!
//! The reader accepts definite and indefinite lengths and the hash AlgorithmIdentifiers with or without NULL
//! parameters (KMS writes NULL, OpenSSL does not), and nothing else: any other algorithm, a second recipient, an
//! OAEP label, originator info or attributes are refused. Input is bounded before parsing and nesting is bounded
//! while parsing. Decryption failures are one coarse [`Error::Decrypt`].

use crate::Error;
use crate::keys::sha256;
use aws_lc_rs::cipher::{
    AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PublicEncryptingKey,
};
use zeroize::Zeroizing;

/// Largest CiphertextForRecipient accepted (KMS plaintexts are at most 4 KiB; an RSA-4096 private key in PKCS#8
/// is about 2.4 KiB).
pub const MAX_CMS_LEN: usize = 64 * 1024;
const MAX_DEPTH: usize = 12;

const OID_ENVELOPED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
const OID_MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

fn bad(reason: &'static str) -> Error {
    Error::Malformed(reason)
}

/// One BER element: its tag byte and content (for an indefinite element, the content without the end marker).
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Reads one element from the front of `input`; returns it and the rest.
fn read_tlv(input: &[u8], depth: usize) -> Result<(Tlv<'_>, &[u8]), Error> {
    if depth > MAX_DEPTH {
        return Err(bad("CMS nests too deeply"));
    }
    let tag = *input.first().ok_or(bad("CMS ends early"))?;
    if tag & 0x1f == 0x1f {
        return Err(bad("CMS uses a high tag number"));
    }
    let first = *input.get(1).ok_or(bad("CMS ends early"))?;
    if first == 0x80 {
        // Indefinite length: only for constructed elements; content runs until the matching 00 00.
        if tag & 0x20 == 0 {
            return Err(bad("indefinite length on a primitive element"));
        }
        let body = input.get(2..).ok_or(bad("CMS ends early"))?;
        let mut rest = body;
        loop {
            if rest.starts_with(&[0, 0]) {
                let used = body.len().saturating_sub(rest.len());
                let content = body.get(..used).ok_or(bad("CMS ends early"))?;
                let after = rest.get(2..).ok_or(bad("CMS ends early"))?;
                return Ok((Tlv { tag, content }, after));
            }
            if rest.is_empty() {
                return Err(bad("CMS ends inside an indefinite-length element"));
            }
            let (_, next) = read_tlv(rest, depth.saturating_add(1))?;
            rest = next;
        }
    }
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2usize)
    } else {
        let n = usize::from(first & 0x7f);
        if n > 4 {
            return Err(bad("CMS length too large"));
        }
        let bytes = input
            .get(2..2usize.saturating_add(n))
            .ok_or(bad("CMS ends early"))?;
        (
            bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
            2usize.saturating_add(n),
        )
    };
    let end = header.checked_add(len).ok_or(bad("CMS length too large"))?;
    let content = input.get(header..end).ok_or(bad("CMS ends early"))?;
    let rest = input.get(end..).ok_or(bad("CMS ends early"))?;
    Ok((Tlv { tag, content }, rest))
}

/// The children of a constructed element.
fn children(t: Tlv<'_>, depth: usize) -> Result<Vec<Tlv<'_>>, Error> {
    if t.tag & 0x20 == 0 {
        return Err(bad("expected a constructed element"));
    }
    let mut out = Vec::new();
    let mut rest = t.content;
    while !rest.is_empty() {
        if out.len() >= 16 {
            return Err(bad("too many elements"));
        }
        let (c, next) = read_tlv(rest, depth.saturating_add(1))?;
        out.push(c);
        rest = next;
    }
    Ok(out)
}

fn expect<'a>(
    items: &'a [Tlv<'a>],
    i: usize,
    tag: u8,
    what: &'static str,
) -> Result<Tlv<'a>, Error> {
    match items.get(i) {
        Some(t) if t.tag == tag => Ok(*t),
        _ => Err(bad(what)),
    }
}

fn expect_int(items: &[Tlv<'_>], i: usize, value: u8, what: &'static str) -> Result<(), Error> {
    if expect(items, i, 0x02, what)?.content == [value] {
        Ok(())
    } else {
        Err(bad(what))
    }
}

/// `SEQUENCE { OID sha256 [, NULL] }`.
fn check_sha256_alg(t: Tlv<'_>, depth: usize) -> Result<(), Error> {
    let c = children(t, depth)?;
    let oid = expect(&c, 0, 0x06, "hash algorithm")?;
    let params_ok = match c.get(1) {
        None => c.len() == 1,
        Some(n) => n.tag == 0x05 && n.content.is_empty() && c.len() == 2,
    };
    if oid.content != OID_SHA256 || !params_ok {
        return Err(bad("OAEP must use SHA-256"));
    }
    Ok(())
}

/// A parsed `CiphertextForRecipient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The recipient's subject key identifier: SHA-256 of its SPKI.
    pub recipient_key_id: Vec<u8>,
    /// The RSA-OAEP-wrapped content key.
    pub encrypted_key: Vec<u8>,
    /// The AES-256-CBC IV.
    pub iv: [u8; 16],
    /// The AES-256-CBC ciphertext (chunks joined).
    pub ciphertext: Vec<u8>,
}

/// Parses the EnvelopedData of a `CiphertextForRecipient`.
pub fn parse(input: &[u8]) -> Result<Envelope, Error> {
    if input.len() > MAX_CMS_LEN {
        return Err(bad("CMS input too large"));
    }
    let (content_info, rest) = read_tlv(input, 0)?;
    if !rest.is_empty() {
        return Err(bad("bytes after the CMS ContentInfo"));
    }
    if content_info.tag != 0x30 {
        return Err(bad("ContentInfo is not a SEQUENCE"));
    }
    let ci = children(content_info, 1)?;
    if expect(&ci, 0, 0x06, "content type")?.content != OID_ENVELOPED || ci.len() != 2 {
        return Err(bad("not an EnvelopedData"));
    }
    let explicit = children(expect(&ci, 1, 0xa0, "EnvelopedData [0]")?, 2)?;
    if explicit.len() != 1 {
        return Err(bad("EnvelopedData [0] must hold one element"));
    }
    let env = children(expect(&explicit, 0, 0x30, "EnvelopedData")?, 3)?;
    expect_int(&env, 0, 2, "EnvelopedData version must be 2")?;
    if env.len() != 3 {
        return Err(bad(
            "EnvelopedData must be [version, recipientInfos, encryptedContentInfo]",
        ));
    }
    let rinfos = children(expect(&env, 1, 0x31, "recipientInfos")?, 4)?;
    if rinfos.len() != 1 {
        return Err(bad("exactly one recipient is expected"));
    }
    let ktri = children(expect(&rinfos, 0, 0x30, "KeyTransRecipientInfo")?, 5)?;
    if ktri.len() != 4 {
        return Err(bad("KeyTransRecipientInfo has four fields"));
    }
    expect_int(&ktri, 0, 2, "KeyTransRecipientInfo version must be 2")?;
    let rid = expect(&ktri, 1, 0x80, "rid must be a subjectKeyIdentifier")?;
    let alg = children(expect(&ktri, 2, 0x30, "keyEncryptionAlgorithm")?, 6)?;
    if expect(&alg, 0, 0x06, "key encryption OID")?.content != OID_RSAES_OAEP || alg.len() != 2 {
        return Err(bad("key encryption must be RSAES-OAEP"));
    }
    let params = children(expect(&alg, 1, 0x30, "RSAES-OAEP parameters")?, 7)?;
    if params.len() != 2 {
        return Err(bad(
            "OAEP parameters must name the hash and MGF only (no label)",
        ));
    }
    let hash = children(expect(&params, 0, 0xa0, "OAEP hash")?, 8)?;
    check_sha256_alg(expect(&hash, 0, 0x30, "OAEP hash")?, 9)?;
    let mgf_outer = children(expect(&params, 1, 0xa1, "OAEP MGF")?, 8)?;
    let mgf = children(expect(&mgf_outer, 0, 0x30, "OAEP MGF")?, 9)?;
    if expect(&mgf, 0, 0x06, "MGF OID")?.content != OID_MGF1 || mgf.len() != 2 {
        return Err(bad("MGF must be MGF1"));
    }
    check_sha256_alg(expect(&mgf, 1, 0x30, "MGF1 hash")?, 10)?;
    let encrypted_key = expect(&ktri, 3, 0x04, "encryptedKey")?.content.to_vec();

    let eci = children(expect(&env, 2, 0x30, "encryptedContentInfo")?, 4)?;
    if eci.len() != 3 || expect(&eci, 0, 0x06, "content type")?.content != OID_DATA {
        return Err(bad(
            "encryptedContentInfo must be [data, algorithm, content]",
        ));
    }
    let cea = children(expect(&eci, 1, 0x30, "contentEncryptionAlgorithm")?, 5)?;
    if expect(&cea, 0, 0x06, "content encryption OID")?.content != OID_AES256_CBC || cea.len() != 2
    {
        return Err(bad("content encryption must be AES-256-CBC"));
    }
    let iv: [u8; 16] = expect(&cea, 1, 0x04, "IV")?
        .content
        .try_into()
        .map_err(|_| bad("the IV must be 16 bytes"))?;
    let content = eci.get(2).ok_or(bad("encryptedContent missing"))?;
    let ciphertext = match content.tag {
        0x80 => content.content.to_vec(),
        0xa0 => {
            let mut out = Vec::with_capacity(content.content.len());
            let mut rest = content.content;
            while !rest.is_empty() {
                let (chunk, next) = read_tlv(rest, 6)?;
                if chunk.tag != 0x04 {
                    return Err(bad("encryptedContent chunks must be OCTET STRINGs"));
                }
                out.extend_from_slice(chunk.content);
                rest = next;
            }
            out
        }
        _ => return Err(bad("encryptedContent must be [0] IMPLICIT OCTET STRING")),
    };
    if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
        return Err(bad("the ciphertext is not whole AES blocks"));
    }
    Ok(Envelope {
        recipient_key_id: rid.content.to_vec(),
        encrypted_key,
        iv,
        ciphertext,
    })
}

/// Parses and decrypts a `CiphertextForRecipient` with the recipient's RSA key, whose SPKI is `recipient_spki`
/// (the one bound into the attestation document). Returns the plaintext (a key, for the pod).
pub fn decrypt(
    input: &[u8],
    key: &OaepPrivateDecryptingKey,
    recipient_spki: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let env = parse(input)?;
    if env.recipient_key_id != sha256(&[recipient_spki]) {
        return Err(Error::Decrypt);
    }
    let mut cek = Zeroizing::new(vec![0u8; key.min_output_size()]);
    let cek_len = key
        .decrypt(&OAEP_SHA256_MGF1SHA256, &env.encrypted_key, &mut cek, None)
        .map_err(|_| Error::Decrypt)?
        .len();
    cek.truncate(cek_len);
    if cek.len() != 32 {
        return Err(Error::Decrypt);
    }
    let aes = PaddedBlockDecryptingKey::cbc_pkcs7(
        UnboundCipherKey::new(&AES_256, &cek).map_err(|_| Error::Decrypt)?,
    )
    .map_err(|_| Error::Decrypt)?;
    let mut buf = Zeroizing::new(env.ciphertext);
    let len = aes
        .decrypt(&mut buf, DecryptionContext::Iv128(env.iv.into()))
        .map_err(|_| Error::Decrypt)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        return vec![n as u8];
    }
    let bytes: Vec<u8> = n
        .to_be_bytes()
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    [vec![0x80 | bytes.len() as u8], bytes].concat()
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    [&[tag][..], &der_len(body.len()), body].concat()
}

fn indefinite(tag: u8, body: &[u8]) -> Vec<u8> {
    [&[tag, 0x80][..], body, &[0, 0]].concat()
}

/// The KMS framing around already-encrypted parts (exposed for the vector tests).
pub fn frame(
    recipient_key_id: &[u8],
    encrypted_key: &[u8],
    iv: &[u8; 16],
    ciphertext: &[u8],
) -> Vec<u8> {
    let sha256_alg = tlv(0x30, &[tlv(0x06, OID_SHA256), vec![0x05, 0x00]].concat());
    let oaep_params = tlv(
        0x30,
        &[
            tlv(0xa0, &sha256_alg),
            tlv(
                0xa1,
                &tlv(0x30, &[tlv(0x06, OID_MGF1), sha256_alg.clone()].concat()),
            ),
        ]
        .concat(),
    );
    let ktri = tlv(
        0x30,
        &[
            tlv(0x02, &[2]),
            tlv(0x80, recipient_key_id),
            tlv(0x30, &[tlv(0x06, OID_RSAES_OAEP), oaep_params].concat()),
            tlv(0x04, encrypted_key),
        ]
        .concat(),
    );
    let eci = indefinite(
        0x30,
        &[
            tlv(0x06, OID_DATA),
            tlv(0x30, &[tlv(0x06, OID_AES256_CBC), tlv(0x04, iv)].concat()),
            indefinite(0xa0, &tlv(0x04, ciphertext)),
        ]
        .concat(),
    );
    let env = indefinite(0x30, &[tlv(0x02, &[2]), tlv(0x31, &ktri), eci].concat());
    indefinite(
        0x30,
        &[tlv(0x06, OID_ENVELOPED), indefinite(0xa0, &env)].concat(),
    )
}

/// Encrypts `plaintext` to the RSA key `recipient_spki` in the shape KMS uses for `CiphertextForRecipient`.
pub fn encrypt_for_recipient(recipient_spki: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let public =
        PublicEncryptingKey::from_der(recipient_spki).map_err(|_| Error::InvalidPublicKey)?;
    let oaep = OaepPublicEncryptingKey::new(public).map_err(|_| Error::InvalidPublicKey)?;
    let rng = SystemRandom::new();
    let mut cek = Zeroizing::new([0u8; 32]);
    rng.fill(cek.as_mut()).map_err(|_| Error::Crypto)?;
    let mut iv = [0u8; 16];
    rng.fill(&mut iv).map_err(|_| Error::Crypto)?;
    let mut encrypted_key = vec![0u8; oaep.ciphertext_size()];
    let ek_len = oaep
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            cek.as_ref(),
            &mut encrypted_key,
            None,
        )
        .map_err(|_| Error::Crypto)?
        .len();
    encrypted_key.truncate(ek_len);
    let aes = PaddedBlockEncryptingKey::cbc_pkcs7(
        UnboundCipherKey::new(&AES_256, cek.as_ref()).map_err(|_| Error::Crypto)?,
    )
    .map_err(|_| Error::Crypto)?;
    let mut buf = plaintext.to_vec();
    aes.less_safe_encrypt(&mut buf, EncryptionContext::Iv128(iv.into()))
        .map_err(|_| Error::Crypto)?;
    Ok(frame(&sha256(&[recipient_spki]), &encrypted_key, &iv, &buf))
}
