//! The seccomp filter every container gets, as runc reads it: the sandbox's list of
//! denied system calls. Knative asks for `RuntimeDefault`; this is that.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscallBuilder,
};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
const CLONE_NEWUSER: u64 = 0x1000_0000;

pub fn default_profile() -> Result<LinuxSeccomp, String> {
    let err = |e: oci_spec::OciSpecError| e.to_string();
    let denied = LinuxSyscallBuilder::default()
        .names(
            updraft_sandbox::DENIED_SYSCALLS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
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
