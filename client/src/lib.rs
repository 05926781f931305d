//! The Secure Pod client: what `podctl` does, as a library the tests and other tools use.
//!
//! Every operation that sends anything to the pod first verifies the pod's attestation with a fresh nonce (against
//! a pinned root and the published PCRs) and takes the pod key and the receipt key from the verified document; a
//! pod key that differs from the one pinned earlier is refused.

#![forbid(unsafe_code)]

pub mod https;
pub mod keyfile;
pub mod policy;
pub mod rotate;

use attestation_verifier::{ExpectedPcrs, Policy, UnixTime, Verifier};
use base64::Engine as _;
use pod_protocol::audit;
use pod_protocol::envelope::{self, Kind, UnwrapKey};
use pod_protocol::hpke;
use pod_protocol::keys::{
    EncryptionKey, HASH_LEN, UserKeyBundle, UserSecrets, VerifyingKey, fingerprint,
};
use pod_protocol::membership::{Action, Room, SignedEntry, genesis_entry};
use pod_protocol::request::{Operation, Request, SignedRequest};
use serde_json::{Value, json};

/// Client errors, each with what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The pod could not be reached.
    #[error("cannot reach the pod at {url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// The pod's attestation does not verify: do not trust it.
    #[error("the pod's attestation does not verify, refusing to trust it: {0}")]
    Attestation(attestation_verifier::Error),
    /// The pod key changed since it was pinned.
    #[error(
        "the pod key changed since it was pinned ({pinned} → {now}); if the operator rotated it, verify the announcement and pin again with `podctl attest --repin`"
    )]
    PinMismatch {
        /// The pinned fingerprint.
        pinned: String,
        /// The fingerprint now.
        now: String,
    },
    /// The pod answered with an error.
    #[error("the pod refused ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
    /// A local file or format problem.
    #[error("{0}")]
    Local(String),
    /// A protocol check failed (a receipt that does not match, a malformed answer).
    #[error("the pod's answer does not check out: {0}")]
    Integrity(String),
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(v: &Value, field: &str) -> Result<Vec<u8>, ClientError> {
    v.get(field)
        .and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| ClientError::Integrity(format!("`{field}` missing or not base64")))
}

/// What a verified attestation gave us.
#[derive(Debug, Clone)]
pub struct VerifiedPod {
    /// The pod key.
    pub pod_key: hpke::PublicKey,
    /// Its fingerprint.
    pub fingerprint: [u8; HASH_LEN],
    /// The receipt key.
    pub receipt_key: VerifyingKey,
    /// The configuration hash the pod attests.
    pub config_hash: Vec<u8>,
}

/// A connection to a pod.
pub struct PodClient {
    http: https::Client,
    url: String,
    verifier: Verifier,
    pcrs: ExpectedPcrs,
    pinned: Option<[u8; HASH_LEN]>,
}

