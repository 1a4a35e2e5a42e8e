//! Turning what the user names into an archive the API accepts.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Folders are packed into a .tar.gz in a temporary directory; archives go as they are.
pub enum Package {
    Archive(PathBuf),
    Packed { _dir: tempfile::TempDir, archive: PathBuf },
}

impl Package {
    pub fn path(&self) -> &Path {
        match self {
            Package::Archive(path) => path,
            Package::Packed { archive, .. } => archive,
        }
    }
}

/// Directories never shipped: version control metadata.
const SKIPPED: &[&str] = &[".git", ".hg", ".svn"];

pub fn prepare(source: &Path) -> anyhow::Result<Package> {
    let meta = std::fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?;
    if meta.is_file() {
        return Ok(Package::Archive(source.to_path_buf()));
    }
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("package.tar.gz");
    let encoder = flate2::write::GzEncoder::new(File::create(&archive)?, flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    // Symlinks go in as symlinks; the server checks where they point.
    builder.follow_symlinks(false);
    append_dir(&mut builder, source, Path::new(""))?;
    builder.into_inner()?.finish()?;
    Ok(Package::Packed { _dir: dir, archive })
}

fn append_dir(builder: &mut tar::Builder<impl std::io::Write>, root: &Path, rel: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let rel_path = rel.join(&name);
        let kind = entry.file_type()?;
        builder
            .append_path_with_name(entry.path(), &rel_path)
            .with_context(|| format!("packing {}", rel_path.display()))?;
        if kind.is_dir() {
            append_dir(builder, root, &rel_path)?;
        }
    }
    Ok(())
}
