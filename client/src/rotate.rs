//! The rotation batch job: moves every sealed document in a directory to the pod's successor key, through the old
//! pod (which holds both keys), then asks it for the signed rotation certificate.
//!
//! # Resumable and idempotent
//!
//! Each document goes through three steps, in this order, each durable before the next:
//!
//! 1. the pod's answer (the moved document) is written to `NAME.rotating` and synced;
//! 2. a line naming the document, its old and new header hashes and the pod's signed item is appended to the
//!    journal and synced;
//! 3. `NAME.rotating` is renamed over `NAME`.
//!
//! Killed anywhere, a second run finds each document either still sealed to the old key (it finishes a step-3 rename
//! whose journal line exists, or rotates the document again: the newest journal line for a path wins) or sealed to
//! the new key with its journal line present (skipped). Nothing is rotated twice into an unknown state, and the
//! certificate is built from the journal, so it names exactly the documents on disk.

use crate::{ClientError, PodClient, VerifiedPod, b64, https, unb64};
use base64::Engine as _;
use pod_protocol::envelope;
use pod_protocol::keys::HASH_LEN;
use pod_protocol::rotation::{self, Mode, SignedItem};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

/// Largest number of documents one certificate may name (bounds what `verify` reads before checking).
pub const MAX_DOCUMENTS: u64 = 10_000_000;

/// One journal line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct JournalLine {
    /// Path relative to the directory.
    path: String,
    /// Hex header hash before.
    old: String,
    /// Hex header hash after.
    new: String,
    /// The signed item, base64.
    item: String,
}

/// The journal's first line: what rotation it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct JournalHead {
    old_pod: String,
    new_pod: String,
    mode: String,
    receipt_key: String,
    /// The directory rotated, canonical: journal paths are relative to it, so a journal belongs to one directory.
    /// Absent in journals written before podctl recorded it; such a journal is taken to belong to the directory
    /// it is used with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<String>,
}

fn canonical_dir(dir: &Path) -> Result<String, ClientError> {
    let c = std::fs::canonicalize(dir).map_err(|e| local(dir, e))?;
    c.to_str()
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Local(format!("{}: the path is not UTF-8", c.display())))
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Documents moved in this run.
    pub rotated: u64,
    /// Documents found already moved (a previous run).
    pub already: u64,
    /// Interrupted renames completed.
    pub resumed: u64,
    /// Sealed documents not moved because they are sealed to another pod key (a failure of the job).
    pub skipped: Vec<(PathBuf, String)>,
    /// Files that are not sealed documents, left alone.
    pub ignored: Vec<PathBuf>,
    /// Bytes of documents processed.
    pub bytes: u64,
}

/// Progress callback: `(documents done, documents in all)`.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn local(path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::Local(format!("{}: {e}", path.display()))
}

/// Names the document an error happened on: among thousands, the operator must know which one to look at. The
/// original is untouched (the answer went to its `.rotating` file), so a run after fixing or moving it continues.
fn in_file(path: &Path, e: ClientError) -> ClientError {
    match e {
        ClientError::Refused {
            status,
            code,
            message,
        } => ClientError::Refused {
            status,
            code,
            message: format!("{}: {message}", path.display()),
        },
        ClientError::Integrity(m) => ClientError::Integrity(format!("{}: {m}", path.display())),
        ClientError::Unreachable { url, detail } => ClientError::Unreachable {
            url,
            detail: format!("{detail} (while moving {})", path.display()),
        },
        ClientError::Local(m) if !m.contains(&*path.to_string_lossy()) => {
            ClientError::Local(format!("{}: {m}", path.display()))
        }
        other => other,
    }
}

/// Every regular file under `dir` (recursively), sorted, except interrupted `.rotating` outputs.
fn list_documents(dir: &Path) -> Result<Vec<PathBuf>, ClientError> {
    Ok(list_files(dir)?
        .into_iter()
        .filter(|p| !is_rotating(p))
        .collect())
}

/// An interrupted move's output (`NAME.rotating`).
fn is_rotating(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "rotating")
}

