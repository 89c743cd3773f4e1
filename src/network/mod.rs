//! L2, I/O: the project network. One bridge per project (its gateway address is the
//! subnet's first; services' virtual addresses sit on it too), one veth pair per pod replica
//! whose peer is made directly inside the replica's network namespace as `eth0`, with an
//! address from the subnet and a default route through the bridge. Links, addresses and
//! routes go over netlink (`link`); the subnet is chosen here so that it overlaps no host
//! route and no other project's network (`choose_subnet`), under a lock shared by every
//! rcompose process. The generated `/etc/hosts` and `/etc/resolv.conf` of the pods are
//! written here too.

pub mod fault;
pub mod link;
pub mod nat;
pub mod nfqueue;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

pub use crate::manifest::subnet::Subnet;

/// Where default subnets come from: its /24s, in order.
pub const DEFAULT_POOL: &str = "10.90.0.0/16";

/// Errors of the project network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Every subnet of the pool is taken.
    #[error(
        "no free /24 subnet left in {pool}: every one overlaps a host route or another project's network; name one with `network.subnet`"
    )]
    Exhausted {
        /// The pool.
        pool: Subnet,
    },
    /// The manifest's subnet is in use on the host.
    #[error("subnet `{subnet}` overlaps {what}")]
    InUse {
        /// The subnet.
        subnet: Subnet,
        /// What it overlaps.
        what: String,
    },
    /// The subnet has no address left for a replica or service.
    #[error("subnet `{subnet}` has no free address left (for {what})")]
    Full {
        /// The subnet.
        subnet: Subnet,
        /// What needed one.
        what: String,
    },
    /// A netlink request failed.
    #[error("failed to {what}: {message}")]
    Netlink {
        /// What was done.
        what: String,
        /// The kernel's or the library's answer.
        message: String,
    },
    /// A file could not be read or written.
    #[error("failed to {what}")]
    Io {
        /// What was done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Runs `program` (a tool of the host: `nft`, `iptables-restore`, `tc`) with `args` and
/// `stdin`, in the calling thread's network namespace; `Err` with its stderr when it fails.
pub(crate) fn tool(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), NetworkError> {
    let what = format!("run `{program} {}`", args.join(" "));
    let mut child = Command::new(program)
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
    // waits for any child), so the status may be gone when `wait` asks for it: then the tool,
    // which prints nothing on stderr unless it fails, is judged by its stderr.
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = io::Read::read_to_string(&mut pipe, &mut stderr);
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

/// Runs `f` on a thread of its own inside the network namespace pinned at `pin` (`setns`
/// moves that thread only; what it spawns starts there too).
pub(crate) fn in_netns<T: Send>(
    pin: &Path,
    f: impl FnOnce() -> Result<T, NetworkError> + Send,
) -> Result<T, NetworkError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netns".into())
            .stack_size(256 * 1024)
            .spawn_scoped(scope, move || {
                enter_netns(pin)?;
                f()
            })
            .map_err(|source| NetworkError::Io {
                what: "start a thread".into(),
                source,
            })?
            .join()
            .unwrap_or_else(|_| {
                Err(NetworkError::Io {
                    what: format!("work in the network namespace `{}`", pin.display()),
                    source: io::Error::other("the thread panicked"),
                })
            })
    })
}

/// Moves the calling thread into the network namespace pinned at `pin`.
pub(crate) fn enter_netns(pin: &Path) -> Result<(), NetworkError> {
    let ns = File::open(pin).map_err(|source| NetworkError::Io {
        what: format!("open the network namespace `{}`", pin.display()),
        source,
    })?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| NetworkError::Io {
        what: format!("enter the network namespace `{}`", pin.display()),
        source: e.into(),
    })
}

/// The project's bridge: `rc` + up to 7 characters of the project + `-` + 5 hex digits of
/// its SHA-256 (15 characters at most, the kernel's limit), so that a person finds it by the
/// project and two projects never share one.
#[must_use]
pub fn bridge_name(project: &str) -> String {
    let short: String = project
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(7)
        .collect();
    format!("rc{short}-{}", &hex(project.as_bytes())[..5])
}

/// A host-side veth name for one incarnation of a replica: [`veth_prefix`] of the project,
/// then 8 hex digits of a hash of the replica and `incarnation` (the host end lingers for a
/// while after its namespace is gone, so a new incarnation must not reuse the name).
#[must_use]
pub fn veth_name(project: &str, replica: &str, incarnation: u64) -> String {
    let key = format!("{project}\0{replica}\0{incarnation}");
    format!("{}{}", veth_prefix(project), &hex(key.as_bytes())[..8])
}

