//! A first-in first-out queue of response pieces that never makes the producer wait for the consumer: up to a
//! memory cap the pieces stay in memory, beyond it they go to an unlinked temporary file, and the consumer reads
//! them back in order.
//!
//! Why: a browser's `fetch` (Chromium, HTTP/1.1) sends the whole request body before it reads any of the response.
//! The streaming endpoint converts one chunk in for one chunk out; with a bounded queue towards the client, the
//! proxy stops reading the request once the queue is full, the browser never finishes sending, and both wait for
//! ever. Spooling the (already re-encrypted, so ciphertext-only) output to disk lets the upload finish whatever the
//! client does, with memory still bounded. A client that reads as it sends (`podctl`) never reaches the file.

use hyper::body::Bytes;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;

/// Pieces larger than this are read back from the file in parts of this size.
const READ_PIECE: usize = 256 * 1024;

/// Bytes all spools of this process may hold on disk at once. The spool shares a file system with the audit log:
/// clients that upload and never read must not fill it, or no audit entry could be written and nothing would be
/// released for anyone. Past the cap, a stream fails (its client sees an error) instead.
pub const DISK_CAP: u64 = 4 * 1024 * 1024 * 1024;

static ON_DISK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Default)]
struct State {
    memory: VecDeque<Bytes>,
    memory_bytes: usize,
    /// Bytes written to the file and not yet read back.
    in_file: u64,
    /// Set once a piece went to the file: from then on every piece goes there, to keep the order.
    spilling: bool,
    done: bool,
    error: Option<String>,
    /// The consumer went away (the client disconnected): the producer should stop.
    consumer_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    ready: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The producer's end.
pub struct Sender {
    shared: Arc<Shared>,
    memory_cap: usize,
    file: Option<tokio::fs::File>,
    dir: std::path::PathBuf,
    reader_file: Arc<tokio::sync::Mutex<Option<tokio::fs::File>>>,
}

/// The consumer's end.
pub struct Receiver {
    shared: Arc<Shared>,
    file: Arc<tokio::sync::Mutex<Option<tokio::fs::File>>>,
}

/// A spool keeping at most `memory_cap` bytes in memory; its file (if needed) is created in `dir` and unlinked at
/// once, so nothing is left behind even after a crash.
pub fn channel(memory_cap: usize, dir: &Path) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        ready: Notify::new(),
    });
    let reader_file = Arc::new(tokio::sync::Mutex::new(None));
    (
        Sender {
            shared: shared.clone(),
            memory_cap,
            file: None,
            dir: dir.to_path_buf(),
            reader_file: reader_file.clone(),
        },
        Receiver {
            shared,
            file: reader_file,
        },
    )
}

static SPOOL_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Sender {
    /// Queues a piece. Waits only for the disk, never for the consumer; fails once the consumer is gone. Any other
    /// failure (the disk, the spool's cap) also ends the stream with an error, so the consumer never mistakes a
    /// cut-off stream for a complete one.
    pub async fn send(&mut self, piece: Bytes) -> std::io::Result<()> {
        let result = self.try_send(piece).await;
        if let Err(e) = &result
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            let mut s = self.shared.lock();
            s.error = Some(format!("the proxy could not queue the answer: {e}"));
            s.done = true;
            drop(s);
            self.shared.ready.notify_one();
        }
        result
    }

    async fn try_send(&mut self, piece: Bytes) -> std::io::Result<()> {
        {
            let mut s = self.shared.lock();
            if s.consumer_gone {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the client went away",
                ));
            }
            if !s.spilling && s.memory_bytes + piece.len() <= self.memory_cap {
                s.memory_bytes += piece.len();
                s.memory.push_back(piece);
                drop(s);
                self.shared.ready.notify_one();
                return Ok(());
            }
            s.spilling = true;
        }
        let len = piece.len() as u64;
        let before = ON_DISK.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        if before.saturating_add(len) > DISK_CAP {
            ON_DISK.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other(
                "the proxy's spool is full (clients are not reading their answers)",
            ));
        }
        let written = self.write_to_file(piece).await;
        if written.is_err() {
            ON_DISK.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
        }
        written
    }

    async fn write_to_file(&mut self, piece: Bytes) -> std::io::Result<()> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let id = SPOOL_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = self.dir.join(format!("spool-{}-{id}", std::process::id()));
            let writer = tokio::fs::File::create(&path).await?;
            let reader = tokio::fs::File::open(&path).await?;
            // Unlinked now: the two handles keep it alive, and nothing remains when they close.
            tokio::fs::remove_file(&path).await?;
            *self.reader_file.lock().await = Some(reader);
            self.file = Some(writer);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(&piece).await?;
            f.flush().await?;
        }
        let mut s = self.shared.lock();
        if s.consumer_gone {
            // The receiver's drop already settled the count; this piece will never be read.
            ON_DISK.fetch_sub(piece.len() as u64, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client went away",
            ));
        }
        s.in_file += piece.len() as u64;
        drop(s);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Ends the stream with an error the consumer will see after the pieces already queued.
    pub fn fail(self, error: String) {
        let mut s = self.shared.lock();
        s.error = Some(error);
        s.done = true;
        drop(s);
        self.shared.ready.notify_one();
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.lock().done = true;
        self.shared.ready.notify_one();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.consumer_gone = true;
        // What was never read back no longer counts against the cap (the file goes with its handles).
        ON_DISK.fetch_sub(s.in_file, std::sync::atomic::Ordering::Relaxed);
        s.in_file = 0;
    }
}

