//! L4 services as operators write them (a VIP:port/protocol balanced in XDP over a cluster's
//! endpoints) and the `xdp.l4` / `xdp.rate_limit` sections; their checks are in validate_l4.rs.

use super::scalars::Interval;
use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// One L4 service: packets to `vip:port` over `protocol` are NAT'd in XDP to the endpoints of
/// `cluster` (its weights, health checks and runtime overrides; L7-only fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L4Service {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: L4Protocol,
    pub cluster: String,
    /// Maglev lookup-table size (prime). Default: 65537, or the smallest prime >= 100 x the
    /// cluster's endpoints when that is larger.
    #[serde(default)]
    pub maglev_size: Option<u32>,
}

/// Smallest default Maglev table (a prime).
pub const DEFAULT_MAGLEV_SIZE: u32 = crate::maglev::DEFAULT_TABLE_SIZE as u32;

impl L4Service {
    /// The Maglev table size used for this service with `endpoints` endpoints.
    pub fn table_size(&self, endpoints: usize) -> u32 {
        self.maglev_size
            .unwrap_or_else(|| default_table_size(endpoints))
    }

    pub fn target(&self) -> L4Target {
        L4Target {
            addr: self.vip,
            port: self.port,
            protocol: self.protocol,
        }
    }
}

/// 65537, or the smallest prime >= 100 x `endpoints` when that is larger.
pub fn default_table_size(endpoints: usize) -> u32 {
    let want = (endpoints as u64).saturating_mul(100);
    if want <= u64::from(DEFAULT_MAGLEV_SIZE) {
        return DEFAULT_MAGLEV_SIZE;
    }
    let mut n = want;
    while !crate::maglev::is_prime(n as usize) {
        n += 1;
    }
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum L4Protocol {
    Tcp,
    Udp,
}

impl L4Protocol {
    /// The IP protocol number (lb_common::PROTO_TCP / PROTO_UDP).
    pub fn number(self) -> u8 {
        match self {
            L4Protocol::Tcp => lb_common::PROTO_TCP,
            L4Protocol::Udp => lb_common::PROTO_UDP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            L4Protocol::Tcp => "tcp",
            L4Protocol::Udp => "udp",
        }
    }
}

/// A destination `address:port/protocol` (`10.96.0.10:53/udp`, `[fd00::10]:443/tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct L4Target {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: L4Protocol,
}

impl std::str::FromStr for L4Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid destination {s:?}: expected address:port/protocol like 10.96.0.10:53/udp or [fd00::10]:443/tcp")
        };
        let (sock, proto) = s.trim().rsplit_once('/').ok_or_else(bad)?;
        let protocol = match proto {
            "tcp" => L4Protocol::Tcp,
            "udp" => L4Protocol::Udp,
            _ => return Err(bad()),
        };
        let sock: std::net::SocketAddr = sock.parse().map_err(|_| bad())?;
        Ok(L4Target {
            addr: sock.ip(),
            port: sock.port(),
            protocol,
        })
    }
}

impl<'de> Deserialize<'de> for L4Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d).map_err(|_| {
            de::Error::custom("a destination must be a string like 10.0.0.1:53/udp")
        })?;
        s.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for L4Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sock = std::net::SocketAddr::new(self.addr, self.port);
        write!(f, "{sock}/{}", self.protocol.as_str())
    }
}

/// An inclusive port range written `20000-29999`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            min: 20000,
            max: 29999,
        }
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid port range {s:?}: expected first-last like 20000-29999");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let min: u16 = a.trim().parse().map_err(|_| bad())?;
        let max: u16 = b.trim().parse().map_err(|_| bad())?;
        if min == 0 {
            return Err(format!("invalid port range {s:?}: ports start at 1"));
        }
        if min > max {
            return Err(format!(
                "invalid port range {s:?}: the first port is above the last"
            ));
        }
        Ok(PortRange { min, max })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)
            .map_err(|_| de::Error::custom("a port range must be a string like 20000-29999"))?;
        s.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// `xdp.l4`: node-wide settings of the L4 dataplane. `flows` and `ring_slots` size the BPF maps
/// when XDP is loaded: a change takes effect at the next start of lb.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpL4 {
    /// Source address of NAT'd IPv4 packets (required when an IPv4 service exists).
    #[serde(default)]
    pub snat_v4: Option<Ipv4Addr>,
    /// Source address of NAT'd IPv6 packets (required when an IPv6 service exists).
    #[serde(default)]
    pub snat_v6: Option<Ipv6Addr>,
    /// NAT source ports on this node (reserve them: net.ipv4.ip_local_reserved_ports).
    #[serde(default)]
    pub nat_ports: PortRange,
    /// Connection-table entries (LRU); the NAT reverse index has as many.
    #[serde(default = "default_flows")]
    pub flows: u32,
    /// Slots of the ring array holding every service's Maglev table (twice, while one is replaced).
    #[serde(default = "default_ring_slots")]
    pub ring_slots: u32,
    #[serde(default = "default_tcp_timeout")]
    pub tcp_timeout: Interval,
    /// Life of a TCP flow after a FIN or RST.
    #[serde(default = "default_tcp_closing_timeout")]
    pub tcp_closing_timeout: Interval,
    #[serde(default = "default_udp_timeout")]
    pub udp_timeout: Interval,
}

impl Default for XdpL4 {
    fn default() -> Self {
        XdpL4 {
            snat_v4: None,
            snat_v6: None,
            nat_ports: PortRange::default(),
            flows: default_flows(),
            ring_slots: default_ring_slots(),
            tcp_timeout: default_tcp_timeout(),
            tcp_closing_timeout: default_tcp_closing_timeout(),
            udp_timeout: default_udp_timeout(),
        }
    }
}

/// `xdp.rate_limit`: new flows (TCP SYN, new UDP flows) per source address, GCRA in XDP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpRateLimit {
    pub new_flows_per_second: u32,
    /// New flows a source may open at once after being quiet. Default: the rate.
    #[serde(default)]
    pub burst: Option<u32>,
    /// SYN-flood mode: only new flows to these destinations are limited. Empty: all are.
    #[serde(default)]
    pub protect: Vec<L4Target>,
}

impl XdpRateLimit {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.new_flows_per_second)
    }
}

fn default_flows() -> u32 {
    lb_common::L4_FLOW_CAPACITY
}

fn default_ring_slots() -> u32 {
    lb_common::L4_RING_SLOTS
}

fn default_tcp_timeout() -> Interval {
    Interval(Duration::from_secs(3600))
}

fn default_tcp_closing_timeout() -> Interval {
    Interval(Duration::from_secs(10))
}

fn default_udp_timeout() -> Interval {
    Interval(Duration::from_secs(30))
}
