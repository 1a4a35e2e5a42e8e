//! Three processes make a sandboxed instance. The waiter stays outside the new PID
//! namespace, where the server watches it, and leaves the way the instance did. The
//! namespace's init reaps orphans and reports the instance's end to the waiter: the
//! instance is not init itself, because init ignores every signal it has no handler
//! for, and a program without a SIGTERM handler would then never stop gracefully. The
//! instance, confined last, execs the program. The server signals the process group,
//! which all three share: the waiter and init ignore what the instance obeys.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use seccompiler::BpfProgram;

use crate::{filters, Plan};

/// Signals the server sends to stop an instance; the waiter and init leave them to it.
const PASSED_ON: &[libc::c_int] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Runs the plan on this process's arguments; returns only on failure or, in the
/// waiter, with the exit code to leave with.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let plan = match Plan::from_args(args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("updraft-sandbox: {e}");
            return 2;
        }
    };
    let filters = match filters() {
        Ok(filters) => filters,
        Err(e) => {
            eprintln!("updraft-sandbox: cannot build the seccomp filter: {e}");
            return 126;
        }
    };
    if let Err(e) = enter_namespaces(&plan) {
        eprintln!("updraft-sandbox: {e}");
        return 126;
    }
    let (report_read, report_write) = match pipe() {
        Ok(ends) => ends,
        Err(e) => {
            eprintln!("updraft-sandbox: {e}");
            return 126;
        }
    };
    // SAFETY: this process has one thread.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("updraft-sandbox: fork: {}", io::Error::last_os_error());
            126
        }
        0 => {
            drop(report_read);
            init(&plan, &filters, report_write)
        }
        init => {
            drop(report_write);
            wait_for(init, report_read)
        }
    }
}

/// New mount, PID and IPC namespaces; in the mount namespace, the host read-only, the
/// hidden folders covered, the shown ones back read-only, and private `/tmp` and
/// `/dev/shm`.
fn enter_namespaces(plan: &Plan) -> io::Result<()> {
    // SAFETY: plain system calls on valid, NUL-terminated strings.
    let network = if plan.no_network { libc::CLONE_NEWNET } else { 0 };
    unsafe {
        check(
            libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | network),
            "unshare",
        )?;
        check(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "making mounts private",
        )?;
    }
    // Taken before anything covers them: a hidden folder may lie under /tmp.
    let read_only = plan.shown.iter().map(|dir| (dir, true));
    let shown: Vec<(OwnedFd, &Path)> = read_only
        .chain(plan.writable.iter().map(|dir| (dir, false)))
        .map(|(dir, read_only)| Ok((detached_copy(dir, read_only)?, dir.as_path())))
        .collect::<io::Result<_>>()?;
    set_attributes(None, Path::new("/"), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, true)?;
    tmpfs(Path::new("/tmp"), "mode=1777", libc::MS_NOSUID | libc::MS_NODEV)?;
    if Path::new("/dev/shm").is_dir() {
        tmpfs(
            Path::new("/dev/shm"),
            "mode=1777",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        )?;
    }
    for dir in &plan.hidden {
        // Under the new /tmp, a hidden folder's path does not exist until made.
        let _ = std::fs::create_dir_all(dir);
        tmpfs(
            dir,
            "mode=0755,size=1m",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        )?;
    }
    for (copy, dir) in shown {
        mount_point(dir, &copy).map_err(|e| annotate(e, &format!("making {}", dir.display())))?;
        let target = c_path(dir)?;
        // SAFETY: valid descriptor and NUL-terminated strings.
        check(
            unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    copy.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ) as libc::c_int
            },
            &format!("showing {}", dir.display()),
        )?;
    }
    for dir in &plan.hidden {
        set_attributes(None, dir, MOUNT_ATTR_RDONLY, false)?;
    }
    Ok(())
}

/// Process 1 of the new PID namespace: mounts its `/proc`, starts the instance, reaps
/// every process left to it, and reports the instance's wait status.
fn init(plan: &Plan, filters: &[BpfProgram], report: OwnedFd) -> ! {
    // SAFETY: plain system calls.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let proc_mounted = unsafe {
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if proc_mounted != 0 {
        eprintln!("updraft-sandbox: mounting /proc: {}", io::Error::last_os_error());
        unsafe { libc::_exit(126) };
    }
    // SAFETY: this process has one thread.
    let instance = unsafe { libc::fork() };
    match instance {
        -1 => {
            eprintln!("updraft-sandbox: fork: {}", io::Error::last_os_error());
            unsafe { libc::_exit(126) }
        }
        0 => {
            drop(report);
            become_instance(plan, filters)
        }
        _ => {}
    }
    close_standard_streams();
    loop {
        let mut status = 0;
        // SAFETY: plain system call with a valid pointer.
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped == instance {
            let bytes = status.to_ne_bytes();
            // SAFETY: valid descriptor and buffer.
            unsafe {
                libc::write(report.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0)
            }
        }
        if reaped < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            unsafe { libc::_exit(1) }
        }
    }
}

