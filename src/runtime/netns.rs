//! A pod's network namespace, kept alive by a bind mount of its nsfs file (as `ip netns`
//! does), so no pause process is needed. The loopback interface is brought up; the bridge and
//! veth pairs come with the network layer.

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

/// Moves the calling thread into a new network namespace with `lo` up, and pins that
/// namespace at `path` (a new file). For a single-threaded process (the container's init
/// helper, which makes its pod's namespace) this moves the whole process; a multi-threaded
/// caller must run it on a thread of its own (`unshare(CLONE_NEWNET)` affects one thread).
pub fn enter_new(path: &Path) -> Result<(), NetnsError> {
    let err = |source: io::Error| NetnsError::Create {
        path: path.to_owned(),
        source,
    };
    File::create(path).map_err(err)?;
    let result = (|| -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        loopback_up()?;
        mount(
            Some("/proc/thread-self/ns/net"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(path);
        return Err(err(e));
    }
    Ok(())
}

/// Unmounts and removes a namespace created by [`enter_new`]. Missing is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetnsError::Remove {
                path: path.to_owned(),
                source: e.into(),
            });
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
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
