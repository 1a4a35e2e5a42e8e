//! OCI image references, checked against the distribution grammar
//! (`[registry[:port]/]path[:tag][@sha256:hex]`) so a typo is refused with the part
//! that is wrong before anything is pulled.

use crate::FieldError;

/// The `image` prefix naming an image already in the server's image store.
pub const STORED_IMAGE_PREFIX: &str = "oci:";

/// Path components: lower-case alphanumerics joined by `.`, `_`, `__` or dashes.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && matches!(bytes[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let separator = &component[start..i];
        let dashes = separator.bytes().all(|c| c == b'-');
        if !(separator == "." || separator == "_" || separator == "__" || dashes) || start == i {
            return false;
        }
    }
    true
}

/// A registry as `host[:port]`, as a reference's first component or a login names it.
pub fn valid_registry(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !host.ends_with(']') => (name, Some(port)),
        _ => (host, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Checks a registry reference; `field` names where it was written.
pub fn validate_image_reference(field: &str, image: &str) -> Result<(), FieldError> {
    let bad = |what: String| {
        FieldError::new(
            field,
            format!(
                "{image:?} is not an image reference: {what} (expected [registry[:port]/]name[:tag][@sha256:digest])"
            ),
        )
    };
    if image.len() > 4096 {
        return Err(bad("it is longer than 4096 characters".into()));
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad(format!(
                "the digest {digest:?} is not sha256:<64 lower-case hex digits>"
            )));
        }
    }
    // A tag follows the last ':' that comes after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && !tag.starts_with(['.', '-']);
        if !ok {
            return Err(bad(format!(
                "the tag {tag:?} must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
            )));
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // The first component is a registry when it looks like a host (a dot, a port, or
    // localhost), as Docker decides.
    if components.len() > 1 {
        let first = components[0];
        if first.contains(['.', ':', '[']) || first == "localhost" {
            if !valid_registry(first) {
                return Err(bad(format!("the registry {first:?} is not a host[:port]")));
            }
            components.remove(0);
        }
    }
    if name.is_empty() || components.is_empty() {
        return Err(bad("the name is empty".into()));
    }
    for component in components {
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad(format!(
                "the name part {component:?} has upper-case letters; names are lower-case"
            )));
        }
        if !valid_component(component) {
            return Err(bad(format!(
                "the name part {component:?} must be lower-case letters and digits, joined by '.', '_', '__' or '-'"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_follow_the_distribution_grammar() {
        for good in [
            "nginx",
            "library/nginx:1.25",
            "127.0.0.1:5000/web:1.2",
            "localhost:5000/team/web",
            "ghcr.io/org/app-name_x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "registry.example.com/a/b/c:v1.0-rc.1",
            "[::1]:5000/web:latest",
        ] {
            validate_image_reference("image", good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, says) in [
            ("Web:1.2", "upper-case"),
            ("127.0.0.1:5000/web:", "tag"),
            ("web:-x", "tag"),
            ("web@sha256:abc", "digest"),
            ("bad host:5000/web", "registry"),
            ("team/we b", "name part"),
            ("127.0.0.1:99999999/web", "registry"),
            ("web//x", "name part"),
            ("", "empty"),
        ] {
            let err = validate_image_reference("spec.image", bad).unwrap_err();
            assert_eq!(err.field, "spec.image");
            assert!(err.message.contains(says), "{bad}: {}", err.message);
        }
    }
}
