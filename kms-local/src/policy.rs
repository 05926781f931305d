//! The subset of the AWS key-policy language that the project's rendered policies use.
//!
//! Statements with `Effect` Allow or Deny, `Action` (a string or a list; `kms:*`, `*` and trailing-`*` prefixes such
//! as `kms:ReEncrypt*` match), and `Condition` blocks with `StringEquals`, `StringEqualsIgnoreCase` and `Null`. An
//! explicit Deny wins; without a matching Allow the request is denied, as in AWS. `Principal` and `Resource` are
//! read but not evaluated: the emulator has one caller (there is no IAM), so every statement is taken to name it.
//! A condition on a key the request does not have (for example an attestation condition on a call without
//! `Recipient`) is not met, which is what makes a PCR-pinned Allow deny calls without attestation.

use serde_json::Value;
use std::collections::BTreeMap;

/// The facts a request brings to the policy: condition keys and their values.
pub type Context = BTreeMap<String, String>;

/// Why a policy document is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed key policy: {0}")]
pub struct PolicyError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    StringEquals,
    StringEqualsIgnoreCase,
    Null,
}

#[derive(Debug, Clone)]
struct Condition {
    operator: Operator,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone)]
struct Statement {
    effect: Effect,
    actions: Vec<String>,
    conditions: Vec<Condition>,
}

/// A parsed key policy.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    statements: Vec<Statement>,
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| PolicyError(format!("{what} must be strings")))
            })
            .collect(),
        Value::Bool(b) => Ok(vec![b.to_string()]),
        _ => Err(PolicyError(format!(
            "{what} must be a string or a list of strings"
        ))),
    }
}

impl KeyPolicy {
    /// Parses a policy document (JSON text).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > 32 * 1024 {
            return Err(PolicyError("larger than 32 KiB (the AWS limit)".into()));
        }
        let doc: Value = serde_json::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        let list = match doc.get("Statement") {
            Some(Value::Array(a)) => a.clone(),
            Some(s @ Value::Object(_)) => vec![s.clone()],
            _ => return Err(PolicyError("no Statement".into())),
        };
        let mut statements = Vec::new();
        for s in &list {
            let effect = match s.get("Effect").and_then(Value::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => return Err(PolicyError("Effect must be Allow or Deny".into())),
            };
            if s.get("NotAction").is_some()
                || s.get("NotPrincipal").is_some()
                || s.get("NotResource").is_some()
            {
                return Err(PolicyError(
                    "NotAction, NotPrincipal and NotResource are not supported".into(),
                ));
            }
            let actions = strings(
                s.get("Action")
                    .ok_or_else(|| PolicyError("a statement needs an Action".into()))?,
                "Action",
            )?;
            let mut conditions = Vec::new();
            if let Some(c) = s.get("Condition") {
                let ops = c
                    .as_object()
                    .ok_or_else(|| PolicyError("Condition must be an object".into()))?;
                for (op, keys) in ops {
                    let operator = match op.as_str() {
                        "StringEquals" => Operator::StringEquals,
                        "StringEqualsIgnoreCase" => Operator::StringEqualsIgnoreCase,
                        "Null" => Operator::Null,
                        other => {
                            return Err(PolicyError(format!(
                                "condition operator {other} is not supported"
                            )));
                        }
                    };
                    let keys = keys
                        .as_object()
                        .ok_or_else(|| PolicyError(format!("{op} must map keys to values")))?;
                    for (key, values) in keys {
                        conditions.push(Condition {
                            operator: operator.clone(),
                            key: key.clone(),
                            values: strings(values, "condition values")?,
                        });
                    }
                }
            }
            statements.push(Statement {
                effect,
                actions,
                conditions,
            });
        }
        Ok(Self { statements })
    }

    /// A policy allowing everything (the default for keys created without one, as AWS's default key policy
    /// allows the account).
    pub fn allow_all() -> Self {
        Self {
            statements: vec![Statement {
                effect: Effect::Allow,
                actions: vec!["kms:*".into()],
                conditions: Vec::new(),
            }],
        }
    }

    /// True when `action` (e.g. `kms:Decrypt`) is allowed with `context`.
    pub fn allows(&self, action: &str, context: &Context) -> bool {
        let applies = |s: &Statement| {
            s.actions.iter().any(|a| action_matches(a, action))
                && s.conditions.iter().all(|c| c.met(context))
        };
        if self
            .statements
            .iter()
            .any(|s| s.effect == Effect::Deny && applies(s))
        {
            return false;
        }
        self.statements
            .iter()
            .any(|s| s.effect == Effect::Allow && applies(s))
    }
}

