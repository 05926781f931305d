//! The certificate chain: leaf → `cabundle[N]` → … → `cabundle[1]` → the pinned root.
//!
//! Only ECDSA P-384 with SHA-384 is accepted anywhere in the chain: it is all AWS uses, and every other
//! algorithm would be code that only an attacker exercises.

use crate::error::CertPosition;
use crate::{Error, UnixTime};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5280, rfc5912};
use der::Decode;
use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

/// A certificate parsed once, with the bytes its signature covers.
pub(crate) struct ParsedCert<'a> {
    pub cert: Certificate,
    /// The DER bytes of `tbsCertificate` exactly as they appear in the input.
    pub tbs: &'a [u8],
    pub position: CertPosition,
}

/// Splits one DER TLV off the front of `input`, returning (whole TLV, rest). Definite lengths only.
fn split_tlv(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let first_len = *input.get(1)?;
    let (header, len) = if first_len < 0x80 {
        (2usize, usize::from(first_len))
    } else {
        let n = usize::from(first_len & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2usize.checked_add(n)?)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2usize.checked_add(n)?, len)
    };
    let end = header.checked_add(len)?;
    Some((input.get(..end)?, input.get(end..)?))
}

/// The raw `tbsCertificate` TLV inside a certificate's outer SEQUENCE.
fn tbs_bytes(cert_der: &[u8]) -> Option<&[u8]> {
    let (outer, rest) = split_tlv(cert_der)?;
    if !rest.is_empty() || *outer.first()? != 0x30 {
        return None;
    }
    let header = outer.len().checked_sub(content_len(outer)?)?;
    let (tbs, _) = split_tlv(outer.get(header..)?)?;
    Some(tbs)
}

fn content_len(tlv: &[u8]) -> Option<usize> {
    let first_len = *tlv.get(1)?;
    if first_len < 0x80 {
        Some(usize::from(first_len))
    } else {
        let n = usize::from(first_len & 0x7f);
        let header = 2usize.checked_add(n)?;
        tlv.len().checked_sub(header)
    }
}

pub(crate) fn parse(der_bytes: &[u8], position: CertPosition) -> Result<ParsedCert<'_>, Error> {
    let bad = |reason| Error::CertificateParse { position, reason };
    let cert = Certificate::from_der(der_bytes).map_err(|_| bad("not DER X.509"))?;
    if cert.tbs_certificate.version != x509_cert::Version::V3 {
        return Err(bad("not version 3"));
    }
    let tbs = tbs_bytes(der_bytes).ok_or(bad("cannot locate tbsCertificate"))?;
    Ok(ParsedCert {
        cert,
        tbs,
        position,
    })
}

