//! What a verified document must also say: PCRs, debug mode, nonce, freshness, bound key and data.

use crate::Error;
use std::collections::BTreeMap;
use std::time::Duration;

/// The PCR values an enclave image must show, by index (0..=31).
///
/// Built by hand with [`ExpectedPcrs::insert`], or read from the PCR file that `eif/build.sh` publishes with
/// [`ExpectedPcrs::from_json`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedPcrs(BTreeMap<u8, Vec<u8>>);

impl ExpectedPcrs {
    /// An empty set (a [`Policy`] refuses it; add values first).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the expected value of PCR `index`. The value must be 32, 48 or 64 bytes (Nitro's PCRs are 48).
    pub fn insert(&mut self, index: u8, value: Vec<u8>) -> Result<(), Error> {
        if index > 31 {
            return Err(Error::InvalidPcrPolicy(format!(
                "PCR index {index} is out of range 0..=31"
            )));
        }
        if !matches!(value.len(), 32 | 48 | 64) {
            return Err(Error::InvalidPcrPolicy(format!(
                "PCR{index} must be 32, 48 or 64 bytes, got {}",
                value.len()
            )));
        }
        if self.0.insert(index, value).is_some() {
            return Err(Error::InvalidPcrPolicy(format!(
                "PCR{index} is given twice"
            )));
        }
        Ok(())
    }

    /// Adds PCR `index` from a hex string (upper or lower case).
    pub fn insert_hex(&mut self, index: u8, hex_value: &str) -> Result<(), Error> {
        let value = hex::decode(hex_value.trim())
            .map_err(|_| Error::InvalidPcrPolicy(format!("PCR{index} is not a hex string")))?;
        self.insert(index, value)
    }

    /// Reads a PCR file: a JSON object `{"PCR0": "<hex>", "PCR1": "<hex>", ...}`. The output of
    /// `nitro-cli build-enclave`, `{"Measurements": {"HashAlgorithm": "...", "PCR0": ...}}`, is accepted as well.
    /// Any other key is an error, so that a typo cannot silently drop a PCR from the policy.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        if text.len() > 64 * 1024 {
            return Err(Error::InvalidPcrPolicy(
                "PCR file is larger than 64 KiB".into(),
            ));
        }
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidPcrPolicy(format!("PCR file is not JSON: {e}")))?;
        let mut object = value
            .as_object()
            .ok_or_else(|| Error::InvalidPcrPolicy("PCR file is not a JSON object".into()))?;
        if let Some(inner) = object.get("Measurements") {
            if object.len() != 1 {
                return Err(Error::InvalidPcrPolicy(
                    "PCR file has keys beside \"Measurements\"".into(),
                ));
            }
            object = inner.as_object().ok_or_else(|| {
                Error::InvalidPcrPolicy("\"Measurements\" is not an object".into())
            })?;
        }
        let mut out = Self::new();
        for (key, v) in object {
            if key == "HashAlgorithm" {
                continue;
            }
            let index = key
                .strip_prefix("PCR")
                // The round trip through to_string refuses "PCR00", "PCR+1" and the like.
                .and_then(|n| n.parse::<u8>().ok().filter(|i| i.to_string() == n))
                .ok_or_else(|| {
                    Error::InvalidPcrPolicy(format!("unexpected key {key:?} in PCR file"))
                })?;
            let hex_value = v
                .as_str()
                .ok_or_else(|| Error::InvalidPcrPolicy(format!("{key} is not a string")))?;
            out.insert_hex(index, hex_value)?;
        }
        Ok(out)
    }

    /// Number of PCRs given.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when PCR `index` is expected.
    pub fn contains(&self, index: u8) -> bool {
        self.0.contains_key(&index)
    }

    /// True when no PCR is expected.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The expected values in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.0.iter().map(|(i, v)| (*i, v.as_slice()))
    }
}

#[derive(Debug, Clone)]
enum PcrPolicy {
    Expected(ExpectedPcrs),
    InsecureAny,
}

/// The conditions a document must meet beyond a valid signature and chain.
///
/// ```
/// use attestation_verifier::{ExpectedPcrs, Policy};
/// let mut pcrs = ExpectedPcrs::new();
/// pcrs.insert(0, vec![0xab; 48]).unwrap();
/// let policy = Policy::new(pcrs)
///     .unwrap()
///     .nonce(b"fresh challenge".to_vec())
///     .max_age(std::time::Duration::from_secs(300));
/// # let _ = policy;
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    pcrs: PcrPolicy,
    allow_debug: bool,
    nonce: Option<Vec<u8>>,
    max_age: Option<Duration>,
    public_key: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
}

impl Policy {
    /// A policy that requires the given PCR values. An empty set is refused with [`Error::EmptyPcrPolicy`]: a
    /// verifier that pins no image accepts every enclave that runs on Nitro hardware, including an attacker's.
    pub fn new(expected: ExpectedPcrs) -> Result<Self, Error> {
        if expected.is_empty() {
            return Err(Error::EmptyPcrPolicy);
        }
        // PCR1..4 alone (kernel, application hash, IAM role, instance) are shared by any image built or run the
        // same way: only PCR0 (the whole image) or PCR8 (its signer) pins what code runs.
        if !expected.contains(0) && !expected.contains(8) {
            return Err(Error::InvalidPcrPolicy(
                "the expected PCRs pin no image: give PCR0 (the image) or PCR8 (the image's signer)".into(),
            ));
        }
        Ok(Self::with_pcrs(PcrPolicy::Expected(expected)))
    }

    /// A policy that accepts any enclave image. Only for inspecting documents: it proves that *some* enclave on
    /// AWS hardware signed the document, not that it runs your code.
    pub fn insecure_any_pcrs() -> Self {
        Self::with_pcrs(PcrPolicy::InsecureAny)
    }

