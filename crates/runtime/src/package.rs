//! Unpacking code packages (tar, tar.gz, zip) without letting them escape.
//!
//! Every entry is checked before it is written: no absolute paths or `..`, no device
//! files, no writes through a symlink, links only to places inside the package, and
//! the bytes actually written (not the sizes the archive declares) are counted against
//! a limit, so a zip bomb stops at the limit. After unpacking, every symlink is resolved
//! for real and must land inside the package.

use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use updraft_model::package::PackageFiles;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("package is not a .tar.gz, .tar or .zip archive")]
    UnknownFormat,
    #[error("package archive is corrupt: {0}")]
    Corrupt(String),
    #[error("package entry {path:?}: {reason}")]
    BadEntry { path: String, reason: String },
    #[error("package expands past the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("package has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("package: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    TarGz,
    Tar,
    Zip,
}

impl ArchiveFormat {
    /// Recognises an archive by its first bytes (at least 262 for plain tar).
    pub fn sniff(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(ArchiveFormat::TarGz)
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Some(ArchiveFormat::Zip)
        } else if head.len() >= 262 && &head[257..262] == b"ustar" {
            Some(ArchiveFormat::Tar)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 2 << 30,
            max_entries: 200_000,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub bytes: u64,
}

/// Unpacks `archive` into `dest`, which must not exist yet. On error `dest` is removed.
pub fn unpack(archive: &Path, dest: &Path, limits: UnpackLimits) -> Result<UnpackStats, PackageError> {
    let result = unpack_inner(archive, dest, limits);
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

fn unpack_inner(archive: &Path, dest: &Path, limits: UnpackLimits) -> Result<UnpackStats, PackageError> {
    let mut file = File::open(archive)?;
    let mut head = [0u8; 512];
    let n = read_up_to(&mut file, &mut head)?;
    file.rewind()?;
    let format = ArchiveFormat::sniff(&head[..n]).ok_or(PackageError::UnknownFormat)?;
    fs::create_dir(dest)?;
    let mut writer = Writer {
        root: dest.to_path_buf(),
        limits,
        stats: UnpackStats::default(),
        entries: 0,
        symlinks: Vec::new(),
    };
    match format {
        ArchiveFormat::TarGz => writer.tar(tar::Archive::new(flate2::read::GzDecoder::new(file)))?,
        ArchiveFormat::Tar => writer.tar(tar::Archive::new(file))?,
        ArchiveFormat::Zip => writer.zip(file)?,
    }
    writer.check_symlinks()?;
    Ok(writer.stats)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

struct Writer {
    root: PathBuf,
    limits: UnpackLimits,
    stats: UnpackStats,
    entries: u64,
    symlinks: Vec<PathBuf>,
}

fn bad(path: &Path, reason: impl Into<String>) -> PackageError {
    PackageError::BadEntry {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn corrupt(e: impl std::fmt::Display) -> PackageError {
    PackageError::Corrupt(e.to_string())
}

/// The entry's path relative to the package root, or why it is refused.
fn clean_relative(raw: &Path) -> Result<PathBuf, PackageError> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad(raw, "'..' is not allowed in package paths")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad(raw, "absolute paths are not allowed in packages"))
            }
        }
    }
    Ok(out)
}

/// Resolves `target` as seen from the directory holding `link` without touching the
/// disk, and refuses anything that leaves the package.
fn link_target_inside(link: &Path, target: &Path) -> Result<PathBuf, PackageError> {
    if target.is_absolute() {
        return Err(bad(
            link,
            format!("links to absolute path {} outside the package", target.display()),
        ));
    }
    let mut resolved: Vec<_> = link.parent().map(|p| p.components().collect()).unwrap_or_default();
    for component in target.components() {
        match component {
            Component::Normal(_) => resolved.push(component),
            Component::CurDir => {}
            Component::ParentDir => {
                if resolved.pop().is_none() {
                    return Err(bad(link, format!("links to {} outside the package", target.display())));
                }
            }
            Component::RootDir | Component::Prefix(_) => unreachable!("absolute targets handled above"),
        }
    }
    Ok(resolved.iter().collect())
}

