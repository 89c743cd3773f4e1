//! IPv4 subnets (`10.90.3.0/24`): the project network's, and the host routes it must not
//! overlap. Pure: parsing, containment, the n-th host address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 network: an address whose host bits are zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    addr: u32,
    prefix: u8,
}

/// Why a subnet does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    /// Not `A.B.C.D/N`.
    #[error("`{0}` is not an IPv4 subnet (`A.B.C.D/N`, for example `10.90.0.0/24`)")]
    Syntax(String),
    /// Host bits are set.
    #[error("`{text}` has host bits set; the subnet is `{network}`")]
    HostBits {
        /// As written.
        text: String,
        /// With the host bits cleared.
        network: Subnet,
    },
}

impl Subnet {
    /// `addr/prefix`, the host bits of `addr` cleared.
    #[must_use]
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        let prefix = prefix.min(32);
        Subnet {
            addr: u32::from(addr) & mask(prefix),
            prefix,
        }
    }

    /// The network address.
    #[must_use]
    pub fn addr(self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The prefix length.
    #[must_use]
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in it.
    #[must_use]
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.addr
    }

    /// Whether the two share an address.
    #[must_use]
    pub fn overlaps(self, other: Subnet) -> bool {
        let m = mask(self.prefix.min(other.prefix));
        self.addr & m == other.addr & m
    }

    /// Addresses for hosts: all but the network and broadcast addresses (a /31 or /32 has
    /// none to spare and counts 0).
    #[must_use]
    pub fn hosts(self) -> u32 {
        if self.prefix >= 31 {
            0
        } else {
            u32::try_from((1u64 << (32 - self.prefix)) - 2).unwrap_or(u32::MAX)
        }
    }

    /// Host address `n` (1 = the first after the network address), if it is one.
    #[must_use]
    pub fn host(self, n: u32) -> Option<Ipv4Addr> {
        (n >= 1 && n <= self.hosts()).then(|| Ipv4Addr::from(self.addr + n))
    }

    /// The number of `ip` in it ([`Subnet::host`] backwards), if it is a host address.
    #[must_use]
    pub fn index_of(self, ip: Ipv4Addr) -> Option<u32> {
        let n = u32::from(ip).wrapping_sub(self.addr);
        (self.contains(ip) && n >= 1 && n <= self.hosts()).then_some(n)
    }
}

/// The netmask of a prefix length, as a number.
fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || SubnetError::Syntax(text.to_string());
        let (addr, prefix) = text.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 2 {
            return Err(syntax());
        }
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        let network = Subnet::new(addr, prefix);
        if network.addr() != addr {
            return Err(SubnetError::HostBits {
                text: text.to_string(),
                network,
            });
        }
        Ok(network)
    }
}

impl TryFrom<String> for Subnet {
    type Error = SubnetError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn parses_prints_and_refuses() {
        assert_eq!(net("10.90.3.0/24").to_string(), "10.90.3.0/24");
        assert_eq!(net("0.0.0.0/0").hosts(), u32::MAX - 1);
        for bad in [
            "10.90.3.0",
            "10.90.3.0/",
            "10.90.3.0/33",
            "10.90.3/24",
            "x/24",
            "10.0.0.0/+8",
        ] {
            assert!(
                matches!(bad.parse::<Subnet>(), Err(SubnetError::Syntax(_))),
                "{bad}"
            );
        }
        let e = "10.90.3.7/24".parse::<Subnet>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`10.90.3.7/24` has host bits set; the subnet is `10.90.3.0/24`"
        );
    }

    #[test]
    fn hosts_containment_and_overlap() {
        let s = net("10.90.3.0/24");
        assert_eq!(s.hosts(), 254);
        assert_eq!(s.host(1), Some(Ipv4Addr::new(10, 90, 3, 1)));
        assert_eq!(s.host(254), Some(Ipv4Addr::new(10, 90, 3, 254)));
        assert_eq!(s.host(255), None);
        assert_eq!(s.host(0), None);
        assert_eq!(s.index_of(Ipv4Addr::new(10, 90, 3, 9)), Some(9));
        assert_eq!(s.index_of(Ipv4Addr::new(10, 90, 3, 255)), None);
        assert_eq!(s.index_of(Ipv4Addr::new(10, 90, 4, 1)), None);
        assert!(s.contains(Ipv4Addr::new(10, 90, 3, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 90, 4, 1)));
        assert!(s.overlaps(net("10.90.0.0/16")));
        assert!(net("10.90.0.0/16").overlaps(s));
        assert!(!s.overlaps(net("10.90.4.0/24")));
        assert!(s.overlaps(net("0.0.0.0/0")));
        assert_eq!(net("10.0.0.0/30").hosts(), 2);
        assert_eq!(net("10.0.0.0/31").hosts(), 0);
    }
}
