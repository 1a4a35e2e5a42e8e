//! Secrets: named sets of keys and values in a namespace, given to instances as
//! environment variables (Kubernetes' `env[].valueFrom.secretKeyRef`). Their names
//! and sizes follow Kubernetes'; their values never leave the server once written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::validate_namespace_name;
use crate::FieldError;

/// A secret holds at most this much, keys and values together (Kubernetes' limit).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;
/// Longest key, as in Kubernetes' `data` keys.
pub const MAX_SECRET_KEY: usize = 253;

/// Where an environment variable's value comes from: one key of a secret of the
/// revision's own namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The secret's name.
    pub name: String,
    pub key: String,
}

impl SecretKeyRef {
    /// Parses `secret/key`, as `--env-secret NAME=secret/key` takes it.
    pub fn parse(field: &str, text: &str) -> Result<SecretKeyRef, FieldError> {
        let Some((name, key)) = text.split_once('/') else {
            return Err(FieldError::new(
                field,
                format!("{text:?} is not secret/key (the secret's name, a slash, one of its keys)"),
            ));
        };
        let reference = SecretKeyRef {
            name: name.to_string(),
            key: key.to_string(),
        };
        reference.validate(field)?;
        Ok(reference)
    }

    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        validate_secret_name(&format!("{field}.name"), &self.name)?;
        validate_secret_key(&format!("{field}.key"), &self.key)
    }
}

/// A DNS-1123 label, like a namespace: secrets are named in paths and references.
pub fn validate_secret_name(field: &str, name: &str) -> Result<(), FieldError> {
    validate_namespace_name(field, name)
}

/// Kubernetes' rule for `data` keys: letters, digits, '-', '_' and '.'.
pub fn validate_secret_key(field: &str, key: &str) -> Result<(), FieldError> {
    if key.is_empty() || key.len() > MAX_SECRET_KEY {
        return Err(FieldError::new(
            field,
            format!("{key:?} must be 1 to {MAX_SECRET_KEY} characters long"),
        ));
    }
    if key == "." || key == ".." || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return Err(FieldError::new(
            field,
            format!("{key:?} may hold only letters, digits, '-', '_' and '.' (and is not . or ..)"),
        ));
    }
    Ok(())
}

/// Checks a secret's keys and its size before it is sealed.
pub fn validate_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<(), FieldError> {
    if data.is_empty() {
        return Err(FieldError::new("data", "is empty; a secret holds at least one key"));
    }
    let mut total = 0;
    for (key, value) in data {
        validate_secret_key(&format!("data[{key}]"), key)?;
        total += key.len() + value.len();
    }
    if total > MAX_SECRET_BYTES {
        return Err(FieldError::new(
            "data",
            format!("holds {total} bytes; a secret holds at most {MAX_SECRET_BYTES}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_name_the_bad_part() {
        let r = SecretKeyRef::parse("env_secrets[DB]", "db/password").unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("db", "password"));
        for (text, field) in [
            ("db", "env_secrets[DB]"),
            ("DB/password", "env_secrets[DB].name"),
            ("db/", "env_secrets[DB].key"),
            ("db/pass word", "env_secrets[DB].key"),
            ("db/..", "env_secrets[DB].key"),
        ] {
            let e = SecretKeyRef::parse("env_secrets[DB]", text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    #[test]
    fn secret_data_is_bounded_and_keyed() {
        let one = |k: &str, n: usize| BTreeMap::from([(k.to_string(), vec![b'x'; n])]);
        assert!(validate_secret_data(&one("tls.key", 10)).is_ok());
        assert_eq!(validate_secret_data(&BTreeMap::new()).unwrap_err().field, "data");
        assert_eq!(validate_secret_data(&one("a/b", 1)).unwrap_err().field, "data[a/b]");
        let big = validate_secret_data(&one("k", MAX_SECRET_BYTES)).unwrap_err();
        assert!(big.message.contains("at most 1048576"), "{big}");
    }
}
