//! What a code package needs built before it runs, read from its files: its Python
//! or Node dependencies, installed into a layer beside the package and cached by what
//! decides their content, and the custom `build:` command of `updraft.yaml`.

use crate::package::PackageFiles;
use crate::FieldError;

/// Dependencies installed into a layer the revision's instances see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dependencies {
    /// `pip install --target` of these requirement lines.
    Python { requirements: String, from: &'static str },
    /// `npm ci` with the lockfile, else `npm install --omit=dev`, of `package.json`.
    Node { manifest: String, lockfile: Option<String> },
}

impl Dependencies {
    /// The interpreter whose version a layer is built for and cached by.
    pub fn interpreter(&self) -> &'static str {
        match self {
            Dependencies::Python { .. } => "python3",
            Dependencies::Node { .. } => "node",
        }
    }

    /// Everything the layer's content follows from, besides the interpreter's version:
    /// a change to any of it builds a new layer.
    pub fn cache_input(&self) -> String {
        match self {
            Dependencies::Python { requirements, .. } => format!("python\n{requirements}"),
            Dependencies::Node { manifest, lockfile } => {
                format!("node\n{manifest}\n{}", lockfile.as_deref().unwrap_or(""))
            }
        }
    }

    /// What the user sees the build step as.
    pub fn describe(&self) -> String {
        match self {
            Dependencies::Python { from, .. } => format!("pip install of {from}"),
            Dependencies::Node { lockfile: Some(_), .. } => "npm ci (package-lock.json)".to_string(),
            Dependencies::Node { lockfile: None, .. } => "npm install --omit=dev (package.json)".to_string(),
        }
    }
}

/// Lines of a requirements file that are not comments or blank.
fn has_requirements(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    })
}

/// The dependencies the package declares and does not ship, in the order they build.
pub fn dependencies(files: &dyn PackageFiles) -> Result<Vec<Dependencies>, FieldError> {
    let mut found = Vec::new();
    if let Some(text) = files.read("requirements.txt") {
        if has_requirements(&text) {
            found.push(Dependencies::Python {
                requirements: text,
                from: "requirements.txt",
            });
        }
    } else if let Some(text) = files.read("pyproject.toml") {
        let requirements = pyproject_dependencies(&text)?;
        if !requirements.is_empty() {
            found.push(Dependencies::Python {
                requirements: requirements.join("\n") + "\n",
                from: "pyproject.toml",
            });
        }
    }
    if let Some(manifest) = files.read("package.json") {
        let json: serde_json::Value = serde_json::from_str(&manifest)
            .map_err(|e| FieldError::new("package.json", format!("is not valid JSON: {e}")))?;
        let declares = json
            .get("dependencies")
            .and_then(|d| d.as_object())
            .is_some_and(|d| !d.is_empty());
        if declares && !files.has_dir("node_modules") {
            let lockfile = files
                .read("package-lock.json")
                .or_else(|| files.read("npm-shrinkwrap.json"));
            found.push(Dependencies::Node { manifest, lockfile });
        }
    }
    Ok(found)
}

