//! A mock NSM that signs real attestation documents.
//!
//! It owns a P-384 certificate chain shaped like AWS's (root → intermediate → short-lived leaf), keeps the root
//! and intermediate in a state directory so that clients can pin the root across restarts, and makes a fresh
//! leaf key for every process, like a real enclave. Its documents have AWS's exact layout (untagged COSE_Sign1,
//! protected header `{1: -35}`, `null` for absent optional fields, 16 PCRs of 48 bytes), so they exercise the same
//! verifier path as AWS documents and verify only against the mock root.
//!
//! # PCRs
//!
//! With `H = SHA-384(image bytes)` and `extend(pcr, x) = SHA-384(pcr ‖ x)` from a zero PCR:
//!
//! * PCR0 = extend(0, SHA-384("secure-pod/mock-nsm/pcr0" ‖ H)) — the whole image;
//! * PCR1 = extend(0, SHA-384("secure-pod/mock-nsm/pcr1")) — the same for every image, as nitro-cli's stock
//!   kernel and boot ramdisk are;
//! * PCR2 = extend(0, SHA-384("secure-pod/mock-nsm/pcr2" ‖ H)) — the application;
//! * PCR3, PCR4 and PCR8 (IAM role, instance, signing certificate): zero unless configured;
//! * PCR16..31 start at zero and can be extended and locked; PCR0..15 are locked.
//!
//! [`mock_pcrs_for_image`] computes PCR0..2 without an NSM, so a KMS key policy can be rendered for the mock.

use super::{AttestationRequest, FIRST_USER_PCR, Nsm, NsmError, PCR_COUNT, PCR_LEN, PcrState};
use crate::clock::Clock;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use pod_cbor::Encoder;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P384_SHA384, PublicKeyData, SignatureAlgorithm,
};
use sha2::{Digest as _, Sha384};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// File names in the state directory.
const ROOT_CERT: &str = "mock-root.pem";
const ROOT_KEY: &str = "mock-root-key.pem";
const INTERMEDIATE_CERT: &str = "mock-intermediate.pem";
const INTERMEDIATE_KEY: &str = "mock-intermediate-key.pem";

/// Validity of the mock root and intermediate.
const ROOT_LIFETIME_S: i64 = 30 * 365 * 24 * 3600;
const INTERMEDIATE_LIFETIME_S: i64 = 10 * 365 * 24 * 3600;
/// Leaf certificates live three hours, like AWS's; a new one is made when less than ten minutes remain.
const LEAF_LIFETIME_S: i64 = 3 * 3600;
const LEAF_RENEW_MARGIN_MS: u64 = 10 * 60 * 1000;
/// The leaf's notBefore is set this far back, so that a verifier whose clock lags slightly still accepts it.
const LEAF_BACKDATE_S: i64 = 60;

/// PCR3, PCR4 and PCR8 of the mock, each 48 bytes when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MockPcrConfig {
    /// PCR3 (the parent's IAM role on AWS).
    pub pcr3: Option<Vec<u8>>,
    /// PCR4 (the parent instance's id on AWS).
    pub pcr4: Option<Vec<u8>>,
    /// PCR8 (the image signing certificate on AWS).
    pub pcr8: Option<Vec<u8>>,
}

fn measure(label: &str, image_hash: &[u8]) -> Vec<u8> {
    let mut h = Sha384::new();
    h.update(label.as_bytes());
    h.update(image_hash);
    super::extend(&[0u8; PCR_LEN], &h.finalize())
}

/// PCR0, PCR1 and PCR2 the mock reports for an image.
pub fn mock_pcrs_for_image(image: &[u8]) -> [Vec<u8>; 3] {
    let image_hash = Sha384::digest(image);
    [
        measure("secure-pod/mock-nsm/pcr0", &image_hash),
        measure("secure-pod/mock-nsm/pcr1", &[]),
        measure("secure-pod/mock-nsm/pcr2", &image_hash),
    ]
}

/// The leaf's public key (an uncompressed P-384 point), in the form rcgen puts into a certificate.
struct LeafPublicKey(Vec<u8>);

impl PublicKeyData for LeafPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P384_SHA384
    }
}

struct Leaf {
    der: Vec<u8>,
    key: EcdsaKeyPair,
    not_after_ms: u64,
}

/// The mock NSM. See the [module documentation](self).
pub struct MockNsm {
    root_der: Vec<u8>,
    root_pem: String,
    intermediate_der: Vec<u8>,
    intermediate_key: KeyPair,
    module_id: String,
    leaf: Mutex<Option<Leaf>>,
    pcrs: Mutex<Vec<PcrState>>,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
}

