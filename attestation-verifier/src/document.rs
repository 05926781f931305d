//! Parsing of the COSE_Sign1 envelope and the attestation payload.
//!
//! Everything here borrows from the input: no field is copied until the whole document has verified.

use crate::Error;
use crate::limits::*;
use pod_cbor::{Decoder, Kind};

/// COSE_Sign1's CBOR tag (RFC 9052 §4.2).
const COSE_SIGN1_TAG: u64 = 18;
/// COSE algorithm identifier of ES384 (ECDSA with SHA-384).
const COSE_ALG_ES384: i64 = -35;
/// COSE header label of `alg`.
const COSE_HEADER_ALG: i64 = 1;

/// A parsed but not yet verified COSE_Sign1 attestation document.
#[derive(Debug)]
pub(crate) struct CoseSign1<'a> {
    pub protected: &'a [u8],
    pub payload: &'a [u8],
    pub signature: &'a [u8],
}

/// A parsed but not yet verified attestation payload.
#[derive(Debug)]
pub(crate) struct Payload<'a> {
    pub module_id: &'a str,
    pub timestamp_ms: u64,
    /// PCRs in ascending index order.
    pub pcrs: Vec<(u8, &'a [u8])>,
    pub certificate: &'a [u8],
    pub cabundle: Vec<&'a [u8]>,
    pub public_key: Option<&'a [u8]>,
    pub user_data: Option<&'a [u8]>,
    pub nonce: Option<&'a [u8]>,
}

/// Parses the COSE_Sign1 envelope: optional tag 18, then `[protected: bstr, unprotected: {}, payload: bstr,
/// signature: bstr(96)]`, with nothing after it.
pub(crate) fn parse_cose_sign1(doc: &[u8]) -> Result<CoseSign1<'_>, Error> {
    if doc.len() > MAX_DOCUMENT_LEN {
        return Err(Error::DocumentTooLarge {
            len: doc.len(),
            max: MAX_DOCUMENT_LEN,
        });
    }
    let mut d = Decoder::new(doc);
    if d.peek_kind()? == Kind::Tag {
        let tag = d.tag()?;
        if tag != COSE_SIGN1_TAG {
            return Err(Error::UnexpectedTag { tag });
        }
    }
    if d.peek_kind()? != Kind::Array {
        return Err(Error::NotCoseSign1("the outer item is not an array"));
    }
    match d.array()? {
        pod_cbor::Len::Definite(4) => {}
        pod_cbor::Len::Definite(_) => {
            return Err(Error::NotCoseSign1("the array does not have four elements"));
        }
        pod_cbor::Len::Indefinite => {
            return Err(Error::NotCoseSign1("the array has an indefinite length"));
        }
    }
    let protected = d.bytes()?;
    parse_protected_header(protected)?;
    let unprotected_len = d.map()?;
    let mut unprotected_entries = 0u64;
    d.for_each(unprotected_len, 0, |_, _| {
        unprotected_entries = unprotected_entries.saturating_add(1);
        Ok(())
    })
    .map_err(|_| Error::UnprotectedHeaderNotEmpty)?;
    if d.peek_kind()? != Kind::Bytes {
        return Err(Error::NotCoseSign1(
            "the payload is not an embedded byte string",
        ));
    }
    let payload = d.bytes()?;
    let signature = d.bytes()?;
    if signature.len() != COSE_SIGNATURE_LEN {
        return Err(Error::SignatureLength {
            len: signature.len(),
        });
    }
    d.finish()?;
    Ok(CoseSign1 {
        protected,
        payload,
        signature,
    })
}

/// The protected header must decode to exactly `{1: -35}` with nothing else in the byte string.
fn parse_protected_header(bytes: &[u8]) -> Result<(), Error> {
    let mut d = Decoder::new(bytes);
    let len = d.map().map_err(|_| Error::ProtectedHeader)?;
    let mut alg = None;
    d.for_each(len, 1, |d, _| {
        let label = d.i64()?;
        let value = d.i64()?;
        alg = Some((label, value));
        Ok(())
    })
    .map_err(|_| Error::ProtectedHeader)?;
    d.finish().map_err(|_| Error::ProtectedHeader)?;
    match alg {
        Some((COSE_HEADER_ALG, COSE_ALG_ES384)) => Ok(()),
        _ => Err(Error::ProtectedHeader),
    }
}