fn action_matches(pattern: &str, action: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => action
            .to_ascii_lowercase()
            .starts_with(&prefix.to_ascii_lowercase()),
        None => pattern.eq_ignore_ascii_case(action),
    }
}

impl Condition {
    fn met(&self, context: &Context) -> bool {
        // Condition keys are case-insensitive in AWS.
        let value = context
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&self.key))
            .map(|(_, v)| v);
        match self.operator {
            Operator::Null => {
                let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
                value.is_none() == want_absent
            }
            Operator::StringEquals => value.is_some_and(|v| self.values.iter().any(|w| w == v)),
            Operator::StringEqualsIgnoreCase => {
                value.is_some_and(|v| self.values.iter().any(|w| w.eq_ignore_ascii_case(v)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: &str = r#"{
      "Version": "2012-10-17",
      "Statement": [
        {"Sid": "enclave", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/pod"},
         "Action": ["kms:Decrypt", "kms:GenerateDataKeyPair"], "Resource": "*",
         "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": "ABAB"}}},
        {"Sid": "no-wrapping", "Effect": "Deny", "Principal": "*", "Action": ["kms:Encrypt", "kms:ReEncrypt*"],
         "Resource": "*"},
        {"Sid": "admin", "Effect": "Allow", "Principal": "*", "Action": ["kms:DescribeKey", "kms:CreateKey"],
         "Resource": "*"}
      ]
    }"#;

    fn ctx(pairs: &[(&str, &str)]) -> Context {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pinned_policy_allows_only_attested_calls_and_denies_wrapping() {
        let p = KeyPolicy::parse(PINNED).unwrap();
        let attested = ctx(&[("kms:RecipientAttestation:ImageSha384", "abab")]);
        assert!(p.allows("kms:Decrypt", &attested));
        assert!(p.allows("kms:GenerateDataKeyPair", &attested));
        assert!(!p.allows("kms:Decrypt", &ctx(&[])));
        assert!(!p.allows(
            "kms:Decrypt",
            &ctx(&[("kms:RecipientAttestation:ImageSha384", "cdcd")])
        ));
        assert!(!p.allows("kms:Encrypt", &attested));
        assert!(!p.allows("kms:ReEncryptFrom", &attested));
        assert!(p.allows("kms:DescribeKey", &ctx(&[])));
        assert!(!p.allows("kms:GenerateRandom", &ctx(&[])));
    }

    #[test]
    fn null_conditions_and_malformed_policies() {
        let p = KeyPolicy::parse(
            r#"{"Statement": [{"Effect": "Allow", "Action": "kms:*"},
              {"Effect": "Deny", "Action": "kms:Decrypt",
               "Condition": {"Null": {"kms:RecipientAttestation:PCR0": "true"}}}]}"#,
        )
        .unwrap();
        assert!(!p.allows("kms:Decrypt", &ctx(&[])));
        assert!(p.allows(
            "kms:Decrypt",
            &ctx(&[("kms:RecipientAttestation:PCR0", "00")])
        ));
        for bad in [
            "not json",
            r#"{"Statement": [{"Effect": "Maybe", "Action": "kms:*"}]}"#,
            r#"{"Statement": [{"Effect": "Allow"}]}"#,
            r#"{"Statement": [{"Effect": "Allow", "Action": "kms:*", "Condition": {"NumericLessThan": {"a": "1"}}}]}"#,
            r#"{"Statement": [{"Effect": "Allow", "NotAction": "kms:Encrypt", "Action": "kms:*"}]}"#,
        ] {
            assert!(KeyPolicy::parse(bad).is_err(), "{bad}");
        }
    }
}