impl std::fmt::Debug for MockNsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No key material in Debug output.
        f.debug_struct("MockNsm")
            .field("module_id", &self.module_id)
            .finish_non_exhaustive()
    }
}

fn crypto(e: impl std::fmt::Display) -> NsmError {
    NsmError::Crypto(e.to_string())
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> NsmError {
    NsmError::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means another thread panicked mid-update of plain data; the data is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn datetime(unix_s: i64) -> Result<time::OffsetDateTime, NsmError> {
    time::OffsetDateTime::from_unix_timestamp(unix_s).map_err(crypto)
}

fn ca_params(
    common_name: &str,
    path_len: u8,
    now_s: i64,
    lifetime_s: i64,
) -> Result<CertificateParams, NsmError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "ZZ");
    dn.push(DnType::OrganizationName, "Secure Pod local mode (NOT AWS)");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.not_before = datetime(now_s)?;
    params.not_after = datetime(now_s.saturating_add(lifetime_s))?;
    Ok(params)
}

const ROOT_CN: &str = "secure-pod.mock-nitro-enclaves root";
const INTERMEDIATE_CN: &str = "secure-pod.mock-nitro-enclaves intermediate";

/// Writes a file readable only by its owner (keys) or by everyone (certificates).
fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), NsmError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|e| state_err(path, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| state_err(path, e))
}

fn read_file(path: &Path) -> Result<String, NsmError> {
    std::fs::read_to_string(path).map_err(|e| state_err(path, e))
}

fn pem_to_der(path: &Path, pem: &str) -> Result<Vec<u8>, NsmError> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| state_err(path, "not a PEM certificate"))
}