/// The payload fields, in AWS's schema order; the index is used to detect duplicates.
const FIELDS: [&str; 9] = [
    "module_id",
    "digest",
    "timestamp",
    "pcrs",
    "certificate",
    "cabundle",
    "public_key",
    "user_data",
    "nonce",
];

fn check_size(field: &'static str, len: usize, min: usize, max: usize) -> Result<(), Error> {
    if len < min || len > max {
        return Err(Error::FieldSize {
            field,
            len,
            min,
            max,
        });
    }
    Ok(())
}

/// Reads an optional byte-string field: `null` means absent.
fn optional_bytes<'a>(
    d: &mut Decoder<'a>,
    field: &'static str,
    min: usize,
    max: usize,
) -> Result<Option<&'a [u8]>, Error> {
    if d.null()? {
        return Ok(None);
    }
    let value = d.bytes()?;
    check_size(field, value.len(), min, max)?;
    Ok(Some(value))
}

/// Parses the attestation payload map against AWS's schema, with the limits of [`crate::limits`].
pub(crate) fn parse_payload(bytes: &[u8]) -> Result<Payload<'_>, Error> {
    let mut d = Decoder::new(bytes);
    let len = d.map()?;

    let mut seen = [false; FIELDS.len()];
    let mut module_id = None;
    let mut digest_ok = None;
    let mut timestamp = None;
    let mut pcrs: Option<Vec<(u8, &[u8])>> = None;
    let mut certificate = None;
    let mut cabundle: Option<Vec<&[u8]>> = None;
    let mut public_key = None;
    let mut user_data = None;
    let mut nonce = None;

    // The closure returns our own error through this slot, since for_each speaks only CBOR errors.
    let mut failure: Option<Error> = None;
    // Up to 64 entries are walked so that a tenth entry is reported precisely (it must be a duplicate or an
    // unknown field, both caught when read), instead of as a bare count error.
    let result = d.for_each(len, 64, |d, _| {
        let key = d.text()?;
        let Some(index) = FIELDS.iter().position(|f| *f == key) else {
            failure = Some(Error::UnknownField);
            return Err(stop(d));
        };
        let field = FIELDS.get(index).copied().unwrap_or("?");
        match seen.get_mut(index) {
            Some(flag) if !*flag => *flag = true,
            _ => {
                failure = Some(Error::DuplicateField(field));
                return Err(stop(d));
            }
        }
        let outcome: Result<(), Error> = (|| {
            // `null` for a required field means it is absent: leave it as None and report MissingField below.
            match field {
                "module_id" => {
                    if !d.null()? {
                        let v = d.text()?;
                        check_size(field, v.len(), 1, MAX_MODULE_ID_LEN)?;
                        module_id = Some(v);
                    }
                }
                "digest" => {
                    if !d.null()? {
                        digest_ok = Some(d.text()? == "SHA384");
                    }
                }
                "timestamp" => {
                    if !d.null()? {
                        timestamp = Some(d.u64()?);
                    }
                }
                "pcrs" => {
                    if !d.null()? {
                        pcrs = Some(parse_pcrs(d)?);
                    }
                }
                "certificate" => {
                    if !d.null()? {
                        let v = d.bytes()?;
                        check_size(field, v.len(), 1, MAX_CERTIFICATE_LEN)?;
                        certificate = Some(v);
                    }
                }
                "cabundle" => {
                    if !d.null()? {
                        cabundle = Some(parse_cabundle(d)?);
                    }
                }
                "public_key" => public_key = optional_bytes(d, field, 1, MAX_PUBLIC_KEY_LEN)?,
                "user_data" => user_data = optional_bytes(d, field, 0, MAX_USER_DATA_LEN)?,
                _ => nonce = optional_bytes(d, field, 0, MAX_NONCE_LEN)?,
            }
            Ok(())
        })();
        outcome.map_err(|e| {
            failure = Some(e);
            stop(d)
        })
    });
    if let Some(e) = failure {
        return Err(e);
    }
    result?;
    d.finish()?;

    let module_id = module_id.ok_or(Error::MissingField("module_id"))?;
    if !digest_ok.ok_or(Error::MissingField("digest"))? {
        return Err(Error::UnsupportedDigest);
    }
    Ok(Payload {
        module_id,
        timestamp_ms: timestamp.ok_or(Error::MissingField("timestamp"))?,
        pcrs: pcrs.ok_or(Error::MissingField("pcrs"))?,
        certificate: certificate.ok_or(Error::MissingField("certificate"))?,
        cabundle: cabundle.ok_or(Error::MissingField("cabundle"))?,
        public_key,
        user_data,
        nonce,
    })
}