/// Every regular file under `dir` (recursively), sorted, `.rotating` outputs included. Anything that is neither a
/// directory nor a regular file (a symbolic link, a device) is an error: the job must not pass over a document
/// silently.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, ClientError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| local(&d, e))? {
            let entry = entry.map_err(|e| local(&d, e))?;
            let path = entry.path();
            let t = entry.file_type().map_err(|e| local(&path, e))?;
            if t.is_dir() {
                stack.push(path);
            } else if t.is_file() {
                if path.to_str().is_none() {
                    return Err(ClientError::Local(format!(
                        "{} has a name that is not UTF-8; rename it (the journal and the certificate name files \
                         as text)",
                        path.display()
                    )));
                }
                out.push(path);
            } else {
                return Err(ClientError::Local(format!(
                    "{} is not a regular file (a symbolic link?): rotate the directory it points into instead, \
                     or move it out",
                    path.display()
                )));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the prefix and header of the document at `path`; `None` if it is not a sealed document.
fn read_head(path: &Path) -> Result<Option<(envelope::Header, usize)>, ClientError> {
    let mut f = std::fs::File::open(path).map_err(|e| local(path, e))?;
    let mut buf = vec![0u8; envelope::PREFIX_LEN + envelope::MAX_HEADER_LEN];
    let mut n = 0;
    while n < buf.len() {
        match f.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(local(path, e)),
        }
    }
    buf.truncate(n);
    Ok(envelope::read_header(&buf).ok().flatten())
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the rename durable on filesystems that need it.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// The newest line per document path.
    lines: BTreeMap<String, JournalLine>,
}

impl Journal {
    fn open(path: &Path, head: &JournalHead) -> Result<Self, ClientError> {
        let mut lines = BTreeMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut it = text.lines();
                let first: JournalHead = it
                    .next()
                    .and_then(|l| serde_json::from_str(l).ok())
                    .ok_or_else(|| local(path, "not a rotation journal"))?;
                if let Some(theirs) = first.dir.as_ref().filter(|d| Some(*d) != head.dir.as_ref()) {
                    return Err(ClientError::Local(format!(
                        "{} is the journal of another directory ({theirs}); give each directory its own journal \
                         and certificate (--journal, --certificate)",
                        path.display(),
                    )));
                }
                let first = JournalHead {
                    dir: head.dir.clone(),
                    ..first
                };
                if &first != head {
                    return Err(ClientError::Local(format!(
                        "{} belongs to another rotation ({} → {}, {}); finish or move it first",
                        path.display(),
                        first.old_pod,
                        first.new_pod,
                        first.mode
                    )));
                }
                for l in it {
                    // A torn last line (killed mid-write) is ignored: its rename never happened.
                    if let Ok(line) = serde_json::from_str::<JournalLine>(l) {
                        lines.insert(line.path.clone(), line);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let text = format!(
                    "{}\n",
                    serde_json::to_string(head).map_err(|e| local(path, e))?
                );
                // Durable before any document moves: the journal is what makes moved documents certifiable.
                std::fs::File::create(path)
                    .and_then(|mut f| {
                        f.write_all(text.as_bytes())?;
                        f.sync_all()
                    })
                    .map_err(|e| local(path, e))?;
                sync_dir(path.parent().unwrap_or(Path::new(".")));
            }
            Err(e) => return Err(local(path, e)),
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| local(path, e))?;
        // One job per journal: two at once would write the same `.rotating` files.
        file.try_lock().map_err(|_| {
            ClientError::Local(format!(
                "{} is in use by another `podctl rotate run`",
                path.display()
            ))
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            lines,
        })
    }

    fn append(&mut self, line: JournalLine) -> Result<(), ClientError> {
        let mut text = serde_json::to_string(&line).map_err(|e| local(&self.path, e))?;
        text.push('\n');
        // A torn line from an earlier crash must not swallow this one.
        self.file
            .write_all(b"\n")
            .and_then(|()| self.file.write_all(text.as_bytes()))
            .and_then(|()| self.file.sync_data())
            .map_err(|e| local(&self.path, e))?;
        self.lines.insert(line.path.clone(), line);
        Ok(())
    }
}