impl MockNsm {
    /// Opens the mock whose CA lives in `state_dir`, creating the CA on first use, and measures `image` into
    /// PCR0..2.
    ///
    /// A directory with only part of the CA is an error rather than something to overwrite: a root that
    /// clients have pinned must not change behind their back.
    pub fn open(
        state_dir: &Path,
        image: &[u8],
        pcr_config: MockPcrConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, NsmError> {
        std::fs::create_dir_all(state_dir).map_err(|e| state_err(state_dir, e))?;
        let path = |name: &str| -> PathBuf { state_dir.join(name) };
        let files = [ROOT_CERT, ROOT_KEY, INTERMEDIATE_CERT, INTERMEDIATE_KEY];
        let present = files.iter().filter(|f| path(f).exists()).count();
        let now_s = i64::try_from(clock.now_ms() / 1000).map_err(crypto)?;

        if present == 0 {
            tracing::info!(dir = %state_dir.display(), "creating the mock NSM's certificate authority");
            let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(crypto)?;
            let root_params = ca_params(ROOT_CN, 1, now_s, ROOT_LIFETIME_S)?;
            let root = root_params.self_signed(&root_key).map_err(crypto)?;
            let intermediate_key =
                KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(crypto)?;
            let intermediate = ca_params(INTERMEDIATE_CN, 0, now_s, INTERMEDIATE_LIFETIME_S)?
                .signed_by(&intermediate_key, &Issuer::new(root_params, &root_key))
                .map_err(crypto)?;
            // Keys first: a crash part-way leaves an incomplete directory, which open() then refuses.
            write_file(&path(ROOT_KEY), &root_key.serialize_pem(), true)?;
            write_file(
                &path(INTERMEDIATE_KEY),
                &intermediate_key.serialize_pem(),
                true,
            )?;
            write_file(&path(INTERMEDIATE_CERT), &intermediate.pem(), false)?;
            write_file(&path(ROOT_CERT), &root.pem(), false)?;
        } else if present != files.len() {
            return Err(state_err(
                state_dir,
                "the mock CA is incomplete (some of mock-root.pem, mock-root-key.pem, mock-intermediate.pem, \
                 mock-intermediate-key.pem are missing); remove them all to start a new CA, which clients must \
                 then pin again",
            ));
        }

        let root_pem = read_file(&path(ROOT_CERT))?;
        let root_der = pem_to_der(&path(ROOT_CERT), &root_pem)?;
        let intermediate_pem = read_file(&path(INTERMEDIATE_CERT))?;
        let intermediate_der = pem_to_der(&path(INTERMEDIATE_CERT), &intermediate_pem)?;
        let intermediate_key = KeyPair::from_pem(&read_file(&path(INTERMEDIATE_KEY))?)
            .map_err(|e| state_err(&path(INTERMEDIATE_KEY), e))?;

        let [pcr0, pcr1, pcr2] = mock_pcrs_for_image(image);
        let zero = vec![0u8; PCR_LEN];
        let mut pcrs: Vec<PcrState> = (0..PCR_COUNT)
            .map(|i| PcrState {
                locked: i < FIRST_USER_PCR,
                value: zero.clone(),
            })
            .collect();
        let configured = [
            (0usize, Some(pcr0)),
            (1, Some(pcr1)),
            (2, Some(pcr2)),
            (3, pcr_config.pcr3),
            (4, pcr_config.pcr4),
            (8, pcr_config.pcr8),
        ];
        for (index, value) in configured {
            if let (Some(v), Some(slot)) = (value, pcrs.get_mut(index)) {
                if v.len() != PCR_LEN {
                    return Err(NsmError::InvalidArgument(format!(
                        "PCR{index} must be {PCR_LEN} bytes"
                    )));
                }
                slot.value = v;
            }
        }

        let rng = SystemRandom::new();
        let mut id = [0u8; 8];
        rng.fill(&mut id).map_err(crypto)?;
        Ok(Self {
            root_der,
            root_pem,
            intermediate_der,
            intermediate_key,
            module_id: format!(
                "i-mock{}-enc{}",
                hex::encode(&id[..4]),
                hex::encode(&id[4..])
            ),
            leaf: Mutex::new(None),
            pcrs: Mutex::new(pcrs),
            clock,
            rng,
        })
    }

    /// The mock root certificate, PEM: what clients pass as `--root` to trust this mock.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The mock root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The module id the mock reports.
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// PCR0..2 as a PCR file (`{"PCR0": "<hex>", ...}`), the format `attest-verify --pcrs` reads.
    pub fn pcrs_json(&self) -> String {
        let pcrs = lock(&self.pcrs);
        let mut map = serde_json::Map::new();
        for (i, p) in pcrs.iter().enumerate().take(3) {
            map.insert(format!("PCR{i}"), hex::encode(&p.value).into());
        }
        serde_json::Value::Object(map).to_string()
    }

    /// Makes a new leaf certificate and key when there is none or the current one is close to expiry.
    fn with_leaf<T>(&self, f: impl FnOnce(&Leaf) -> Result<T, NsmError>) -> Result<T, NsmError> {
        let now_ms = self.clock.now_ms();
        let mut slot = lock(&self.leaf);
        let fresh = slot
            .as_ref()
            .is_some_and(|l| l.not_after_ms.saturating_sub(LEAF_RENEW_MARGIN_MS) > now_ms);
        if !fresh {
            *slot = Some(self.new_leaf(now_ms)?);
        }
        match slot.as_ref() {
            Some(leaf) => f(leaf),
            None => Err(NsmError::Crypto("no leaf certificate".into())),
        }
    }

    fn new_leaf(&self, now_ms: u64) -> Result<Leaf, NsmError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &self.rng)
            .map_err(crypto)?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(crypto)?;
        let spki = LeafPublicKey(key.public_key().as_ref().to_vec());

