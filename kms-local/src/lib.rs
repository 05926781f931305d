//! `kms-local`: an AWS KMS emulator for Secure Pod's local mode and tests.
//!
//! It speaks the KMS JSON 1.1 protocol (`POST /`, `X-Amz-Target: TrentService.<Op>`, base64 binary fields, errors
//! as HTTP 400 `{"__type", "message"}`) so the real `aws-sdk-kms` client talks to it with only an `endpoint_url`
//! override. What no other stand-in does, and the pod depends on: with `Recipient` it verifies the attestation
//! document with `attestation-verifier` against the roots it trusts, evaluates the key policy's
//! `kms:RecipientAttestation:ImageSha384` / `PCR<n>` conditions, and answers `CiphertextForRecipient` in the CMS
//! shape real KMS sends.
//!
//! Operations: CreateKey, DescribeKey, Encrypt, Decrypt, GenerateDataKey, GenerateDataKeyPair (ECC_NIST_P256,
//! RSA_2048), GenerateRandom. Not emulated: IAM (every caller is the same principal; SigV4 signatures are not
//! checked), grants, aliases, key rotation, multi-region keys. Ciphertext blobs are this emulator's own format
//! (AES-256-GCM under the key, with the encryption context as associated data); real KMS blobs are opaque too.

#![forbid(unsafe_code)]

pub mod policy;
pub mod server;

use attestation_verifier::{Policy as AttestationPolicy, UnixTime, Verifier};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use policy::{Context, KeyPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// The account the emulator pretends to be.
pub const ACCOUNT: &str = "111122223333";
/// The region in ARNs.
pub const REGION: &str = "us-east-1";
/// How old an attestation document KMS accepts (AWS: five minutes).
pub const ATTESTATION_MAX_AGE_MS: u64 = 5 * 60 * 1000;

const BLOB_MAGIC: &[u8; 4] = b"KLC1";

/// A KMS error, in the shape the AWS SDKs parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct KmsError {
    /// The exception name (`NotFoundException`, `AccessDeniedException`, ...).
    pub kind: &'static str,
    /// The message.
    pub message: String,
}

fn err(kind: &'static str, message: impl Into<String>) -> KmsError {
    KmsError {
        kind,
        message: message.into(),
    }
}

fn validation(message: impl Into<String>) -> KmsError {
    err("ValidationException", message)
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    id: String,
    created_ms: u64,
    description: String,
    /// The 256-bit key, hex. The emulator's state directory is as sensitive as a KMS: it is written 0600.
    material: String,
    policy: Option<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    keys: Vec<StoredKey>,
}

/// The emulator.
pub struct Kms {
    state_file: PathBuf,
    state: Mutex<State>,
    verifiers: Vec<Verifier>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms")
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value, field: &str) -> Result<Vec<u8>, KmsError> {
    let s = v
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| validation(format!("{field} is required")))?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| validation(format!("{field} is not valid base64")))
}

impl Kms {
    /// Opens (or creates) the emulator's state in `state_dir`. `roots` are the attestation roots it trusts (PEM);
    /// the AWS Nitro root is added unless `trust_aws_root` is false.
    pub fn open(
        state_dir: &Path,
        roots: &[String],
        trust_aws_root: bool,
    ) -> Result<Self, anyhow::Error> {
        std::fs::create_dir_all(state_dir)?;
        let state_file = state_dir.join("kms-keys.json");
        let state = if state_file.exists() {
            serde_json::from_str(&std::fs::read_to_string(&state_file)?)?
        } else {
            State::default()
        };
        let mut verifiers = Vec::new();
        for pem in roots {
            verifiers.push(Verifier::with_root_pem(pem)?);
        }
        if trust_aws_root {
            verifiers.push(Verifier::aws_nitro());
        }
        Ok(Self {
            state_file,
            state: Mutex::new(state),
            verifiers,
            clock: Box::new(now_ms),
            rng: SystemRandom::new(),
        })
    }

    /// Replaces the clock (for tests that verify documents at a fixed time).
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    fn save(&self, state: &State) -> Result<(), KmsError> {
        use std::io::Write as _;
        let internal =
            |e: std::io::Error| err("KMSInternalException", format!("saving state: {e}"));
        let text = serde_json::to_string_pretty(state)
            .map_err(|e| err("KMSInternalException", e.to_string()))?;
        let tmp = self.state_file.with_extension("tmp");
        // A fresh file, so the 0600 mode applies: a leftover temporary file (or a link put there) would keep its own
        // permissions and carry them onto the key store with the rename.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(internal(e)),
            _ => {}
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(internal)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(internal)?;
        std::fs::rename(&tmp, &self.state_file).map_err(internal)
    }