    fn with_pcrs(pcrs: PcrPolicy) -> Self {
        Self {
            pcrs,
            allow_debug: false,
            nonce: None,
            max_age: None,
            public_key: None,
            user_data: None,
        }
    }

    /// Accepts debug-mode enclaves (PCR0..2 all zero), whose memory the parent instance can read. Never for
    /// production: a debug enclave protects nothing.
    pub fn insecure_allow_debug(mut self) -> Self {
        self.allow_debug = true;
        self
    }

    /// Requires the document's `nonce` to equal `nonce`; a document without a nonce then fails.
    pub fn nonce(mut self, nonce: Vec<u8>) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// Requires the document's `timestamp` to be at most `max_age` before the verification time, and at most
    /// [`crate::limits::MAX_CLOCK_SKEW_MS`] after it.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Requires the document's `public_key` to equal `key`.
    pub fn public_key(mut self, key: Vec<u8>) -> Self {
        self.public_key = Some(key);
        self
    }

    /// Requires the document's `user_data` to equal `data`.
    pub fn user_data(mut self, data: Vec<u8>) -> Self {
        self.user_data = Some(data);
        self
    }

    /// Applies the policy to a document whose signature and chain have verified.
    pub(crate) fn check(
        &self,
        pcrs: &[(u8, &[u8])],
        timestamp_ms: u64,
        nonce: Option<&[u8]>,
        public_key: Option<&[u8]>,
        user_data: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<(), Error> {
        if is_debug(pcrs) && !self.allow_debug {
            return Err(Error::DebugMode);
        }
        if let PcrPolicy::Expected(expected) = &self.pcrs {
            for (index, want) in expected.iter() {
                let got = pcrs
                    .iter()
                    .find(|(i, _)| *i == index)
                    .map(|(_, v)| *v)
                    .ok_or(Error::PcrMissing { index })?;
                if !ct_eq(got, want) {
                    return Err(Error::PcrMismatch { index });
                }
            }
        }
        check_bound(
            self.nonce.as_deref(),
            nonce,
            Error::NonceMissing,
            Error::NonceMismatch,
        )?;
        if let Some(max_age) = self.max_age {
            let max_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
            if timestamp_ms > now_ms {
                let ahead_ms = timestamp_ms.saturating_sub(now_ms);
                if ahead_ms > crate::limits::MAX_CLOCK_SKEW_MS {
                    return Err(Error::FromTheFuture { ahead_ms });
                }
            } else {
                let age_ms = now_ms.saturating_sub(timestamp_ms);
                if age_ms > max_ms {
                    return Err(Error::Stale { age_ms, max_ms });
                }
            }
        }
        check_bound(
            self.public_key.as_deref(),
            public_key,
            Error::PublicKeyMissing,
            Error::PublicKeyMismatch,
        )?;
        check_bound(
            self.user_data.as_deref(),
            user_data,
            Error::UserDataMissing,
            Error::UserDataMismatch,
        )?;
        Ok(())
    }
}

fn check_bound(
    expected: Option<&[u8]>,
    got: Option<&[u8]>,
    missing: Error,
    mismatch: Error,
) -> Result<(), Error> {
    match (expected, got) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(missing),
        (Some(want), Some(got)) if ct_eq(want, got) => Ok(()),
        (Some(_), Some(_)) => Err(mismatch),
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

/// Debug-mode enclaves report PCR0, PCR1 and PCR2 as all zeros (PCR3 and PCR4 are still set, so "all PCRs zero"
/// would miss them).
pub(crate) fn is_debug(pcrs: &[(u8, &[u8])]) -> bool {
    (0u8..=2).all(|index| {
        pcrs.iter()
            .find(|(i, _)| *i == index)
            .is_some_and(|(_, v)| v.iter().all(|b| *b == 0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_file_formats() {
        let p = ExpectedPcrs::from_json(&format!(
            r#"{{"PCR0": "{}", "PCR2": "{}"}}"#,
            "ab".repeat(48),
            "CD".repeat(48)
        ))
        .unwrap();
        assert_eq!(p.len(), 2);
        let nitro_cli = format!(
            r#"{{"Measurements": {{"HashAlgorithm": "Sha384 {{ ... }}", "PCR0": "{}", "PCR1": "{}", "PCR2": "{}"}}}}"#,
            "00".repeat(48),
            "11".repeat(48),
            "22".repeat(48)
        );
        assert_eq!(ExpectedPcrs::from_json(&nitro_cli).unwrap().len(), 3);
        for bad in [
            r#"{"PCR32": "00"}"#.to_string(),
            r#"{"PCR00": "00"}"#.to_string(),
            r#"{"pcr0": "00"}"#.to_string(),
            format!(r#"{{"PCR0": "{}"}}"#, "ab".repeat(47)),
            format!(r#"{{"PCR0": "{}zz"}}"#, "ab".repeat(47)),
            r#"["PCR0"]"#.to_string(),
            "not json".to_string(),
        ] {
            assert!(
                matches!(
                    ExpectedPcrs::from_json(&bad),
                    Err(Error::InvalidPcrPolicy(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_pcr_policy_is_refused() {
        assert!(matches!(
            Policy::new(ExpectedPcrs::new()),
            Err(Error::EmptyPcrPolicy)
        ));
    }

    #[test]
    fn debug_detection_looks_at_pcr0_to_2_only() {
        let zero = [0u8; 48];
        let one = [1u8; 48];
        assert!(is_debug(&[(0, &zero), (1, &zero), (2, &zero), (3, &one)]));
        assert!(!is_debug(&[(0, &zero), (1, &one), (2, &zero)]));
        assert!(!is_debug(&[(0, &zero), (1, &zero)]));
    }
}
