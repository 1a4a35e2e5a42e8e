//! Code packages and function runtimes run inside `updraft-sandbox` (see that crate),
//! each namespace as a uid of its own. This side chooses the uids, hands each
//! revision's files to its namespace's uid, and writes the sandbox's command line.
//!
//! A server takes a block of 65,536 uids by holding a lock on a slot file, so servers
//! sharing a machine never share a uid, and a crashed server's block frees itself.
//! Inside the block a namespace's uid is its line in an append-only file of the data
//! directory, so it stays the same across restarts.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use updraft_sandbox::Identity;
use updraft_sandbox::Plan;

/// Where the uid blocks start: above any account a distribution makes, and below
/// 2^31, which some tools still read as signed.
const FIRST_UID: u32 = 1 << 30;
const BLOCK: u32 = 1 << 16;
const SLOTS: u32 = (1 << 30) / BLOCK;

pub struct Sandbox {
    /// `updraft-sandbox`, or `updraft` and the argument that makes it the sandbox.
    command: Vec<PathBuf>,
    data_dir: PathBuf,
    revisions: PathBuf,
    shown: Vec<PathBuf>,
    first_uid: u32,
    /// The server's `PATH` without the folders an instance's uid cannot enter.
    path: String,
    /// Held for the server's life: the lock on this server's uid block.
    _slot: File,
    namespaces: Mutex<Namespaces>,
}

struct Namespaces {
    file: File,
    names: Vec<String>,
}

impl Sandbox {
    /// `command` runs the sandbox (`updraft-sandbox`); `shown` are the folders of
    /// `data_dir` instances may read (the revisions and the function shims). `slots`
    /// holds the uid block locks of this machine.
    pub fn new(command: Vec<PathBuf>, data_dir: &Path, shown: Vec<PathBuf>, slots: &Path) -> io::Result<Sandbox> {
        if !command.first().is_some_and(|b| b.is_file()) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the sandbox binary {:?} is missing", command.first()),
            ));
        }
        let revisions = data_dir.join("revisions");
        fs::create_dir_all(&revisions)?;
        // Passed through but not listed: a namespace finds only its own folder.
        fs::set_permissions(&revisions, fs::Permissions::from_mode(0o711))?;
        let (slot, index) = take_slot(slots)?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(data_dir.join("sandbox-namespaces"))?;
        let names = io::BufReader::new(&file).lines().collect::<io::Result<Vec<_>>>()?;
        Ok(Sandbox {
            command,
            data_dir: data_dir.to_path_buf(),
            revisions,
            shown,
            first_uid: FIRST_UID + index * BLOCK,
            path: reachable_path(&std::env::var("PATH").unwrap_or_default()),
            _slot: slot,
            namespaces: Mutex::new(Namespaces { file, names }),
        })
    }

    /// `PATH` for instances: a stem cell finds its interpreter while still root, and
    /// must find the one its instance's uid can read (not, say, one under `/root`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// This server's uids, first and last.
    pub fn uids(&self) -> (u32, u32) {
        (self.first_uid, self.first_uid + BLOCK - 1)
    }

    /// The namespace's uid (and gid), given on first use and kept.
    pub fn identity(&self, namespace: &str) -> io::Result<Identity> {
        let mut known = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        let index = match known.names.iter().position(|n| n == namespace) {
            Some(index) => index,
            None => {
                if known.names.len() + 1 >= BLOCK as usize {
                    return Err(io::Error::other("this server has given every uid of its block"));
                }
                writeln!(known.file, "{namespace}")?;
                known.file.sync_data()?;
                known.names.push(namespace.to_string());
                known.names.len() - 1
            }
        };
        let id = self.first_uid + 1 + index as u32;
        Ok(Identity { uid: id, gid: id })
    }

    /// Gives the revision folder `workdir` (and its namespace's folder) to the
    /// namespace's uid, once: unpacked by the server, it is the server's until then.
    pub fn hand_over(&self, identity: Identity, workdir: &Path) -> io::Result<()> {
        let Some(namespace_dir) = workdir
            .parent()
            .filter(|p| p.parent() == Some(self.revisions.as_path()))
        else {
            return Err(io::Error::other(format!(
                "{} is not a revision folder of {}",
                workdir.display(),
                self.revisions.display()
            )));
        };
        for dir in [namespace_dir, workdir] {
            if fs::symlink_metadata(dir)?.uid() == identity.uid {
                continue;
            }
            if dir == workdir {
                chown_below(workdir, identity)?;
            }
            std::os::unix::fs::lchown(dir, Some(identity.uid), Some(identity.gid))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// The command that runs a build confined as its namespace's uid, like its
    /// instances, but able to write to `output` and to `cache` (the namespace's build
    /// cache); with `network` false, in a network namespace of its own.
    pub fn build_command(
        &self,
        program: &[String],
        identity: Identity,
        output: &Path,
        cache: Option<&Path>,
        network: bool,
    ) -> std::process::Command {
        let plan = Plan {
            hidden: vec![self.data_dir.clone()],
            shown: self.shown.clone(),
            writable: std::iter::once(output).chain(cache).map(Path::to_path_buf).collect(),
            no_network: !network,
            identity: Some(identity),
            keep_setid: false,
            workdir: Some(output.to_path_buf()),
            program: program.iter().map(Into::into).collect(),
        };
        self.run(&plan)
    }

    fn run(&self, plan: &Plan) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.command[0]);
        cmd.args(&self.command[1..]).args(plan.to_args());
        cmd
    }

    /// The command that runs `program` confined: as `identity`, or, for a stem cell
    /// that learns its identity later, as root able to change only that.
    pub fn command(
        &self,
        program: &[String],
        identity: Option<Identity>,
        workdir: Option<&Path>,
    ) -> std::process::Command {
        let plan = Plan {
            hidden: vec![self.data_dir.clone()],
            shown: self.shown.clone(),
            writable: Vec::new(),
            no_network: false,
            identity,
            keep_setid: identity.is_none(),
            workdir: workdir.map(Path::to_path_buf),
            program: program.iter().map(Into::into).collect(),
        };
        self.run(&plan)
    }
}