impl Writer {
    fn count_entry(&mut self) -> Result<(), PackageError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(PackageError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Creates the parent directories of `rel`, refusing to pass through a symlink.
    fn prepare_parent(&self, rel: &Path) -> Result<PathBuf, PackageError> {
        let mut dir = self.root.clone();
        if let Some(parent) = rel.parent() {
            for part in parent.components() {
                dir.push(part);
                match fs::symlink_metadata(&dir) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        return Err(bad(rel, "is written through a symlink"));
                    }
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => return Err(bad(rel, "a parent of this path is a file")),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&dir)?,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let full = self.root.join(rel);
        if fs::symlink_metadata(&full).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&full)?;
        }
        Ok(full)
    }

    fn write_file(&mut self, rel: &Path, mode: u32, mut data: impl Read) -> Result<(), PackageError> {
        let full = self.prepare_parent(rel)?;
        let _no_fork_while_open = crate::FORK_LOCK.read().unwrap_or_else(|p| p.into_inner());
        let mut out = File::create(&full)?;
        let remaining = self.limits.max_bytes - self.stats.bytes;
        let written = io::copy(&mut (&mut data).take(remaining + 1), &mut out).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
                corrupt(e)
            } else {
                PackageError::Io(e)
            }
        })?;
        if written > remaining {
            return Err(PackageError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        self.stats.bytes += written;
        self.stats.files += 1;
        // Keep the owner's execute bits; never setuid, setgid or sticky.
        let mode = (mode & 0o777) | 0o600;
        fs::set_permissions(&full, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    fn make_dir(&mut self, rel: &Path) -> Result<(), PackageError> {
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        let full = self.prepare_parent(rel)?;
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(bad(rel, "a directory has the name of a file")),
            Err(_) => Ok(fs::create_dir(&full)?),
        }
    }

    fn make_symlink(&mut self, rel: &Path, target: &Path) -> Result<(), PackageError> {
        link_target_inside(rel, target)?;
        let full = self.prepare_parent(rel)?;
        symlink(target, &full)?;
        self.symlinks.push(full);
        Ok(())
    }

    fn make_hardlink(&mut self, rel: &Path, target: &Path) -> Result<(), PackageError> {
        let target_rel = clean_relative(target)?;
        let source = self.root.join(&target_rel);
        match fs::symlink_metadata(&source) {
            Ok(m) if m.is_file() => {}
            _ => {
                return Err(bad(
                    rel,
                    format!(
                        "hard link to {} which is not a file earlier in the package",
                        target.display()
                    ),
                ))
            }
        }
        let full = self.prepare_parent(rel)?;
        fs::hard_link(&source, &full)?;
        Ok(())
    }

    fn tar<R: Read>(&mut self, mut archive: tar::Archive<R>) -> Result<(), PackageError> {
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            self.count_entry()?;
            let raw = entry.path().map_err(corrupt)?.into_owned();
            let rel = clean_relative(&raw)?;
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mode = entry.header().mode().unwrap_or(0o644);
                    self.write_file(&rel, mode, &mut entry)?;
                }
                tar::EntryType::Directory => self.make_dir(&rel)?,
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(corrupt)?
                        .ok_or_else(|| bad(&raw, "symlink without a target"))?;
                    self.make_symlink(&rel, &target)?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(corrupt)?
                        .ok_or_else(|| bad(&raw, "hard link without a target"))?;
                    self.make_hardlink(&rel, &target)?;
                }
                tar::EntryType::Char | tar::EntryType::Block => {
                    return Err(bad(&raw, "device files are not allowed in packages"))
                }
                tar::EntryType::Fifo => return Err(bad(&raw, "named pipes are not allowed in packages")),
                tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => {}
                other => return Err(bad(&raw, format!("unsupported tar entry type {other:?}"))),
            }
        }
        Ok(())
    }

    fn zip(&mut self, file: File) -> Result<(), PackageError> {
        let mut archive = zip::ZipArchive::new(file).map_err(corrupt)?;
        for i in 0..archive.len() {
            self.count_entry()?;
            let mut entry = archive.by_index(i).map_err(corrupt)?;
            let raw = PathBuf::from(entry.name());
            let rel = clean_relative(&raw)?;
            let mode = entry.unix_mode().unwrap_or(0o644);
            const S_IFMT: u32 = 0o170000;
            match mode & S_IFMT {
                0o120000 => {
                    let mut target = String::new();
                    entry.read_to_string(&mut target).map_err(corrupt)?;
                    self.make_symlink(&rel, Path::new(&target))?;
                }
                0o020000 | 0o060000 => return Err(bad(&raw, "device files are not allowed in packages")),
                0o010000 => return Err(bad(&raw, "named pipes are not allowed in packages")),
                _ if entry.is_dir() => self.make_dir(&rel)?,
                _ => self.write_file(&rel, mode, &mut entry)?,
            }
        }
        Ok(())
    }

    fn check_symlinks(&self) -> Result<(), PackageError> {
        let root = fs::canonicalize(&self.root)?;
        for link in &self.symlinks {
            let rel = link.strip_prefix(&self.root).unwrap_or(link);
            match fs::canonicalize(link) {
                Ok(real) if real.starts_with(&root) => {}
                Ok(_) => return Err(bad(rel, "resolves to a place outside the package")),
                Err(_) => return Err(bad(rel, "is a dangling symlink")),
            }
        }
        Ok(())
    }
}