/// Two files holding the same sealed document (a copy, a backup) would both be moved, to two different new
/// headers, and the certificate (one item per document) could then never be signed. Found before anything moves.
fn refuse_duplicates(
    dir: &Path,
    files: &[PathBuf],
    old_pod: &[u8; HASH_LEN],
    journal: &Journal,
) -> Result<(), ClientError> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for line in journal.lines.values() {
        seen.insert(line.old.clone(), line.path.clone());
    }
    for path in files {
        let Some((h, _)) = read_head(path)? else {
            continue;
        };
        if h.recipient() != old_pod {
            continue;
        }
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        match seen.get(&hex::encode(h.hash())) {
            Some(other) if *other != rel => {
                return Err(ClientError::Local(format!(
                    "{rel} and {other} are the same sealed document; keep one in the directory (the other opens the \
                     same) and run again. Nothing was moved in this run."
                )));
            }
            _ => {
                seen.insert(hex::encode(h.hash()), rel);
            }
        }
    }
    Ok(())
}

impl PodClient {
    /// The successor key's fingerprint, if a rotation is prepared (from `/pod/health`).
    pub async fn next_key(&self) -> Result<Option<[u8; HASH_LEN]>, ClientError> {
        let v = self.call("GET", "/pod/health", None).await?;
        Ok(v.get("next_key_fingerprint")
            .and_then(Value::as_str)
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; HASH_LEN]>::try_from(b).ok()))
    }

    /// Asks the pod to load a successor key: generated under `kms_key_id` (`None`: local mode makes a KMS key),
    /// or `sealed_key` (the JSON the other pod stored) loaded through KMS. Returns the successor's fingerprint.
    pub async fn prepare_rotation(
        &self,
        kms_key_id: Option<&str>,
        sealed_key: Option<Value>,
    ) -> Result<String, ClientError> {
        self.attest().await?;
        let body = match (sealed_key, kms_key_id) {
            (Some(k), _) => json!({ "sealed_key": k }),
            (None, Some(id)) => json!({ "kms_key_id": id }),
            (None, None) => json!({}),
        };
        let v = self
            .call("POST", "/admin/rotation/prepare", Some(&body))
            .await?;
        v.get("next_key_fingerprint")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Integrity("no next_key_fingerprint".into()))
    }

    /// Moves one document: returns the signed item (checked) and writes the moved document to `out`.
    async fn rotate_one(
        &self,
        pod: &VerifiedPod,
        next: &[u8; HASH_LEN],
        mode: Mode,
        input: &Path,
        head: &(envelope::Header, usize),
        out: &Path,
    ) -> Result<SignedItem, ClientError> {
        let (old_header, body_start) = head;
        let mut file = std::fs::File::open(input).map_err(|e| local(input, e))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let send_body = mode == Mode::ReEncrypt;
        let header_len = *body_start;
        let input_path = input.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut head = vec![0u8; header_len];
            file.read_exact(&mut head)
                .map_err(|e| format!("{}: {e}", input_path.display()))?;
            if tx.blocking_send(head).is_err() {
                return Ok(());
            }
            if !send_body {
                // A rewrap changes only the header; the body stays here.
                return Ok(());
            }
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        if tx
                            .blocking_send(buf.get(..n).unwrap_or_default().to_vec())
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(format!("{}: {e}", input_path.display())),
                }
            }
        });
        let mut tmp = std::fs::File::create(out).map_err(|e| local(out, e))?;
        let mut write_err: Option<String> = None;
        let result = https::stream(
            &self.http,
            "/pod/rotate/stream",
            &[("x-pod-rotation-mode", mode.name().to_owned())],
            rx,
            |data| {
                tmp.write_all(data).map_err(|e| {
                    let m = format!("{}: {e}", out.display());
                    write_err = Some(m.clone());
                    m
                })
            },
        )
        .await;
        reader
            .await
            .map_err(|e| ClientError::Local(e.to_string()))?
            .map_err(ClientError::Local)?;
        if let Some(e) = write_err {
            return Err(ClientError::Local(e));
        }
        let headers = self.streamed(result)?;
        let item_b64 = headers
            .get("x-pod-rotation-item")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClientError::Integrity("no rotation item".into()))?;
        let item_bytes = base64::engine::general_purpose::STANDARD
            .decode(item_b64)
            .map_err(|_| ClientError::Integrity("rotation item not base64".into()))?;
        let item = SignedItem::parse_verified(&item_bytes, &pod.receipt_key).map_err(|_| {
            ClientError::Integrity("the rotation item is not signed by the attested pod".into())
        })?;
        // The signed item says what the pod did; checked first, so that an answer for another mode is named as such
        // rather than as a length or seal failure.
        if item.item().mode != mode {
            return Err(ClientError::Integrity(format!(
                "the pod answered a {} move to a {} request",
                item.item().mode.name(),
                mode.name()
            )));
        }
        let old_body = std::fs::metadata(input)
            .map_err(|e| local(input, e))?
            .len()
            .saturating_sub(*body_start as u64);
        if mode == Mode::ReEncrypt {
            take_body_seal(out, &tmp, &pod.receipt_key, old_body)?;
        }
        if mode == Mode::Rewrap {
            // The new header, then the unchanged body from the original.
            let mut f = std::fs::File::open(input).map_err(|e| local(input, e))?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(*body_start as u64))
                .map_err(|e| local(input, e))?;
            std::io::copy(&mut f, &mut tmp).map_err(|e| local(out, e))?;
        }
        tmp.sync_all().map_err(|e| local(out, e))?;
        drop(tmp);
        let (new_header, new_start) = read_head(out)?
            .ok_or_else(|| ClientError::Integrity("the moved document has no header".into()))?;
        // STREAM keeps lengths: a body of another length is a cut-off answer, never to be renamed over the original.
        let len = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| local(p, e))
        };
        let new_body = len(out)?.saturating_sub(new_start as u64);
        if old_body != new_body {
            return Err(ClientError::Integrity(format!(
                "the moved document's body is {new_body} bytes, the original's {old_body}: the answer was cut off"
            )));
        }
        let i = item.item();
        if i.mode != mode
            || i.new_pod != *next
            || i.old_header_hash != old_header.hash()
            || i.new_header_hash != new_header.hash()
            || new_header.recipient() != next
            || new_header.room() != old_header.room()
            || new_header.doc() != old_header.doc()
        {
            return Err(ClientError::Integrity(
                "the moved document or its item does not match the request".into(),
            ));
        }
        Ok(item)
    }

    /// Moves every sealed document under `dir` to the prepared successor key, resumably (see the module
    /// documentation), recording each in `journal`. Calls `progress` after each document.
    pub async fn rotate_dir(
        &self,
        dir: &Path,
        mode: Mode,
        journal: &Path,
        progress: Progress<'_>,
    ) -> Result<RunReport, ClientError> {
        let pod = self.attest().await?;
        let next = self.next_key().await?.ok_or_else(|| {
            ClientError::Local(
                "the pod has no successor key loaded: run `podctl rotate prepare` first".into(),
            )
        })?;
        let head = JournalHead {
            old_pod: hex::encode(pod.fingerprint),
            new_pod: hex::encode(next),
            mode: mode.name().to_owned(),
            receipt_key: b64(&pod.receipt_key.to_spki_der()),
            dir: Some(canonical_dir(dir)?),
        };
        let mut journal = Journal::open(journal, &head)?;
        let files = list_documents(dir)?;
        refuse_duplicates(dir, &files, &pod.fingerprint, &journal)?;
        let total = files.len() as u64;
        let mut report = RunReport::default();
        for (n, path) in files.iter().enumerate() {
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned();
            let tmp = path.with_extension(match path.extension() {
                Some(e) => format!("{}.rotating", e.to_string_lossy()),
                None => "rotating".into(),
            });
            let Some(h) = read_head(path)? else {
                report.ignored.push(path.clone());
                progress(n as u64 + 1, total);
                continue;
            };
            report.bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let recorded = journal.lines.get(&rel).cloned();
            if h.0.recipient() == &next {
                match recorded {
                    Some(l) if l.new == hex::encode(h.0.hash()) => report.already += 1,
                    _ => {
                        return Err(ClientError::Local(format!(
                            "{} is sealed to the new key but the journal {} has no line for it; was the journal \
                             replaced? Restore it, or rotate into a fresh directory",
                            path.display(),
                            journal.path.display()
                        )));
                    }
                }
                progress(n as u64 + 1, total);
                continue;
            }
            // A copy delivered to one user (kind 2) is not a stored document and no pod key opens it.
            let not_ours = if h.0.kind() != envelope::Kind::SealedToPod {
                Some(format!(
                    "a copy delivered to user key {}, not a stored document; move it out of the directory",
                    hex::encode(h.0.recipient())
                ))
            } else if h.0.recipient() != &pod.fingerprint {
                Some(format!(
                    "sealed to another pod key ({})",
                    hex::encode(h.0.recipient())
                ))
            } else {
                None
            };
            if let Some(why) = not_ours {
                report.skipped.push((path.clone(), why));
                progress(n as u64 + 1, total);
                continue;
            }
            // An interrupted run may have left the moved document and its journal line: finish the rename.
            if let (Some(l), Ok(Some(t))) = (&recorded, read_head(&tmp))
                && l.old == hex::encode(h.0.hash())
                && l.new == hex::encode(t.0.hash())
            {
                std::fs::rename(&tmp, path).map_err(|e| local(path, e))?;
                sync_dir(path.parent().unwrap_or(dir));
                report.resumed += 1;
                progress(n as u64 + 1, total);
                continue;
            }
            let item = match self.rotate_one(&pod, &next, mode, path, &h, &tmp).await {
                Ok(item) => item,
                Err(e) => {
                    // No journal line names it, so the output is nothing a later run could use: remove it, so that
                    // the directory holds only the untouched original.
                    let _ = std::fs::remove_file(&tmp);
                    return Err(in_file(path, e));
                }
            };
            journal.append(JournalLine {
                path: rel,
                old: hex::encode(item.item().old_header_hash),
                new: hex::encode(item.item().new_header_hash),
                item: b64(item.as_bytes()),
            })?;
            std::fs::rename(&tmp, path).map_err(|e| local(path, e))?;
            sync_dir(path.parent().unwrap_or(dir));
            report.rotated += 1;
            progress(n as u64 + 1, total);
        }
        Ok(report)
    }

    /// Builds the certificate from the journal: the newest item of every document now sealed to the new key,
    /// sorted by old header hash, signed by the pod, checked here against the attested receipt key. Returns the
    /// certificate file's bytes (`[certificate, [items]]`).
    pub async fn certify_rotation(
        &self,
        dir: &Path,
        journal: &Path,
    ) -> Result<(Vec<u8>, rotation::Certificate), ClientError> {
        let pod = self.attest().await?;
        let text = std::fs::read_to_string(journal).map_err(|e| local(journal, e))?;
        let mut it = text.lines();
        let head: JournalHead = it
            .next()
            .and_then(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| local(journal, "not a rotation journal"))?;
        if head.old_pod != hex::encode(pod.fingerprint) {
            return Err(ClientError::Local(format!(
                "the journal is for pod key {}, this pod is {}",
                head.old_pod,
                hex::encode(pod.fingerprint)
            )));
        }
        if let Some(theirs) = head.dir.as_ref()
            && *theirs != canonical_dir(dir)?
        {
            return Err(ClientError::Local(format!(
                "{} is the journal of {theirs}, not of {}; certify each directory with its own journal",
                journal.display(),
                dir.display()
            )));
        }
        let mode = Mode::from_name(&head.mode)
            .ok_or_else(|| local(journal, format!("unknown rotation mode {:?}", head.mode)))?;
        let mut newest: BTreeMap<String, JournalLine> = BTreeMap::new();
        for l in it {
            if let Ok(line) = serde_json::from_str::<JournalLine>(l) {
                newest.insert(line.path.clone(), line);
            }
        }
        let mut items: Vec<([u8; HASH_LEN], Vec<u8>)> = Vec::new();
        for (rel, line) in &newest {
            let path = dir.join(rel);
            // The signed item is what counts; the line's hashes are a readable copy of it and must agree.
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&line.item)
                .map_err(|_| local(journal, "an item is not base64"))?;
            let item = SignedItem::parse_verified(&bytes, &pod.receipt_key).map_err(|_| {
                local(
                    journal,
                    format!("the item for {rel} is not signed by this pod"),
                )
            })?;
            let (old, new) = (item.item().old_header_hash, item.item().new_header_hash);
            if hex::encode(old) != line.old || hex::encode(new) != line.new {
                return Err(local(
                    journal,
                    format!("the line for {rel} does not match its signed item (edited?)"),
                ));
            }
            // A document deleted after it moved is still certified: its item, signed by the pod, says what
            // happened to it. One that is there must be the moved document the journal names.
            if path.exists() {
                let on_disk = read_head(&path)?.map(|(h, _)| h.hash());
                if on_disk != Some(new) {
                    return Err(ClientError::Local(format!(
                        "{} is not the moved document the journal recorded (replaced since?); run `podctl rotate \
                         run` again to finish, or restore the moved copy",
                        path.display()
                    )));
                }
            }
            items.push((old, bytes));
        }
        items.sort();
        let list: Vec<Vec<u8>> = items.into_iter().map(|(_, b)| b).collect();
        let body = json!({
            "mode": mode.name(),
            "items": list.iter().map(|b| b64(b)).collect::<Vec<_>>(),
        });
        let v = self
            .call("POST", "/admin/rotation/certify", Some(&body))
            .await?;
        let cert = unb64(&v, "certificate")?;
        let file = rotation::encode_certificate_file(&cert, &list);
        let (c, _) = rotation::verify_certificate_file(&file, MAX_DOCUMENTS)
            .map_err(|e| ClientError::Integrity(format!("the certificate: {e}")))?;
        if c.old_receipt_spki != pod.receipt_key.to_spki_der() || c.old_pod != pod.fingerprint {
            return Err(ClientError::Integrity(
                "the certificate is not by the attested pod".into(),
            ));
        }
        Ok((file, c))
    }
}

