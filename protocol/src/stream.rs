//! Chunked authenticated encryption: AES-256-GCM in the STREAM construction (Hoang, Reyhanitabar, Rogaway,
//! Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015), as age uses it.
//!
//! The plaintext is cut into chunks of [`CHUNK_SIZE`] bytes; every chunk but the last is full, and the last holds
//! 0..=[`CHUNK_SIZE`] bytes (empty only when it is the only chunk, so each plaintext has one encoding). Chunk `i` is
//! sealed under nonce `I2OSP(i, 11) ‖ last`, where `last` is 1 for the final chunk and 0 otherwise, with an
//! empty AAD. Each key seals exactly one stream: keys are fresh per document and per request, never reused.
//!
//! What this gives: a reader holds at most one chunk in memory; a dropped, duplicated or reordered chunk fails
//! authentication (its counter is wrong); a truncation at a chunk boundary fails because the final chunk
//! present was sealed with `last = 0`; data appended after the last chunk is refused.

use crate::Error;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// AES-GCM tag length, added to every chunk.
pub const TAG_LEN: usize = 16;
/// Ciphertext bytes of a full chunk.
pub const SEALED_CHUNK_SIZE: usize = CHUNK_SIZE + TAG_LEN;
/// Key length.
pub const KEY_LEN: usize = 32;

/// A 256-bit stream key. Zeroized on drop; no `Debug`, no `Clone`.
pub struct StreamKey(Zeroizing<[u8; KEY_LEN]>);

impl StreamKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, Error> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(key.as_mut())
            .map_err(|_| Error::Crypto)?;
        Ok(Self(key))
    }

    /// A key from its bytes (after unwrapping it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| Error::Decrypt)?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The key bytes, for wrapping to a recipient.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn aead(&self) -> Result<LessSafeKey, Error> {
        Ok(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, self.0.as_ref()).map_err(|_| Error::Crypto)?,
        ))
    }
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    // Bytes 0..3 stay zero: the 11-byte counter's top bytes, never reached with a u64 counter.
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Seals a stream chunk by chunk.
pub struct Sealer {
    key: LessSafeKey,
    counter: u64,
    done: bool,
}

impl Sealer {
    /// A sealer for a new stream under `key`.
    pub fn new(key: &StreamKey) -> Result<Self, Error> {
        Ok(Self {
            key: key.aead()?,
            counter: 0,
            done: false,
        })
    }

    /// Seals the next chunk in place, appending its tag. Chunks before the last must hold exactly
    /// [`CHUNK_SIZE`] bytes; the last at most that, and may be empty only when it is the first.
    pub fn seal_in_place(&mut self, chunk: &mut Vec<u8>, last: bool) -> Result<(), Error> {
        if self.done {
            return Err(Error::Truncated);
        }
        let len = chunk.len();
        let bad_len = if last {
            len > CHUNK_SIZE || (len == 0 && self.counter > 0)
        } else {
            len != CHUNK_SIZE
        };
        if bad_len {
            return Err(Error::ChunkLength {
                len,
                max: CHUNK_SIZE,
            });
        }
        self.key
            .seal_in_place_append_tag(nonce(self.counter, last), Aad::empty(), chunk)
            .map_err(|_| Error::Crypto)?;
        self.counter = self.counter.checked_add(1).ok_or(Error::StreamTooLong)?;
        self.done = last;
        Ok(())
    }

    /// True once the last chunk has been sealed.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// Opens a stream chunk by chunk.
pub struct Opener {
    key: LessSafeKey,
    counter: u64,
    done: bool,
}

impl Opener {
    /// An opener for a stream sealed under `key`.
    pub fn new(key: &StreamKey) -> Result<Self, Error> {
        Ok(Self {
            key: key.aead()?,
            counter: 0,
            done: false,
        })
    }

    /// Opens the next sealed chunk in place (the tag is removed). `last` says whether the input ends after this
    /// chunk: the reader knows, because it has reached the end of its input. A full chunk followed by the end of
    /// input must have been sealed as the last, so truncation at a chunk boundary fails here.
    pub fn open_in_place(&mut self, chunk: &mut Vec<u8>, last: bool) -> Result<(), Error> {
        if self.done {
            return Err(Error::Truncated);
        }
        let len = chunk.len();
        let bad_len = if last {
            !(TAG_LEN..=SEALED_CHUNK_SIZE).contains(&len) || (len == TAG_LEN && self.counter > 0)
        } else {
            len != SEALED_CHUNK_SIZE
        };
        if bad_len {
            return Err(Error::ChunkLength {
                len,
                max: SEALED_CHUNK_SIZE,
            });
        }
        let plain_len = self
            .key
            .open_in_place(nonce(self.counter, last), Aad::empty(), chunk)
            .map_err(|_| Error::Decrypt)?
            .len();
        chunk.truncate(plain_len);
        self.counter = self.counter.checked_add(1).ok_or(Error::StreamTooLong)?;
        self.done = last;
        Ok(())
    }