        let now_s = i64::try_from(now_ms / 1000).map_err(crypto)?;
        let not_before = now_s.saturating_sub(LEAF_BACKDATE_S);
        let not_after = not_before.saturating_add(LEAF_LIFETIME_S);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "ZZ");
        dn.push(DnType::OrganizationName, "Secure Pod local mode (NOT AWS)");
        dn.push(DnType::CommonName, format!("{}.mock", self.module_id));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = datetime(not_before)?;
        params.not_after = datetime(not_after)?;

        let issuer_params = ca_params(INTERMEDIATE_CN, 0, 0, 0)?;
        let cert = params
            .signed_by(&spki, &Issuer::new(issuer_params, &self.intermediate_key))
            .map_err(crypto)?;
        Ok(Leaf {
            der: cert.der().to_vec(),
            key,
            not_after_ms: u64::try_from(not_after).unwrap_or(0).saturating_mul(1000),
        })
    }

    /// The current leaf certificate and the cabundle (`[root, intermediate]`), DER.
    pub fn certificate_chain(&self) -> Result<(Vec<u8>, Vec<Vec<u8>>), NsmError> {
        self.with_leaf(|leaf| {
            Ok((
                leaf.der.clone(),
                vec![self.root_der.clone(), self.intermediate_der.clone()],
            ))
        })
    }

    /// Wraps `payload` in a COSE_Sign1 signed by the current leaf key, whatever the payload says.
    ///
    /// This is how the mock signs its own documents; it is public so that tests can build documents that break
    /// one rule while carrying a valid signature. (The mock is not a security boundary: its root is trusted only
    /// where a caller pins it explicitly.)
    pub fn sign_payload(&self, payload: &[u8]) -> Result<Vec<u8>, NsmError> {
        const PROTECTED: [u8; 4] = [0xa1, 0x01, 0x38, 0x22]; // {1: -35}, ES384
        let mut to_sign = Encoder::new();
        to_sign
            .array(4)
            .text("Signature1")
            .bytes(&PROTECTED)
            .bytes(&[])
            .bytes(payload);
        let signature =
            self.with_leaf(|leaf| leaf.key.sign(&self.rng, to_sign.as_bytes()).map_err(crypto))?;
        let mut doc = Encoder::new();
        doc.array(4)
            .bytes(&PROTECTED)
            .map(0)
            .bytes(payload)
            .bytes(signature.as_ref());
        Ok(doc.into_bytes())
    }

    fn payload(&self, request: &AttestationRequest) -> Result<Vec<u8>, NsmError> {
        let (leaf_der, cabundle) = self.certificate_chain()?;
        let pcrs = lock(&self.pcrs).clone();
        // PCR0..15 always, like real hardware; a user PCR once it has been extended or locked.
        let zero = [0u8; PCR_LEN];
        let shown: Vec<(usize, &PcrState)> = pcrs
            .iter()
            .enumerate()
            .filter(|(i, p)| *i < usize::from(FIRST_USER_PCR) || p.locked || p.value != zero)
            .collect();
        let optional = |e: &mut Encoder, v: &Option<Vec<u8>>| match v {
            Some(b) => {
                e.bytes(b);
            }
            None => {
                e.null();
            }
        };
        let mut e = Encoder::new();
        e.map(9);
        e.text("module_id").text(&self.module_id);
        e.text("digest").text("SHA384");
        e.text("timestamp").u64(self.clock.now_ms());
        e.text("pcrs").map(shown.len() as u64);
        for (i, p) in &shown {
            e.u64(*i as u64).bytes(&p.value);
        }
        e.text("certificate").bytes(&leaf_der);
        e.text("cabundle").array(cabundle.len() as u64);
        for c in &cabundle {
            e.bytes(c);
        }
        e.text("public_key");
        optional(&mut e, &request.public_key);
        e.text("user_data");
        optional(&mut e, &request.user_data);
        e.text("nonce");
        optional(&mut e, &request.nonce);
        Ok(e.into_bytes())
    }
}

impl Nsm for MockNsm {
    fn attest(&self, request: &AttestationRequest) -> Result<Vec<u8>, NsmError> {
        request.check()?;
        let payload = self.payload(request)?;
        self.sign_payload(&payload)
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), NsmError> {
        self.rng.fill(buf).map_err(crypto)
    }

    fn describe_pcr(&self, index: u16) -> Result<PcrState, NsmError> {
        lock(&self.pcrs)
            .get(usize::from(index))
            .cloned()
            .ok_or(NsmError::InvalidIndex(index))
    }

    fn extend_pcr(&self, index: u16, data: &[u8]) -> Result<Vec<u8>, NsmError> {
        let mut pcrs = lock(&self.pcrs);
        let pcr = pcrs
            .get_mut(usize::from(index))
            .ok_or(NsmError::InvalidIndex(index))?;
        if pcr.locked {
            return Err(NsmError::ReadOnlyIndex(index));
        }
        pcr.value = super::extend(&pcr.value, data);
        Ok(pcr.value.clone())
    }

    fn lock_pcr(&self, index: u16) -> Result<(), NsmError> {
        let mut pcrs = lock(&self.pcrs);
        let pcr = pcrs
            .get_mut(usize::from(index))
            .ok_or(NsmError::InvalidIndex(index))?;
        pcr.locked = true;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "mock"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use attestation_verifier::{Error, ExpectedPcrs, Policy, UnixTime, Verifier};

    const T0: u64 = 1_780_000_000_000;

    fn mock(dir: &Path, clock: Arc<ManualClock>) -> MockNsm {
        MockNsm::open(dir, b"enclave image bytes", MockPcrConfig::default(), clock).unwrap()
    }

    fn pinned(m: &MockNsm) -> Policy {
        Policy::new(ExpectedPcrs::from_json(&m.pcrs_json()).unwrap()).unwrap()
    }

    #[test]
    fn documents_verify_against_the_mock_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let m = mock(dir.path(), clock.clone());
        let request = AttestationRequest {
            user_data: Some(b"user data".to_vec()),
            nonce: Some(vec![7; 32]),
            public_key: Some(vec![1, 2, 3]),
        };
        let doc = m.attest(&request).unwrap();
        let verifier = Verifier::with_root_pem(m.root_pem()).unwrap();
        let policy = pinned(&m)
            .nonce(vec![7; 32])
            .public_key(vec![1, 2, 3])
            .user_data(b"user data".to_vec())
            .max_age(std::time::Duration::from_secs(60));
        let v = verifier
            .verify(&doc, &policy, UnixTime::from_millis(T0))
            .unwrap();
        assert_eq!(v.module_id(), m.module_id());
        assert_eq!(v.timestamp().as_millis(), T0);
        assert_eq!(v.pcrs().count(), 16);
        assert_eq!(
            Verifier::aws_nitro()
                .verify(&doc, &policy, UnixTime::from_millis(T0))
                .unwrap_err(),
            Error::WrongRoot
        );
    }