/// A fresh re-encrypt request by `user` for the document with `header`, for the pod key `pod_fingerprint`.
fn signed_request(
    user: &UserSecrets,
    header: &envelope::Header,
    pod_fingerprint: &[u8; HASH_LEN],
) -> Result<SignedRequest, ClientError> {
    let mut nonce = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ClientError::Local("no randomness".into()))?;
    SignedRequest::sign(
        Request {
            op: Operation::ReEncrypt,
            room: *header.room(),
            doc: header.doc().to_vec(),
            header_hash: header.hash(),
            user: *user.bundle.id(),
            nonce,
            issued_at_ms: now_ms(),
            pod_key: *pod_fingerprint,
        },
        &user.signing,
    )
    .map_err(|e| ClientError::Local(e.to_string()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl PodClient {
    /// A client for the pod at `url`. `cacert_pem` is the proxy's TLS certificate (for a self-signed local pod;
    /// `None` uses the web PKI), `root_pem` the attestation root (`None`: the AWS Nitro root), `pcrs_json` the
    /// published PCR file.
    pub fn new(
        url: &str,
        cacert_pem: Option<&str>,
        root_pem: Option<&str>,
        pcrs_json: &str,
    ) -> Result<Self, ClientError> {
        let verifier = match root_pem {
            Some(p) => Verifier::with_root_pem(p)
                .map_err(|e| ClientError::Local(format!("--root: {e}")))?,
            None => Verifier::aws_nitro(),
        };
        let pcrs = ExpectedPcrs::from_json(pcrs_json)
            .map_err(|e| ClientError::Local(format!("--pcrs: {e}")))?;
        Ok(Self {
            http: https::Client::new(url, cacert_pem)
                .map_err(|e| ClientError::Local(format!("--cacert: {e}")))?,
            url: url.to_owned(),
            verifier,
            pcrs,
            pinned: None,
        })
    }

    /// Refuse any pod key but this one from now on.
    pub fn pin(&mut self, fingerprint: [u8; HASH_LEN]) {
        self.pinned = Some(fingerprint);
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let (status, v) =
            self.http
                .call(method, path, body)
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: self.url.clone(),
                    detail: e.to_string(),
                })?;
        if status >= 400 {
            return Err(refused(status, &v));
        }
        Ok(v)
    }

    /// Verifies the pod with a fresh nonce; returns its keys.
    pub async fn attest(&self) -> Result<VerifiedPod, ClientError> {
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| ClientError::Local("no randomness".into()))?;
        let v = self
            .call(
                "GET",
                &format!("/pod/attestation?nonce={}", hex::encode(nonce)),
                None,
            )
            .await?;
        let doc = unb64(&v, "document")?;
        let policy = Policy::new(self.pcrs.clone())
            .map_err(ClientError::Attestation)?
            .nonce(nonce.to_vec())
            .max_age(std::time::Duration::from_secs(300));
        let verified = self
            .verifier
            .verify(&doc, &policy, UnixTime::from_millis(now_ms()))
            .map_err(ClientError::Attestation)?;
        let spki = verified
            .public_key()
            .ok_or_else(|| ClientError::Integrity("the attestation binds no pod key".into()))?;
        let pod_key = hpke::PublicKey::from_spki_der(spki)
            .map_err(|e| ClientError::Integrity(e.to_string()))?;
        let fpr = fingerprint(spki);
        if let Some(pinned) = self.pinned
            && pinned != fpr
        {
            return Err(ClientError::PinMismatch {
                pinned: hex::encode(pinned),
                now: hex::encode(fpr),
            });
        }
        let mut d = pod_cbor::Decoder::new(verified.user_data().unwrap_or_default());
        let (receipt, config) = (|| -> Result<(Vec<u8>, Vec<u8>), pod_cbor::Error> {
            d.array()?;
            Ok((d.bytes()?.to_vec(), d.bytes()?.to_vec()))
        })()
        .map_err(|_| {
            ClientError::Integrity(
                "the attestation's user_data is not [receipt key, config hash]".into(),
            )
        })?;
        Ok(VerifiedPod {
            pod_key,
            fingerprint: fpr,
            receipt_key: VerifyingKey::from_spki_der(&receipt)
                .map_err(|e| ClientError::Integrity(e.to_string()))?,
            config_hash: config,
        })
    }

    /// Creates a room owned by `owner`; returns its id.
    pub async fn create_room(&self, owner: &UserSecrets) -> Result<[u8; HASH_LEN], ClientError> {
        let genesis = SignedEntry::sign(genesis_entry(&owner.bundle, now_ms()), &owner.signing)
            .map_err(|e| ClientError::Local(e.to_string()))?;
        let v = self
            .call(
                "POST",
                "/rooms",
                Some(&json!({"entry": b64(genesis.as_bytes())})),
            )
            .await?;
        let id = hex::decode(v.get("room_id").and_then(Value::as_str).unwrap_or_default())
            .ok()
            .and_then(|b| <[u8; HASH_LEN]>::try_from(b).ok())
            .ok_or_else(|| ClientError::Integrity("no room id".into()))?;
        if id != genesis.hash() {
            return Err(ClientError::Integrity(
                "the room id is not the hash of our genesis entry".into(),
            ));
        }
        Ok(id)
    }

    /// The room as its log says now (every entry verified).
    pub async fn room(&self, room: &[u8; HASH_LEN]) -> Result<Room, ClientError> {
        let v = self
            .call("GET", &format!("/rooms/{}/log", hex::encode(room)), None)
            .await?;
        let entries = v
            .get("entries")
            .and_then(Value::as_array)
            .ok_or_else(|| ClientError::Integrity("no entries".into()))?
            .iter()
            .map(|e| {
                let bytes = e
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .ok_or_else(|| ClientError::Integrity("entry not base64".into()))?;
                SignedEntry::parse(&bytes).map_err(|e| ClientError::Integrity(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let replayed = Room::replay(&entries)
            .map_err(|e| ClientError::Integrity(format!("the room's log does not verify: {e}")))?;
        if replayed.id() != room {
            return Err(ClientError::Integrity("the log is for another room".into()));
        }
        Ok(replayed)
    }

    /// The owner (or an admin) grants, revokes, adds or removes an admin.
    pub async fn change(
        &self,
        room_id: &[u8; HASH_LEN],
        by: &UserSecrets,
        action: Action,
        subject: Vec<u8>,
    ) -> Result<u64, ClientError> {
        let room = self.room(room_id).await?;
        let entry = SignedEntry::sign(
            room.next_entry(action, subject, now_ms(), *by.bundle.id()),
            &by.signing,
        )
        .map_err(|e| ClientError::Local(e.to_string()))?;
        let v = self
            .call(
                "POST",
                &format!("/rooms/{}/entries", hex::encode(room_id)),
                Some(&json!({"entry": b64(entry.as_bytes())})),
            )
            .await?;
        Ok(v.get("seq").and_then(Value::as_u64).unwrap_or_default())
    }

    /// Seals `plaintext` to the verified pod key for `room`/`doc`.
    pub async fn seal(
        &self,
        room: &[u8; HASH_LEN],
        doc: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let pod = self.attest().await?;
        envelope::seal(
            Kind::SealedToPod,
            room,
            doc,
            &EncryptionKey::HpkeP256(pod.pod_key),
            plaintext,
        )
        .map_err(|e| ClientError::Local(e.to_string()))
    }

    /// Opens a sealed document through the pod as `user`: signed request, re-encrypt, receipt checked, decrypted
    /// here.
    pub async fn open(&self, user: &UserSecrets, sealed: &[u8]) -> Result<Vec<u8>, ClientError> {
        let pod = self.attest().await?;
        let (header, _) = envelope::read_header(sealed)
            .map_err(|e| ClientError::Local(format!("not a sealed document: {e}")))?
            .ok_or_else(|| ClientError::Local("the sealed document is truncated".into()))?;
        let request = signed_request(user, &header, &pod.fingerprint)?;
        let spki = user.bundle.encryption_key().to_spki_der();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            b64(&spki)
        );
        let v = self
            .call(
                "POST",
                "/pod/re-encrypt",
                Some(&json!({"encrypted_blob": b64(sealed), "user_public_key": pem, "auth_token": b64(request.as_bytes())})),
            )
            .await?;
        let document = unb64(&v, "re_encrypted_content")?;
        let receipt = audit::Receipt::parse_verified(&unb64(&v, "receipt")?, &pod.receipt_key)
            .map_err(|_| {
                ClientError::Integrity("the receipt is not signed by the attested pod".into())
            })?;
        let (user_header, _) = envelope::read_header(&document)
            .ok()
            .flatten()
            .ok_or_else(|| ClientError::Integrity("malformed re-encrypted document".into()))?;
        if receipt.request_hash != request.hash()
            || receipt.response_header_hash != user_header.hash()
        {
            return Err(ClientError::Integrity(
                "the receipt does not name this request and this response".into(),
            ));
        }
        let (_, plain) =
            envelope::open(&document, UnwrapKey::Hpke(&user.decryption)).map_err(|e| {
                ClientError::Integrity(format!("the re-encrypted copy does not open: {e}"))
            })?;
        Ok(plain.to_vec())
    }

    /// Opens a sealed file through the pod's streaming endpoint, with bounded memory whatever the size: the file is
    /// sent in pieces, the user's copy is decrypted chunk by chunk into a temporary file that becomes `output` only
    /// when the last chunk has authenticated and the receipt checks out. `progress(done, total)` is called as
    /// sealed bytes are sent.
    pub async fn open_stream(
        &self,
        user: &UserSecrets,
        input: &std::path::Path,
        output: &std::path::Path,
        mut progress: impl FnMut(u64, u64) + Send + 'static,
    ) -> Result<u64, ClientError> {
        use std::io::{Read as _, Write as _};
        let local = |e: std::io::Error| ClientError::Local(format!("{}: {e}", input.display()));
        let pod = self.attest().await?;
        let mut file = std::fs::File::open(input).map_err(local)?;
        let total = file.metadata().map_err(local)?.len();
        let mut head =
            vec![0u8; (envelope::PREFIX_LEN + envelope::MAX_HEADER_LEN).min(total as usize)];
        file.read_exact(&mut head).map_err(local)?;
        let (header, _) = envelope::read_header(&head)
            .map_err(|e| ClientError::Local(format!("not a sealed document: {e}")))?
            .ok_or_else(|| ClientError::Local("the sealed document is truncated".into()))?;
        let request = signed_request(user, &header, &pod.fingerprint)?;

        // The sender: the bytes already read, then the rest of the file in 64 KiB pieces.
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let input_path = input.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut sent = head.len() as u64;
            if tx.blocking_send(head).is_err() {
                return;
            }
            progress(sent, total);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        sent += n as u64;
                        if tx
                            .blocking_send(buf.get(..n).unwrap_or_default().to_vec())
                            .is_err()
                        {
                            return;
                        }
                        progress(sent, total);
                    }
                    Err(e) => {
                        tracing_free_log(&format!("{}: {e}", input_path.display()));
                        return;
                    }
                }
            }
        });

        let tmp = output.with_extension("partial");
        let out_err = |e: std::io::Error| ClientError::Local(format!("{}: {e}", tmp.display()));
        // Plaintext: readable by its owner only, while it streams and after the rename.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut out = options.open(&tmp).map_err(out_err)?;
        let mut buf: Vec<u8> = Vec::new();
        let mut opener: Option<pod_protocol::stream::Opener> = None;
        let mut user_header_hash = None;
        let mut written = 0u64;
        let decryption = &user.decryption;
        let result = https::stream(
            &self.http,
            "/pod/re-encrypt/stream",
            &[
                ("x-pod-auth-token", b64(request.as_bytes())),
                (
                    "x-pod-user-key",
                    b64(&user.bundle.encryption_key().to_spki_der()),
                ),
            ],
            rx,
            |data| {
                buf.extend_from_slice(data);
                if opener.is_none() {
                    let Some((h, start)) =
                        envelope::read_header(&buf).map_err(|e| e.to_string())?
                    else {
                        return Ok(());
                    };
                    opener = Some(
                        envelope::unwrap(&h, UnwrapKey::Hpke(decryption))
                            .map_err(|e| e.to_string())?,
                    );
                    user_header_hash = Some(h.hash());
                    buf.drain(..start);
                }
                // Keep the last chunk back: only the end of the stream tells which one it is.
                while buf.len() > pod_protocol::stream::SEALED_CHUNK_SIZE {
                    let mut chunk: Vec<u8> = buf
                        .drain(..pod_protocol::stream::SEALED_CHUNK_SIZE)
                        .collect();
                    if let Some(o) = opener.as_mut() {
                        o.open_in_place(&mut chunk, false)
                            .map_err(|e| e.to_string())?;
                    }
                    out.write_all(&chunk).map_err(|e| e.to_string())?;
                    written += chunk.len() as u64;
                }
                Ok(())
            },
        )
        .await;
        let finish = (|| -> Result<(), ClientError> {
            let headers = self.streamed(result)?;
            let mut opener = opener
                .take()
                .ok_or_else(|| ClientError::Integrity("no document came back".into()))?;
            let mut last = std::mem::take(&mut buf);
            opener.open_in_place(&mut last, true).map_err(|_| {
                ClientError::Integrity("the last chunk does not authenticate".into())
            })?;
            opener
                .finish()
                .map_err(|e| ClientError::Integrity(e.to_string()))?;
            out.write_all(&last).map_err(out_err)?;
            written += last.len() as u64;
            let receipt_b64 = headers
                .get("x-pod-receipt")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| ClientError::Integrity("no receipt".into()))?;
            let receipt_bytes = base64::engine::general_purpose::STANDARD
                .decode(receipt_b64)
                .map_err(|_| ClientError::Integrity("receipt not base64".into()))?;
            let receipt = audit::Receipt::parse_verified(&receipt_bytes, &pod.receipt_key)
                .map_err(|_| {
                    ClientError::Integrity("the receipt is not signed by the attested pod".into())
                })?;
            if receipt.request_hash != request.hash()
                || Some(receipt.response_header_hash) != user_header_hash
            {
                return Err(ClientError::Integrity(
                    "the receipt does not name this request and this response".into(),
                ));
            }
            out.sync_all().map_err(out_err)?;
            std::fs::rename(&tmp, output).map_err(out_err)
        })();
        if finish.is_err() {
            // No partial plaintext is left behind.
            let _ = std::fs::remove_file(&tmp);
        }
        finish.map(|()| written)
    }

    /// Fetches and verifies the whole audit log against the pod's current checkpoint, any checkpoints seen
    /// before (`earlier`, signed bytes) and receipts clients kept (`receipts`, signed bytes: each must name an entry
    /// the log has, with that entry's hash); returns the entries, the summary and the current checkpoint's bytes.
    pub async fn audit_with(
        &self,
        earlier: &[Vec<u8>],
        receipts: &[Vec<u8>],
    ) -> Result<(Vec<audit::Entry>, audit::LogSummary, Option<Vec<u8>>), ClientError> {
        let pod = self.attest().await?;
        let receipts = receipts
            .iter()
            .map(|r| {
                audit::Receipt::parse_verified(r, &pod.receipt_key).map_err(|_| {
                    ClientError::Integrity(
                        "a kept receipt is not signed by this pod (another pod key?)".into(),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut checkpoints = Vec::new();
        for c in earlier {
            checkpoints.push(
                audit::Checkpoint::parse_verified(c, &pod.receipt_key).map_err(|_| {
                    ClientError::Integrity("a saved checkpoint is not signed by this pod".into())
                })?,
            );
        }
        let current = match self.call("GET", "/audit/checkpoint", None).await {
            Ok(v) => Some(unb64(&v, "checkpoint")?),
            Err(ClientError::Refused { .. }) => None,
            Err(e) => return Err(e),
        };
        if let Some(c) = &current {
            checkpoints.push(
                audit::Checkpoint::parse_verified(c, &pod.receipt_key).map_err(|_| {
                    ClientError::Integrity(
                        "the checkpoint is not signed by the attested pod".into(),
                    )
                })?,
            );
        }
        let mut raw: Vec<Vec<u8>> = Vec::new();
        loop {
            let v = self
                .call("GET", &format!("/audit?from={}", raw.len()), None)
                .await?;
            let batch = v
                .get("entries")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            for e in batch {
                raw.push(
                    e.as_str()
                        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                        .ok_or_else(|| ClientError::Integrity("audit entry not base64".into()))?,
                );
            }
        }
        let summary = audit::verify_log(&raw, &pod.receipt_key, &checkpoints, &receipts)
            .map_err(|e| ClientError::Integrity(e.to_string()))?;
        let entries = raw
            .iter()
            .filter_map(|b| audit::SignedEntry::parse_verified(b, &pod.receipt_key).ok())
            .map(|e| e.entry().clone())
            .collect();
        Ok((entries, summary, current))
    }

    /// Fetches and verifies the whole audit log against the pod's current checkpoint; returns the entries.
    pub async fn audit(&self) -> Result<(Vec<audit::Entry>, audit::LogSummary), ClientError> {
        self.audit_with(&[], &[])
            .await
            .map(|(entries, summary, _)| (entries, summary))
    }
}

impl PodClient {
    /// The response headers of a finished streaming exchange, or the pod's refusal, or why it did not arrive.
    fn streamed(
        &self,
        result: Result<(u16, hyper::HeaderMap, Vec<u8>), Box<dyn std::error::Error>>,
    ) -> Result<hyper::HeaderMap, ClientError> {
        let (status, headers, error_body) = result.map_err(|e| ClientError::Unreachable {
            url: self.url.clone(),
            detail: e.to_string(),
        })?;
        if status != 200 {
            let v: Value = serde_json::from_slice(&error_body).unwrap_or_default();
            return Err(refused(status, &v));
        }
        Ok(headers)
    }
}

fn tracing_free_log(message: &str) {
    eprintln!("podctl: {message}");
}

/// A user's public bundle from a `.pub` file.
pub fn read_public(text: &str) -> Result<UserKeyBundle, ClientError> {
    keyfile::parse_public(text)
}

/// The pod's JSON error body (`{"error": code, "message": ...}`) as a [`ClientError::Refused`]; a body without those
/// fields still gives the status.
fn refused(status: u16, v: &Value) -> ClientError {
    let field = |name: &str, default: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    ClientError::Refused {
        status,
        code: field("error", "error"),
        message: field("message", ""),
    }
}
