//! The KMS key policy for a pod, rendered from the published PCR file.
//!
//! * `GenerateDataKeyPair` and `Decrypt` are allowed to the parent's role **only** with a `Recipient` attestation
//!   whose PCR0 (`kms:RecipientAttestation:ImageSha384`), PCR1 and PCR2 — and PCR8 when the image is signed — equal
//!   the published values: the pod key goes to the attested enclave and to nothing else.
//! * During a rotation, a second PCR file (the image that moves documents to this key) may be allowed `Decrypt`
//!   only (`RotationSource`): the old image unseals the new pod key but never generates one under this KMS key.
//! * `Encrypt` and `ReEncrypt*` are denied to every principal, so nobody can wrap a key of their choosing under the
//!   pod's KMS key and pass it off as the sealed pod key.
//! * The role may not change the policy (`PutKeyPolicy`) or delegate through grants (`CreateGrant`).
//! * Key administration (describe, read the policy, enable/disable, schedule deletion, and the policy itself) goes to
//!   a separate administrator principal, under change control; it is given no cryptographic operation.

use serde_json::{Map, Value, json};

/// Why a PCR file cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot render the key policy: {0}")]
pub struct PolicyError(pub String);

/// Renders the policy for an AWS KMS key.
///
/// `pcrs_json` is the PCR file (`{"PCR0": "<hex>", ...}` or nitro-cli's `{"Measurements": {...}}`) of the image
/// that generates and unseals the pod key under this KMS key. `rotation_source_pcrs`, during a rotation, is the PCR
/// file of the image that moves documents to the key: it is allowed `kms:Decrypt` only. `role_arn` is the parent
/// instance's IAM role (or user), `admin_arn` the key administrator (an IAM role, user or the account root); both
/// must be exact ARNs, and they must differ.
pub fn render_for_aws(
    pcrs_json: &str,
    rotation_source_pcrs: Option<&str>,
    role_arn: &str,
    admin_arn: &str,
) -> Result<Value, PolicyError> {
    check_principal("role", role_arn, false)?;
    check_principal("administrator", admin_arn, true)?;
    if role_arn.eq_ignore_ascii_case(admin_arn) {
        return Err(PolicyError(format!(
            "the role and the administrator are the same principal ({role_arn}): the instance role must not \
             administer the key, or it could rewrite the policy"
        )));
    }
    let condition = conditions(pcrs_json)?;
    let source = match rotation_source_pcrs {
        None => None,
        Some(text) => {
            let source = conditions(text)
                .map_err(|PolicyError(e)| PolicyError(format!("the rotation source: {e}")))?;
            if source == condition {
                return Err(PolicyError(
                    "the rotation source PCR file names the same image as --pcrs; leave it out"
                        .into(),
                ));
            }
            Some(source)
        }
    };
    let mut policy = statements(condition, role_arn, admin_arn);
    if let (Some(source), Some(list)) = (
        source,
        policy.get_mut("Statement").and_then(Value::as_array_mut),
    ) {
        list.insert(
            1,
            json!({"Sid": "RotationSource", "Effect": "Allow", "Principal": {"AWS": role_arn},
                   "Action": ["kms:Decrypt"], "Resource": "*",
                   "Condition": {"StringEqualsIgnoreCase": source}}),
        );
    }
    Ok(policy)
}

/// The same policy without checking the principals or adding a rotation source: for kms-local, whose single caller
/// is `*` (local mode). A policy for AWS is rendered by [`render_for_aws`].
pub fn render(pcrs_json: &str, role_arn: &str, admin_arn: &str) -> Result<Value, PolicyError> {
    Ok(statements(conditions(pcrs_json)?, role_arn, admin_arn))
}

/// The attestation conditions for a PCR file: PCR0..2 (48 bytes of hex, not all zero) and PCR8 when present and
/// not zero, lowercased.
fn conditions(pcrs_json: &str) -> Result<Map<String, Value>, PolicyError> {
    let v: Value = serde_json::from_str(pcrs_json)
        .map_err(|e| PolicyError(format!("the PCR file is not JSON: {e}")))?;
    let pcrs = v.get("Measurements").unwrap_or(&v);
    let pcr = |i: u8| -> Option<String> {
        pcrs.get(format!("PCR{i}"))
            .and_then(Value::as_str)
            .map(str::to_lowercase)
    };
    let mut condition = Map::new();
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
        if p8.len() != 96 || !p8.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PolicyError("PCR8 is not 48 bytes of hex".into()));
        }
        condition.insert("kms:RecipientAttestation:PCR8".into(), Value::String(p8));
    }
    Ok(condition)
}

