//! The confinement of a container's command, as Docker's defaults: masked and read-only
//! /proc paths, a capability set, `no_new_privs`, and a seccomp filter that refuses what
//! Docker's default profile refuses. `privileged: true` skips all of it.
//!
//! Order, in the command's process (single-threaded, after fork, before exec): the
//! bounding set shrinks while the process still holds CAP_SETPCAP; then the user switch
//! (which needs CAP_SETUID/CAP_SETGID in the effective set, not the bounding set, so
//! `cap_drop: [SETUID]` with a `user:` works as in runc); then the permitted, effective and
//! inheritable sets (root) and `no_new_privs`; the seccomp filter last, so that nothing
//! of ours runs under it but `execve`.

use std::collections::{BTreeMap, HashSet};

use nix::mount::{MsFlags, mount};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// /proc and /sys paths covered up: files by /dev/null, directories by an empty read-only
/// tmpfs (Docker's list). Paths the kernel lacks are skipped.
pub(super) const MASKED: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// /proc paths made read-only (bind-mounted on themselves, then remounted read-only).
pub(super) const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Covers up [`MASKED`] and makes [`READ_ONLY`] read-only; runs after `pivot_root`, in the
/// container's mount namespace.
pub fn mask_paths() -> Result<(), String> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for path in MASKED {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        let result = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                nosuid | MsFlags::MS_RDONLY,
                Some("size=0,mode=555"),
            )
        } else {
            mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(|e| format!("failed to mask `{path}`: {}", e.desc()))?;
    }
    for path in READ_ONLY {
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|()| {
            mount(
                None::<&str>,
                path,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid,
                None::<&str>,
            )
        })
        .map_err(|e| format!("failed to make `{path}` read-only: {}", e.desc()))?;
    }
    Ok(())
}

/// Capability numbers the running kernel knows (`PR_CAPBSET_READ` answers for them).
fn kernel_caps() -> impl Iterator<Item = u8> {
    // SAFETY: PR_CAPBSET_READ only reads this thread's bounding set; no pointers.
    (0u8..64).take_while(
        |&n| unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(n), 0, 0, 0) } >= 0,
    )
}