/// The root of an unpacked package, as the detection rules see it.
pub struct DirFiles<'a>(pub &'a Path);

impl PackageFiles for DirFiles<'_> {
    fn root_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    fn read(&self, name: &str) -> Option<String> {
        let path = self.0.join(name);
        let meta = fs::symlink_metadata(&path).ok()?;
        // Manifests are small; a huge file under a manifest's name is not one.
        if !meta.is_file() || meta.len() > 1 << 20 {
            return None;
        }
        fs::read_to_string(path).ok()
    }

    fn has_dir(&self, name: &str) -> bool {
        fs::symlink_metadata(self.0.join(name)).is_ok_and(|m| m.is_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o755);
        h
    }

    fn raw_path(h: &mut tar::Header, path: &str) {
        // Header::set_path refuses '..', so write the name bytes the way a hostile tool would.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
    }

    fn try_unpack(bytes: &[u8], limits: UnpackLimits) -> Result<UnpackStats, PackageError> {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a");
        fs::write(&archive, bytes).unwrap();
        let dest = dir.path().join("out");
        let r = unpack(&archive, &dest, limits);
        if r.is_err() {
            assert!(!dest.exists(), "failed unpack must leave nothing");
        }
        r
    }

    #[test]
    fn unpacks_files_dirs_and_inside_symlinks() {
        let bytes = tar_with(|b| {
            let data = b"print(1)";
            b.append_data(&mut header(tar::EntryType::Regular, 8), "app/main.py", &data[..])
                .unwrap();
            let mut h = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut h, "app/link.py", "main.py").unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.tar"), &bytes).unwrap();
        let stats = unpack(
            &dir.path().join("a.tar"),
            &dir.path().join("out"),
            UnpackLimits::default(),
        )
        .unwrap();
        assert_eq!(stats, UnpackStats { files: 1, bytes: 8 });
        assert_eq!(
            fs::read_to_string(dir.path().join("out/app/link.py")).unwrap(),
            "print(1)"
        );
        let mode = fs::metadata(dir.path().join("out/app/main.py"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn refuses_parent_and_absolute_paths() {
        for path in ["../evil", "a/../../evil", "/etc/evil"] {
            let bytes = tar_with(|b| {
                let mut h = header(tar::EntryType::Regular, 1);
                raw_path(&mut h, path);
                b.append(&h, &b"x"[..]).unwrap();
            });
            let err = try_unpack(&bytes, UnpackLimits::default()).unwrap_err();
            assert!(matches!(err, PackageError::BadEntry { .. }), "{path}: {err}");
        }
    }

    #[test]
    fn refuses_links_leaving_the_package() {
        let outside = tar_with(|b| {
            b.append_link(&mut header(tar::EntryType::Symlink, 0), "l", "../../etc/passwd")
                .unwrap();
        });
        assert!(try_unpack(&outside, UnpackLimits::default())
            .unwrap_err()
            .to_string()
            .contains("outside the package"));
        let absolute = tar_with(|b| {
            b.append_link(&mut header(tar::EntryType::Symlink, 0), "l", "/etc/passwd")
                .unwrap();
        });
        assert!(try_unpack(&absolute, UnpackLimits::default())
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        let through = tar_with(|b| {
            b.append_link(&mut header(tar::EntryType::Symlink, 0), "d", ".")
                .unwrap();
            b.append_data(&mut header(tar::EntryType::Regular, 1), "d/x", &b"x"[..])
                .unwrap();
        });
        assert!(try_unpack(&through, UnpackLimits::default())
            .unwrap_err()
            .to_string()
            .contains("through a symlink"));
        let sneaky = tar_with(|b| {
            b.append_link(&mut header(tar::EntryType::Symlink, 0), "s", ".")
                .unwrap();
            b.append_link(&mut header(tar::EntryType::Symlink, 0), "l", "s/..")
                .unwrap();
        });
        assert!(try_unpack(&sneaky, UnpackLimits::default())
            .unwrap_err()
            .to_string()
            .contains("outside the package"));
        let hard = tar_with(|b| {
            let mut h = header(tar::EntryType::Link, 0);
            h.set_path("h").unwrap();
            let target = &mut h.as_old_mut().linkname;
            target[..11].copy_from_slice(b"/etc/shadow");
            h.set_cksum();
            b.append(&h, &b""[..]).unwrap();
        });
        assert!(matches!(
            try_unpack(&hard, UnpackLimits::default()).unwrap_err(),
            PackageError::BadEntry { .. }
        ));
    }

    #[test]
    fn refuses_devices_and_fifos() {
        for kind in [tar::EntryType::Char, tar::EntryType::Block, tar::EntryType::Fifo] {
            let bytes = tar_with(|b| {
                b.append_data(&mut header(kind, 0), "dev", &b""[..]).unwrap();
            });
            assert!(matches!(
                try_unpack(&bytes, UnpackLimits::default()).unwrap_err(),
                PackageError::BadEntry { .. }
            ));
        }
    }

    #[test]
    fn stops_at_the_expansion_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        {
            let mut b = tar::Builder::new(&mut gz);
            let zeros = vec![0u8; 4 << 20];
            b.append_data(
                &mut header(tar::EntryType::Regular, zeros.len() as u64),
                "zeros",
                &zeros[..],
            )
            .unwrap();
            b.finish().unwrap();
        }
        let bytes = gz.finish().unwrap();
        assert!(bytes.len() < 64 << 10);
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 10,
        };
        assert!(matches!(
            try_unpack(&bytes, limits).unwrap_err(),
            PackageError::TooLarge { .. }
        ));
    }

    #[test]
    fn corrupt_and_unknown_archives() {
        assert!(matches!(
            try_unpack(b"hello world", UnpackLimits::default()).unwrap_err(),
            PackageError::UnknownFormat
        ));
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        gz.extend_from_slice(&[0xff; 64]);
        assert!(matches!(
            try_unpack(&gz, UnpackLimits::default()).unwrap_err(),
            PackageError::Corrupt(_)
        ));
    }
}