fn statements(condition: Map<String, Value>, role_arn: &str, admin_arn: &str) -> Value {
    json!({
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
    })
}

/// Checks that `arn` names one IAM principal: `arn:aws[-partition]:iam::<12-digit account>:role/<name>` or
/// `user/<name>` (a name may carry a path, `role/path/name`), and with `root_allowed` also `...:root`.
fn check_principal(what: &str, arn: &str, root_allowed: bool) -> Result<(), PolicyError> {
    let expected = if root_allowed {
        "arn:aws:iam::<12-digit account>:role/<name>, :user/<name> or :root"
    } else {
        "arn:aws:iam::<12-digit account>:role/<name> or :user/<name>"
    };
    if arn.contains('*') {
        return Err(PolicyError(format!(
            "the {what} ARN {arn:?} contains `*`: the policy must name one principal, not a pattern"
        )));
    }
    let bad = || {
        PolicyError(format!(
            "the {what} ARN {arn:?} is not of the form {expected}"
        ))
    };
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    // `aws`, or `aws-` and a suffix (aws-cn, aws-us-gov, aws-iso-b, ...): not `awsx`.
    let partition_ok = partition == "aws"
        || partition.strip_prefix("aws-").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        });
    if !partition_ok || account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if resource == "root" {
        return if root_allowed {
            Ok(())
        } else {
            Err(PolicyError(format!(
                "the {what} ARN {arn:?} is an account root; name the parent instance's role"
            )))
        };
    }
    let name = resource
        .strip_prefix("role/")
        .or_else(|| resource.strip_prefix("user/"))
        .ok_or_else(bad)?;
    let name_ok = name.split('/').all(|segment| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
    });
    if name_ok { Ok(()) } else { Err(bad()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::111122223333:role/pod-parent";
    const ADMIN: &str = "arn:aws:iam::111122223333:role/key-admin";

    fn pcr_file(byte: &str, signed: bool) -> (String, Map<String, Value>) {
        let hex = |n: u8| format!("{byte}{n}").repeat(48);
        let mut file = format!(
            r#""PCR0": "{}", "PCR1": "{}", "PCR2": "{}""#,
            hex(0),
            hex(1),
            hex(2)
        );
        let mut expected = Map::new();
        expected.insert("kms:RecipientAttestation:ImageSha384".into(), hex(0).into());
        expected.insert("kms:RecipientAttestation:PCR1".into(), hex(1).into());
        expected.insert("kms:RecipientAttestation:PCR2".into(), hex(2).into());
        if signed {
            file.push_str(&format!(r#", "PCR8": "{}""#, hex(8)));
            expected.insert("kms:RecipientAttestation:PCR8".into(), hex(8).into());
        }
        (
            format!(r#"{{"Measurements": {{"HashAlgorithm": "Sha384 {{ ... }}", {file}}}}}"#),
            expected,
        )
    }

    fn statement<'a>(policy: &'a Value, sid: &str) -> Option<&'a Value> {
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
    }

    fn refusal(role: &str, admin: &str) -> String {
        let (file, _) = pcr_file("a", false);
        render_for_aws(&file, None, role, admin).unwrap_err().0
    }

    #[test]
    fn exact_principals_are_accepted() {
        let (file, expected) = pcr_file("a", true);
        for (role, admin) in [
            (ROLE, ADMIN),
            (ROLE, "arn:aws:iam::111122223333:root"),
            (
                "arn:aws-us-gov:iam::111122223333:role/ops/pod-parent",
                "arn:aws-us-gov:iam::444455556666:user/alice@example.com",
            ),
        ] {
            let policy = render_for_aws(&file, None, role, admin).unwrap();
            let enclave = statement(&policy, "EnclaveOnly").unwrap();
            assert_eq!(enclave["Principal"]["AWS"], role);
            assert_eq!(
                enclave["Condition"]["StringEqualsIgnoreCase"],
                Value::Object(expected.clone())
            );
            assert_eq!(
                statement(&policy, "KeyAdministration").unwrap()["Principal"]["AWS"],
                admin
            );
            assert!(statement(&policy, "RotationSource").is_none());
        }
    }

    #[test]
    fn wildcards_are_refused() {
        assert!(refusal("*", ADMIN).contains("`*`"));
        assert!(refusal(ROLE, "*").contains("`*`"));
        assert!(refusal("arn:aws:iam::111122223333:role/*", ADMIN).contains("`*`"));
        assert!(refusal(ROLE, "arn:aws:iam::*:root").contains("`*`"));
    }

    #[test]
    fn malformed_arns_are_refused() {
        for role in [
            "",
            "pod-parent",
            "arn:aws:iam::111122223333:group/ops",
            "arn:aws:iam::11112222333:role/pod-parent",
            "arn:aws:iam::1111222233334:role/pod-parent",
            "arn:aws:iam::11112222333x:role/pod-parent",
            "arn:aws:iam:us-east-1:111122223333:role/pod-parent",
            "arn:aws:sts::111122223333:assumed-role/pod-parent/i-0123",
            "arn:aws:kms:us-east-1:111122223333:key/abcd",
            "arn:gcp:iam::111122223333:role/pod-parent",
            "arn:AWS:iam::111122223333:role/pod-parent",
            "arn:awsx:iam::111122223333:role/pod-parent",
            "arn:aws-:iam::111122223333:role/pod-parent",
            "arn:aws:iam::111122223333:role/",
            "arn:aws:iam::111122223333:role/ops//pod-parent",
            "arn:aws:iam::111122223333:role/pod parent",
            "arn:aws:iam::111122223333:role/pod-parent:x",
        ] {
            let e = refusal(role, ADMIN);
            assert!(
                e.contains("role ARN") && e.contains("not of the form"),
                "{role}: {e}"
            );
        }
        let e = refusal(ROLE, "arn:aws:iam::111122223333:group/admins");
        assert!(e.contains("administrator ARN"), "{e}");
    }

    #[test]
    fn the_account_root_may_administer_but_is_not_the_role() {
        let e = refusal("arn:aws:iam::111122223333:root", ADMIN);
        assert!(e.contains("account root"), "{e}");
    }

    #[test]
    fn the_role_may_not_administer_the_key() {
        let e = refusal(ROLE, ROLE);
        assert!(e.contains("same principal"), "{e}");
        let e = refusal(ROLE, "arn:aws:iam::111122223333:role/POD-PARENT");
        assert!(e.contains("same principal"), "{e}");
    }

    #[test]
    fn the_rotation_source_may_only_decrypt_under_its_own_pcrs() {
        let (new, new_pcrs) = pcr_file("a", true);
        let (old, old_pcrs) = pcr_file("b", false);
        let policy = render_for_aws(&new, Some(&old), ROLE, ADMIN).unwrap();
        let enclave = statement(&policy, "EnclaveOnly").unwrap();
        assert_eq!(
            enclave["Condition"],
            json!({"StringEqualsIgnoreCase": new_pcrs})
        );
        let source = statement(&policy, "RotationSource").unwrap();
        assert_eq!(source["Effect"], "Allow");
        assert_eq!(source["Principal"], json!({"AWS": ROLE}));
        assert_eq!(source["Action"], json!(["kms:Decrypt"]));
        assert_eq!(
            source["Condition"],
            json!({"StringEqualsIgnoreCase": old_pcrs})
        );
        // Everything else is the policy without the rotation source.
        let mut without = policy.clone();
        without["Statement"]
            .as_array_mut()
            .unwrap()
            .retain(|s| s["Sid"] != "RotationSource");
        assert_eq!(without, render_for_aws(&new, None, ROLE, ADMIN).unwrap());
        // The role may generate only under the main PCR file.
        let generating: Vec<_> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["Effect"] == "Allow"
                    && s["Action"]
                        .as_array()
                        .is_some_and(|a| a.contains(&json!("kms:GenerateDataKeyPair")))
            })
            .collect();
        assert_eq!(generating, vec![enclave]);
    }

    #[test]
    fn the_rotation_source_pcr_file_is_checked_like_the_main_one() {
        let (new, _) = pcr_file("a", false);
        let zeros = "00".repeat(48);
        let debug = format!(r#"{{"PCR0": "{zeros}", "PCR1": "{zeros}", "PCR2": "{zeros}"}}"#);
        for (source, words) in [
            (debug.as_str(), "debug-mode"),
            (r#"{"PCR0": "11"}"#, "PCR0 is not 48 bytes"),
            ("not json", "not JSON"),
        ] {
            let e = render_for_aws(&new, Some(source), ROLE, ADMIN)
                .unwrap_err()
                .0;
            assert!(e.contains("rotation source") && e.contains(words), "{e}");
        }
        let e = render_for_aws(&new, Some(&new), ROLE, ADMIN).unwrap_err().0;
        assert!(e.contains("same image"), "{e}");
    }

    #[test]
    fn a_malformed_pcr8_is_refused() {
        let (file, _) = pcr_file("a", false);
        let file = file.replacen("\"PCR0\"", "\"PCR8\": \"88\", \"PCR0\"", 1);
        let e = render_for_aws(&file, None, ROLE, ADMIN).unwrap_err().0;
        assert!(e.contains("PCR8"), "{e}");
    }
}