    #[test]
    fn the_root_persists_and_the_leaf_renews() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let first = mock(dir.path(), clock.clone());
        let second = mock(dir.path(), clock.clone());
        assert_eq!(first.root_pem(), second.root_pem());
        let (leaf1, _) = first.certificate_chain().unwrap();
        // Three hours later the leaf has been replaced and documents still verify.
        clock.advance(3 * 3600 * 1000);
        let (leaf2, _) = first.certificate_chain().unwrap();
        assert_ne!(leaf1, leaf2);
        let doc = first.attest(&AttestationRequest::default()).unwrap();
        Verifier::with_root_pem(first.root_pem())
            .unwrap()
            .verify(&doc, &pinned(&first), UnixTime::from_millis(clock.now_ms()))
            .unwrap();
        // A partial CA directory is refused, not overwritten.
        std::fs::remove_file(dir.path().join(ROOT_KEY)).unwrap();
        assert!(matches!(
            MockNsm::open(dir.path(), b"x", MockPcrConfig::default(), clock),
            Err(NsmError::State { .. })
        ));
    }

    #[test]
    fn pcrs_follow_the_image_and_user_pcrs_extend_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let m = mock(dir.path(), clock);
        let [p0, p1, p2] = mock_pcrs_for_image(b"enclave image bytes");
        assert_eq!(m.describe_pcr(0).unwrap().value, p0);
        assert_eq!(m.describe_pcr(1).unwrap().value, p1);
        assert_eq!(m.describe_pcr(2).unwrap().value, p2);
        assert_ne!(mock_pcrs_for_image(b"other image")[0], p0);
        assert_eq!(mock_pcrs_for_image(b"other image")[1], p1);
        assert!(matches!(
            m.extend_pcr(0, b"x"),
            Err(NsmError::ReadOnlyIndex(0))
        ));
        let v = m.extend_pcr(16, b"boot step").unwrap();
        assert_eq!(v, crate::nsm::extend(&[0; 48], b"boot step"));
        m.lock_pcr(16).unwrap();
        assert!(matches!(
            m.extend_pcr(16, b"x"),
            Err(NsmError::ReadOnlyIndex(16))
        ));
        assert!(matches!(
            m.describe_pcr(32),
            Err(NsmError::InvalidIndex(32))
        ));
        // The extended PCR appears in documents.
        let doc = m.attest(&AttestationRequest::default()).unwrap();
        let verified = Verifier::with_root_pem(m.root_pem())
            .unwrap()
            .verify(&doc, &pinned(&m), UnixTime::from_millis(T0))
            .unwrap();
        assert_eq!(verified.pcr(16), Some(v.as_slice()));
    }

    #[test]
    fn oversize_request_fields_are_refused_like_the_real_nsm() {
        let dir = tempfile::tempdir().unwrap();
        let m = mock(dir.path(), Arc::new(ManualClock::new(T0)));
        let request = AttestationRequest {
            nonce: Some(vec![0; 513]),
            ..Default::default()
        };
        assert!(matches!(
            m.attest(&request),
            Err(NsmError::InvalidArgument(_))
        ));
        let mut buf = [0u8; 1000];
        m.fill_random(&mut buf).unwrap();
        assert!(buf.iter().any(|b| *b != 0));
    }

    #[test]
    fn pem_decoding_matches_the_der() {
        let dir = tempfile::tempdir().unwrap();
        let m = mock(dir.path(), Arc::new(ManualClock::new(T0)));
        let v = Verifier::with_root_pem(m.root_pem()).unwrap();
        assert_eq!(
            v.root_sha256(),
            <[u8; 32]>::from(sha2::Sha256::digest(m.root_der()))
        );
    }
}