impl Receiver {
    /// The next piece, an error, or `None` at the end.
    pub async fn recv(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            let notified = self.shared.ready.notified();
            let from_file = {
                let mut s = self.shared.lock();
                if let Some(p) = s.memory.pop_front() {
                    s.memory_bytes -= p.len();
                    return Some(Ok(p));
                }
                if s.in_file > 0 {
                    let n = usize::try_from(s.in_file)
                        .unwrap_or(READ_PIECE)
                        .min(READ_PIECE);
                    s.in_file -= n as u64;
                    ON_DISK.fetch_sub(n as u64, std::sync::atomic::Ordering::Relaxed);
                    Some(n)
                } else if s.done {
                    return s.error.take().map(|e| Err(std::io::Error::other(e)));
                } else {
                    None
                }
            };
            if let Some(n) = from_file {
                let mut guard = self.file.lock().await;
                let Some(f) = guard.as_mut() else {
                    return Some(Err(std::io::Error::other("the spool file is gone")));
                };
                let mut buf = vec![0u8; n];
                return Some(f.read_exact(&mut buf).await.map(|_| Bytes::from(buf)));
            }
            notified.await;
        }
    }
}

/// Reads and discards what is left of a request body (at most `cap` bytes, each piece within `piece_timeout`), so
/// that an early answer reaches an HTTP/1.1 client that is still sending: a browser shows a network error instead of
/// the answer when the server stops reading and closes.
pub async fn drain(body: &mut hyper::body::Incoming, cap: u64, piece_timeout: std::time::Duration) {
    use http_body_util::BodyExt as _;
    let mut seen = 0u64;
    while seen <= cap {
        match tokio::time::timeout(piece_timeout, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    seen += d.len() as u64;
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[tokio::test]
    async fn pieces_come_back_in_order_through_memory_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut tx, mut rx) = channel(10, dir.path());
        let pieces: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; usize::from(i % 7) + 1]).collect();
        // The producer finishes before the consumer reads anything: nothing waits for the consumer.
        for p in &pieces {
            tx.send(Bytes::from(p.clone())).await.unwrap();
        }
        drop(tx);
        // The file was unlinked at once.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut got = Vec::new();
        while let Some(p) = rx.recv().await {
            got.extend_from_slice(&p.unwrap());
        }
        assert_eq!(got, pieces.concat());
    }

    #[tokio::test]
    async fn a_disk_failure_ends_the_stream_with_an_error_not_a_clean_end() {
        // A spool whose directory cannot be created (a file stands in its way).
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").unwrap();
        let (mut tx, mut rx) = channel(4, &blocker.join("spool"));
        tx.send(Bytes::from_static(b"ab")).await.unwrap();
        assert!(tx.send(Bytes::from_static(b"cdef")).await.is_err());
        drop(tx);
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"ab");
        assert!(
            rx.recv().await.unwrap().is_err(),
            "the consumer sees the failure"
        );
    }

    #[tokio::test]
    async fn an_error_arrives_after_the_pieces_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut tx, mut rx) = channel(1 << 20, dir.path());
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        tx.fail("broken".into());
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"abc");
        assert!(rx.recv().await.unwrap().is_err());
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_concurrent_consumer_sees_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (mut tx, mut rx) = channel(1000, dir.path());
        let producer = tokio::spawn(async move {
            for i in 0..2000u32 {
                tx.send(Bytes::from(i.to_be_bytes().to_vec()))
                    .await
                    .unwrap();
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut n = 0u32;
        let mut buf = Vec::new();
        while let Some(p) = rx.recv().await {
            buf.extend_from_slice(&p.unwrap());
            while buf.len() >= 4 {
                let v = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                assert_eq!(v, n);
                n += 1;
                buf.drain(..4);
            }
        }
        producer.await.unwrap();
        assert_eq!(n, 2000);
    }
}
