//! The user a container's command runs as: `uid`, `uid:gid`, `name`, `name:group` (Docker's
//! `--user` forms), resolved against the container's own /etc/passwd and /etc/group.
//!
//! This runs inside the container, after pivot_root, so the files read are the image's: they
//! are hostile input. Each is read only when it is a regular file, and at most
//! [`MAX_DB_BYTES`] of it (layer-attacks.md C5: a 100 MiB /etc/group or a FIFO must not
//! hang or exhaust the runtime).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// Largest /etc/passwd or /etc/group read.
pub const MAX_DB_BYTES: u64 = 4 * 1024 * 1024;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership), without `gid`.
    pub groups: Vec<u32>,
    /// Home directory from /etc/passwd, if the user is listed there.
    pub home: Option<String>,
}

/// Reads an account database of the container, bounded; an absent file is empty.
pub fn read_db(path: &str) -> Result<String, String> {
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        // A symlink (ELOOP with O_NOFOLLOW) is followed once by a plain open: images
        // commonly link /etc/passwd elsewhere inside themselves; pivot_root keeps it inside.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| format!("cannot open `{path}`: {e}"))?,
        Err(e) => return Err(format!("cannot open `{path}`: {e}")),
    };
    read_opened(file, path)
}

/// Reads an account database already opened (as `path`, for messages): a regular file of at
/// most [`MAX_DB_BYTES`]. `super::oci` opens the image's files from the host, confined to
/// the container root by openat2(2)'s `RESOLVE_IN_ROOT`.
pub fn read_opened(file: File, path: &str) -> Result<String, String> {
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let kind = meta.file_type();
    if !kind.is_file() || kind.is_fifo() {
        return Err(format!("`{path}` is not a regular file"));
    }
    if meta.len() > MAX_DB_BYTES {
        return Err(format!(
            "`{path}` is {} bytes; at most {MAX_DB_BYTES} are read",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_DB_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{path}`: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Resolves `spec` against the text of /etc/passwd and /etc/group.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<User, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() {
        return Err(format!("invalid user `{spec}`: the user part is empty"));
    }
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .find(|f| f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part));
    let (uid, mut gid, name, home) = match (&entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("bad uid `{}` for `{}` in /etc/passwd", f[2], f[0]))?,
            f[3].parse::<u32>()
                .map_err(|_| format!("bad gid `{}` for `{}` in /etc/passwd", f[3], f[0]))?,
            Some(f[0]),
            Some(f[5].to_string()).filter(|h| !h.is_empty()),
        ),
        // A numeric user the image does not list runs with group 0, as under Docker.
        (None, Ok(uid)) => (uid, 0, None, None),
        (None, Err(_)) => {
            return Err(format!(
                "user `{user_part}` is not in the image's /etc/passwd"
            ));
        }
    };
    let groups_db: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let f = groups_db
                    .iter()
                    .find(|f| f[0] == g)
                    .ok_or_else(|| format!("group `{g}` is not in the image's /etc/group"))?;
                f[2].parse::<u32>()
                    .map_err(|_| format!("bad gid `{}` for `{g}` in /etc/group", f[2]))?
            }
        };
    }
    let mut groups = Vec::new();
    if let Some(name) = name
        && group_part.is_none()
    {
        for f in &groups_db {
            if f[3].split(',').any(|m| m == name)
                && let Ok(id) = f[2].parse::<u32>()
                && id != gid
                && !groups.contains(&id)
            {
                groups.push(id);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n\
                          app:x:1000:1000::/home/app:/bin/sh\nbroken\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\napp:x:1000:\nadm:x:4:app,www\nstaff:x:50:app\n";

    #[test]
    fn resolves_docker_user_forms() {
        let app = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!(
            (app.uid, app.gid, app.groups.clone()),
            (1000, 1000, vec![4, 50])
        );
        assert_eq!(app.home.as_deref(), Some("/home/app"));
        let numeric = resolve("1000", PASSWD, GROUP).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (1000, 1000));
        let unknown = resolve("4242", PASSWD, GROUP).unwrap();
        assert_eq!((unknown.uid, unknown.gid, unknown.home), (4242, 0, None));
        let pair = resolve("33:50", PASSWD, GROUP).unwrap();
        assert_eq!((pair.uid, pair.gid, pair.groups), (33, 50, vec![]));
        let named = resolve("www:adm", PASSWD, GROUP).unwrap();
        assert_eq!((named.uid, named.gid), (33, 4));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(
            resolve("nobody", PASSWD, GROUP)
                .unwrap_err()
                .contains("nobody")
        );
        assert!(
            resolve("app:nogroup", PASSWD, GROUP)
                .unwrap_err()
                .contains("nogroup")
        );
        assert!(resolve(":1", PASSWD, GROUP).is_err());
    }
}