    fn random(&self, len: usize) -> Result<Vec<u8>, KmsError> {
        let mut out = vec![0u8; len];
        self.rng
            .fill(&mut out)
            .map_err(|_| err("KMSInternalException", "no randomness"))?;
        Ok(out)
    }

    fn arn(id: &str) -> String {
        format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{id}")
    }

    fn find(state: &State, key_id: &str) -> Result<StoredKey, KmsError> {
        let id = key_id.rsplit('/').next().unwrap_or(key_id);
        if key_id.starts_with("alias/") {
            return Err(err(
                "NotFoundException",
                format!("Alias {key_id} is not found (aliases are not emulated)."),
            ));
        }
        state
            .keys
            .iter()
            .find(|k| k.id == id)
            .cloned()
            .ok_or_else(|| {
                err(
                    "NotFoundException",
                    format!("Key '{}' does not exist", Self::arn(id)),
                )
            })
    }

    fn metadata(k: &StoredKey) -> Value {
        json!({
            "AWSAccountId": ACCOUNT,
            "KeyId": k.id,
            "Arn": Self::arn(&k.id),
            "CreationDate": k.created_ms as f64 / 1000.0,
            "Enabled": true,
            "Description": k.description,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": "Enabled",
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
            "MultiRegion": false,
        })
    }

