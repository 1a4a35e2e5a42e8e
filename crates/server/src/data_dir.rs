//! The data directory is the server's alone: it holds every revision's environment,
//! the database, logs and registry credentials. The directory is 0700 and what the
//! server writes is 0600 (files) or 0700 (folders), through the process umask;
//! instances get an ordinary umask back when they are forked. A data directory from
//! an older server, or one a person loosened, is tightened at start.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Folders whose modes belong to what they hold (packages, dependency layers, function
/// shims and image roots, which an instance or a container reads as the user it runs
/// as), not to the server.
const KEPT_AS_UNPACKED: &[&str] = &["revisions", "layers", "shims", "images/images"];

/// Makes every file the server creates from now on private to its user.
pub fn private_umask() {
    // SAFETY: umask only sets the process's file mode mask.
    unsafe { libc::umask(0o077) };
}

/// Takes group and other access away from the data directory and what it holds.
pub fn restrict(root: &Path) -> io::Result<()> {
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
    restrict_below(root, root)
}

fn restrict_below(root: &Path, dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if KEPT_AS_UNPACKED.iter().any(|kept| path == root.join(kept)) {
            continue;
        }
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & !0o077))?;
        }
        if meta.is_dir() {
            restrict_below(root, &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_loose_data_directory_is_tightened_but_unpacked_trees_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        for sub in [
            "logs/default/hello",
            "revisions/default/hello-00001",
            "images/images/abc/rootfs",
        ] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        let files = ["updraft.db", "logs/default/hello/hello-00001-a.log"];
        for file in files {
            fs::write(root.join(file), "x").unwrap();
            fs::set_permissions(root.join(file), fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::write(root.join("revisions/default/hello-00001/main.py"), "x").unwrap();
        fs::set_permissions(root.join("logs"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(root.join("images/images/abc/rootfs"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();

        restrict(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("logs")), 0o700);
        for file in files {
            assert_eq!(mode(&root.join(file)), 0o600, "{file}");
        }
        assert_eq!(
            mode(&root.join("images/images/abc/rootfs")),
            0o755,
            "an image root stays readable"
        );
        assert_ne!(mode(Path::new("/etc/passwd")) & 0o044, 0, "symlinks are not followed");
    }
}