    /// Succeeds only once the last chunk has been opened.
    pub fn finish(&self) -> Result<(), Error> {
        if self.done {
            Ok(())
        } else {
            Err(Error::Truncated)
        }
    }
}

/// Length of the sealed form of a plaintext of `plaintext_len` bytes.
pub fn sealed_len(plaintext_len: u64) -> u64 {
    let chunk = CHUNK_SIZE as u64;
    let chunks = if plaintext_len == 0 {
        1
    } else {
        plaintext_len.div_ceil(chunk)
    };
    plaintext_len.saturating_add(chunks.saturating_mul(TAG_LEN as u64))
}

/// Seals a whole plaintext held in memory.
pub fn seal(key: &StreamKey, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let mut sealer = Sealer::new(key)?;
    let mut out =
        Vec::with_capacity(usize::try_from(sealed_len(plaintext.len() as u64)).unwrap_or(0));
    let mut chunks = plaintext.chunks(CHUNK_SIZE).peekable();
    if chunks.peek().is_none() {
        let mut empty = Vec::with_capacity(TAG_LEN);
        sealer.seal_in_place(&mut empty, true)?;
        out.extend_from_slice(&empty);
    }
    while let Some(chunk) = chunks.next() {
        let mut buf = Vec::with_capacity(chunk.len() + TAG_LEN);
        buf.extend_from_slice(chunk);
        sealer.seal_in_place(&mut buf, chunks.peek().is_none())?;
        out.extend_from_slice(&buf);
    }
    Ok(out)
}

/// Opens a whole sealed stream held in memory.
pub fn open(key: &StreamKey, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut opener = Opener::new(key)?;
    let mut out = Zeroizing::new(Vec::with_capacity(sealed.len()));
    let mut chunks = sealed.chunks(SEALED_CHUNK_SIZE).peekable();
    while let Some(chunk) = chunks.next() {
        let mut buf = Zeroizing::new(chunk.to_vec());
        opener.open_in_place(&mut buf, chunks.peek().is_none())?;
        out.extend_from_slice(&buf);
    }
    opener.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn round_trips_at_every_boundary() {
        for len in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal(&key(), &plain).unwrap();
            assert_eq!(sealed.len() as u64, sealed_len(len as u64), "{len}");
            assert_eq!(&*open(&key(), &sealed).unwrap(), &plain, "{len}");
        }
    }

    #[test]
    fn truncation_reordering_and_extension_are_detected() {
        let plain = vec![1u8; 3 * CHUNK_SIZE + 10];
        let sealed = seal(&key(), &plain).unwrap();
        let chunks: Vec<&[u8]> = sealed.chunks(SEALED_CHUNK_SIZE).collect();
        assert_eq!(chunks.len(), 4);
        // Drop the last chunk: the new final chunk was sealed with last = 0.
        let truncated: Vec<u8> = chunks[..3].concat();
        assert_eq!(open(&key(), &truncated).unwrap_err(), Error::Decrypt);
        // Drop a middle chunk.
        let dropped: Vec<u8> = [chunks[0], chunks[2], chunks[3]].concat();
        assert_eq!(open(&key(), &dropped).unwrap_err(), Error::Decrypt);
        // Swap two chunks.
        let swapped: Vec<u8> = [chunks[1], chunks[0], chunks[2], chunks[3]].concat();
        assert_eq!(open(&key(), &swapped).unwrap_err(), Error::Decrypt);
        // Data after the last chunk.
        let mut extended = sealed.clone();
        extended.extend_from_slice(&[0u8; 20]);
        assert!(open(&key(), &extended).is_err());
        // Nothing at all.
        assert_eq!(open(&key(), &[]).unwrap_err(), Error::Truncated);
        // Truncation inside a chunk.
        assert!(open(&key(), &sealed[..sealed.len() - 1]).is_err());
        // Wrong key.
        let other = StreamKey::from_bytes(&[8u8; 32]).unwrap();
        assert_eq!(open(&other, &sealed).unwrap_err(), Error::Decrypt);
    }

    #[test]
    fn the_chunk_api_enforces_the_shape() {
        let mut s = Sealer::new(&key()).unwrap();
        let mut short = vec![0u8; 10];
        assert!(matches!(
            s.seal_in_place(&mut short, false),
            Err(Error::ChunkLength { len: 10, .. })
        ));
        let mut full = vec![0u8; CHUNK_SIZE];
        s.seal_in_place(&mut full, false).unwrap();
        // An empty last chunk after a full one would give a second encoding of the same plaintext.
        let mut empty = Vec::new();
        assert!(s.seal_in_place(&mut empty, true).is_err());
        let mut last = vec![0u8; 5];
        s.seal_in_place(&mut last, true).unwrap();
        assert!(s.is_done());
        let mut more = vec![0u8; 5];
        assert_eq!(s.seal_in_place(&mut more, true), Err(Error::Truncated));
    }
}