/// The P-384 key in a certificate's subjectPublicKeyInfo.
pub(crate) fn p384_key(c: &ParsedCert<'_>) -> Result<VerifyingKey, Error> {
    let unsupported = |reason| Error::UnsupportedAlgorithm {
        position: c.position,
        reason,
    };
    let spki = &c.cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != rfc5912::ID_EC_PUBLIC_KEY {
        return Err(unsupported("public key is not an EC key"));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if curve != Some(rfc5912::SECP_384_R_1) {
        return Err(unsupported("public key is not on P-384"));
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or(unsupported("public key bit string is not whole bytes"))?;
    VerifyingKey::from_sec1_bytes(point).map_err(|_| Error::CertificateParse {
        position: c.position,
        reason: "public key is not a valid P-384 point",
    })
}

fn check_validity(c: &ParsedCert<'_>, at: UnixTime) -> Result<(), Error> {
    let (not_before_ms, not_after_ms) = validity_ms(c);
    let at_ms = at.as_millis();
    if at_ms < not_before_ms || at_ms > not_after_ms {
        return Err(Error::CertificateNotValidAt {
            position: c.position,
            at_ms,
            not_before_ms,
            not_after_ms,
        });
    }
    Ok(())
}

/// Validity period of a certificate, in milliseconds since the epoch.
pub(crate) fn validity_ms(c: &ParsedCert<'_>) -> (u64, u64) {
    let v = &c.cert.tbs_certificate.validity;
    let ms = |t: x509_cert::time::Time| {
        u64::try_from(t.to_unix_duration().as_millis()).unwrap_or(u64::MAX)
    };
    (ms(v.not_before), ms(v.not_after))
}

/// The extensions this verifier understands, and so may accept as critical.
const KNOWN_CRITICAL: [ObjectIdentifier; 2] =
    [rfc5280::ID_CE_BASIC_CONSTRAINTS, rfc5280::ID_CE_KEY_USAGE];

struct Extensions {
    basic_constraints: Option<BasicConstraints>,
    key_usage: Option<KeyUsage>,
}

fn extensions(c: &ParsedCert<'_>) -> Result<Extensions, Error> {
    let constraint = |reason| Error::Constraint {
        position: c.position,
        reason,
    };
    let mut out = Extensions {
        basic_constraints: None,
        key_usage: None,
    };
    let mut seen: Vec<ObjectIdentifier> = Vec::new();
    for ext in c.cert.tbs_certificate.extensions.iter().flatten() {
        if seen.contains(&ext.extn_id) {
            return Err(constraint("an extension appears twice"));
        }
        seen.push(ext.extn_id);
        if ext.critical && !KNOWN_CRITICAL.contains(&ext.extn_id) {
            return Err(constraint("unknown critical extension"));
        }
        let value = ext.extn_value.as_bytes();
        if ext.extn_id == rfc5280::ID_CE_BASIC_CONSTRAINTS {
            out.basic_constraints = Some(
                BasicConstraints::from_der(value)
                    .map_err(|_| constraint("malformed basicConstraints"))?,
            );
        } else if ext.extn_id == rfc5280::ID_CE_KEY_USAGE {
            out.key_usage =
                Some(KeyUsage::from_der(value).map_err(|_| constraint("malformed keyUsage"))?);
        }
    }
    Ok(out)
}

/// Checks that `issuer` signed `subject` with ECDSA P-384/SHA-384.
fn check_signature(subject: &ParsedCert<'_>, issuer_key: &VerifyingKey) -> Result<(), Error> {
    let position = subject.position;
    let unsupported = |reason| Error::UnsupportedAlgorithm { position, reason };
    let outer = &subject.cert.signature_algorithm;
    let inner = &subject.cert.tbs_certificate.signature;
    if outer.oid != rfc5912::ECDSA_WITH_SHA_384 {
        return Err(unsupported("signature is not ecdsa-with-SHA384"));
    }
    if outer != inner {
        return Err(Error::CertificateParse {
            position,
            reason: "inner and outer signature algorithms differ",
        });
    }
    if outer.parameters.is_some() {
        return Err(Error::CertificateParse {
            position,
            reason: "ecdsa-with-SHA384 must not carry parameters",
        });
    }
    let sig_bytes = subject
        .cert
        .signature
        .as_bytes()
        .ok_or(Error::CertificateSignature { position })?;
    let sig =
        Signature::from_der(sig_bytes).map_err(|_| Error::CertificateSignature { position })?;
    issuer_key
        .verify(subject.tbs, &sig)
        .map_err(|_| Error::CertificateSignature { position })
}

/// Verifies the chain of a document and returns the leaf's P-384 key.
///
/// `cabundle` is `[ROOT, INT_1, …, INT_N]` as in the document; `cabundle[0]` must equal `pinned_root` byte for byte,
/// and is never trusted on its own account.
pub(crate) fn verify_chain<'a>(
    leaf_der: &'a [u8],
    cabundle: &[&'a [u8]],
    pinned_root: &[u8],
    at: UnixTime,
) -> Result<(ParsedCert<'a>, VerifyingKey), Error> {
    let Some((root_der, intermediates)) = cabundle.split_first() else {
        return Err(Error::MissingField("cabundle"));
    };
    if !bool::from(subtle::ConstantTimeEq::ct_eq(*root_der, pinned_root)) {
        return Err(Error::WrongRoot);
    }
    // chain[0] is the root, chain[1..] the intermediates in issuing order, then the leaf.
    let mut chain = Vec::with_capacity(cabundle.len().saturating_add(1));
    for (i, der_bytes) in cabundle.iter().enumerate() {
        chain.push(parse(der_bytes, CertPosition::Bundle(i))?);
    }
    chain.push(parse(leaf_der, CertPosition::Leaf)?);

    for c in &chain {
        check_validity(c, at)?;
    }

    let intermediates_count = intermediates.len();
    let mut issuer_key = None;
    for (depth, c) in chain.iter().enumerate() {
        let ext = extensions(c)?;
        let constraint = |reason| Error::Constraint {
            position: c.position,
            reason,
        };
        let is_leaf = depth == chain.len().saturating_sub(1);
        if is_leaf {
            if ext.basic_constraints.as_ref().is_some_and(|b| b.ca) {
                return Err(constraint("the leaf is a CA certificate"));
            }
            if let Some(ku) = &ext.key_usage
                && !ku.digital_signature()
            {
                return Err(constraint("the leaf's keyUsage lacks digitalSignature"));
            }
        } else {
            let bc = ext
                .basic_constraints
                .as_ref()
                .ok_or(constraint("a CA certificate lacks basicConstraints"))?;
            if !bc.ca {
                return Err(constraint(
                    "basicConstraints cA is false on a CA certificate",
                ));
            }
            let ku = ext
                .key_usage
                .as_ref()
                .ok_or(constraint("a CA certificate lacks keyUsage"))?;
            if !ku.key_cert_sign() {
                return Err(constraint("a CA certificate's keyUsage lacks keyCertSign"));
            }
            // Intermediate CAs below this one (the leaf does not count).
            let below = intermediates_count.saturating_sub(depth);
            if let Some(path_len) = bc.path_len_constraint
                && below > usize::from(path_len)
            {
                return Err(constraint("pathLenConstraint exceeded"));
            }
        }
        let key = p384_key(c)?;
        if let (Some(parent_key), Some(parent)) =
            (&issuer_key, depth.checked_sub(1).and_then(|p| chain.get(p)))
        {
            let parent: &ParsedCert<'_> = parent;
            if c.cert.tbs_certificate.issuer != parent.cert.tbs_certificate.subject {
                return Err(Error::IssuerMismatch {
                    position: c.position,
                });
            }
            check_signature(c, parent_key)?;
        }
        issuer_key = Some(key);
    }
    let leaf = chain.pop().ok_or(Error::MissingField("certificate"))?;
    let key = issuer_key.ok_or(Error::MissingField("certificate"))?;
    Ok((leaf, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tlv_handles_short_and_long_forms() {
        let short = [0x04, 0x02, 0xaa, 0xbb, 0x01];
        let (tlv, rest) = split_tlv(&short).unwrap();
        assert_eq!(tlv, &[0x04, 0x02, 0xaa, 0xbb]);
        assert_eq!(rest, &[0x01]);
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(0u8, 0x80));
        let (tlv, rest) = split_tlv(&long).unwrap();
        assert_eq!(tlv.len(), 0x83);
        assert!(rest.is_empty());
        assert!(split_tlv(&[0x04, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(split_tlv(&[0x04, 0x05, 1]).is_none());
    }
}
