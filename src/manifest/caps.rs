//! Linux capability names, as `cap_add` and `cap_drop` take them, and Docker's default set.

/// Capability names without the `CAP_` prefix; the index is the capability's number
/// (linux/capability.h, up to Linux 5.9's `CHECKPOINT_RESTORE`).
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Every capability this table knows.
pub const ALL: u64 = (1 << NAMES.len()) - 1;

/// Docker's (and Podman's) default set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID,
/// SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP
/// (`CapEff: 00000000a80425fb` in a container's /proc/self/status).
pub const DEFAULT: u64 = 0xa804_25fb;

/// A capability as the manifest names it: `NET_ADMIN`, `CAP_NET_ADMIN` or `net_admin`; `ALL`
/// is every capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// One capability, by number.
    One(u8),
    /// `ALL`.
    All,
}

impl Cap {
    /// Parses a name; `Err` carries the closest known name, if one is close.
    pub fn parse(name: &str) -> Result<Cap, Option<&'static str>> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if bare == "ALL" {
            return Ok(Cap::All);
        }
        match NAMES.iter().position(|n| *n == bare) {
            Some(i) => Ok(Cap::One(u8::try_from(i).unwrap_or(u8::MAX))),
            None => {
                let mut known: Vec<&str> = NAMES.to_vec();
                known.push("ALL");
                Err(super::convert::suggest(bare, &known))
            }
        }
    }

    /// Its bits in a mask.
    #[must_use]
    pub fn mask(self) -> u64 {
        match self {
            Cap::One(n) => 1 << n,
            Cap::All => ALL,
        }
    }
}

/// The set a container gets: Docker's default, minus `drop`, plus `add` (as Docker applies
/// them: `cap_drop: [ALL]` with `cap_add: [NET_BIND_SERVICE]` leaves only that one).
#[must_use]
pub fn effective(add: &[Cap], drop: &[Cap]) -> u64 {
    let dropped = drop.iter().fold(0, |m, c| m | c.mask());
    let added = add.iter().fold(0, |m, c| m | c.mask());
    (DEFAULT & !dropped) | added
}

/// The names in a mask, in number order.
#[must_use]
pub fn names(mask: u64) -> Vec<&'static str> {
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_set_is_dockers() {
        assert_eq!(
            names(DEFAULT),
            [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "KILL",
                "SETGID",
                "SETUID",
                "SETPCAP",
                "NET_BIND_SERVICE",
                "NET_RAW",
                "SYS_CHROOT",
                "MKNOD",
                "AUDIT_WRITE",
                "SETFCAP"
            ]
        );
        assert_eq!(NAMES[40], "CHECKPOINT_RESTORE");
    }

    #[test]
    fn names_parse_with_or_without_prefix_in_any_case() {
        assert_eq!(Cap::parse("NET_ADMIN"), Ok(Cap::One(12)));
        assert_eq!(Cap::parse("cap_net_admin"), Ok(Cap::One(12)));
        assert_eq!(Cap::parse("all"), Ok(Cap::All));
        assert_eq!(Cap::parse("NET_ADMN"), Err(Some("NET_ADMIN")));
        assert_eq!(Cap::parse("FLY"), Err(None));
    }

    #[test]
    fn drop_then_add() {
        let admin = Cap::One(12);
        let chown = Cap::One(0);
        assert_eq!(effective(&[admin], &[]), DEFAULT | 1 << 12);
        assert_eq!(effective(&[], &[chown]), DEFAULT & !1);
        assert_eq!(effective(&[Cap::One(10)], &[Cap::All]), 1 << 10);
        assert_eq!(effective(&[Cap::All], &[chown]), ALL);
    }
}
