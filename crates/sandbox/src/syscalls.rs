//! Docker's and containerd's default seccomp profile turned around: everything is
//! allowed but the system calls those profiles block, which either need a capability
//! an instance never has or are kernel attack surface a web service does not use.
//! Containers get the same list through runc; sandboxed processes through
//! [`filters`].

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Answered EPERM. Names a kernel or an architecture lacks are skipped.
pub const DENIED_SYSCALLS: &[&str] = &[
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

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

/// The filters to install, in order: the denied calls and `clone` of a new user
/// namespace answer EPERM; `clone3` answers ENOSYS, because its flags sit behind a
/// pointer a filter cannot read and libc then falls back to `clone`, which the first
/// filter sees. A call of another architecture's ABI kills the process.
pub fn filters() -> Result<Vec<BpfProgram>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let err = |e: seccompiler::BackendError| e.to_string();
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> = DENIED_SYSCALLS
        .iter()
        .filter_map(|name| number(name))
        .map(|nr| (nr, Vec::new()))
        .collect();
    let new_user_namespace = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_NEWUSER as u64),
        libc::CLONE_NEWUSER as u64,
    )
    .map_err(err)?;
    denied.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![new_user_namespace]).map_err(err)?],
    );
    let first = SeccompFilter::new(denied, SeccompAction::Allow, SeccompAction::Errno(EPERM), arch).map_err(err)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(ENOSYS),
        arch,
    )
    .map_err(err)?;
    Ok(vec![first.try_into().map_err(err)?, clone3.try_into().map_err(err)?])
}

/// This architecture's number for a system call of the list, if it has one.
fn number(name: &str) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    let arch_only = match name {
        "ioperm" => Some(libc::SYS_ioperm),
        "iopl" => Some(libc::SYS_iopl),
        "nfsservctl" => Some(libc::SYS_nfsservctl),
        "_sysctl" => Some(libc::SYS__sysctl),
        "sysfs" => Some(libc::SYS_sysfs),
        "umount" => None,
        "uselib" => Some(libc::SYS_uselib),
        "ustat" => Some(libc::SYS_ustat),
        "umount2" => Some(libc::SYS_umount2),
        _ => None,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let arch_only = match name {
        "umount2" => Some(libc::SYS_umount2),
        _ => None,
    };
    arch_only.or(match name {
        "acct" => Some(libc::SYS_acct),
        "add_key" => Some(libc::SYS_add_key),
        "bpf" => Some(libc::SYS_bpf),
        "clock_adjtime" => Some(libc::SYS_clock_adjtime),
        "clock_settime" => Some(libc::SYS_clock_settime),
        "delete_module" => Some(libc::SYS_delete_module),
        "finit_module" => Some(libc::SYS_finit_module),
        "fsconfig" => Some(libc::SYS_fsconfig),
        "fsmount" => Some(libc::SYS_fsmount),
        "fsopen" => Some(libc::SYS_fsopen),
        "fspick" => Some(libc::SYS_fspick),
        "init_module" => Some(libc::SYS_init_module),
        "io_uring_enter" => Some(libc::SYS_io_uring_enter),
        "io_uring_register" => Some(libc::SYS_io_uring_register),
        "io_uring_setup" => Some(libc::SYS_io_uring_setup),
        "kcmp" => Some(libc::SYS_kcmp),
        "kexec_file_load" => Some(libc::SYS_kexec_file_load),
        "kexec_load" => Some(libc::SYS_kexec_load),
        "keyctl" => Some(libc::SYS_keyctl),
        "lookup_dcookie" => Some(libc::SYS_lookup_dcookie),
        "mount" => Some(libc::SYS_mount),
        "mount_setattr" => Some(libc::SYS_mount_setattr),
        "move_mount" => Some(libc::SYS_move_mount),
        "name_to_handle_at" => Some(libc::SYS_name_to_handle_at),
        "open_by_handle_at" => Some(libc::SYS_open_by_handle_at),
        "open_tree" => Some(libc::SYS_open_tree),
        "perf_event_open" => Some(libc::SYS_perf_event_open),
        "pivot_root" => Some(libc::SYS_pivot_root),
        "process_vm_readv" => Some(libc::SYS_process_vm_readv),
        "process_vm_writev" => Some(libc::SYS_process_vm_writev),
        "quotactl" => Some(libc::SYS_quotactl),
        "quotactl_fd" => Some(libc::SYS_quotactl_fd),
        "reboot" => Some(libc::SYS_reboot),
        "request_key" => Some(libc::SYS_request_key),
        "setns" => Some(libc::SYS_setns),
        "settimeofday" => Some(libc::SYS_settimeofday),
        "swapoff" => Some(libc::SYS_swapoff),
        "swapon" => Some(libc::SYS_swapon),
        "unshare" => Some(libc::SYS_unshare),
        "userfaultfd" => Some(libc::SYS_userfaultfd),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denied_call_this_architecture_has_is_in_the_filter() {
        let known: Vec<&str> = DENIED_SYSCALLS
            .iter()
            .copied()
            .filter(|n| number(n).is_some())
            .collect();
        // The calls only 32-bit x86 or older kernels had are the ones left out.
        let missing: Vec<&str> = DENIED_SYSCALLS
            .iter()
            .copied()
            .filter(|n| number(n).is_none())
            .collect();
        for name in &missing {
            assert!(
                [
                    "stime",
                    "vm86",
                    "vm86old",
                    "umount",
                    "create_module",
                    "get_kernel_syms",
                    "query_module",
                    "_sysctl",
                    "sysfs",
                    "uselib",
                    "ustat",
                    "ioperm",
                    "iopl",
                    "nfsservctl"
                ]
                .contains(name),
                "{name} has no number here"
            );
        }
        assert!(known.len() > 40, "{known:?}");
        assert_eq!(filters().unwrap().len(), 2);
    }
}