/// Checks and removes the body seal that ends a re-encrypt-mode answer written to `path` (SPEC §9): the file must be
/// the new header, a body as long as the original's (`old_body` bytes; STREAM keeps lengths) and the 64-byte seal,
/// and the seal must be the attested pod's signature over the new header hash and the body's SHA-256. The body is
/// ciphertext under the new pod key, which nobody here holds: this is the only check that it is what the pod made.
fn take_body_seal(
    path: &Path,
    file: &std::fs::File,
    receipt_key: &pod_protocol::keys::VerifyingKey,
    old_body: u64,
) -> Result<(), ClientError> {
    let (header, start) = read_head(path)?
        .ok_or_else(|| ClientError::Integrity("the moved document has no header".into()))?;
    let len = file.metadata().map_err(|e| local(path, e))?.len();
    let seal_len = rotation::BODY_SEAL_LEN as u64;
    let expected = start as u64 + old_body + seal_len;
    if len != expected {
        return Err(ClientError::Integrity(format!(
            "the answer is {len} bytes, {expected} expected (header, a body as long as the original's, the pod's \
             seal): it was cut off or extended"
        )));
    }
    let mut f = std::fs::File::open(path).map_err(|e| local(path, e))?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start as u64))
        .map_err(|e| local(path, e))?;
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut left = old_body;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let piece = buf.get_mut(..want).unwrap_or_default();
        f.read_exact(piece).map_err(|e| local(path, e))?;
        digest.update(piece);
        left -= want as u64;
    }
    let mut seal = [0u8; rotation::BODY_SEAL_LEN];
    f.read_exact(&mut seal).map_err(|e| local(path, e))?;
    let body_sha256: [u8; HASH_LEN] = digest
        .finish()
        .as_ref()
        .try_into()
        .map_err(|_| ClientError::Integrity("digest length".into()))?;
    rotation::verify_body_seal(receipt_key, &header.hash(), &body_sha256, &seal).map_err(|_| {
        ClientError::Integrity(
            "the re-encrypted body is not the one the pod sealed: it was changed in transit; the original is kept"
                .into(),
        )
    })?;
    file.set_len(len - seal_len).map_err(|e| local(path, e))
}

