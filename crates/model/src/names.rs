//! Names of services and namespaces. They become DNS labels in the gateway's host
//! names, so they follow the same rules Knative and Kubernetes apply.

use crate::FieldError;

/// Longest service name: a revision name `{service}-00001` must still fit in a
/// 63-character DNS label, as in Knative.
pub const MAX_SERVICE_NAME: usize = 57;
pub const MAX_NAMESPACE_NAME: usize = 63;
/// The rules below as the API's schema gives them to clients.
pub const SERVICE_NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
pub const NAMESPACE_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// DNS-1035 label: lower-case letters, digits and '-', starting with a letter and
/// ending with a letter or digit.
pub fn validate_service_name(field: &str, name: &str) -> Result<(), FieldError> {
    validate_label(field, name, MAX_SERVICE_NAME, true)
}

/// DNS-1123 label: like a service name but may start with a digit.
pub fn validate_namespace_name(field: &str, name: &str) -> Result<(), FieldError> {
    validate_label(field, name, MAX_NAMESPACE_NAME, false)
}

fn validate_label(field: &str, name: &str, max: usize, letter_first: bool) -> Result<(), FieldError> {
    let rule = if letter_first {
        "must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter and ending with a letter or digit"
    } else {
        "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit"
    };
    if name.is_empty() {
        return Err(FieldError::new(field, format!("is empty; it {rule}")));
    }
    if name.len() > max {
        return Err(FieldError::new(
            field,
            format!("{name:?} is {} characters long; at most {max} allowed", name.len()),
        ));
    }
    let bytes = name.as_bytes();
    let first_ok = if letter_first {
        bytes[0].is_ascii_lowercase()
    } else {
        bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit()
    };
    let last = bytes[bytes.len() - 1];
    let body_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if first_ok && body_ok && last != b'-' {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("{name:?} {rule}")))
    }
}

/// Knative's revision naming: `{service}-{generation:05}`.
pub fn revision_name(service: &str, generation: u32) -> String {
    format!("{service}-{generation:05}")
}

/// Environment variable names the platform sets itself (the instance contract).
pub const RESERVED_ENV: &[&str] = &[
    "PORT",
    "K_SERVICE",
    "K_REVISION",
    "K_CONFIGURATION",
    "UPDRAFT_SERVICE",
    "UPDRAFT_REVISION",
    "UPDRAFT_NAMESPACE",
];

pub fn validate_env_name(field: &str, name: &str) -> Result<(), FieldError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(FieldError::new(
            field,
            format!("{name:?} is not a valid variable name: letters, digits and '_', not starting with a digit"),
        ));
    }
    if RESERVED_ENV.contains(&name) {
        return Err(FieldError::new(
            field,
            format!("{name} is set by the platform and cannot be overridden"),
        ));
    }
    Ok(())
}

/// The kernel's limit on one `NAME=value` string passed to exec (`MAX_ARG_STRLEN`).
pub const MAX_ENV_BYTES: usize = 128 * 1024;

/// A variable as the instance will get it: a valid name, and a value exec can pass on
/// (no NUL byte, which would end it early, and within the kernel's length limit).
pub fn validate_env_var(field: &str, name: &str, value: &str) -> Result<(), FieldError> {
    validate_env_name(field, name)?;
    if value.contains('\0') {
        return Err(FieldError::new(
            field,
            "contains a NUL byte, which no environment variable can hold",
        ));
    }
    if name.len() + 1 + value.len() > MAX_ENV_BYTES {
        return Err(FieldError::new(
            field,
            format!(
                "is {} bytes long; a variable holds at most {MAX_ENV_BYTES} (the kernel's limit)",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Accepts `sha256:` followed by 64 lower-case hex digits.
pub fn validate_digest(field: &str, digest: &str) -> Result<String, FieldError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(digest.to_string())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{digest:?} is not a package digest; expected sha256:<64 hex digits> as returned by the package upload"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_dns_1035() {
        for ok in ["hello", "a", "my-app-2", &"a".repeat(57)] {
            assert!(validate_service_name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Hello", "1app", "app-", "my_app", "a.b", &"a".repeat(58)] {
            let err = validate_service_name("name", bad).unwrap_err();
            assert_eq!(err.field, "name");
        }
    }

    #[test]
    fn namespace_may_start_with_digit() {
        assert!(validate_namespace_name("namespace", "1team").is_ok());
        assert!(validate_namespace_name("namespace", "team-").is_err());
    }

    #[test]
    fn revision_names_are_knative_style() {
        assert_eq!(revision_name("hello", 1), "hello-00001");
        assert_eq!(revision_name("hello", 123456), "hello-123456");
    }

    #[test]
    fn env_names_are_checked_and_reserved_names_refused() {
        assert!(validate_env_name("env", "GREETING").is_ok());
        assert!(validate_env_name("env", "_x1").is_ok());
        assert!(validate_env_name("env", "1X").is_err());
        assert!(validate_env_name("env", "A-B").is_err());
        let err = validate_env_name("env.PORT", "PORT").unwrap_err();
        assert!(err.message.contains("set by the platform"));
    }

    #[test]
    fn env_values_exec_cannot_pass_are_refused() {
        assert!(validate_env_var("env.A", "A", "a value with spaces and ü").is_ok());
        let nul = validate_env_var("env.A", "A", "before\0after").unwrap_err();
        assert_eq!(nul.field, "env.A");
        assert!(nul.message.contains("NUL"), "{nul}");
        assert!(validate_env_var("env.A", "A", &"x".repeat(MAX_ENV_BYTES)).is_err());
        assert!(validate_env_var("env.A", "A", &"x".repeat(MAX_ENV_BYTES - 2)).is_ok());
        assert!(validate_env_var("env.1", "1", "v").is_err(), "the name is checked too");
    }
}
