//! Turning what the user names into an archive the API accepts.
//!
//! A folder is packed without what the app does not need to run: `.updraftignore`'s
//! patterns (gitignore syntax), else `.gitignore`'s, and by default version control
//! metadata, `__pycache__`, `.env` (secrets belong in `updraft secret`) and, when
//! `package.json` declares dependencies the server installs, `node_modules`. A `!`
//! pattern keeps a default out of that list.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Folders are packed into a .tar.gz in a temporary directory; archives go as they are.
pub enum Package {
    Archive(PathBuf),
    Packed {
        _dir: tempfile::TempDir,
        archive: PathBuf,
        /// What the ignore rules kept out, relative to the folder.
        left_out: Vec<PathBuf>,
    },
}

impl Package {
    pub fn path(&self) -> &Path {
        match self {
            Package::Archive(path) => path,
            Package::Packed { archive, .. } => archive,
        }
    }

    pub fn left_out(&self) -> &[PathBuf] {
        match self {
            Package::Archive(_) => &[],
            Package::Packed { left_out, .. } => left_out,
        }
    }
}

/// Left out unless an ignore file's `!` pattern keeps them.
const LEFT_OUT_BY_DEFAULT: &[&str] = &[".git", ".hg", ".svn", "__pycache__", ".env"];

/// Whether the folder's `package.json` declares dependencies, which the server
/// installs: its own `node_modules` is then left behind.
fn installs_node_modules(source: &Path) -> bool {
    std::fs::read_to_string(source.join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json.get("dependencies")?.as_object().map(|d| !d.is_empty()))
        .unwrap_or(false)
}

/// What a folder leaves out: its ignore rules, and the defaults they do not keep.
struct Rules {
    ignore: Gitignore,
    defaults: Vec<&'static str>,
}

impl Rules {
    fn leaves_out(&self, rel: &Path, is_dir: bool) -> bool {
        let matched = self.ignore.matched(rel, is_dir);
        if matched.is_whitelist() {
            return false;
        }
        let name = rel.file_name().unwrap_or_default();
        matched.is_ignore() || self.defaults.iter().any(|d| name == *d)
    }
}

/// The rules of `.updraftignore`, else `.gitignore`, at the folder's top.
fn ignore_rules(source: &Path) -> anyhow::Result<Gitignore> {
    let mut builder = GitignoreBuilder::new(source);
    for name in [".updraftignore", ".gitignore"] {
        let file = source.join(name);
        if file.is_file() {
            if let Some(e) = builder.add(&file) {
                anyhow::bail!("{}: {e}", file.display());
            }
            break;
        }
    }
    Ok(builder.build()?)
}

pub fn prepare(source: &Path) -> anyhow::Result<Package> {
    let meta = std::fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?;
    if meta.is_file() {
        return Ok(Package::Archive(source.to_path_buf()));
    }
    let mut defaults = LEFT_OUT_BY_DEFAULT.to_vec();
    if installs_node_modules(source) {
        defaults.push("node_modules");
    }
    let rules = Rules {
        ignore: ignore_rules(source)?,
        defaults,
    };
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("package.tar.gz");
    let encoder = flate2::write::GzEncoder::new(File::create(&archive)?, flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    // Symlinks go in as symlinks; the server checks where they point.
    builder.follow_symlinks(false);
    let mut left_out = Vec::new();
    append_dir(&mut builder, source, Path::new(""), &rules, &mut left_out)?;
    builder.into_inner()?.finish()?;
    Ok(Package::Packed {
        _dir: dir,
        archive,
        left_out,
    })
}

fn append_dir(
    builder: &mut tar::Builder<impl std::io::Write>,
    root: &Path,
    rel: &Path,
    rules: &Rules,
    left_out: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let rel_path = rel.join(&name);
        let kind = entry.file_type()?;
        if rules.leaves_out(&rel_path, kind.is_dir()) {
            left_out.push(rel_path);
            continue;
        }
        builder
            .append_path_with_name(entry.path(), &rel_path)
            .with_context(|| format!("packing {}", rel_path.display()))?;
        if kind.is_dir() {
            append_dir(builder, root, &rel_path, rules, left_out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed_names(package: &Package) -> Vec<String> {
        let file = File::open(package.path()).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        names
    }

    fn folder(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        dir
    }

    #[test]
    fn updraftignore_wins_over_gitignore_and_the_defaults_apply() {
        let dir = folder(&[
            "app.py",
            "build/out.o",
            "notes.md",
            ".env",
            "__pycache__/a.pyc",
            "node_modules/x/i.js",
        ]);
        std::fs::write(dir.path().join("package.json"), r#"{"dependencies": {"x": "1"}}"#).unwrap();
        std::fs::write(dir.path().join(".gitignore"), "notes.md\n").unwrap();
        std::fs::write(dir.path().join(".updraftignore"), "build/\n*.md\n!README.md\n").unwrap();
        let package = prepare(dir.path()).unwrap();
        assert_eq!(
            packed_names(&package),
            [".gitignore", ".updraftignore", "app.py", "package.json"].map(String::from)
        );
        let left: Vec<String> = package.left_out().iter().map(|p| p.display().to_string()).collect();
        assert_eq!(left, [".env", "__pycache__", "build", "node_modules", "notes.md"]);
    }

    #[test]
    fn node_modules_go_when_the_server_installs_them_or_a_pattern_keeps_them() {
        let dir = folder(&["index.mjs", "node_modules/shout/index.js"]);
        std::fs::write(dir.path().join("package.json"), r#"{"main": "index.mjs"}"#).unwrap();
        assert!(
            prepare(dir.path()).unwrap().left_out().is_empty(),
            "vendored, nothing to install"
        );

        std::fs::write(dir.path().join("package.json"), r#"{"dependencies": {"shout": "1"}}"#).unwrap();
        let package = prepare(dir.path()).unwrap();
        assert_eq!(package.left_out(), [PathBuf::from("node_modules")]);

        std::fs::write(dir.path().join(".updraftignore"), "!node_modules\n").unwrap();
        let package = prepare(dir.path()).unwrap();
        assert!(packed_names(&package).contains(&"node_modules/shout/index.js".to_string()));
    }

    #[test]
    fn gitignore_applies_without_an_updraftignore() {
        let dir = folder(&["main.py", "venv/bin/python", "logs/today.log", "src/keep.py"]);
        std::fs::write(dir.path().join(".gitignore"), "venv/\n*.log\n").unwrap();
        let package = prepare(dir.path()).unwrap();
        assert_eq!(
            packed_names(&package),
            [".gitignore", "logs", "main.py", "src", "src/keep.py"].map(String::from)
        );
    }
}