/// Takes every capability but the two a stem cell needs to become its instance's
/// user, sets no-new-privileges, becomes the plan's user, installs the seccomp
/// filters, and execs the program.
fn become_instance(plan: &Plan, filters: &[BpfProgram]) -> ! {
    let fail = |what: &str, e: io::Error| -> ! {
        eprintln!("updraft-sandbox: {what}: {e}");
        // SAFETY: plain system call.
        unsafe { libc::_exit(126) }
    };
    // SAFETY: plain system calls.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if let Some(dir) = &plan.workdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            fail(&format!("entering {}", dir.display()), e);
        }
    }
    for cap in 0..64 {
        if plan.keep_setid && (cap == CAP_SETUID || cap == CAP_SETGID) {
            continue;
        }
        // SAFETY: plain system call; EINVAL past the last capability ends the list.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            break;
        }
    }
    // SAFETY: plain system calls.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        fail("no new privileges", io::Error::last_os_error());
    }
    if let Some(id) = plan.identity {
        // SAFETY: plain system calls; this process has one thread.
        let changed = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(id.gid, id.gid, id.gid) == 0
                && libc::setresuid(id.uid, id.uid, id.uid) == 0
        };
        if !changed {
            fail(&format!("becoming uid {}", id.uid), io::Error::last_os_error());
        }
    }
    for filter in filters {
        if let Err(e) = seccompiler::apply_filter(filter) {
            fail("installing the seccomp filter", io::Error::other(e.to_string()));
        }
    }
    let error = std::process::Command::new(&plan.program[0])
        .args(&plan.program[1..])
        .exec();
    eprintln!("updraft-sandbox: cannot run {:?}: {error}", plan.program[0]);
    // SAFETY: plain system call.
    unsafe { libc::_exit(127) }
}

/// The waiter: leaves as the instance left, by the same signal or with the same code.
fn wait_for(init: libc::pid_t, report: OwnedFd) -> i32 {
    for &signal in PASSED_ON {
        // SAFETY: plain system call.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    close_standard_streams();
    let mut init_status = 0;
    // SAFETY: plain system call with a valid pointer.
    while unsafe { libc::waitpid(init, &mut init_status, 0) } < 0 {
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
    let mut bytes = [0u8; 4];
    // SAFETY: valid descriptor and buffer.
    let got = unsafe { libc::read(report.as_raw_fd(), bytes.as_mut_ptr().cast(), 4) };
    let status = if got == 4 {
        i32::from_ne_bytes(bytes)
    } else {
        init_status
    };
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: plain system calls.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
        }
        return 128 + signal;
    }
    libc::WEXITSTATUS(status)
}

/// The instance keeps the output pipes; once it is gone, readers see their end.
fn close_standard_streams() {
    for fd in 0..3 {
        // SAFETY: plain system call.
        unsafe { libc::close(fd) };
    }
}

const CAP_SETGID: libc::c_int = 6;
const CAP_SETUID: libc::c_int = 7;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes the path `copy` is to be mounted on: a folder for a folder, an empty file for
/// a file. Where the path is on the read-only root it exists already.
fn mount_point(path: &Path, copy: &OwnedFd) -> io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptor and a buffer of the right size.
    check(unsafe { libc::fstat(copy.as_raw_fd(), stat.as_mut_ptr()) }, "fstat")?;
    // SAFETY: fstat succeeded and filled it in.
    if unsafe { stat.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFDIR {
        std::fs::create_dir(path)
    } else {
        std::fs::File::create(path).map(drop)
    }
}

/// A copy of the mounts at `dir` (read-only unless a build writes there), not
/// attached anywhere yet.
fn detached_copy(dir: &Path, read_only: bool) -> io::Result<OwnedFd> {
    let path = c_path(dir)?;
    // SAFETY: NUL-terminated string; the descriptor returned is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    } as libc::c_int;
    check(fd, &format!("copying {}", dir.display()))?;
    // SAFETY: a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let write = if read_only { MOUNT_ATTR_RDONLY } else { 0 };
    set_attributes(
        Some(&fd),
        Path::new(""),
        write | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        true,
    )?;
    Ok(fd)
}

/// Sets mount attributes on the mount at `path` (or the detached one `fd` holds).
fn set_attributes(fd: Option<&OwnedFd>, path: &Path, attributes: u64, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attributes,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let c = c_path(path)?;
    let mut flags = if recursive { AT_RECURSIVE } else { 0 };
    if fd.is_some() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    // SAFETY: valid pointers for the call's duration.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.map_or(libc::AT_FDCWD, |f| f.as_raw_fd()),
            c.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    } as libc::c_int;
    check(result, &format!("making {} read-only", path.display()))
}

fn tmpfs(dir: &Path, options: &str, flags: libc::c_ulong) -> io::Result<()> {
    let target = c_path(dir)?;
    let data = CString::new(options).map_err(io::Error::other)?;
    // SAFETY: NUL-terminated strings.
    check(
        unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        },
        &format!("mounting a tmpfs on {}", dir.display()),
    )
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: valid pointer to two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, "pipe")?;
    // SAFETY: fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn check(result: libc::c_int, what: &str) -> io::Result<()> {
    if result < 0 {
        Err(annotate(io::Error::last_os_error(), what))
    } else {
        Ok(())
    }
}

fn annotate(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