/// A placeholder CBOR error used to unwind `for_each`; the real error travels in the closure's slot.
fn stop(d: &Decoder<'_>) -> pod_cbor::Error {
    pod_cbor::Error::Malformed {
        offset: d.position(),
        reason: "schema violation",
    }
}

fn parse_pcrs<'a>(d: &mut Decoder<'a>) -> Result<Vec<(u8, &'a [u8])>, Error> {
    let len = d.map()?;
    let mut out: Vec<(u8, &[u8])> = Vec::new();
    let mut failure = None;
    let result = d.for_each(len, MAX_PCRS as u64, |d, _| {
        let index = d.u64()?;
        let value = d.bytes()?;
        let ok_index = u8::try_from(index)
            .ok()
            .filter(|i| usize::from(*i) < MAX_PCRS && !out.iter().any(|(j, _)| j == i));
        let Some(i) = ok_index else {
            failure = Some(Error::PcrIndex { index });
            return Err(stop(d));
        };
        if !matches!(value.len(), 32 | 48 | 64) {
            failure = Some(Error::FieldSize {
                field: "pcrs",
                len: value.len(),
                min: 32,
                max: 64,
            });
            return Err(stop(d));
        }
        out.push((i, value));
        Ok(())
    });
    if let Some(e) = failure {
        return Err(e);
    }
    result?;
    check_size("pcrs", out.len(), 1, MAX_PCRS)?;
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

fn parse_cabundle<'a>(d: &mut Decoder<'a>) -> Result<Vec<&'a [u8]>, Error> {
    let len = d.array()?;
    let mut out = Vec::new();
    let mut failure = None;
    let result = d.for_each(len, MAX_CABUNDLE as u64, |d, _| {
        let cert = d.bytes()?;
        if let Err(e) = check_size("cabundle", cert.len(), 1, MAX_CERTIFICATE_LEN) {
            failure = Some(e);
            return Err(stop(d));
        }
        out.push(cert);
        Ok(())
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if let Err(pod_cbor::Error::Malformed { reason, .. }) = &result
        && reason.starts_with("container has more")
    {
        return Err(Error::FieldSize {
            field: "cabundle",
            len: MAX_CABUNDLE.saturating_add(1),
            min: 1,
            max: MAX_CABUNDLE,
        });
    }
    result?;
    check_size("cabundle", out.len(), 1, MAX_CABUNDLE)?;
    Ok(out)
}

/// The COSE Sig_structure for COSE_Sign1 (RFC 9052 §4.4), built from the original protected-header and payload
/// bytes, never from a re-encoding.
pub(crate) fn sig_structure(cose: &CoseSign1<'_>) -> Vec<u8> {
    let mut e = pod_cbor::Encoder::new();
    e.array(4)
        .text("Signature1")
        .bytes(cose.protected)
        .bytes(&[])
        .bytes(cose.payload);
    e.into_bytes()
}
