//! Applies image layers, in order, to a root filesystem: whiteouts delete what lower
//! layers wrote, and no entry may land outside the root, whether by `..`, by an
//! absolute path, or through a symlink that points out of it.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use sha2::{Digest, Sha256};

use super::ImageError;

/// Symlinks followed while resolving one path, as the kernel's own limit.
const MAX_LINKS: usize = 40;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar" | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Compression::None)
            }
            "application/vnd.oci.image.layer.v1.tar+gzip" | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Hashes what passes through, so the uncompressed stream can be checked against the
/// config's `diff_ids`.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A zstd stream of any number of frames, skippable ones included (zstd:chunked
/// layers are written that way), read as one.
struct ZstdFrames<R> {
    source: R,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: io::BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.in_frame {
                while self.decoder.can_collect() == 0 && !self.decoder.is_finished() {
                    self.decoder
                        .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                        .map_err(io::Error::other)?;
                }
                let n = self.decoder.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.in_frame = false;
                continue;
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.init(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. })) => {
                    let skipped = io::copy(&mut (&mut self.source).take(u64::from(length)), &mut io::sink())?;
                    if skipped < u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "a skippable frame is cut short",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// Applies one layer blob to `root`; returns the digest of its uncompressed tar.
pub fn apply_layer(root: &Path, blob: &Path, compression: Compression, layer: &str) -> Result<String, ImageError> {
    let corrupt = |reason: String| ImageError::CorruptLayer {
        digest: layer.to_string(),
        reason,
    };
    let file = fs::File::open(blob)?;
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(io::BufReader::new(file)),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(io::BufReader::new(file))),
        Compression::Zstd => Box::new(ZstdFrames {
            source: io::BufReader::new(file),
            decoder: FrameDecoder::new(),
            in_frame: false,
        }),
    };
    let mut hashing = Hashing {
        inner: reader,
        hasher: Sha256::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().map_err(|e| corrupt(e.to_string()))? {
            let mut entry = entry.map_err(|e| corrupt(e.to_string()))?;
            apply_entry(root, &mut entry, layer)?;
        }
    }
    // The tar may end before the stream does (padding); the digest covers all of it.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| corrupt(e.to_string()))?;
    Ok(format!("sha256:{}", hex::encode(hashing.hasher.finalize())))
}

fn apply_entry<R: Read>(root: &Path, entry: &mut tar::Entry<R>, layer: &str) -> Result<(), ImageError> {
    let corrupt = |reason: String| ImageError::CorruptLayer {
        digest: layer.to_string(),
        reason,
    };
    let raw = entry.path().map_err(|e| corrupt(e.to_string()))?.into_owned();
    let escape = |reason: String| ImageError::LayerEscapes {
        layer: layer.to_string(),
        path: raw.display().to_string(),
        reason,
    };
    let relative = normalize(&raw).map_err(escape)?;
    let Some(name) = relative.file_name().map(|n| n.to_owned()) else {
        return Ok(());
    };
    let parent = resolve_in_root(root, relative.parent().unwrap_or(Path::new(""))).map_err(escape)?;
    let name_text = name.to_string_lossy();
    if name_text == OPAQUE_WHITEOUT {
        for child in fs::read_dir(&parent).into_iter().flatten().flatten() {
            remove_any(&child.path())?;
        }
        return Ok(());
    }
    if let Some(hidden) = name_text.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden.contains('/') {
            return Err(escape(format!("{name_text:?} is not a whiteout of a name")));
        }
        return Ok(remove_any(&parent.join(hidden))?);
    }
    let target = parent.join(&name);
    let header = entry.header();
    let mode = header.mode().map_err(|e| corrupt(e.to_string()))? & 0o7777;
    let uid = header.uid().map_err(|e| corrupt(e.to_string()))?;
    let gid = header.gid().map_err(|e| corrupt(e.to_string()))?;
    let kind = header.entry_type();
    match kind {
        tar::EntryType::Directory => {
            if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                remove_any(&target)?;
                fs::create_dir(&target)?;
            }
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            remove_any(&target)?;
            let mut out = fs::OpenOptions::new().write(true).create_new(true).open(&target)?;
            io::copy(entry, &mut out).map_err(|e| corrupt(format!("{}: {e}", raw.display())))?;
        }
        tar::EntryType::Symlink => {
            let link = entry
                .link_name()
                .map_err(|e| corrupt(e.to_string()))?
                .ok_or_else(|| corrupt(format!("{}: a symlink without a target", raw.display())))?;
            remove_any(&target)?;
            symlink(&link, &target)?;
        }
        tar::EntryType::Link => {
            let link = entry
                .link_name()
                .map_err(|e| corrupt(e.to_string()))?
                .ok_or_else(|| corrupt(format!("{}: a hard link without a target", raw.display())))?;
            let link_relative = normalize(&link).map_err(escape)?;
            let link_name = link_relative
                .file_name()
                .ok_or_else(|| escape("a hard link to the root".into()))?;
            let source = resolve_in_root(root, link_relative.parent().unwrap_or(Path::new("")))
                .map_err(escape)?
                .join(link_name);
            if !fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
                return Err(corrupt(format!(
                    "{}: hard link to {} which is not a file written before it",
                    raw.display(),
                    link.display()
                )));
            }
            remove_any(&target)?;
            fs::hard_link(&source, &target)?;
            return Ok(());
        }
        // Devices and FIFOs are not needed: the runtime gives each container its /dev.
        _ => return Ok(()),
    }
    std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32))?;
    if kind != tar::EntryType::Symlink {
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The entry's path relative to the root; `..` anywhere is refused, a leading `/` or
/// `./` is dropped, as layer tars are written both ways.
fn normalize(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("the path climbs out with \"..\"".into()),
            Component::Prefix(_) => return Err("not a Unix path".into()),
        }
    }
    Ok(out)
}

