//! Who may do what: API tokens, roles and the grants that tie a role to a namespace.
//!
//! A token reads `updraft_<id>_<secret>`. The id is stored for lookup; the secret only
//! as its SHA-256 (the caller hashes: this crate does no hashing or randomness), so a
//! copy of the store yields no usable token. The secret is 238 random bits, so a fast
//! hash is enough: no password-style stretching is needed against guessing.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::validate_namespace_name;
use crate::FieldError;

pub const TOKEN_PREFIX: &str = "updraft_";
pub const TOKEN_ID_LEN: usize = 12;
pub const TOKEN_SECRET_LEN: usize = 40;
/// The id's alphabet (lower-case base32 without look-alikes is not needed: ids are
/// copied, not read aloud).
pub const TOKEN_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
pub const TOKEN_SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const MAX_TOKEN_NAME: usize = 63;
/// Enough for one grant per namespace a team would hold; bounds what a request body
/// can make the store keep per token.
pub const MAX_GRANTS: usize = 64;

/// What a token may do in a namespace it holds a grant for; `Admin` is platform-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, in every namespace: namespaces, tokens, registries, the audit log.
    Admin,
    /// Deploy, change and delete; read logs and usage; invoke.
    Developer,
    /// Read only: services, revisions, triggers, brokers, usage.
    Viewer,
    /// Invoke private services and send events; nothing else.
    Invoker,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Developer, Role::Viewer, Role::Invoker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
            Role::Invoker => "invoker",
        }
    }

    pub fn allows(self, action: Action) -> bool {
        match self {
            Role::Admin => true,
            Role::Developer => action != Action::Administer,
            Role::Viewer => action == Action::Read,
            Role::Invoker => action == Action::Invoke,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; the roles are admin, developer, viewer and invoker"))
    }
}

/// What a request does, as far as permission goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read settings and state.
    Read,
    /// Read what the instances wrote (it may hold the application's data).
    Logs,
    /// Send a request or an event to a service or broker.
    Invoke,
    /// Deploy, change or delete.
    Write,
    /// Platform-wide: namespaces, tokens, registries, audit.
    Administer,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Logs => "read the logs of",
            Action::Invoke => "invoke in",
            Action::Write => "change",
            Action::Administer => "administer",
        }
    }
}

/// A role in a namespace; an `admin` grant names no namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Grant {
    pub fn admin() -> Grant {
        Grant {
            role: Role::Admin,
            namespace: None,
        }
    }

    pub fn in_namespace(role: Role, namespace: &str) -> Grant {
        Grant {
            role,
            namespace: Some(namespace.to_string()),
        }
    }

    /// `admin`, or `ROLE=NAMESPACE` as the CLI takes it.
    pub fn parse(field: &str, text: &str) -> Result<Grant, FieldError> {
        let grant = match text.split_once('=') {
            None => Grant {
                role: text.parse().map_err(|e| FieldError::new(field, e))?,
                namespace: None,
            },
            Some((role, namespace)) => Grant {
                role: role.parse().map_err(|e| FieldError::new(field, e))?,
                namespace: Some(namespace.to_string()),
            },
        };
        validate_grants(field, std::slice::from_ref(&grant))?;
        Ok(grant)
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            None => write!(f, "{}", self.role),
            Some(ns) => write!(f, "{}={ns}", self.role),
        }
    }
}

