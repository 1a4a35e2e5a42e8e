//! The seccomp filter every container gets: Docker's and containerd's default profile
//! turned around. Everything is allowed but the system calls those profiles block,
//! which either need a capability a container never has or are kernel attack surface
//! a web service does not use. Knative asks for `RuntimeDefault`; this is that.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscallBuilder,
};

/// Answered EPERM. Names a kernel lacks are skipped by runc.
const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
const CLONE_NEWUSER: u64 = 0x1000_0000;

pub fn default_profile() -> Result<LinuxSeccomp, String> {
    let err = |e: oci_spec::OciSpecError| e.to_string();
    let denied = LinuxSyscallBuilder::default()
        .names(DENIED.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(EPERM)
        .build()
        .map_err(err)?;
    // New user namespaces through clone are refused as through unshare.
    let clone_userns = LinuxSyscallBuilder::default()
        .names(vec!["clone".to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(EPERM)
        .args(vec![LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(CLONE_NEWUSER)
            .value_two(CLONE_NEWUSER)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .map_err(err)?])
        .build()
        .map_err(err)?;
    // clone3's flags sit behind a pointer a filter cannot read: ENOSYS makes libc fall
    // back to clone, which the rule above sees.
    let clone3 = LinuxSyscallBuilder::default()
        .names(vec!["clone3".to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(ENOSYS)
        .build()
        .map_err(err)?;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32])
        .syscalls(vec![denied, clone_userns, clone3])
        .build()
        .map_err(err)
}
