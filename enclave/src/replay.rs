//! The replay cache: a request's (user, nonce) is remembered until the request could no longer pass the freshness
//! check, so each signed request is honoured at most once. The cache is bounded; when it is full of entries that
//! have not yet expired, new requests are refused (failing closed) rather than forgetting a live nonce.

use std::collections::{HashSet, VecDeque};

type Key = ([u8; 32], Vec<u8>);

/// Why a nonce was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Seen before.
    Replayed,
    /// The cache is full of live entries.
    Full,
}

/// A bounded set of (user, nonce) pairs with expiry times.
#[derive(Debug)]
pub struct ReplayCache {
    max: usize,
    seen: HashSet<Key>,
    by_expiry: VecDeque<(u64, Key)>,
}

impl ReplayCache {
    /// A cache for at most `max` live requests.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            seen: HashSet::new(),
            by_expiry: VecDeque::new(),
        }
    }

    /// Records (user, nonce) until `expires_ms`; fails if it is already there.
    ///
    /// Expiry times are pushed in roughly increasing order (issued-at plus a constant window), so expired entries
    /// are found at the front.
    pub fn insert(
        &mut self,
        user: [u8; 32],
        nonce: &[u8],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), ReplayError> {
        while let Some((exp, _)) = self.by_expiry.front() {
            if *exp > now_ms {
                break;
            }
            if let Some((_, key)) = self.by_expiry.pop_front() {
                self.seen.remove(&key);
            }
        }
        let key = (user, nonce.to_vec());
        if self.seen.contains(&key) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.max {
            return Err(ReplayError::Full);
        }
        self.seen.insert(key.clone());
        // Keep the queue ordered so that the front is always the earliest expiry.
        let pos = self.by_expiry.partition_point(|(e, _)| *e <= expires_ms);
        self.by_expiry.insert(pos, (expires_ms, key));
        Ok(())
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_refused_until_expiry_and_the_cache_fails_closed() {
        let mut c = ReplayCache::new(2);
        c.insert([1; 32], b"n1", 100, 0).unwrap();
        assert_eq!(
            c.insert([1; 32], b"n1", 100, 50),
            Err(ReplayError::Replayed)
        );
        // Another user may use the same nonce.
        c.insert([2; 32], b"n1", 100, 50).unwrap();
        assert_eq!(c.insert([3; 32], b"n1", 100, 50), Err(ReplayError::Full));
        // After expiry the entries go (a request that old fails the freshness check anyway).
        c.insert([3; 32], b"n1", 300, 100).unwrap();
        assert_eq!(c.len(), 1);
    }
}