/// A token's grants: at least one; `admin` alone and without a namespace; every other
/// role with one, at most one role per namespace.
pub fn validate_grants(field: &str, grants: &[Grant]) -> Result<(), FieldError> {
    if grants.is_empty() {
        return Err(FieldError::new(
            field,
            "is empty; give `admin` or at least one ROLE=NAMESPACE (roles: developer, viewer, invoker)",
        ));
    }
    if grants.len() > MAX_GRANTS {
        return Err(FieldError::new(
            field,
            format!("has {} grants; at most {MAX_GRANTS} are allowed", grants.len()),
        ));
    }
    let mut seen = BTreeMap::new();
    for (i, grant) in grants.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match (grant.role, &grant.namespace) {
            (Role::Admin, None) if grants.len() == 1 => {}
            (Role::Admin, None) => {
                return Err(FieldError::new(
                    at,
                    "admin already holds every role in every namespace; give it alone",
                ))
            }
            (Role::Admin, Some(_)) => {
                return Err(FieldError::new(
                    at,
                    "admin is platform-wide and takes no namespace; for one namespace give developer=NAMESPACE",
                ))
            }
            (role, None) => {
                return Err(FieldError::new(
                    at,
                    format!("{role} needs a namespace: {role}=NAMESPACE"),
                ))
            }
            (_, Some(ns)) => {
                validate_namespace_name(&format!("{at}.namespace"), ns)?;
                if let Some(previous) = seen.insert(ns.as_str(), grant.role) {
                    return Err(FieldError::new(
                        at,
                        format!("namespace {ns:?} already has the role {previous}; give one role per namespace"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A token's name: what its owner calls it (`ci`, `alice-laptop`).
pub fn validate_token_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > MAX_TOKEN_NAME {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_TOKEN_NAME} characters long"),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(FieldError::new(
            field,
            "may hold letters, digits, '-', '_', '.' and '@' only",
        ));
    }
    Ok(())
}

/// A presented token split into its id and secret.
#[derive(PartialEq, Eq)]
pub struct PresentedToken<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

impl fmt::Debug for PresentedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresentedToken({})", self.id)
    }
}

/// Splits `updraft_<id>_<secret>`, checking the lengths and alphabets before anything
/// else reads it. The error never repeats the text, which may be a real secret.
pub fn parse_token(text: &str) -> Result<PresentedToken<'_>, &'static str> {
    const MALFORMED: &str = "the token is malformed; tokens read updraft_<12 characters>_<40 characters>, as `updraft token create` prints them";
    if text.len() != TOKEN_PREFIX.len() + TOKEN_ID_LEN + 1 + TOKEN_SECRET_LEN {
        return Err(MALFORMED);
    }
    let rest = text.strip_prefix(TOKEN_PREFIX).ok_or(MALFORMED)?;
    let (id, secret) = rest.split_at(TOKEN_ID_LEN);
    let secret = secret.strip_prefix('_').ok_or(MALFORMED)?;
    if !id.bytes().all(|b| TOKEN_ID_ALPHABET.contains(&b))
        || !secret.bytes().all(|b| TOKEN_SECRET_ALPHABET.contains(&b))
    {
        return Err(MALFORMED);
    }
    Ok(PresentedToken { id, secret })
}

pub fn format_token(id: &str, secret: &str) -> String {
    format!("{TOKEN_PREFIX}{id}_{secret}")
}

/// Maps random bytes onto an alphabet without bias: a byte past the largest multiple
/// of the alphabet's size is skipped. Returns `None` when the bytes ran out first, so
/// the caller draws more.
pub fn from_random(bytes: &[u8], alphabet: &[u8], len: usize) -> Option<String> {
    let limit = 256 - 256 % alphabet.len();
    let text: String = bytes
        .iter()
        .filter(|&&b| (b as usize) < limit)
        .take(len)
        .map(|&b| alphabet[b as usize % alphabet.len()] as char)
        .collect();
    (text.len() == len).then_some(text)
}

/// A token as the store keeps it: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub grants: Vec<Grant>,
    pub created_at_us: i64,
    /// The id of the token that created it; `None` for the first admin token.
    pub created_by: Option<String>,
    pub expires_at_us: Option<i64>,
}

impl TokenRecord {
    pub fn expired(&self, now_us: i64) -> bool {
        self.expires_at_us.is_some_and(|at| at <= now_us)
    }

    /// An admin token that still authenticates: what must always remain.
    pub fn is_valid_admin(&self, now_us: i64) -> bool {
        !self.expired(now_us) && self.grants.iter().any(|g| g.role == Role::Admin)
    }
}