/// `[project] dependencies` of a pyproject.toml (PEP 621).
fn pyproject_dependencies(text: &str) -> Result<Vec<String>, FieldError> {
    let document: toml::Table =
        toml::from_str(text).map_err(|e| FieldError::new("pyproject.toml", format!("is not valid TOML: {e}")))?;
    let Some(dependencies) = document.get("project").and_then(|p| p.get("dependencies")) else {
        return Ok(Vec::new());
    };
    let list = dependencies.as_array().ok_or_else(|| {
        FieldError::new(
            "pyproject.toml: project.dependencies",
            "is not a list of requirement strings",
        )
    })?;
    list.iter()
        .map(|d| {
            d.as_str().map(str::to_string).ok_or_else(|| {
                FieldError::new(
                    "pyproject.toml: project.dependencies",
                    format!("{d} is not a requirement string such as \"flask>=3\""),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::Files;

    fn deps(files: Vec<(&'static str, &'static str)>) -> Result<Vec<Dependencies>, FieldError> {
        dependencies(&Files(files))
    }

    #[test]
    fn requirements_come_from_requirements_txt_else_pyproject() {
        let found = deps(vec![
            ("requirements.txt", "# web\nflask==3.0.3\n"),
            ("pyproject.toml", "[project]\ndependencies = [\"django\"]\n"),
        ])
        .unwrap();
        assert_eq!(
            found,
            [Dependencies::Python {
                requirements: "# web\nflask==3.0.3\n".into(),
                from: "requirements.txt"
            }]
        );
        let found = deps(vec![(
            "pyproject.toml",
            "[project]\nname = \"x\"\ndependencies = [\"flask>=3\", \"gunicorn\"]\n",
        )])
        .unwrap();
        assert_eq!(found[0].cache_input(), "python\nflask>=3\ngunicorn\n");
        assert_eq!(found[0].describe(), "pip install of pyproject.toml");
    }

    #[test]
    fn nothing_to_install_builds_nothing() {
        assert!(deps(vec![("requirements.txt", "\n# none yet\n"), ("main.py", "")])
            .unwrap()
            .is_empty());
        assert!(deps(vec![("pyproject.toml", "[tool.black]\nline-length = 100\n")])
            .unwrap()
            .is_empty());
        assert!(deps(vec![("package.json", r#"{"main":"a.js","dependencies":{}}"#)])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn node_uses_the_lockfile_and_skips_shipped_node_modules() {
        let manifest = r#"{"main":"a.js","dependencies":{"express":"^4"}}"#;
        let found = deps(vec![("package.json", manifest), ("package-lock.json", "{}")]).unwrap();
        assert_eq!(found[0].describe(), "npm ci (package-lock.json)");
        assert_eq!(found[0].interpreter(), "node");
        let found = deps(vec![("package.json", manifest)]).unwrap();
        assert_eq!(found[0].describe(), "npm install --omit=dev (package.json)");
        assert!(deps(vec![("package.json", manifest), ("node_modules", "/")])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_change_to_what_decides_the_layer_changes_its_cache_input() {
        let manifest = r#"{"dependencies":{"express":"^4"}}"#;
        let locked = deps(vec![("package.json", manifest), ("package-lock.json", "{\"v\":1}")]).unwrap();
        let relocked = deps(vec![("package.json", manifest), ("package-lock.json", "{\"v\":2}")]).unwrap();
        assert_ne!(locked[0].cache_input(), relocked[0].cache_input());
        let python = deps(vec![("requirements.txt", "flask\n")]).unwrap();
        assert_ne!(python[0].cache_input(), locked[0].cache_input());
    }

    #[test]
    fn hostile_manifests_are_refused_not_followed_down() {
        let deep_toml = format!(
            "[project]\ndependencies = {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = deps(vec![("pyproject.toml", Box::leak(deep_toml.into_boxed_str()))]).unwrap_err();
        assert_eq!(err.field, "pyproject.toml");
        let deep_json = format!("{{\"dependencies\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let err = deps(vec![("package.json", Box::leak(deep_json.into_boxed_str()))]).unwrap_err();
        assert_eq!(err.field, "package.json");
    }

    #[test]
    fn malformed_manifests_are_named() {
        let err = deps(vec![("pyproject.toml", "[project\n")]).unwrap_err();
        assert_eq!(err.field, "pyproject.toml");
        let err = deps(vec![("pyproject.toml", "[project]\ndependencies = \"flask\"\n")]).unwrap_err();
        assert_eq!(err.field, "pyproject.toml: project.dependencies");
        let err = deps(vec![("pyproject.toml", "[project]\ndependencies = [1]\n")]).unwrap_err();
        assert!(err.message.contains("requirement string"), "{}", err.message);
        let err = deps(vec![("package.json", "{")]).unwrap_err();
        assert_eq!(err.field, "package.json");
    }
}