    /// Handles one request: `target` is the `X-Amz-Target` header, `body` the JSON body.
    pub fn handle(&self, target: &str, body: &[u8]) -> Result<Value, KmsError> {
        let op = target.strip_prefix("TrentService.").ok_or_else(|| {
            err(
                "UnknownOperationException",
                format!("unknown target {target:?}"),
            )
        })?;
        let req: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| err("SerializationException", e.to_string()))?
        };
        if !req.is_object() {
            return Err(err(
                "SerializationException",
                "the body must be a JSON object",
            ));
        }
        match op {
            "CreateKey" => self.create_key(&req),
            "DescribeKey" => self.describe_key(&req),
            "Encrypt" => self.encrypt(&req),
            "Decrypt" => self.decrypt(&req),
            "GenerateDataKey" => self.generate_data_key(&req),
            "GenerateDataKeyPair" => self.generate_data_key_pair(&req),
            "GenerateRandom" => self.generate_random(&req),
            other => Err(err(
                "UnsupportedOperationException",
                format!("{other} is not emulated"),
            )),
        }
    }

    fn create_key(&self, req: &Value) -> Result<Value, KmsError> {
        let policy = req.get("Policy").and_then(Value::as_str).map(str::to_owned);
        if let Some(p) = &policy {
            KeyPolicy::parse(p)
                .map_err(|e| err("MalformedPolicyDocumentException", e.to_string()))?;
        }
        for (field, allowed) in [
            ("KeySpec", "SYMMETRIC_DEFAULT"),
            ("KeyUsage", "ENCRYPT_DECRYPT"),
        ] {
            if let Some(v) = req.get(field).and_then(Value::as_str)
                && v != allowed
            {
                return Err(validation(format!(
                    "{field} {v} is not emulated (only {allowed})"
                )));
            }
        }
        let r = self.random(16)?;
        let h = hex::encode(&r);
        let part = |a: usize, b: usize| h.get(a..b).unwrap_or_default();
        let id = format!(
            "{}-{}-{}-{}-{}",
            part(0, 8),
            part(8, 12),
            part(12, 16),
            part(16, 20),
            part(20, 32)
        );
        let key = StoredKey {
            id,
            created_ms: (self.clock)(),
            description: req
                .get("Description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            material: hex::encode(self.random(32)?),
            policy,
        };
        let meta = Self::metadata(&key);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.keys.push(key);
        self.save(&state)?;
        Ok(json!({ "KeyMetadata": meta }))
    }

    fn key_for(&self, req: &Value) -> Result<StoredKey, KmsError> {
        let key_id = req
            .get("KeyId")
            .and_then(Value::as_str)
            .ok_or_else(|| validation("KeyId is required"))?;
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::find(&state, key_id)
    }

    fn describe_key(&self, req: &Value) -> Result<Value, KmsError> {
        let key = self.key_for(req)?;
        self.authorize(&key, "kms:DescribeKey", &Context::new())?;
        Ok(json!({ "KeyMetadata": Self::metadata(&key) }))
    }

    fn authorize(&self, key: &StoredKey, action: &str, context: &Context) -> Result<(), KmsError> {
        let policy = match &key.policy {
            Some(text) => {
                KeyPolicy::parse(text).map_err(|e| err("KMSInternalException", e.to_string()))?
            }
            None => KeyPolicy::allow_all(),
        };
        if policy.allows(action, context) {
            Ok(())
        } else {
            Err(err(
                "AccessDeniedException",
                format!(
                    "User: arn:aws:iam::{ACCOUNT}:role/kms-local-caller is not authorized to perform: {action} on \
                     resource: {} because no resource-based policy allows the {action} action",
                    Self::arn(&key.id)
                ),
            ))
        }
    }

    fn encryption_context(req: &Value) -> Result<BTreeMap<String, String>, KmsError> {
        match req.get("EncryptionContext") {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|s| (k.clone(), s.to_owned()))
                        .ok_or_else(|| validation("EncryptionContext values must be strings"))
                })
                .collect(),
            Some(_) => Err(validation("EncryptionContext must be an object")),
        }
    }

    /// The policy context of a request: the encryption context and, with `Recipient`, the verified attestation's
    /// PCRs. Returns the recipient's public key too.
    fn request_context(&self, req: &Value) -> Result<(Context, Option<Vec<u8>>), KmsError> {
        let mut ctx = Context::new();
        for (k, v) in Self::encryption_context(req)? {
            ctx.insert(format!("kms:EncryptionContext:{k}"), v);
        }
        let Some(recipient) = req.get("Recipient").filter(|r| !r.is_null()) else {
            return Ok((ctx, None));
        };
        match recipient
            .get("KeyEncryptionAlgorithm")
            .and_then(Value::as_str)
        {
            Some("RSAES_OAEP_SHA_256") | None => {}
            Some(other) => {
                return Err(validation(format!(
                    "KeyEncryptionAlgorithm {other} is not supported"
                )));
            }
        }
        let doc = unb64(recipient, "AttestationDocument")?;
        let policy = AttestationPolicy::insecure_any_pcrs()
            .insecure_allow_debug()
            .max_age(std::time::Duration::from_millis(ATTESTATION_MAX_AGE_MS));
        let now = UnixTime::from_millis((self.clock)());
        let mut last_error = None;
        let verified = self
            .verifiers
            .iter()
            .find_map(|v| match v.verify(&doc, &policy, now) {
                Ok(a) => Some(a),
                Err(e) => {
                    last_error = Some(e);
                    None
                }
            });
        let verified = verified.ok_or_else(|| {
            validation(format!(
                "The attestation document is not valid: {}",
                last_error
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "no trusted root".into())
            ))
        })?;
        let public_key = verified
            .public_key()
            .ok_or_else(|| {
                validation("The attestation document has no public_key for the recipient")
            })?
            .to_vec();
        for (i, value) in verified.pcrs() {
            ctx.insert(
                format!("kms:RecipientAttestation:PCR{i}"),
                hex::encode(value),
            );
            if i == 0 {
                ctx.insert(
                    "kms:RecipientAttestation:ImageSha384".into(),
                    hex::encode(value),
                );
            }
        }
        Ok((ctx, Some(public_key)))
    }

    fn aead(key: &StoredKey) -> Result<LessSafeKey, KmsError> {
        let material = Zeroizing::new(
            hex::decode(&key.material).map_err(|_| err("KMSInternalException", "bad key"))?,
        );
        Ok(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &material)
                .map_err(|_| err("KMSInternalException", "bad key"))?,
        ))
    }

    fn aad(key_id: &str, context: &BTreeMap<String, String>) -> Vec<u8> {
        let ctx = serde_json::to_string(context).unwrap_or_default();
        [
            b"kms-local/v1\0".as_slice(),
            key_id.as_bytes(),
            b"\0",
            ctx.as_bytes(),
        ]
        .concat()
    }

    fn seal(
        &self,
        key: &StoredKey,
        context: &BTreeMap<String, String>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let nonce: [u8; 12] = self
            .random(12)?
            .try_into()
            .map_err(|_| err("KMSInternalException", "nonce"))?;
        let mut body = plaintext.to_vec();
        Self::aead(key)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(&key.id, context)),
                &mut body,
            )
            .map_err(|_| err("KMSInternalException", "encryption failed"))?;
        let id = key.id.as_bytes();
        let id_len = u8::try_from(id.len()).map_err(|_| err("KMSInternalException", "key id"))?;
        Ok([BLOB_MAGIC.as_slice(), &[id_len], id, &nonce, &body].concat())
    }

    /// The key id a ciphertext blob names, without decrypting it.
    fn blob_key_id(blob: &[u8]) -> Result<String, KmsError> {
        let invalid = || err("InvalidCiphertextException", "The ciphertext is not valid.");
        let rest = blob
            .strip_prefix(BLOB_MAGIC.as_slice())
            .ok_or_else(invalid)?;
        let (len, rest) = rest.split_first().ok_or_else(invalid)?;
        let id = rest.get(..usize::from(*len)).ok_or_else(invalid)?;
        String::from_utf8(id.to_vec()).map_err(|_| invalid())
    }

    fn unseal(
        &self,
        key: &StoredKey,
        context: &BTreeMap<String, String>,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let invalid = || err("InvalidCiphertextException", "The ciphertext is not valid.");
        let id_len = key.id.len();
        let nonce_at = 5usize.saturating_add(id_len);
        let nonce: [u8; 12] = blob
            .get(nonce_at..nonce_at.saturating_add(12))
            .ok_or_else(invalid)?
            .try_into()
            .map_err(|_| invalid())?;
        let mut body = Zeroizing::new(
            blob.get(nonce_at.saturating_add(12)..)
                .ok_or_else(invalid)?
                .to_vec(),
        );
        let len = Self::aead(key)?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(&key.id, context)),
                &mut body,
            )
            .map_err(|_| invalid())?
            .len();
        body.truncate(len);
        Ok(body)
    }

    /// Either the plaintext, or (with a Recipient) the CMS envelope for the attested enclave's key.
    fn deliver(
        recipient: Option<&[u8]>,
        plaintext: &[u8],
        field: &str,
        out: &mut serde_json::Map<String, Value>,
    ) -> Result<(), KmsError> {
        match recipient {
            Some(spki) => {
                let cms = pod_protocol::cms::encrypt_for_recipient(spki, plaintext)
                    .map_err(|_| validation("The attestation document's public_key is not an RSA key KMS can encrypt to"))?;
                out.insert("CiphertextForRecipient".into(), b64(&cms).into());
            }
            None => {
                out.insert(field.into(), b64(plaintext).into());
            }
        }
        Ok(())
    }

    fn encrypt(&self, req: &Value) -> Result<Value, KmsError> {
        let key = self.key_for(req)?;
        let (ctx, _) = self.request_context(req)?;
        self.authorize(&key, "kms:Encrypt", &ctx)?;
        let plaintext = Zeroizing::new(unb64(req, "Plaintext")?);
        if plaintext.is_empty() || plaintext.len() > 4096 {
            return Err(validation("Plaintext must be 1 to 4096 bytes"));
        }
        let blob = self.seal(&key, &Self::encryption_context(req)?, &plaintext)?;
        Ok(
            json!({ "CiphertextBlob": b64(&blob), "KeyId": Self::arn(&key.id), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT" }),
        )
    }

    fn decrypt(&self, req: &Value) -> Result<Value, KmsError> {
        let blob = unb64(req, "CiphertextBlob")?;
        let blob_key = Self::blob_key_id(&blob)?;
        let key = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            Self::find(&state, &blob_key)
                .map_err(|_| err("InvalidCiphertextException", "The ciphertext is not valid."))?
        };
        if let Some(asked) = req.get("KeyId").and_then(Value::as_str) {
            let asked_id = asked.rsplit('/').next().unwrap_or(asked);
            if asked_id != key.id {
                return Err(err(
                    "IncorrectKeyException",
                    "The key ID in the request does not identify a CMK that can perform this operation.",
                ));
            }
        }
        let (ctx, recipient) = self.request_context(req)?;
        self.authorize(&key, "kms:Decrypt", &ctx)?;
        let plaintext = self.unseal(&key, &Self::encryption_context(req)?, &blob)?;
        let mut out = serde_json::Map::new();
        out.insert("KeyId".into(), Self::arn(&key.id).into());
        out.insert("EncryptionAlgorithm".into(), "SYMMETRIC_DEFAULT".into());
        Self::deliver(recipient.as_deref(), &plaintext, "Plaintext", &mut out)?;
        Ok(Value::Object(out))
    }

    fn generate_data_key(&self, req: &Value) -> Result<Value, KmsError> {
        let key = self.key_for(req)?;
        let (ctx, recipient) = self.request_context(req)?;
        self.authorize(&key, "kms:GenerateDataKey", &ctx)?;
        let len = match (
            req.get("KeySpec").and_then(Value::as_str),
            req.get("NumberOfBytes").and_then(Value::as_u64),
        ) {
            (Some("AES_256"), None) => 32,
            (Some("AES_128"), None) => 16,
            (None, Some(n)) if (1..=1024).contains(&n) => usize::try_from(n).unwrap_or(32),
            _ => {
                return Err(validation(
                    "give KeySpec (AES_256 or AES_128) or NumberOfBytes (1..1024), not both",
                ));
            }
        };
        let data_key = Zeroizing::new(self.random(len)?);
        let blob = self.seal(&key, &Self::encryption_context(req)?, &data_key)?;
        let mut out = serde_json::Map::new();
        out.insert("KeyId".into(), Self::arn(&key.id).into());
        out.insert("CiphertextBlob".into(), b64(&blob).into());
        Self::deliver(recipient.as_deref(), &data_key, "Plaintext", &mut out)?;
        Ok(Value::Object(out))
    }

    fn generate_data_key_pair(&self, req: &Value) -> Result<Value, KmsError> {
        let key = self.key_for(req)?;
        let (ctx, recipient) = self.request_context(req)?;
        self.authorize(&key, "kms:GenerateDataKeyPair", &ctx)?;
        let spec = req
            .get("KeyPairSpec")
            .and_then(Value::as_str)
            .ok_or_else(|| validation("KeyPairSpec is required"))?;
        let (private_pkcs8, public_spki) = match spec {
            "ECC_NIST_P256" => {
                let pkcs8 =
                    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.rng)
                        .map_err(|_| err("KMSInternalException", "key generation failed"))?;
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                        .map_err(|_| err("KMSInternalException", "key generation failed"))?;
                let spki = pair
                    .public_key()
                    .as_der()
                    .map_err(|_| err("KMSInternalException", "key encoding failed"))?
                    .as_ref()
                    .to_vec();
                (Zeroizing::new(pkcs8.as_ref().to_vec()), spki)
            }
            "RSA_2048" => {
                let pair = aws_lc_rs::rsa::PrivateDecryptingKey::generate(
                    aws_lc_rs::rsa::KeySize::Rsa2048,
                )
                .map_err(|_| err("KMSInternalException", "key generation failed"))?;
                let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&pair)
                    .map_err(|_| err("KMSInternalException", "key encoding failed"))?;
                let spki = AsDer::<PublicKeyX509Der<'_>>::as_der(&pair.public_key())
                    .map_err(|_| err("KMSInternalException", "key encoding failed"))?;
                (
                    Zeroizing::new(pkcs8.as_ref().to_vec()),
                    spki.as_ref().to_vec(),
                )
            }
            other => {
                return Err(validation(format!(
                    "KeyPairSpec {other} is not emulated (ECC_NIST_P256, RSA_2048)"
                )));
            }
        };
        let blob = self.seal(&key, &Self::encryption_context(req)?, &private_pkcs8)?;
        let mut out = serde_json::Map::new();
        out.insert("KeyId".into(), Self::arn(&key.id).into());
        out.insert("KeyPairSpec".into(), spec.into());
        out.insert("PublicKey".into(), b64(&public_spki).into());
        out.insert("PrivateKeyCiphertextBlob".into(), b64(&blob).into());
        Self::deliver(
            recipient.as_deref(),
            &private_pkcs8,
            "PrivateKeyPlaintext",
            &mut out,
        )?;
        Ok(Value::Object(out))
    }

    fn generate_random(&self, req: &Value) -> Result<Value, KmsError> {
        let n = req
            .get("NumberOfBytes")
            .and_then(Value::as_u64)
            .filter(|n| (1..=1024).contains(n))
            .ok_or_else(|| validation("NumberOfBytes must be 1..1024"))?;
        let (_, recipient) = self.request_context(req)?;
        let bytes = self.random(usize::try_from(n).unwrap_or(32))?;
        let mut out = serde_json::Map::new();
        Self::deliver(recipient.as_deref(), &bytes, "Plaintext", &mut out)?;
        Ok(Value::Object(out))
    }
}
