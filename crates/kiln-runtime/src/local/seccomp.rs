//! The seccomp filters every sandbox runs under, compiled to classic BPF for
//! bubblewrap's `--add-seccomp-fd`.
//!
//! Two filters, because one seccompiler filter has a single action:
//! - `deny`: the syscalls a sandbox has no business making fail with `EPERM`; any
//!   architecture but x86_64 (e.g. `int 0x80` i386 calls) kills the process.
//! - `nosys`: `clone3` (its flags sit behind a pointer, so `CLONE_NEWUSER` cannot be
//!   filtered; libc falls back to `clone` on `ENOSYS`) and every x32-ABI number fail with
//!   `ENOSYS`, so the x32 aliases of denied calls cannot slip past `deny`.
//!
//! - `families`: `socket()` of an address family a sandbox does not need fails with
//!   `EAFNOSUPPORT`, the kernel's own answer for a family it lacks (see
//!   [`ALLOWED_FAMILIES`]).
//!
//! The kernel runs them all and the stricter answer wins.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use crate::error::{Result, RuntimeError};

/// Syscalls denied outright: mounts and namespaces (escape), kernel and host state,
/// debugging other processes (the agent is one), and notoriously buggy interfaces.
const DENIED: &[(i64, &str)] = &[
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_chroot, "chroot"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_kcmp, "kcmp"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_clock_adjtime, "clock_adjtime"),
    (libc::SYS_adjtimex, "adjtimex"),
    (libc::SYS_syslog, "syslog"),
    (libc::SYS_iopl, "iopl"),
    (libc::SYS_ioperm, "ioperm"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_fanotify_init, "fanotify_init"),
    (libc::SYS_lookup_dcookie, "lookup_dcookie"),
    (libc::SYS_vhangup, "vhangup"),
    (libc::SYS_uselib, "uselib"),
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
];

/// The socket families a sandbox may open: unix, IPv4, IPv6, and netlink for the
/// protocols in [`ALLOWED_NETLINK`]. That is what git, Python, Node, `ip` and glibc's
/// resolver use. Docker's default profile denies only `AF_VSOCK` (which reaches the
/// hypervisor or host, beyond any network namespace); everything else here (packet,
/// bluetooth, `AF_KEY`, `AF_ALG`, TIPC, RDS, XDP, CAN, …) is kernel surface with a
/// history of privilege escalations and no use to a coding agent.
const ALLOWED_FAMILIES: &[libc::c_int] = &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];

/// Netlink protocols allowed: routing (getaddrinfo, `ip`, interface lists) and socket
/// diagnostics (`ss`). Not uevents, audit, netfilter, xfrm, generic netlink.
const ALLOWED_NETLINK: &[libc::c_int] =
    &[0 /* NETLINK_ROUTE */, 4 /* NETLINK_SOCK_DIAG */];

/// The compiled filters, as bytes of `struct sock_filter` arrays.
#[derive(Debug, Clone)]
pub struct SeccompFilters {
    /// The deny list (EPERM).
    pub deny: Vec<u8>,
    /// clone3 and x32 (ENOSYS).
    pub nosys: Vec<u8>,
    /// Socket families (EAFNOSUPPORT).
    pub families: Vec<u8>,
}

/// Compiles both filters.
pub fn compile() -> Result<SeccompFilters> {
    let err = |e: seccompiler::BackendError| RuntimeError::Seccomp(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    // A new user namespace would hand its creator every capability inside it, and with
    // them kernel surface we dropped on purpose. Other namespaces need CAP_SYS_ADMIN.
    let newuser = u64::try_from(libc::CLONE_NEWUSER).unwrap_or(0x1000_0000);
    for nr in [libc::SYS_unshare, libc::SYS_clone] {
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(newuser),
            newuser,
        )
        .map_err(err)?;
        rules.insert(nr, vec![SeccompRule::new(vec![cond]).map_err(err)?]);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(err)?;
    let deny: BpfProgram = filter.try_into().map_err(err)?;
    Ok(SeccompFilters {
        deny: to_bytes(&deny),
        nosys: to_bytes(&nosys_program()),
        families: to_bytes(&families_program()?),
    })
}

/// `socket(family, …)` outside [`ALLOWED_FAMILIES`] (netlink: [`ALLOWED_NETLINK`]) →
/// EAFNOSUPPORT. Rules are OR'ed, conditions within one rule AND'ed.
fn families_program() -> Result<BpfProgram> {
    let err = |e: seccompiler::BackendError| RuntimeError::Seccomp(e.to_string());
    let arg_ne = |index: u8, value: libc::c_int| {
        SeccompCondition::new(
            index,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            u64::from(value.unsigned_abs()),
        )
        .map_err(err)
    };
    let other_family: Vec<SeccompCondition> = ALLOWED_FAMILIES
        .iter()
        .chain([&libc::AF_NETLINK])
        .map(|&family| arg_ne(0, family))
        .collect::<Result<_>>()?;
    let mut other_netlink = vec![SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        u64::from(libc::AF_NETLINK.unsigned_abs()),
    )
    .map_err(err)?];
    for &protocol in ALLOWED_NETLINK {
        other_netlink.push(arg_ne(2, protocol)?);
    }
    let rules = BTreeMap::from([(
        libc::SYS_socket,
        vec![
            SeccompRule::new(other_family).map_err(err)?,
            SeccompRule::new(other_netlink).map_err(err)?,
        ],
    )]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
        TargetArch::x86_64,
    )
    .map_err(err)?;
    filter.try_into().map_err(err)
}

/// `nr >= X32_SYSCALL_BIT || nr == clone3` → ENOSYS, else allow.
fn nosys_program() -> Vec<sock_filter> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JMP_JEQ_K: u16 = 0x05 | 0x10;
    const JMP_JGE_K: u16 = 0x05 | 0x30;
    const RET_K: u16 = 0x06;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let clone3 = u32::try_from(libc::SYS_clone3).unwrap_or(435);
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        insn(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        insn(JMP_JGE_K, 2, 0, X32_SYSCALL_BIT),
        insn(JMP_JEQ_K, 1, 0, clone3),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        insn(RET_K, 0, 0, enosys),
    ]
}

fn to_bytes(program: &[sock_filter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for insn in program {
        out.extend_from_slice(&insn.code.to_ne_bytes());
        out.push(insn.jt);
        out.push(insn.jf);
        out.extend_from_slice(&insn.k.to_ne_bytes());
    }
    out
}

/// Names of the syscalls denied outright, for documentation and tests.
pub fn denied_names() -> impl Iterator<Item = &'static str> {
    DENIED.iter().map(|(_, name)| *name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn compiles_whole_instructions() {
        let filters = compile().unwrap();
        assert!(!filters.deny.is_empty());
        assert_eq!(filters.deny.len() % 8, 0);
        assert_eq!(filters.nosys.len(), 5 * 8);
        assert!(denied_names().any(|n| n == "mount"));
    }
}
