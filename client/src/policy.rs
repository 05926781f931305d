//! The KMS key policy for a pod, rendered from the published PCR file.
//!
//! * `GenerateDataKeyPair` and `Decrypt` are allowed to the parent's role **only** with a `Recipient` attestation
//!   whose PCR0 (`kms:RecipientAttestation:ImageSha384`), PCR1 and PCR2 — and PCR8 when the image is signed — equal
//!   the published values: the pod key goes to the attested enclave and to nothing else.
//! * `Encrypt` and `ReEncrypt*` are denied to every principal, so nobody can wrap a key of their choosing under the
//!   pod's KMS key and pass it off as the sealed pod key.
//! * The role may not change the policy (`PutKeyPolicy`) or delegate through grants (`CreateGrant`).
//! * Key administration (describe, read the policy, enable/disable, schedule deletion, and the policy itself) goes to
//!   a separate administrator principal, under change control; it is given no cryptographic operation.

use serde_json::{Value, json};

/// Why a PCR file cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot render the key policy: {0}")]
pub struct PolicyError(pub String);

/// Renders the policy for `pcrs_json` (`{"PCR0": "<hex>", ...}` or nitro-cli's `{"Measurements": {...}}`).
pub fn render(pcrs_json: &str, role_arn: &str, admin_arn: &str) -> Result<Value, PolicyError> {
    let v: Value = serde_json::from_str(pcrs_json)
        .map_err(|e| PolicyError(format!("the PCR file is not JSON: {e}")))?;
    let pcrs = v.get("Measurements").unwrap_or(&v);
    let pcr = |i: u8| -> Option<String> {
        pcrs.get(format!("PCR{i}"))
            .and_then(Value::as_str)
            .map(str::to_lowercase)
    };
    let mut condition = serde_json::Map::new();
    for (i, key) in [
        (0u8, "kms:RecipientAttestation:ImageSha384".to_owned()),
        (1, "kms:RecipientAttestation:PCR1".into()),
        (2, "kms:RecipientAttestation:PCR2".into()),
    ] {
        let value = pcr(i).ok_or_else(|| PolicyError(format!("PCR{i} is missing")))?;
        if value.len() != 96 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PolicyError(format!("PCR{i} is not 48 bytes of hex")));
        }
        if value.bytes().all(|b| b == b'0') {
            return Err(PolicyError(format!(
                "PCR{i} is all zero: that is a debug-mode enclave, which protects nothing"
            )));
        }
        condition.insert(key, Value::String(value));
    }
    if let Some(p8) = pcr(8).filter(|p| !p.bytes().all(|b| b == b'0')) {
        condition.insert("kms:RecipientAttestation:PCR8".into(), Value::String(p8));
    }
    Ok(json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "EnclaveOnly", "Effect": "Allow", "Principal": {"AWS": role_arn},
             "Action": ["kms:GenerateDataKeyPair", "kms:Decrypt"], "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": condition}},
            {"Sid": "NoKeySubstitution", "Effect": "Deny", "Principal": "*",
             "Action": ["kms:Encrypt", "kms:ReEncrypt*"], "Resource": "*"},
            {"Sid": "RoleCannotChangeThePolicy", "Effect": "Deny", "Principal": {"AWS": role_arn},
             "Action": ["kms:PutKeyPolicy", "kms:CreateGrant"], "Resource": "*"},
            {"Sid": "KeyAdministration", "Effect": "Allow", "Principal": {"AWS": admin_arn},
             "Action": ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy", "kms:EnableKey", "kms:DisableKey",
                        "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:TagResource"],
             "Resource": "*"}
        ]
    }))
}
