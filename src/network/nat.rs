//! Masquerading of the pods' traffic that leaves the host (so that a nameserver or a
//! service beyond the host answers them): one nftables table per project, named after its
//! bridge, with a `postrouting` rule that masquerades what comes from the subnet and does not
//! go back to the bridge. Made and removed with `nft` (nftables' own tool: no Rust crate for
//! nftables is in our dependency set, and this is two calls per project).

use std::io::Write;
use std::process::{Command, Stdio};

use super::{NetworkError, Subnet};

/// The project's nftables table (`ip` family).
#[must_use]
pub fn table_name(bridge: &str) -> String {
    format!("rcompose_{}", bridge.replace('-', "_"))
}

/// The nftables script that makes the table.
#[must_use]
pub fn script(bridge: &str, subnet: Subnet) -> String {
    let table = table_name(bridge);
    format!(
        "table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != \"{bridge}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<(), NetworkError> {
    let what = format!("run `nft {}`", args.join(" "));
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetworkError::Io {
            what: what.clone(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(text.as_bytes());
    }
    // A supervisor reaps every child of its own (it is a subreaper, and its signal thread
    // waits for any child), so the status may be gone when `wait` asks for it: then `nft`,
    // which prints nothing on stderr unless it fails, is judged by its stderr.
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    let ok = match child.wait() {
        Ok(status) => status.success(),
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => stderr.trim().is_empty(),
        Err(source) => return Err(NetworkError::Io { what, source }),
    };
    if ok {
        Ok(())
    } else {
        Err(NetworkError::Netlink {
            what,
            message: stderr.trim().to_string(),
        })
    }
}

/// Makes the project's masquerade table (replacing one a crashed run left).
///
/// # Errors
///
/// `nft` is missing or refused the table.
pub fn enable(bridge: &str, subnet: Subnet) -> Result<(), NetworkError> {
    disable(bridge);
    nft(&["-f", "-"], Some(&script(bridge, subnet)))
}

/// Removes the project's masquerade table, if there is one (best effort: `nft` missing means
/// there is none).
pub fn disable(bridge: &str) {
    let _ = nft(&["delete", "table", "ip", &table_name(bridge)], None);
}

/// Whether the project's table exists.
#[must_use]
pub fn exists(bridge: &str) -> bool {
    nft(&["list", "table", "ip", &table_name(bridge)], None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_masquerades_the_subnet_leaving_by_another_link() {
        let s = script("rcshop-1a2b3", "10.90.4.0/24".parse().unwrap());
        assert!(s.starts_with("table ip rcompose_rcshop_1a2b3 {\n"), "{s}");
        assert!(
            s.contains("ip saddr 10.90.4.0/24 oifname != \"rcshop-1a2b3\" masquerade"),
            "{s}"
        );
        assert!(s.contains("type nat hook postrouting priority srcnat;"));
    }
}
