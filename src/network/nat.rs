//! Masquerading of the pods' traffic that leaves the host (so that a nameserver or a
//! service beyond the host answers them): one nftables table per project, named after its
//! bridge, with a `postrouting` rule that masquerades what comes from the subnet and does not
//! go back to the bridge. Made and removed with `nft` (nftables' own tool: no Rust crate for
//! nftables is in our dependency set, and this is two calls per project).

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
    super::tool("nft", args, stdin)
}

/// Makes the project's masquerade table (replacing one a crashed run left), with IPv4
/// forwarding on.
///
/// # Errors
///
/// Forwarding cannot be turned on, or `nft` is missing or refused the table.
pub fn enable(bridge: &str, subnet: Subnet) -> Result<(), NetworkError> {
    forwarding()?;
    disable(bridge);
    nft(&["-f", "-"], Some(&script(bridge, subnet)))
}

/// Turns IPv4 forwarding on, as Docker and Podman do: without it the pods' packets never
/// leave the bridge for another link. It stays on (other projects, and the host's other
/// container tools, count on it).
fn forwarding() -> Result<(), NetworkError> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|source| NetworkError::Io {
        what: format!("turn IPv4 forwarding on (write 1 to {path})"),
        source,
    })
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