/// The hardware address of a replica's `eth0`, made from its IPv4 address (`02:72` and the
/// four bytes: locally administered, unicast), as Docker's bridge does. A replica that comes
/// back with the address of one that went (a restart, a scale down and up) has its MAC too,
/// so the neighbour entries the host and the other pods keep for that address stay right;
/// with a random MAC they would send to the old one until the entry goes stale (15 to 45 s
/// here, seen as connects through the balancer that got no answer after a scale up).
#[must_use]
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x72, a, b, c, d]
}

/// What the host-side veths of a project's replicas start with: `rv` + the 5 hex digits of
/// its bridge's name.
#[must_use]
pub fn veth_prefix(project: &str) -> String {
    format!("rv{}", &hex(project.as_bytes())[..5])
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An IPv4 route of the host: its destination and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination.
    pub dest: Subnet,
    /// The device (`eth0`, a project's bridge, ...).
    pub dev: String,
}

/// The host's IPv4 routes (`/proc/net/route` under `proc_root`, the main table), without
/// the default route (it overlaps everything and says nothing about what is in use).
///
/// # Errors
///
/// The file cannot be read.
pub fn host_routes(proc_root: &Path) -> Result<Vec<Route>, NetworkError> {
    let path = proc_root.join("net/route");
    let text = fs::read_to_string(&path).map_err(|source| NetworkError::Io {
        what: format!("read `{}`", path.display()),
        source,
    })?;
    Ok(parse_routes(&text))
}

/// Parses `/proc/net/route` (addresses in hex, host byte order of a little-endian machine).
#[must_use]
pub fn parse_routes(text: &str) -> Vec<Route> {
    let hex_addr = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dest = hex_addr(fields.get(1)?)?;
            let mask = hex_addr(fields.get(7)?)?;
            if mask == 0 {
                return None;
            }
            let prefix = u8::try_from(mask.leading_ones()).ok()?;
            Some(Route {
                dest: Subnet::new(Ipv4Addr::from(dest), prefix),
                dev: (*fields.first()?).to_string(),
            })
        })
        .collect()
}

/// What on the host `subnet` overlaps, ignoring routes through `own_bridge` (the project's
/// own network, on a re-`up`).
#[must_use]
pub fn conflict(subnet: Subnet, routes: &[Route], own_bridge: &str) -> Option<String> {
    routes
        .iter()
        .find(|r| r.dev != own_bridge && r.dest.overlaps(subnet))
        .map(|r| {
            if r.dev.starts_with("rc") {
                format!(
                    "the network of another rcompose project (route {} dev {})",
                    r.dest, r.dev
                )
            } else {
                format!("the host route {} (dev {})", r.dest, r.dev)
            }
        })
}

/// The first /24 of `pool` that overlaps none of `routes` (the project's own bridge
/// excepted).
///
/// # Errors
///
/// Every /24 is taken.
pub fn choose_subnet(
    pool: Subnet,
    routes: &[Route],
    own_bridge: &str,
) -> Result<Subnet, NetworkError> {
    if pool.prefix() > 24 {
        return Err(NetworkError::Exhausted { pool });
    }
    let count = 1u32 << (24 - pool.prefix());
    (0..count)
        .map(|i| Subnet::new(Ipv4Addr::from(u32::from(pool.addr()) + (i << 8)), 24))
        .find(|s| conflict(*s, routes, own_bridge).is_none())
        .ok_or(NetworkError::Exhausted { pool })
}

/// The bridge's address: the subnet's first host.
#[must_use]
pub fn gateway(subnet: Subnet) -> Ipv4Addr {
    subnet.host(1).unwrap_or_else(|| subnet.addr())
}

/// The lowest host address of `subnet` above the gateway that is not in `taken`: pods are
/// numbered from the bottom.
///
/// # Errors
///
/// None is left.
pub fn free_pod_address(
    subnet: Subnet,
    taken: &[Ipv4Addr],
    what: &str,
) -> Result<Ipv4Addr, NetworkError> {
    (2..=subnet.hosts())
        .filter_map(|n| subnet.host(n))
        .find(|ip| !taken.contains(ip))
        .ok_or_else(|| NetworkError::Full {
            subnet,
            what: what.to_string(),
        })
}

/// The address block of node number `index` of `count` (in name order): the pods' part of
/// `subnet` (above the gateway, below the `services` addresses at its top) cut into `count`
/// equal blocks, the last taking the remainder. Host numbers (see [`Subnet::host`]).
#[must_use]
pub fn node_block(subnet: Subnet, services: u32, index: u32, count: u32) -> (u32, u32) {
    let first = 2;
    let last = subnet.hosts().saturating_sub(services).max(first);
    let count = count.max(1);
    let size = ((last - first + 1) / count).max(1);
    let start = (first + index.saturating_mul(size)).min(last);
    let end = if index + 1 >= count {
        last
    } else {
        (start + size - 1).min(last)
    };
    (start, end)
}