/// Removes every capability outside `keep` from the bounding set: nothing this process
/// execs can gain them again.
pub fn limit_bounding_set(keep: u64) -> Result<(), String> {
    for n in kernel_caps() {
        if keep & (1 << n) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number; no pointers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(n), 0, 0, 0) };
        if rc != 0 {
            return Err(format!(
                "failed to drop capability {n} from the bounding set: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Sets the permitted and effective sets to `keep` for root (a non-root user has none left
/// after `setuid`), clears the inheritable and ambient sets, and sets `no_new_privs`.
pub fn set_capabilities(keep: u64) -> Result<(), String> {
    let set: HashSet<caps::Capability> = caps::all()
        .into_iter()
        .filter(|c| keep & (1 << c.index()) != 0)
        .collect();
    let fail = |what: &str, e: caps::errors::CapsError| {
        format!("failed to set the {what} capabilities: {e}")
    };
    if nix::unistd::geteuid().is_root() {
        // effective first: it must stay a subset of permitted at every step
        caps::set(None, caps::CapSet::Effective, &set).map_err(|e| fail("effective", e))?;
        caps::set(None, caps::CapSet::Permitted, &set).map_err(|e| fail("permitted", e))?;
    }
    caps::clear(None, caps::CapSet::Inheritable).map_err(|e| fail("inheritable", e))?;
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| fail("ambient", e))?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "failed to set no_new_privs: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Capability numbers the filter's allowances depend on.
pub(super) mod cap {
    pub const DAC_READ_SEARCH: u8 = 2;
    pub const SYS_MODULE: u8 = 16;
    pub const SYS_RAWIO: u8 = 17;
    pub const SYS_PTRACE: u8 = 19;
    pub const SYS_PACCT: u8 = 20;
    pub const SYS_ADMIN: u8 = 21;
    pub const SYS_BOOT: u8 = 22;
    pub const SYS_NICE: u8 = 23;
    pub const SYS_TIME: u8 = 25;
    pub const SYS_TTY_CONFIG: u8 = 26;
    pub const SYSLOG: u8 = 34;
}

/// The system calls refused with EPERM, each unless the container holds the capability
/// next to it (as Docker's default profile does: a capability re-allows its calls). The
/// key management calls are refused always: keys are not namespaced.
#[cfg(target_arch = "x86_64")]
pub(super) fn refused() -> Vec<(i64, Option<u8>)> {
    use libc::*;
    vec![
        (SYS_add_key, None),
        (SYS_keyctl, None),
        (SYS_request_key, None),
        (SYS_uselib, None),
        (SYS_ustat, None),
        (SYS_sysfs, None),
        (SYS__sysctl, None),
        (SYS_nfsservctl, None),
        (SYS_lookup_dcookie, None),
        (SYS_mount, Some(cap::SYS_ADMIN)),
        (SYS_umount2, Some(cap::SYS_ADMIN)),
        (SYS_pivot_root, Some(cap::SYS_ADMIN)),
        (SYS_unshare, Some(cap::SYS_ADMIN)),
        (SYS_setns, Some(cap::SYS_ADMIN)),
        (SYS_fsopen, Some(cap::SYS_ADMIN)),
        (SYS_fsconfig, Some(cap::SYS_ADMIN)),
        (SYS_fsmount, Some(cap::SYS_ADMIN)),
        (SYS_fspick, Some(cap::SYS_ADMIN)),
        (SYS_move_mount, Some(cap::SYS_ADMIN)),
        (SYS_open_tree, Some(cap::SYS_ADMIN)),
        (SYS_mount_setattr, Some(cap::SYS_ADMIN)),
        (SYS_swapon, Some(cap::SYS_ADMIN)),
        (SYS_swapoff, Some(cap::SYS_ADMIN)),
        (SYS_quotactl, Some(cap::SYS_ADMIN)),
        (SYS_bpf, Some(cap::SYS_ADMIN)),
        (SYS_perf_event_open, Some(cap::SYS_ADMIN)),
        (SYS_fanotify_init, Some(cap::SYS_ADMIN)),
        (SYS_name_to_handle_at, Some(cap::SYS_ADMIN)),
        (SYS_open_by_handle_at, Some(cap::DAC_READ_SEARCH)),
        (SYS_reboot, Some(cap::SYS_BOOT)),
        (SYS_kexec_load, Some(cap::SYS_BOOT)),
        (SYS_kexec_file_load, Some(cap::SYS_BOOT)),
        (SYS_init_module, Some(cap::SYS_MODULE)),
        (SYS_finit_module, Some(cap::SYS_MODULE)),
        (SYS_delete_module, Some(cap::SYS_MODULE)),
        (SYS_ptrace, Some(cap::SYS_PTRACE)),
        (SYS_process_vm_readv, Some(cap::SYS_PTRACE)),
        (SYS_process_vm_writev, Some(cap::SYS_PTRACE)),
        (SYS_kcmp, Some(cap::SYS_PTRACE)),
        (SYS_userfaultfd, Some(cap::SYS_PTRACE)),
        (SYS_settimeofday, Some(cap::SYS_TIME)),
        (SYS_clock_settime, Some(cap::SYS_TIME)),
        (SYS_clock_adjtime, Some(cap::SYS_TIME)),
        (SYS_acct, Some(cap::SYS_PACCT)),
        (SYS_mbind, Some(cap::SYS_NICE)),
        (SYS_set_mempolicy, Some(cap::SYS_NICE)),
        (SYS_move_pages, Some(cap::SYS_NICE)),
        (SYS_migrate_pages, Some(cap::SYS_NICE)),
        (SYS_iopl, Some(cap::SYS_RAWIO)),
        (SYS_ioperm, Some(cap::SYS_RAWIO)),
        (SYS_vhangup, Some(cap::SYS_TTY_CONFIG)),
        (SYS_syslog, Some(cap::SYSLOG)),
    ]
}

/// Namespace flags `clone` may not carry without CAP_SYS_ADMIN.
pub(super) const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// The default seccomp filters for a container with capability set `caps`: one refusing
/// calls with EPERM, one answering `clone3` with ENOSYS (its flags are behind a pointer a
/// filter cannot read, so libc falls back to `clone`, whose flags it can). Built before the
/// command's process installs them with [`apply`].
#[cfg(target_arch = "x86_64")]
pub fn filters(caps: u64) -> Result<Vec<BpfProgram>, String> {
    let has = |c: u8| caps & (1 << c) != 0;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (call, unless) in refused() {
        if !unless.is_some_and(has) {
            rules.insert(call, Vec::new());
        }
    }
    let bad = |e: seccompiler::BackendError| format!("failed to build the seccomp filter: {e}");
    if !has(cap::SYS_ADMIN) {
        let mut clone_rules = Vec::new();
        for flag in NAMESPACE_FLAGS {
            let flag = u64::from(flag.unsigned_abs());
            // x86_64: clone(flags, stack, parent_tid, child_tid, tls); flags are arg 0
            let condition = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(bad)?;
            clone_rules.push(SeccompRule::new(vec![condition]).map_err(bad)?);
        }
        rules.insert(libc::SYS_clone, clone_rules);
    }
    let errno = |e: i32| SeccompAction::Errno(e.unsigned_abs());
    let refuse = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        errno(libc::EPERM),
        TargetArch::x86_64,
    )
    .map_err(bad)?;
    let mut programs = vec![BpfProgram::try_from(refuse).map_err(bad)?];
    if !has(cap::SYS_ADMIN) {
        let clone3 = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            errno(libc::ENOSYS),
            TargetArch::x86_64,
        )
        .map_err(bad)?;
        programs.push(BpfProgram::try_from(clone3).map_err(bad)?);
    }
    Ok(programs)
}

/// No default filter for this architecture yet: only x86_64 has the system call table.
#[cfg(not(target_arch = "x86_64"))]
pub fn filters(_caps: u64) -> Result<Vec<BpfProgram>, String> {
    Err("the default seccomp filter exists for x86_64 only; use `privileged: true`".into())
}

/// Installs `programs` in this thread (and what it execs). Needs `no_new_privs` or
/// CAP_SYS_ADMIN; [`set_capabilities`] set the former.
pub fn apply(programs: &[BpfProgram]) -> Result<(), String> {
    for program in programs {
        seccompiler::apply_filter(program)
            .map_err(|e| format!("failed to install the seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker's default set and every capability (the manifest's `caps::DEFAULT`, `ALL`).
    const DEFAULT: u64 = 0xa804_25fb;
    const ALL: u64 = (1 << 41) - 1;

    #[test]
    fn capabilities_lift_their_refusals() {
        let count = |caps: u64| -> usize {
            refused()
                .iter()
                .filter(|(_, unless)| !unless.is_some_and(|c| caps & (1 << c) != 0))
                .count()
        };
        let all = count(ALL);
        let default = count(DEFAULT);
        assert_eq!(
            all, 9,
            "only the always-refused calls stay with every capability"
        );
        assert_eq!(default, refused().len());
        assert!(count(1 << cap::SYS_ADMIN) < default);
    }

    #[test]
    fn filters_build_for_the_default_and_for_every_capability() {
        assert_eq!(filters(DEFAULT).unwrap().len(), 2);
        assert_eq!(filters(ALL).unwrap().len(), 1);
    }
}