/// Resolves a directory path inside `root`, creating missing directories, following
/// symlinks that stay inside the root and refusing any that would lead out of it.
pub(crate) fn resolve_in_root(root: &Path, relative: &Path) -> Result<PathBuf, String> {
    let mut current = PathBuf::new();
    let mut queue: VecDeque<PathBuf> = relative.components().map(|c| PathBuf::from(c.as_os_str())).collect();
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        let part_str = part.to_string_lossy();
        match part_str.as_ref() {
            "/" | "." | "" => continue,
            ".." => {
                if !current.pop() {
                    return Err("a symlink on the path climbs above the root".into());
                }
                continue;
            }
            _ => {}
        }
        let candidate = current.join(&part);
        let on_disk = root.join(&candidate);
        match fs::symlink_metadata(&on_disk) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err("too many levels of symlinks".into());
                }
                let target = fs::read_link(&on_disk).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    return Err(format!(
                        "goes through the symlink /{} -> {}, which points outside the layer's root",
                        candidate.display(),
                        target.display()
                    ));
                }
                for (i, c) in target.components().enumerate() {
                    queue.insert(i, PathBuf::from(c.as_os_str()));
                }
            }
            Ok(meta) if meta.is_dir() => current = candidate,
            Ok(_) => return Err(format!("/{} is not a directory", candidate.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_public_dir(&on_disk).map_err(|e| e.to_string())?;
                current = candidate;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(root.join(current))
}

/// A folder of an image that no layer names (a parent, a mount point, the root
/// itself): 0755 as Docker makes them, whatever the server's own umask is, so a
/// container running as another user can enter it.
pub fn create_public_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

/// Removes a file, symlink or directory tree without following symlinks.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates what the runtime mounts over, so a shared read-only root is never written
/// to by a container start.
pub fn prepare_mount_points(root: &Path) -> io::Result<()> {
    for dir in ["proc", "sys", "dev", "tmp"] {
        if fs::symlink_metadata(root.join(dir)).is_err() {
            create_public_dir(&root.join(dir))?;
        }
    }
    // Never through a symlink: the image's own /tmp could point at the host's /etc.
    if fs::symlink_metadata(root.join("tmp")).is_ok_and(|m| m.is_dir()) {
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    }
    if fs::symlink_metadata(root.join("etc")).is_err() {
        create_public_dir(&root.join("etc"))?;
    }
    if fs::symlink_metadata(root.join("etc")).is_ok_and(|m| m.is_dir()) {
        for file in ["resolv.conf", "hosts"] {
            if fs::symlink_metadata(root.join("etc").join(file)).is_err() {
                fs::write(root.join("etc").join(file), "")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(dir: &Path, name: &str, build: impl FnOnce(&mut tar::Builder<fs::File>)) -> PathBuf {
        let path = dir.join(name);
        let mut builder = tar::Builder::new(fs::File::create(&path).unwrap());
        build(&mut builder);
        builder.finish().unwrap();
        path
    }

    fn file(builder: &mut tar::Builder<fs::File>, path: &str, body: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, body).unwrap();
    }

    fn link(builder: &mut tar::Builder<fs::File>, kind: tar::EntryType, path: &str, target: &str) {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o777);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(kind);
        builder.append_link(&mut header, path, target).unwrap();
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_layers() {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        fs::create_dir(&root).unwrap();
        let lower = layer(work.path(), "lower.tar", |b| {
            file(b, "etc/keep", b"keep");
            file(b, "etc/gone", b"gone");
            file(b, "opt/app/old", b"old");
            link(b, tar::EntryType::Symlink, "lib", "usr/lib");
            file(b, "usr/lib/libx.so", b"x");
        });
        let upper = layer(work.path(), "upper.tar", |b| {
            file(b, "etc/.wh.gone", b"");
            file(b, "opt/app/.wh..wh..opq", b"");
            file(b, "opt/app/new", b"new");
            file(b, "lib/liby.so", b"y");
            link(b, tar::EntryType::Link, "etc/keep2", "etc/keep");
        });
        apply_layer(&root, &lower, Compression::None, "lower").unwrap();
        apply_layer(&root, &upper, Compression::None, "upper").unwrap();
        assert_eq!(fs::read_to_string(root.join("etc/keep")).unwrap(), "keep");
        assert_eq!(fs::read_to_string(root.join("etc/keep2")).unwrap(), "keep");
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("opt/app/old").exists());
        assert_eq!(fs::read_to_string(root.join("opt/app/new")).unwrap(), "new");
        assert_eq!(fs::read_to_string(root.join("usr/lib/liby.so")).unwrap(), "y");
    }

    type LayerWriter = dyn Fn(&mut tar::Builder<fs::File>);

    #[test]
    fn entries_that_leave_the_root_are_refused() {
        let work = tempfile::tempdir().unwrap();
        let outside = work.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let cases: Vec<(&str, Box<LayerWriter>)> = vec![
            (
                "dotdot",
                Box::new(|b| {
                    let mut header = tar::Header::new_gnu();
                    header.set_size(1);
                    header.set_mode(0o644);
                    header.set_uid(0);
                    header.set_gid(0);
                    // append_data refuses "..", so the name is written into the header raw.
                    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../outside/x\0");
                    header.set_cksum();
                    b.append(&header, &b"x"[..]).unwrap();
                }),
            ),
            (
                "absolute-symlink",
                Box::new(|b| {
                    link(b, tar::EntryType::Symlink, "evil", "/tmp");
                    file(b, "evil/x", b"x");
                }),
            ),
            (
                "climbing-symlink",
                Box::new(|b| {
                    link(b, tar::EntryType::Symlink, "evil", "../../outside");
                    file(b, "evil/x", b"x");
                }),
            ),
        ];
        for (name, build) in cases {
            let root = work.path().join(format!("root-{name}"));
            fs::create_dir(&root).unwrap();
            let blob = layer(work.path(), &format!("{name}.tar"), |b| build(b));
            let err = apply_layer(&root, &blob, Compression::None, name).unwrap_err();
            assert!(matches!(err, ImageError::LayerEscapes { .. }), "{name}: {err}");
            assert!(fs::read_dir(&outside).unwrap().next().is_none(), "{name} wrote outside");
        }
    }

    #[test]
    fn mount_points_are_made_without_following_the_image_s_symlinks() {
        let work = tempfile::tempdir().unwrap();
        let outside = work.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
        let root = work.path().join("root");
        fs::create_dir(&root).unwrap();
        symlink(&outside, root.join("tmp")).unwrap();
        prepare_mount_points(&root).unwrap();
        let mode = fs::metadata(&outside).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        for dir in ["proc", "sys", "dev"] {
            assert!(root.join(dir).is_dir(), "{dir}");
        }
        assert!(root.join("etc/resolv.conf").is_file());
    }

    #[test]
    fn zstd_layers_of_several_frames_unpack() {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        fs::create_dir(&root).unwrap();
        let tar = fs::read(layer(work.path(), "l.tar", |b| file(b, "etc/zstd", &[5u8; 100_000]))).unwrap();
        // Two frames with a skippable frame between, as zstd:chunked writes.
        let (first, second) = tar.split_at(tar.len() / 2);
        let mut blob = ruzstd::encoding::compress_to_vec(first, ruzstd::encoding::CompressionLevel::Fastest);
        blob.extend_from_slice(&0x184D2A50u32.to_le_bytes());
        blob.extend_from_slice(&4u32.to_le_bytes());
        blob.extend_from_slice(b"skip");
        blob.extend(ruzstd::encoding::compress_to_vec(
            second,
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        fs::write(work.path().join("l.tar.zst"), &blob).unwrap();
        let diff_id = apply_layer(&root, &work.path().join("l.tar.zst"), Compression::Zstd, "z").unwrap();
        assert_eq!(diff_id, format!("sha256:{}", hex::encode(Sha256::digest(&tar))));
        assert_eq!(fs::read(root.join("etc/zstd")).unwrap(), vec![5u8; 100_000]);
    }

    #[test]
    fn a_truncated_layer_is_corrupt() {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        fs::create_dir(&root).unwrap();
        let blob = layer(work.path(), "l.tar", |b| file(b, "big", &[7u8; 10_000]));
        let bytes = fs::read(&blob).unwrap();
        fs::write(&blob, &bytes[..5000]).unwrap();
        let err = apply_layer(&root, &blob, Compression::None, "l").unwrap_err();
        assert!(matches!(err, ImageError::CorruptLayer { .. }), "{err}");
    }
}