/// The lowest address of node block `block` (see [`node_block`]) not in `taken`, else the
/// lowest free one of the whole subnet (a full block borrows from the others).
///
/// # Errors
///
/// None is left.
pub fn free_node_address(
    subnet: Subnet,
    block: (u32, u32),
    taken: &[Ipv4Addr],
    what: &str,
) -> Result<Ipv4Addr, NetworkError> {
    (block.0..=block.1)
        .filter_map(|n| subnet.host(n))
        .find(|ip| !taken.contains(ip))
        .map_or_else(|| free_pod_address(subnet, taken, what), Ok)
}

/// The highest host address of `subnet` not in `taken`: services are numbered from the top.
///
/// # Errors
///
/// None is left.
pub fn free_service_address(
    subnet: Subnet,
    taken: &[Ipv4Addr],
    what: &str,
) -> Result<Ipv4Addr, NetworkError> {
    (2..=subnet.hosts())
        .rev()
        .filter_map(|n| subnet.host(n))
        .find(|ip| !taken.contains(ip))
        .ok_or_else(|| NetworkError::Full {
            subnet,
            what: what.to_string(),
        })
}

/// The pods' `/etc/hosts`: localhost, each service's virtual address under its name, and
/// each replica's address under its name (`api-2`), with the pod's name as an alias when no
/// service has that name (a lookup takes the first: replica 1).
#[must_use]
pub fn hosts_file(
    services: &BTreeMap<String, Ipv4Addr>,
    replicas: &[(String, String, Ipv4Addr)],
) -> String {
    let mut out = String::from(
        "# generated by rcompose: services and pod replicas of this project\n\
         127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    for (name, ip) in services {
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    for (pod, replica, ip) in replicas {
        if services.contains_key(pod) {
            out.push_str(&format!("{ip}\t{replica}\n"));
        } else {
            out.push_str(&format!("{ip}\t{replica} {pod}\n"));
        }
    }
    out
}

/// The pods' `/etc/resolv.conf`: the host's, without nameservers on loopback addresses
/// (they would be the pod's own loopback), so external names resolve in pods when the
/// host resolves them through a reachable server.
#[must_use]
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::from("# generated by rcompose from the host's /etc/resolv.conf\n");
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver")
            && words.next().is_some_and(|a| {
                a.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
            })
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Rewrites `path` with `content` in place (its inode stays: containers have it
/// bind-mounted), mode 0644: overwritten, then cut to length.
///
/// # Errors
///
/// The file cannot be written.
pub fn write_in_place(path: &Path, content: &str) -> Result<(), NetworkError> {
    let io = |source| NetworkError::Io {
        what: format!("write `{}`", path.display()),
        source,
    };
    let mut f = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(io)?;
    f.write_all(content.as_bytes()).map_err(io)?;
    f.set_len(content.len() as u64).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_mac_follows_its_address() {
        assert_eq!(
            mac_of(Ipv4Addr::new(10, 90, 0, 4)),
            [0x02, 0x72, 10, 90, 0, 4]
        );
        // locally administered (bit 1), unicast (bit 0 clear)
        assert_eq!(mac_of(Ipv4Addr::new(192, 168, 1, 1))[0] & 0b11, 0b10);
        assert_ne!(
            mac_of(Ipv4Addr::new(10, 90, 0, 4)),
            mac_of(Ipv4Addr::new(10, 90, 1, 4))
        );
    }

    fn net(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        rcshop-1a2b3\t00005A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn routes_parse_without_the_default_route() {
        let routes = parse_routes(ROUTES);
        assert_eq!(
            routes,
            [
                Route {
                    dest: net("192.0.2.0/24"),
                    dev: "eth0".into()
                },
                Route {
                    dest: net("10.90.0.0/24"),
                    dev: "rcshop-1a2b3".into()
                },
            ]
        );
    }

    #[test]
    fn subnets_avoid_host_routes_and_other_projects_but_not_their_own() {
        let routes = parse_routes(ROUTES);
        let pool = net(DEFAULT_POOL);
        assert_eq!(
            choose_subnet(pool, &routes, "rcother-00000").unwrap(),
            net("10.90.1.0/24")
        );
        assert_eq!(
            choose_subnet(pool, &routes, "rcshop-1a2b3").unwrap(),
            net("10.90.0.0/24")
        );
        assert_eq!(
            conflict(net("192.0.0.0/16"), &routes, "x").as_deref(),
            Some("the host route 192.0.2.0/24 (dev eth0)")
        );
        assert!(
            conflict(net("10.90.0.0/23"), &routes, "x")
                .unwrap()
                .contains("another rcompose project")
        );
        let full: Vec<Route> = (0..=255u32)
            .map(|i| Route {
                dest: Subnet::new(Ipv4Addr::from(0x0a5a_0000 + (i << 8)), 24),
                dev: "eth1".into(),
            })
            .collect();
        assert!(matches!(
            choose_subnet(pool, &full, "x"),
            Err(NetworkError::Exhausted { .. })
        ));
    }

    #[test]
    fn names_fit_the_kernel_limit_and_differ() {
        let b = bridge_name("a-very-long-project-name-indeed");
        assert!(b.len() <= 15 && b.starts_with("rcaverylo-"), "{b}");
        assert_ne!(bridge_name("shop"), bridge_name("shop2"));
        let v1 = veth_name("shop", "api-1", 1);
        assert_eq!(v1.len(), 15);
        assert!(v1.starts_with(&veth_prefix("shop")));
        assert!(bridge_name("shop").ends_with(&veth_prefix("shop")[2..]));
        assert_ne!(v1, veth_name("shop", "api-1", 2));
        assert_ne!(v1, veth_name("shop", "api-2", 1));
    }

    #[test]
    fn nodes_get_equal_blocks_of_the_pods_addresses() {
        let s = net("10.90.0.0/24");
        // hosts 1..=254: gateway 1, two services at 253 and 254, pods 2..=252
        assert_eq!(node_block(s, 2, 0, 3), (2, 84));
        assert_eq!(node_block(s, 2, 1, 3), (85, 167));
        assert_eq!(node_block(s, 2, 2, 3), (168, 252));
        assert_eq!(node_block(s, 0, 0, 1), (2, 254));
        let block = node_block(s, 2, 1, 3);
        let taken = [Ipv4Addr::new(10, 90, 0, 85)];
        assert_eq!(
            free_node_address(s, block, &taken, "x").unwrap(),
            Ipv4Addr::new(10, 90, 0, 86)
        );
        // a full block borrows the lowest free address elsewhere
        let tiny = net("10.90.0.0/29"); // hosts 1..=6, pods 2..=6
        let full: Vec<Ipv4Addr> = (2..=3).map(|n| tiny.host(n).unwrap()).collect();
        assert_eq!(node_block(tiny, 0, 0, 2), (2, 3));
        assert_eq!(
            free_node_address(tiny, (2, 3), &full, "x").unwrap(),
            Ipv4Addr::new(10, 90, 0, 4)
        );
    }

    #[test]
    fn addresses_pods_from_the_bottom_services_from_the_top() {
        let s = net("10.90.7.0/24");
        assert_eq!(gateway(s), Ipv4Addr::new(10, 90, 7, 1));
        let taken = [Ipv4Addr::new(10, 90, 7, 2), Ipv4Addr::new(10, 90, 7, 254)];
        assert_eq!(
            free_pod_address(s, &taken, "x").unwrap(),
            Ipv4Addr::new(10, 90, 7, 3)
        );
        assert_eq!(
            free_service_address(s, &taken, "x").unwrap(),
            Ipv4Addr::new(10, 90, 7, 253)
        );
        let tiny = net("10.0.0.0/30");
        assert_eq!(
            free_pod_address(tiny, &[], "x").unwrap(),
            Ipv4Addr::new(10, 0, 0, 2)
        );
        let e = free_pod_address(tiny, &[Ipv4Addr::new(10, 0, 0, 2)], "pod `a`").unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet `10.0.0.0/30` has no free address left (for pod `a`)"
        );
    }

    #[test]
    fn hosts_and_resolv_conf() {
        let services = BTreeMap::from([("api".to_string(), Ipv4Addr::new(10, 90, 0, 254))]);
        let replicas = [
            (
                "api".to_string(),
                "api-1".to_string(),
                Ipv4Addr::new(10, 90, 0, 2),
            ),
            (
                "db".to_string(),
                "db-1".to_string(),
                Ipv4Addr::new(10, 90, 0, 3),
            ),
        ];
        let hosts = hosts_file(&services, &replicas);
        assert!(hosts.contains("10.90.0.254\tapi\n"), "{hosts}");
        assert!(hosts.contains("10.90.0.2\tapi-1\n"), "{hosts}");
        assert!(hosts.contains("10.90.0.3\tdb-1 db\n"), "{hosts}");
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"));
        let resolv = resolv_conf("nameserver 127.0.0.53\nnameserver 10.255.255.53\nsearch x\n");
        assert!(!resolv.contains("127.0.0.53"));
        assert!(resolv.contains("nameserver 10.255.255.53\nsearch x\n"));
    }

    #[test]
    fn files_are_rewritten_in_place() {
        let dir = std::env::temp_dir().join(format!("rcompose-net-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        write_in_place(&path, "a long first version\n").unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        write_in_place(&path, "short\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "short\n");
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap()),
            ino
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