/// Who is calling: the token's id and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: String,
    pub token_name: String,
    pub grants: Vec<Grant>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.grants.iter().any(|g| g.role == Role::Admin)
    }

    pub fn may(&self, namespace: &str, action: Action) -> bool {
        self.grants.iter().any(|g| match &g.namespace {
            None => g.role == Role::Admin,
            Some(ns) => ns == namespace && g.role.allows(action),
        })
    }

    /// May it do `action` in at least one namespace?
    pub fn may_somewhere(&self, action: Action) -> bool {
        self.grants.iter().any(|g| g.role.allows(action))
    }

    /// The namespaces it may do `action` in, or `None` for all of them (admin).
    pub fn namespaces(&self, action: Action) -> Option<Vec<&str>> {
        if self.is_admin() {
            return None;
        }
        Some(
            self.grants
                .iter()
                .filter(|g| g.role.allows(action))
                .filter_map(|g| g.namespace.as_deref())
                .collect(),
        )
    }
}

/// One audited request: who, what, on which path, with what outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Increasing; set by the store.
    pub seq: i64,
    pub at_us: i64,
    /// `None` when the request carried no valid token.
    pub token_id: Option<String>,
    pub method: String,
    pub path: String,
    pub namespace: Option<String>,
    pub status: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(grants: &[Grant]) -> Caller {
        Caller {
            token_id: "abcdefghijkl".into(),
            token_name: "t".into(),
            grants: grants.to_vec(),
        }
    }

    #[test]
    fn roles_allow_what_the_table_says() {
        use Action::*;
        let table = [
            (Role::Admin, [true, true, true, true, true]),
            (Role::Developer, [true, true, true, true, false]),
            (Role::Viewer, [true, false, false, false, false]),
            (Role::Invoker, [false, false, true, false, false]),
        ];
        for (role, expected) in table {
            let got = [Read, Logs, Invoke, Write, Administer].map(|a| role.allows(a));
            assert_eq!(got, expected, "{role}");
        }
    }

    #[test]
    fn a_grant_reaches_its_namespace_only() {
        let dev = caller(&[Grant::in_namespace(Role::Developer, "a")]);
        assert!(dev.may("a", Action::Write));
        assert!(!dev.may("b", Action::Read));
        assert!(!dev.may("a", Action::Administer));
        assert_eq!(dev.namespaces(Action::Read), Some(vec!["a"]));
        let admin = caller(&[Grant::admin()]);
        assert!(admin.may("anything", Action::Administer));
        assert_eq!(admin.namespaces(Action::Read), None);
        let mixed = caller(&[
            Grant::in_namespace(Role::Viewer, "a"),
            Grant::in_namespace(Role::Invoker, "b"),
        ]);
        assert_eq!(mixed.namespaces(Action::Read), Some(vec!["a"]));
        assert_eq!(mixed.namespaces(Action::Invoke), Some(vec!["b"]));
        assert!(mixed.may_somewhere(Action::Invoke));
        assert!(!mixed.may_somewhere(Action::Write));
    }

    #[test]
    fn grants_are_checked_and_errors_name_the_field() {
        let ok = [
            Grant::in_namespace(Role::Developer, "a"),
            Grant::in_namespace(Role::Viewer, "b"),
        ];
        validate_grants("grants", &ok).unwrap();
        validate_grants("grants", &[Grant::admin()]).unwrap();
        let cases: [(&[Grant], &str, &str); 6] = [
            (&[], "grants", "is empty"),
            (
                &[Grant::admin(), Grant::in_namespace(Role::Viewer, "a")],
                "grants[0]",
                "alone",
            ),
            (
                &[Grant::in_namespace(Role::Admin, "a")],
                "grants[0]",
                "takes no namespace",
            ),
            (
                &[Grant {
                    role: Role::Viewer,
                    namespace: None,
                }],
                "grants[0]",
                "viewer=NAMESPACE",
            ),
            (
                &[Grant::in_namespace(Role::Viewer, "Bad_NS")],
                "grants[0].namespace",
                "DNS-1123",
            ),
            (
                &[
                    Grant::in_namespace(Role::Viewer, "a"),
                    Grant::in_namespace(Role::Developer, "a"),
                ],
                "grants[1]",
                "one role per namespace",
            ),
        ];
        for (grants, field, message) in cases {
            let err = validate_grants("grants", grants).unwrap_err();
            assert_eq!(err.field, field, "{grants:?}");
            assert!(err.message.contains(message), "{err}");
        }
        let too_many: Vec<Grant> = (0..=MAX_GRANTS)
            .map(|i| Grant::in_namespace(Role::Viewer, &format!("n{i}")))
            .collect();
        assert!(validate_grants("grants", &too_many)
            .unwrap_err()
            .message
            .contains("at most"));
    }

    #[test]
    fn grants_parse_from_the_command_line_form() {
        assert_eq!(Grant::parse("g", "admin").unwrap(), Grant::admin());
        assert_eq!(
            Grant::parse("g", "viewer=team-a").unwrap(),
            Grant::in_namespace(Role::Viewer, "team-a")
        );
        assert!(Grant::parse("g", "owner=a")
            .unwrap_err()
            .message
            .contains("the roles are admin"));
        assert!(Grant::parse("g", "developer")
            .unwrap_err()
            .message
            .contains("needs a namespace"));
        assert_eq!(Grant::in_namespace(Role::Invoker, "x").to_string(), "invoker=x");
    }

    #[test]
    fn tokens_parse_only_in_their_exact_form() {
        let id = "abcdefghij23";
        let secret = "A".repeat(TOKEN_SECRET_LEN);
        let token = format_token(id, &secret);
        assert_eq!(parse_token(&token).unwrap(), PresentedToken { id, secret: &secret });
        let malformed = [
            String::new(),
            "updraft_".into(),
            token.replace("updraft_", "updrafx_"),
            token.replace("abcdefghij23_", "abcdefghij2_3"),
            token.replace("abcdefghij23", "abcdefghij1!"),
            format!("{token}A"),
            token.replacen('A', "-", 1),
            "x".repeat(10_000),
        ];
        for text in malformed {
            let err = parse_token(&text).unwrap_err();
            assert!(!err.contains(&secret), "the error repeats the secret");
        }
    }

    #[test]
    fn random_bytes_map_onto_the_alphabet_without_bias() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = from_random(&bytes, TOKEN_SECRET_ALPHABET, 248).unwrap();
        // 248 of the 256 byte values are used: each of the 62 characters 4 times.
        for c in TOKEN_SECRET_ALPHABET {
            assert_eq!(text.bytes().filter(|b| b == c).count(), 4, "{}", *c as char);
        }
        assert_eq!(from_random(&bytes, TOKEN_SECRET_ALPHABET, 249), None);
        assert_eq!(from_random(&[255, 254, 253], TOKEN_SECRET_ALPHABET, 1), None);
        assert_eq!(from_random(&[0, 1], TOKEN_ID_ALPHABET, 2).as_deref(), Some("ab"));
    }

    #[test]
    fn token_names_are_bounded() {
        validate_token_name("name", "alice@laptop.1").unwrap();
        assert!(validate_token_name("name", "").is_err());
        assert!(validate_token_name("name", &"a".repeat(64)).is_err());
        assert!(validate_token_name("name", "a b")
            .unwrap_err()
            .message
            .contains("letters"));
    }

    #[test]
    fn expiry_is_inclusive() {
        let record = TokenRecord {
            id: "x".into(),
            name: "n".into(),
            secret_sha256: String::new(),
            grants: vec![Grant::admin()],
            created_at_us: 0,
            created_by: None,
            expires_at_us: Some(10),
        };
        assert!(!record.expired(9));
        assert!(record.expired(10));
        assert!(!TokenRecord {
            expires_at_us: None,
            ..record
        }
        .expired(i64::MAX));
    }
}
