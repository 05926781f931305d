//! The rendered KMS key policy: it names exactly the published PCRs, and kms-local's policy engine (the same
//! evaluation the pod's KMS key gets in local mode) allows the attested enclave and nothing else.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use kms_local::policy::{Context, KeyPolicy};

const ROLE: &str = "arn:aws:iam::111122223333:role/pod-parent";
const ADMIN: &str = "arn:aws:iam::111122223333:role/key-admin";

fn pcrs() -> (String, [String; 4]) {
    let v = [
        "11".repeat(48),
        "22".repeat(48),
        "33".repeat(48),
        "88".repeat(48),
    ];
    (
        format!(
            r#"{{"PCR0": "{}", "PCR1": "{}", "PCR2": "{}", "PCR8": "{}"}}"#,
            v[0], v[1], v[2], v[3]
        ),
        v,
    )
}

fn ctx(pcr0: &str, pcr1: &str, pcr2: &str, pcr8: &str) -> Context {
    [
        ("kms:RecipientAttestation:ImageSha384", pcr0),
        ("kms:RecipientAttestation:PCR0", pcr0),
        ("kms:RecipientAttestation:PCR1", pcr1),
        ("kms:RecipientAttestation:PCR2", pcr2),
        ("kms:RecipientAttestation:PCR8", pcr8),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn the_policy_names_exactly_the_published_pcrs() {
    let (file, v) = pcrs();
    let policy = pod_client::policy::render(&file, ROLE, ADMIN).unwrap();
    let cond = &policy["Statement"][0]["Condition"]["StringEqualsIgnoreCase"];
    assert_eq!(cond["kms:RecipientAttestation:ImageSha384"], v[0]);
    assert_eq!(cond["kms:RecipientAttestation:PCR1"], v[1]);
    assert_eq!(cond["kms:RecipientAttestation:PCR2"], v[2]);
    assert_eq!(cond["kms:RecipientAttestation:PCR8"], v[3]);
    assert_eq!(cond.as_object().unwrap().len(), 4);
    // nitro-cli's own output format renders the same.
    let nitro = format!(r#"{{"Measurements": {}}}"#, file);
    assert_eq!(
        pod_client::policy::render(&nitro, ROLE, ADMIN).unwrap(),
        policy
    );
    // No statement allows the role anything without conditions.
    for st in policy["Statement"].as_array().unwrap() {
        if st["Effect"] == "Allow" && st["Principal"]["AWS"] == ROLE {
            assert!(st.get("Condition").is_some());
        }
    }
}

#[test]
fn the_policy_releases_the_key_to_the_attested_image_only() {
    let (file, v) = pcrs();
    let text = pod_client::policy::render(&file, ROLE, ADMIN)
        .unwrap()
        .to_string();
    let p = KeyPolicy::parse(&text).unwrap();
    let good = ctx(&v[0], &v[1], &v[2], &v[3]);
    assert!(p.allows("kms:GenerateDataKeyPair", &good));
    assert!(p.allows("kms:Decrypt", &good));
    // One wrong PCR, or no attestation at all: nothing.
    assert!(!p.allows("kms:Decrypt", &ctx(&"12".repeat(48), &v[1], &v[2], &v[3])));
    assert!(!p.allows("kms:Decrypt", &ctx(&v[0], &"00".repeat(48), &v[2], &v[3])));
    assert!(!p.allows("kms:Decrypt", &ctx(&v[0], &v[1], &v[2], &"99".repeat(48))));
    assert!(!p.allows("kms:Decrypt", &Context::new()));
    // Nobody wraps a key of their own, even with a valid attestation.
    assert!(!p.allows("kms:Encrypt", &good));
    assert!(!p.allows("kms:ReEncryptFrom", &good));
    assert!(!p.allows("kms:ReEncryptTo", &good));
}

#[test]
fn debug_and_incomplete_pcr_files_are_refused() {
    let zeros = "00".repeat(48);
    let debug = format!(r#"{{"PCR0": "{zeros}", "PCR1": "{zeros}", "PCR2": "{zeros}"}}"#);
    assert!(
        pod_client::policy::render(&debug, ROLE, ADMIN)
            .unwrap_err()
            .0
            .contains("debug")
    );
    assert!(pod_client::policy::render(r#"{"PCR0": "11"}"#, ROLE, ADMIN).is_err());
    assert!(pod_client::policy::render("not json", ROLE, ADMIN).is_err());
}
