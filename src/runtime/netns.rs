//! A pod's shared namespaces: network, IPC and UTS, each kept alive by a bind mount of its
//! nsfs file (as `ip netns` does), so no pause process is needed, and the pod's `/dev/shm`,
//! a tmpfs every container of the pod mounts (POSIX shared memory is files there; SysV IPC
//! is in the IPC namespace). The network namespace's pin names the pod's set; the others sit
//! next to it ([`PodPins`]). The loopback interface is brought up; the bridge and veth pairs
//! come with the network layer.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

/// Errors of network namespace handling.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Creating the namespace failed.
    #[error("failed to create network namespace `{path}`")]
    Create {
        /// The nsfs bind-mount path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Removing the namespace failed.
    #[error("failed to remove network namespace `{path}`")]
    Remove {
        /// The nsfs bind-mount path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Where a pod's namespaces are pinned, all derived from its network namespace's pin
/// (`netns.web-1`): `netns.web-1.ipc`, `netns.web-1.uts` and the `/dev/shm` tmpfs on the
/// directory `netns.web-1.shm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPins {
    /// The network namespace.
    pub net: PathBuf,
    /// The IPC namespace.
    pub ipc: PathBuf,
    /// The UTS namespace.
    pub uts: PathBuf,
    /// The pod's /dev/shm (a directory with a tmpfs on it).
    pub shm: PathBuf,
}

impl PodPins {
    /// The pins of the pod whose network namespace is pinned at `net`.
    #[must_use]
    pub fn of(net: &Path) -> PodPins {
        let with = |suffix: &str| {
            let mut name = net.file_name().unwrap_or_default().to_os_string();
            name.push(suffix);
            net.with_file_name(name)
        };
        PodPins {
            net: net.to_owned(),
            ipc: with(".ipc"),
            uts: with(".uts"),
            shm: with(".shm"),
        }
    }

    /// The namespace pins with the namespace each holds.
    #[must_use]
    pub fn namespaces(&self) -> [(&Path, CloneFlags, &'static str); 3] {
        [
            (&self.net, CloneFlags::CLONE_NEWNET, "net"),
            (&self.ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
            (&self.uts, CloneFlags::CLONE_NEWUTS, "uts"),
        ]
    }
}

/// Moves the calling thread into new network (with `lo` up), IPC and UTS namespaces, pins
/// them at `path` and next to it ([`PodPins`]), and mounts the pod's /dev/shm tmpfs. For a
/// single-threaded process (the container's init helper, which makes its pod's namespaces)
/// this moves the whole process; a multi-threaded caller must run it on a thread of its own
/// (`unshare` affects one thread). On failure nothing is left.
pub fn enter_new(path: &Path) -> Result<(), NetnsError> {
    let err = |source: io::Error| NetnsError::Create {
        path: path.to_owned(),
        source,
    };
    let pins = PodPins::of(path);
    let result = (|| -> io::Result<()> {
        for (pin, _, _) in pins.namespaces() {
            File::create(pin)?;
        }
        fs::create_dir(&pins.shm)?;
        unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)?;
        loopback_up()?;
        for (pin, _, kind) in pins.namespaces() {
            mount(
                Some(format!("/proc/thread-self/ns/{kind}").as_str()),
                pin,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
        }
        mount(
            Some("shm"),
            &pins.shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=1777,size=65536k"),
        )?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = remove(path);
        return Err(err(e));
    }
    Ok(())
}

/// Unmounts and removes the namespaces and /dev/shm of the pod pinned at `path` (made by
/// [`enter_new`]). Missing is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    let pins = PodPins::of(path);
    let fail = |path: &Path, source: io::Error| NetnsError::Remove {
        path: path.to_owned(),
        source,
    };
    for pin in [&pins.shm, &pins.ipc, &pins.uts, &pins.net] {
        match umount2(pin, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(fail(pin, e.into())),
        }
        let removed = if pin == &pins.shm {
            fs::remove_dir(pin)
        } else {
            fs::remove_file(pin)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(fail(pin, source)),
        }
    }
    Ok(())
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket(2) call; the fd is owned and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid socket that nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req` into it.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS writes the flags from `req`.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