/// Checks a certificate file: signed by the receipt key whose fingerprint is `receipt_key` (as the old pod's
/// attestation showed it: the certificate names its own key, so this comparison is what ties it to the pod), for the
/// pod key `old_pod`; with `dir`, that every sealed document there is one the certificate names as moved (its header
/// hash is an item's new header hash).
pub fn verify_certificate(
    bytes: &[u8],
    old_pod: &[u8; HASH_LEN],
    receipt_key: &[u8; HASH_LEN],
    dir: Option<&Path>,
) -> Result<(rotation::Certificate, Vec<rotation::Item>), ClientError> {
    let (c, items) = rotation::verify_certificate_file(bytes, MAX_DOCUMENTS).map_err(|e| {
        ClientError::Integrity(format!("the rotation certificate does not verify: {e}"))
    })?;
    let signer = pod_protocol::keys::fingerprint(&c.old_receipt_spki);
    if &signer != receipt_key {
        return Err(ClientError::Integrity(format!(
            "the certificate is signed by receipt key {}, not by the old pod's {}",
            hex::encode(signer),
            hex::encode(receipt_key)
        )));
    }
    if &c.old_pod != old_pod {
        return Err(ClientError::Integrity(format!(
            "the certificate is by pod key {}, not {}",
            hex::encode(c.old_pod),
            hex::encode(old_pod)
        )));
    }
    if let Some(dir) = dir {
        let named: std::collections::HashSet<[u8; HASH_LEN]> =
            items.iter().map(|i| i.new_header_hash).collect();
        for path in list_files(dir)? {
            if is_rotating(&path) {
                let original = path.with_extension("");
                return Err(ClientError::Integrity(if original.exists() {
                    format!(
                        "{} is an interrupted move: run `podctl rotate run` again to finish it, then verify",
                        path.display()
                    )
                } else {
                    format!(
                        "{} is left from a failed move and its document is gone: delete it, then verify",
                        path.display()
                    )
                }));
            }
            if let Some((h, _)) = read_head(&path)?
                && !named.contains(&h.hash())
            {
                return Err(ClientError::Integrity(format!(
                    "{} is not named by the certificate (not rotated, or changed since)",
                    path.display()
                )));
            }
        }
    }
    Ok((c, items))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use pod_protocol::envelope::Kind;
    use pod_protocol::hpke;
    use pod_protocol::keys::{EncryptionKey, SigningKey};

    /// A re-encrypted answer as the pod writes it: the new document, then the seal over its header and body.
    fn answer(pod: &SigningKey, body_len: usize) -> (Vec<u8>, u64) {
        let next = hpke::PrivateKey::generate().unwrap();
        let plain: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
        let doc = envelope::seal(
            Kind::SealedToPod,
            &[7; HASH_LEN],
            b"doc",
            &EncryptionKey::HpkeP256(next.public_key().clone()),
            &plain,
        )
        .unwrap();
        let (h, start) = envelope::read_header(&doc).unwrap().unwrap();
        let body_sha: [u8; HASH_LEN] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &doc[start..])
                .as_ref()
                .try_into()
                .unwrap();
        let seal = rotation::seal_body(pod, &h.hash(), &body_sha).unwrap();
        let body = (doc.len() - start) as u64;
        ([doc, seal.to_vec()].concat(), body)
    }

    fn check(
        bytes: &[u8],
        key: &pod_protocol::keys::VerifyingKey,
        old_body: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("doc.spd.rotating");
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        take_body_seal(&path, &file, key, old_body)?;
        Ok(std::fs::read(&path).unwrap())
    }

    #[test]
    fn a_sealed_body_is_accepted_and_its_seal_removed_and_any_change_is_refused() {
        let pod = SigningKey::generate().unwrap();
        let key = pod.verifying_key();
        let (good, body) = answer(&pod, 200_000);
        let kept = check(&good, &key, body).unwrap();
        assert_eq!(kept, good[..good.len() - rotation::BODY_SEAL_LEN]);

        // One byte of the body, of the header, of the seal; cut short; one byte more; no seal; another signer.
        let header_len = good.len() - rotation::BODY_SEAL_LEN - body as usize;
        for at in [header_len + 5, header_len + 100_000, good.len() - 3, 10] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert!(
                check(&bad, &key, body).is_err(),
                "a change at {at} was accepted"
            );
        }
        assert!(check(&good[..good.len() - 1], &key, body).is_err());
        assert!(check(&[good.as_slice(), &[0]].concat(), &key, body).is_err());
        assert!(check(&good[..good.len() - rotation::BODY_SEAL_LEN], &key, body).is_err());
        let other = SigningKey::generate().unwrap().verifying_key();
        let e = check(&good, &other, body).unwrap_err().to_string();
        assert!(e.contains("changed in transit"), "{e}");
        // An empty body is sealed too.
        let (empty, zero) = answer(&pod, 0);
        check(&empty, &key, zero).unwrap();
    }

    #[test]
    fn a_journal_belongs_to_its_directory_and_an_older_one_is_adopted() {
        let d = tempfile::tempdir().unwrap();
        let head = |dir: Option<&str>| JournalHead {
            old_pod: "aa".into(),
            new_pod: "bb".into(),
            mode: "rewrap".into(),
            receipt_key: "cc".into(),
            dir: dir.map(str::to_owned),
        };
        let path = d.path().join("journal.jsonl");
        // Written by a podctl that did not record the directory: taken to be this directory's.
        std::fs::write(
            &path,
            "{\"old_pod\":\"aa\",\"new_pod\":\"bb\",\"mode\":\"rewrap\",\"receipt_key\":\"cc\"}\n",
        )
        .unwrap();
        drop(Journal::open(&path, &head(Some("/srv/a"))).unwrap());
        drop(Journal::open(&path, &head(Some("/srv/b"))).unwrap());
        // Recorded: another directory is refused, the same one opens.
        let path = d.path().join("journal2.jsonl");
        drop(Journal::open(&path, &head(Some("/srv/a"))).unwrap());
        let e = Journal::open(&path, &head(Some("/srv/b")))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("another directory") && e.contains("/srv/a"),
            "{e}"
        );
        drop(Journal::open(&path, &head(Some("/srv/a"))).unwrap());
        // Another rotation in the same directory is still refused.
        let mut other = head(Some("/srv/a"));
        other.new_pod = "dd".into();
        assert!(Journal::open(&path, &other).is_err());
    }

    #[test]
    fn errors_name_the_document() {
        let p = Path::new("/srv/sealed/q3/term-sheet.spd");
        let e = in_file(p, ClientError::Integrity("cut off".into())).to_string();
        assert!(e.contains("term-sheet.spd") && e.contains("cut off"), "{e}");
        let e = in_file(
            p,
            ClientError::Refused {
                status: 403,
                code: "stream_corrupt".into(),
                message: "damaged".into(),
            },
        )
        .to_string();
        assert!(
            e.contains("term-sheet.spd") && e.contains("stream_corrupt"),
            "{e}"
        );
        // Not named twice.
        let e = in_file(p, ClientError::Local(format!("{}: gone", p.display()))).to_string();
        assert_eq!(e.matches("term-sheet.spd").count(), 1, "{e}");
    }
}