/// The host pid of the program a sandbox started as `waiter`: the child of its init,
/// which is the waiter's child. Waits a little for the sandbox to fork them.
pub fn program_pid(waiter: u32) -> Option<u32> {
    let first_child = |pid: u32| -> Option<u32> {
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(100);
    loop {
        if let Some(program) = first_child(waiter).and_then(first_child) {
            return Some(program);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The folders of `path` that anyone may enter, with every folder above them.
fn reachable_path(path: &str) -> String {
    let open_to_all = |dir: &Path| fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0);
    path.split(':')
        .filter(|dir| {
            let dir = Path::new(dir);
            dir.is_absolute() && dir.ancestors().all(open_to_all)
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// Locks the first free slot file; the lock goes with the process.
fn take_slot(slots: &Path) -> io::Result<(File, u32)> {
    fs::create_dir_all(slots)?;
    for index in 0..SLOTS {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(slots.join(format!("{index}.lock")))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok((file, index));
        }
    }
    Err(io::Error::other("every uid block of this machine is taken"))
}

fn chown_below(dir: &Path, identity: Identity) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            chown_below(&path, identity)?;
        }
        std::os::unix::fs::lchown(&path, Some(identity.uid), Some(identity.gid))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(root: &Path) -> Sandbox {
        let binary = root.join("updraft-sandbox");
        fs::write(&binary, "").unwrap();
        Sandbox::new(vec![binary], &root.join("data"), vec![], &root.join("slots")).unwrap()
    }

    #[test]
    fn a_namespace_keeps_its_uid_and_servers_get_blocks_of_their_own() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("data")).unwrap();
        let first = sandbox(root.path());
        let team = first.identity("team").unwrap();
        let other = first.identity("other").unwrap();
        assert_ne!(team, other);
        assert_eq!(first.identity("team").unwrap(), team);
        assert!(team.uid > first.uids().0 && team.uid <= first.uids().1);

        // A second server on the machine gets the next block while the first runs.
        let root2 = tempfile::tempdir().unwrap();
        fs::create_dir_all(root2.path().join("data")).unwrap();
        let binary = root2.path().join("updraft-sandbox");
        fs::write(&binary, "").unwrap();
        let second = Sandbox::new(
            vec![binary],
            &root2.path().join("data"),
            vec![],
            &root.path().join("slots"),
        )
        .unwrap();
        assert_eq!(second.uids().0, first.uids().0 + BLOCK);

        // After a restart the first block is free again and names keep their uids.
        drop(first);
        let again = sandbox(root.path());
        assert_eq!(again.identity("other").unwrap(), other);
        assert_eq!(again.identity("team").unwrap(), team);
    }

    #[test]
    fn path_keeps_only_folders_anyone_may_enter() {
        let root = tempfile::tempdir().unwrap();
        let private = root.path().join("private/bin");
        fs::create_dir_all(&private).unwrap();
        fs::set_permissions(root.path().join("private"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:/usr/bin:relative:/nonexistent:/bin", private.display());
        assert_eq!(reachable_path(&path), "/usr/bin:/bin");
    }

    #[test]
    fn a_revision_is_handed_to_its_namespace_and_nothing_outside_is() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let revision = data.join("revisions/team/app-00001");
        fs::create_dir_all(revision.join("lib")).unwrap();
        fs::write(revision.join("lib/main.py"), "x").unwrap();
        let sandbox = sandbox(root.path());
        let id = Identity { uid: 4242, gid: 4343 };
        sandbox.hand_over(id, &revision).unwrap();
        for path in [
            data.join("revisions/team"),
            revision.clone(),
            revision.join("lib/main.py"),
        ] {
            let meta = fs::symlink_metadata(&path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{}", path.display());
        }
        assert_eq!(fs::metadata(data.join("revisions")).unwrap().uid(), 0);
        let outside = data.join("store.db");
        fs::write(&outside, "").unwrap();
        assert!(sandbox.hand_over(id, &data.join("revisions")).is_err());
        assert!(sandbox.hand_over(id, &outside).is_err());
    }
}
