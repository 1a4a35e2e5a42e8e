//! The confinement code packages and function runtimes run in, as containers already
//! do: their own mount, PID and IPC namespaces, the host root read-only, the data
//! directory hidden but for the folders an instance may read, a private `/tmp`, a
//! `/proc` that shows only their own processes, no new privileges, no capabilities,
//! an unprivileged uid and the containers' seccomp filter.
//!
//! The `updraft-sandbox` binary does the confining: the server execs it with a
//! [`Plan`] on its command line, and it execs the instance's program. A small binary
//! of its own, not a fork of the server, because two of its processes (the waiter
//! outside the PID namespace and the namespace's init) live as long as the instance,
//! and a forked server would pin a copy of the server's memory for that long.

mod confine;
mod syscalls;

pub use confine::run;
pub use syscalls::{filters, DENIED_SYSCALLS};

use std::ffi::OsString;
use std::path::PathBuf;

/// Who an instance runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// What `updraft-sandbox` is to set up before it execs `program`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Covered by an empty read-only folder: the data directory.
    pub hidden: Vec<PathBuf>,
    /// Folders or files shown read-only at their own path, inside a hidden folder or
    /// the private `/tmp` (which covers the host's).
    pub shown: Vec<PathBuf>,
    /// Shown as `shown` are, but writable: where a build writes its output.
    pub writable: Vec<PathBuf>,
    /// A network namespace of its own, with only a loopback that is down.
    pub no_network: bool,
    /// Who the program runs as; `None` leaves it root, with only the capabilities to
    /// become someone else ([`Plan::keep_setid`]): a stem cell learns who it is to be
    /// when it is bound.
    pub identity: Option<Identity>,
    /// Keeps `CAP_SETUID` and `CAP_SETGID` for a stem cell that is still root.
    pub keep_setid: bool,
    pub workdir: Option<PathBuf>,
    pub program: Vec<OsString>,
}

impl Plan {
    /// The plan as `updraft-sandbox`'s arguments.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        for dir in &self.hidden {
            args.push("--hide".into());
            args.push(dir.clone().into_os_string());
        }
        for dir in &self.shown {
            args.push("--show".into());
            args.push(dir.clone().into_os_string());
        }
        for dir in &self.writable {
            args.push("--show-writable".into());
            args.push(dir.clone().into_os_string());
        }
        if self.no_network {
            args.push("--no-network".into());
        }
        if let Some(id) = self.identity {
            args.push("--uid".into());
            args.push(id.uid.to_string().into());
            args.push("--gid".into());
            args.push(id.gid.to_string().into());
        }
        if self.keep_setid {
            args.push("--keep-setid".into());
        }
        if let Some(dir) = &self.workdir {
            args.push("--workdir".into());
            args.push(dir.clone().into_os_string());
        }
        args.push("--".into());
        args.extend(self.program.iter().cloned());
        args
    }

    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Result<Plan, String> {
        let mut plan = Plan::default();
        let mut args = args.into_iter();
        let (mut uid, mut gid) = (None, None);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            match arg.to_str() {
                Some("--hide") => plan.hidden.push(value("--hide")?.into()),
                Some("--show") => plan.shown.push(value("--show")?.into()),
                Some("--show-writable") => plan.writable.push(value("--show-writable")?.into()),
                Some("--uid") => uid = Some(number(&value("--uid")?, "--uid")?),
                Some("--gid") => gid = Some(number(&value("--gid")?, "--gid")?),
                Some("--keep-setid") => plan.keep_setid = true,
                Some("--no-network") => plan.no_network = true,
                Some("--workdir") => plan.workdir = Some(value("--workdir")?.into()),
                Some("--") => {
                    plan.program = args.collect();
                    break;
                }
                _ => return Err(format!("unknown argument {arg:?}")),
            }
        }
        plan.identity = match (uid, gid) {
            (Some(uid), Some(gid)) if uid != 0 && gid != 0 => Some(Identity { uid, gid }),
            (None, None) => None,
            _ => return Err("--uid and --gid go together and may not be 0".into()),
        };
        for dir in plan.hidden.iter().chain(&plan.shown).chain(&plan.writable) {
            if !dir.is_absolute() {
                return Err(format!("{} is not an absolute path", dir.display()));
            }
        }
        if plan.program.is_empty() {
            return Err("no program after --".into());
        }
        Ok(plan)
    }
}

fn number(value: &OsString, name: &str) -> Result<u32, String> {
    value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{name} takes a number, not {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_plan_survives_the_command_line() {
        let plan = Plan {
            hidden: vec!["/var/lib/updraft".into()],
            shown: vec!["/var/lib/updraft/revisions".into()],
            writable: vec!["/var/lib/updraft/layers/team/.0a1b.x".into()],
            no_network: true,
            identity: Some(Identity {
                uid: 1_073_807_360,
                gid: 1_073_807_360,
            }),
            keep_setid: false,
            workdir: Some("/var/lib/updraft/revisions/team/app-00001".into()),
            program: args(&["python3", "-u", "main.py", "--"]),
        };
        assert_eq!(Plan::from_args(plan.to_args()).unwrap(), plan);
    }

    #[test]
    fn a_bad_plan_is_refused_with_its_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&["--uid", "0", "--gid", "0", "--", "x"], "may not be 0"),
            (&["--uid", "5", "--", "x"], "go together"),
            (&["--uid", "five", "--gid", "5", "--", "x"], "--uid takes a number"),
            (&["--hide", "relative", "--", "x"], "not an absolute path"),
            (&["--show", "b/c", "--", "x"], "not an absolute path"),
            (&["--show-writable", "out", "--", "x"], "not an absolute path"),
            (&["--hide", "/a"], "no program"),
            (&["--frobnicate", "--", "x"], "unknown argument"),
            (&["--workdir"], "needs a value"),
        ];
        for (words, reason) in cases {
            let error = Plan::from_args(args(words)).unwrap_err();
            assert!(error.contains(reason), "{words:?}: {error}");
        }
    }
}
