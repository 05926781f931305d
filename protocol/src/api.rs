//! The JSON bodies the pod's HTTP API accepts, parsed without I/O so the proxy, the fuzz target and tests share one
//! parser.
//!
//! Every field that carries bytes is standard base64; the user's public key is a PEM block (its label is not
//! checked here: the proxy compares its DER with the key registered in the room log). The body's size is bounded by
//! the HTTP layer before it reaches these parsers; each field is bounded again here so a parser never trusts that.

use base64::Engine as _;
use serde_json::Value;

/// The largest base64 field accepted (a sealed document sent inline; larger documents use the streaming API).
pub const MAX_FIELD_CHARS: usize = 96 * 1024 * 1024;
/// The largest PEM public key accepted (an RSA-4096 SPKI is about 800 characters of PEM).
pub const MAX_PEM_CHARS: usize = 16 * 1024;

/// Why a request body was refused. The message names the field so a client can fix its request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is not a JSON object.
    #[error("the body is not a JSON object: {0}")]
    NotJson(String),
    /// A required field is absent or not a string.
    #[error("`{0}` is required (a string)")]
    Missing(&'static str),
    /// A field is longer than its limit.
    #[error("`{0}` is too long")]
    TooLong(&'static str),
    /// A field is not valid base64 (or, for the public key, not a PEM block).
    #[error("`{0}` is not valid {1}")]
    Encoding(&'static str, &'static str),
}

/// `POST /pod/re-encrypt`.
#[derive(Debug)]
pub struct ReEncryptBody {
    /// The sealed document.
    pub encrypted_blob: Vec<u8>,
    /// The signed request (`request::SignedRequest` bytes).
    pub auth_token: Vec<u8>,
    /// The DER inside the user's PEM public key.
    pub user_public_key_der: Vec<u8>,
}

impl ReEncryptBody {
    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let v = object(body)?;
        Ok(Self {
            encrypted_blob: field_b64(&v, "encrypted_blob")?,
            auth_token: field_b64(&v, "auth_token")?,
            user_public_key_der: pem_der(&v, "user_public_key")?,
        })
    }
}

/// `POST /rooms` and `POST /rooms/{id}/entries`: one signed membership entry.
#[derive(Debug)]
pub struct EntryBody {
    /// The `membership::SignedEntry` bytes.
    pub entry: Vec<u8>,
}

impl EntryBody {
    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        Ok(Self {
            entry: field_b64(&object(body)?, "entry")?,
        })
    }
}

fn object(body: &[u8]) -> Result<Value, BodyError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    if !v.is_object() {
        return Err(BodyError::NotJson("expected an object".into()));
    }
    Ok(v)
}

fn string<'a>(v: &'a Value, name: &'static str, max: usize) -> Result<&'a str, BodyError> {
    let s = v
        .get(name)
        .and_then(Value::as_str)
        .ok_or(BodyError::Missing(name))?;
    if s.len() > max {
        return Err(BodyError::TooLong(name));
    }
    Ok(s)
}

fn field_b64(v: &Value, name: &'static str) -> Result<Vec<u8>, BodyError> {
    base64::engine::general_purpose::STANDARD
        .decode(string(v, name, MAX_FIELD_CHARS)?.trim())
        .map_err(|_| BodyError::Encoding(name, "base64"))
}

fn pem_der(v: &Value, name: &'static str) -> Result<Vec<u8>, BodyError> {
    let pem = string(v, name, MAX_PEM_CHARS)?;
    let mut lines = pem.lines().map(str::trim).filter(|l| !l.is_empty());
    let begins = lines.next().is_some_and(|l| l.starts_with("-----BEGIN "));
    let body: String = lines.take_while(|l| !l.starts_with("-----END ")).collect();
    if !begins || body.is_empty() {
        return Err(BodyError::Encoding(name, "PEM"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| BodyError::Encoding(name, "PEM"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PUBLIC KEY-----\nAQID\nBA==\n-----END PUBLIC KEY-----\n";

    #[test]
    fn a_well_formed_re_encrypt_body_parses() {
        let body = serde_json::json!({ "encrypted_blob": "AAE=", "auth_token": " AgM= ", "user_public_key": PEM });
        let b = ReEncryptBody::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(b.encrypted_blob, [0, 1]);
        assert_eq!(b.auth_token, [2, 3]);
        assert_eq!(b.user_public_key_der, [1, 2, 3, 4]);
    }

    #[test]
    fn each_bad_field_is_named() {
        let ok = serde_json::json!({ "encrypted_blob": "AAE=", "auth_token": "AgM=", "user_public_key": PEM });
        let with = |k: &str, v: Value| {
            let mut b = ok.clone();
            b[k] = v;
            ReEncryptBody::parse(b.to_string().as_bytes()).unwrap_err()
        };
        assert_eq!(
            with("encrypted_blob", Value::from("!!")),
            BodyError::Encoding("encrypted_blob", "base64")
        );
        assert_eq!(
            with("auth_token", Value::from(7)),
            BodyError::Missing("auth_token")
        );
        assert_eq!(
            with("user_public_key", Value::from("AQID")),
            BodyError::Encoding("user_public_key", "PEM")
        );
        assert_eq!(
            with(
                "user_public_key",
                Value::from("x".repeat(MAX_PEM_CHARS + 1))
            ),
            BodyError::TooLong("user_public_key")
        );
        assert!(matches!(
            ReEncryptBody::parse(b"[1]"),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(
            ReEncryptBody::parse(b"{\"a\""),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(
            EntryBody::parse(b"{}"),
            Err(BodyError::Missing("entry"))
        ));
        assert_eq!(
            EntryBody::parse(br#"{"entry":"AAE="}"#).unwrap().entry,
            [0, 1]
        );
    }
}
