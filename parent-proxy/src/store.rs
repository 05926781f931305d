//! The parent's stores: append-only record logs (the audit log and one membership log per room) and the sealed
//! pod key. None of it is secret — audit and membership entries are signed, the pod key is sealed by KMS — but all
//! of it must be durable and tamper-evident, and a crash must never silently lose an acknowledged record.
//!
//! A log file is a sequence of records `u32be(len) ‖ payload ‖ u32be(crc32(payload))`. On open the whole file is
//! scanned: a record cut short at the end of the file (a crash during a write that was never acknowledged) is
//! moved aside to `<file>.torn-<offset>` and reported, and the log continues from the last whole record; a record
//! whose checksum fails anywhere else is an error that stops the pod from starting, because it means the disk, or
//! someone, changed acknowledged history.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest record accepted (a signed audit or membership entry is a few KiB at most).
pub const MAX_RECORD: usize = 64 * 1024;

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A complete record is damaged: acknowledged history changed.
    #[error(
        "{path}: record at byte {offset} is damaged (checksum or length); refusing to continue"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
    },
    /// A record is larger than [`MAX_RECORD`].
    #[error("record of {0} bytes is larger than the store accepts")]
    TooLarge(usize),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What opening a log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Whole records.
    pub records: usize,
    /// A torn tail that was moved aside: (offset, bytes, file it was saved to).
    pub torn: Option<(u64, usize, PathBuf)>,
}

/// An append-only log of records. Only an index (offset and length per record, 16 bytes with alignment) and the
/// last record stay in memory; records are read back from the file when asked for, so a log of millions of entries
/// costs megabytes, not its size.
#[derive(Debug)]
pub struct RecordLog {
    path: PathBuf,
    file: File,
    index: Vec<(u64, u32)>,
    last: Option<Vec<u8>>,
    end: u64,
}

fn crc(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

impl RecordLog {
    /// Opens (or creates) the log at `path`, recovering from a torn tail as described in the module docs.
    pub fn open(path: &Path) -> Result<(Self, Recovery), StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io(path))?;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(io(path))?;
        file.read_to_end(&mut bytes).map_err(io(path))?;
        let mut index: Vec<(u64, u32)> = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        let mut at = 0usize;
        let mut torn = None;
        while at < bytes.len() {
            let rest = bytes.get(at..).unwrap_or_default();
            let len = rest
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_be_bytes(b) as usize);
            let whole = len.and_then(|len| {
                let end = 4usize.checked_add(len)?.checked_add(4)?;
                rest.get(..end).map(|r| (len, r))
            });
            match whole {
                Some((len, record)) if len <= MAX_RECORD => {
                    let payload = record.get(4..4 + len).unwrap_or_default();
                    let stored = record.get(4 + len..).unwrap_or_default();
                    if stored != crc(payload).to_be_bytes() {
                        return Err(StoreError::Corrupt {
                            path: path.to_path_buf(),
                            offset: at as u64,
                        });
                    }
                    index.push(((at + 4) as u64, len as u32));
                    last = Some(payload.to_vec());
                    at += record.len();
                }
                Some(_) => {
                    return Err(StoreError::Corrupt {
                        path: path.to_path_buf(),
                        offset: at as u64,
                    });
                }
                None => {
                    // A record that runs past the end of the file: a write the crash interrupted.
                    let aside = path.with_extension(format!("torn-{at}"));
                    std::fs::write(&aside, rest).map_err(io(&aside))?;
                    file.set_len(at as u64).map_err(io(path))?;
                    file.sync_all().map_err(io(path))?;
                    tracing::error!(file = %path.display(), offset = at, bytes = rest.len(), saved = %aside.display(),
                        "torn record at the end of the log moved aside (it was never acknowledged)");
                    torn = Some((at as u64, rest.len(), aside));
                    break;
                }
            }
        }
        let recovery = Recovery {
            records: index.len(),
            torn,
        };
        drop(bytes);
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                index,
                last,
                end: at as u64,
            },
            recovery,
        ))
    }

    /// Appends records and makes them durable (one fsync for all of them: group commit).
    pub fn append_all(&mut self, payloads: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for p in payloads {
            if p.len() > MAX_RECORD {
                return Err(StoreError::TooLarge(p.len()));
            }
            buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
            buf.extend_from_slice(p);
            buf.extend_from_slice(&crc(p).to_be_bytes());
        }
        self.file.write_all(&buf).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        let mut at = self.end;
        for p in payloads {
            self.index.push((at + 4, p.len() as u32));
            at += 4 + p.len() as u64 + 4;
        }
        self.end = at;
        if let Some(p) = payloads.last() {
            self.last = Some(p.clone());
        }
        Ok(())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the log has no record.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Records `from..from + limit`, read from the file.
    pub fn read_range(&self, from: usize, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        use std::os::unix::fs::FileExt as _;
        let file = File::open(&self.path).map_err(io(&self.path))?;
        self.index
            .iter()
            .skip(from)
            .take(limit)
            .map(|(offset, len)| {
                let mut buf = vec![0u8; *len as usize];
                file.read_exact_at(&mut buf, *offset)
                    .map_err(io(&self.path))?;
                Ok(buf)
            })
            .collect()
    }

    /// Every record, in order, read from the file.
    pub fn read_all(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read_range(0, self.index.len())
    }

    /// The last record.
    pub fn last(&self) -> Option<&[u8]> {
        self.last.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, rec) = RecordLog::open(&path).unwrap();
        assert_eq!(rec.records, 0);
        log.append_all(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
        log.append_all(&[b"three".to_vec()]).unwrap();
        drop(log);
        let (log, rec) = RecordLog::open(&path).unwrap();
        assert_eq!(
            rec,
            Recovery {
                records: 3,
                torn: None
            }
        );
        assert_eq!(log.last(), Some(&b"three"[..]));
    }

    #[test]
    fn a_torn_tail_is_moved_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, _) = RecordLog::open(&path).unwrap();
        log.append_all(&[b"kept".to_vec()]).unwrap();
        drop(log);
        // A crash half-way through the next record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 10, b'p', b'a']).unwrap();
        drop(f);
        let (mut log, rec) = RecordLog::open(&path).unwrap();
        assert_eq!(rec.records, 1);
        let (offset, len, aside) = rec.torn.unwrap();
        assert_eq!((offset, len), (12, 6));
        assert_eq!(std::fs::read(aside).unwrap(), [0, 0, 0, 10, b'p', b'a']);
        // The log goes on from the last whole record.
        log.append_all(&[b"next".to_vec()]).unwrap();
        drop(log);
        let (log, rec) = RecordLog::open(&path).unwrap();
        assert_eq!(rec.records, 2);
        assert_eq!(log.read_all().unwrap()[1], b"next");
        assert_eq!(log.read_range(1, 5).unwrap(), vec![b"next".to_vec()]);
    }

    #[test]
    fn a_damaged_acknowledged_record_stops_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut log, _) = RecordLog::open(&path).unwrap();
        log.append_all(&[b"first".to_vec(), b"second".to_vec()])
            .unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            RecordLog::open(&path),
            Err(StoreError::Corrupt { offset: 0, .. })
        ));
    }
}
