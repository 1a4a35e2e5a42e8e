//! What runs a revision, by the names the store and the API have always used.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A function runtime's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    Node,
}

impl Language {
    /// `python3` or `node`, as `--runtime` names them (and their common aliases).
    pub fn parse(name: &str) -> Option<Language> {
        match name {
            "python3" | "python" => Some(Language::Python),
            "node" | "nodejs" => Some(Language::Node),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python3",
            Language::Node => "node",
        }
    }
}

/// The driver a revision runs on. Stored and shown as `process`, `oci`, `wasm`,
/// `python3` or `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RuntimeKind {
    /// A code package's own command.
    #[default]
    Process,
    /// An OCI image, run by runc.
    Oci,
    /// A `wasi:http` component, run in the server.
    Wasm,
    /// A handler served by the language's shim.
    Function(Language),
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Oci => "oci",
            RuntimeKind::Wasm => "wasm",
            RuntimeKind::Function(language) => language.name(),
        }
    }

    pub fn parse(name: &str) -> Option<RuntimeKind> {
        match name {
            "process" => Some(RuntimeKind::Process),
            "oci" => Some(RuntimeKind::Oci),
            "wasm" => Some(RuntimeKind::Wasm),
            other => Language::parse(other).map(RuntimeKind::Function),
        }
    }

    /// Whether its revisions run from an unpacked package tree (not from the image or
    /// component store).
    pub fn runs_from_package(self) -> bool {
        matches!(self, RuntimeKind::Process | RuntimeKind::Function(_))
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for RuntimeKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        RuntimeKind::parse(&name)
            .ok_or_else(|| format!("unknown runtime {name:?}; known are process, oci, wasm, python3 and node"))
    }
}

impl From<RuntimeKind> for String {
    fn from(kind: RuntimeKind) -> String {
        kind.name().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_they_were_stored() {
        for (name, kind) in [
            ("process", RuntimeKind::Process),
            ("oci", RuntimeKind::Oci),
            ("wasm", RuntimeKind::Wasm),
            ("python3", RuntimeKind::Function(Language::Python)),
            ("node", RuntimeKind::Function(Language::Node)),
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<RuntimeKind>(&format!("\"{name}\"")).unwrap(),
                kind
            );
        }
        assert_eq!(
            RuntimeKind::parse("python"),
            Some(RuntimeKind::Function(Language::Python))
        );
        let err = serde_json::from_str::<RuntimeKind>("\"cobol\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown runtime \"cobol\""), "{err}");
        assert!(RuntimeKind::Function(Language::Node).runs_from_package());
        assert!(!RuntimeKind::Oci.runs_from_package());
    }
}
