//! The L4 dataplane's maps: services (VIP:port/proto), Maglev rings, endpoints, the connection
//! table with its NAT reverse index, per-source new-flow buckets, and per-service/endpoint counters.
//!
//! Addresses are 16 bytes: IPv6 as is, IPv4 in the first 4 bytes with the rest zero; `family`
//! says which ([`FAMILY_V4`] / [`FAMILY_V6`]). Ports are in network byte order in keys and values
//! the XDP program compares against packets, host order in [`L4Config`]. Structs holding
//! addresses are 4-byte aligned so the XDP program reads them as 32-bit words.

/// Hash: [`ServiceKey`] -> [`ServiceValue`].
pub const MAP_L4_SERVICES: &str = "LB_L4_SVC";
/// Array of u32 endpoint ids: every service's Maglev ring lives in a region of it.
pub const MAP_L4_RING: &str = "LB_L4_RING";
/// Array: endpoint id -> [`EndpointValue`].
pub const MAP_L4_ENDPOINTS: &str = "LB_L4_EP";
/// LRU hash: client->VIP [`FlowKey`] -> [`FlowValue`] (the connection table).
pub const MAP_L4_FLOWS: &str = "LB_L4_FLOWS";
/// LRU hash: endpoint->node [`FlowKey`] (reply direction, after NAT) -> [`NatValue`].
pub const MAP_L4_NAT: &str = "LB_L4_NAT";
/// Array of one [`L4Config`].
pub const MAP_L4_CONFIG: &str = "LB_L4_CFG";
/// Hash: [`ServiceKey`] -> u32, destinations the SYN-flood mode protects (rate-limits).
pub const MAP_PROTECT: &str = "LB_PROTECT";
/// LRU hash: [`RateKey`] -> u64 theoretical arrival time (GCRA) of the source's next new flow.
pub const MAP_RATE: &str = "LB_RATE";
/// Per-CPU array: service id -> [`L4Stat`].
pub const MAP_L4_SERVICE_STATS: &str = "LB_L4_SVC_STATS";
/// Per-CPU array: endpoint id -> [`L4Stat`].
pub const MAP_L4_ENDPOINT_STATS: &str = "LB_L4_EP_STATS";
/// Devmap hash: ifindex -> ifindex, the interfaces XDP_REDIRECT may send out of.
pub const MAP_TX_PORTS: &str = "LB_TX_PORTS";

/// Largest number of L4 services (service ids are 0..this).
pub const L4_SERVICE_CAPACITY: u32 = 1024;
/// Largest number of L4 endpoint slots (endpoint ids are 0..this).
pub const L4_ENDPOINT_CAPACITY: u32 = 16_384;
/// Default slots in the ring array (all services' rings, twice while one is replaced); the
/// loader may resize it (`xdp.l4.ring_slots`).
pub const L4_RING_SLOTS: u32 = 1 << 21;
/// Default connection-table size (`xdp.l4.flows`); the NAT index has the same size.
pub const L4_FLOW_CAPACITY: u32 = 262_144;
/// Sources tracked by the new-flow rate limiter.
pub const RATE_CAPACITY: u32 = 65_536;
/// Destinations the SYN-flood mode can protect.
pub const PROTECT_CAPACITY: u32 = 1024;
/// Interfaces XDP_REDIRECT may use.
pub const TX_PORTS_CAPACITY: u32 = 64;
/// NAT source ports tried for a new flow before it is dropped as `l4_no_port`.
pub const NAT_PORT_PROBES: u32 = 8;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// A service's address: VIP, port (network order), protocol, family.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Where a service's current ring lives in [`MAP_L4_RING`]. Replacing a ring writes the new
/// region first, then flips this value, then frees the old region.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index into the per-service counters.
    pub id: u32,
    pub ring_off: u32,
    /// Maglev table size (a prime); 0 = no endpoint can take new flows.
    pub ring_size: u32,
    pub _pad: u32,
}

/// One endpoint slot. `gen` changes whenever the slot is given to another endpoint, so a flow
/// that remembers (id, gen) notices that its endpoint is gone.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointValue {
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u8,
    /// 1 while the endpoint exists (weight 0 = draining still counts: its flows stay).
    pub live: u8,
    pub gen: u32,
}

/// A flow as seen on the wire: client->VIP before NAT, or endpoint->node for replies.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// TCP flow states kept in [`FlowValue::state`].
pub const FLOW_OPEN: u8 = 0;
/// FIN or RST seen: the entry lives `tcp_closing_ns` more.
pub const FLOW_CLOSING: u8 = 1;

/// The connection-table entry of a client->VIP flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub endpoint: u32,
    pub gen: u32,
    pub service: u32,
    /// Source port on the node after NAT (network order).
    pub nat_port: u16,
    pub state: u8,
    pub _pad: u8,
    /// bpf_ktime_get_ns of the last packet (either direction).
    pub last_seen: u64,
}

/// Reply-direction index: which client flow a NAT'd (endpoint, node port) pair belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatValue {
    pub flow: FlowKey,
    pub endpoint: u32,
    pub gen: u32,
}

/// Node-wide L4 settings, one entry in [`MAP_L4_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L4Config {
    /// Source address put on NAT'd IPv4 packets (this node's address toward the endpoints).
    pub snat_v4: [u8; 4],
    /// NAT source ports, inclusive, host order.
    pub port_min: u16,
    pub port_max: u16,
    pub snat_v6: [u8; 16],
    /// [`CFG_RATE_ALL`], [`CFG_RATE_PROTECTED`], [`CFG_SNAT_V4`], [`CFG_SNAT_V6`].
    pub flags: u32,
    pub _pad: u32,
    pub tcp_timeout_ns: u64,
    pub tcp_closing_ns: u64,
    pub udp_timeout_ns: u64,
    /// GCRA emission interval for new flows per source (0 = no rate limit).
    pub rate_interval_ns: u64,
    /// GCRA tolerance: interval × (burst − 1).
    pub rate_tolerance_ns: u64,
}

/// Rate-limit every source's new flows (TCP SYN, new UDP flows to services).
pub const CFG_RATE_ALL: u32 = 1;
/// Rate-limit only new flows to destinations in [`MAP_PROTECT`] (SYN-flood mode).
pub const CFG_RATE_PROTECTED: u32 = 2;
/// `snat_v4` is set: IPv4 services can be NAT'd.
pub const CFG_SNAT_V4: u32 = 4;
/// `snat_v6` is set.
pub const CFG_SNAT_V6: u32 = 8;

/// A rate-limited source: IPv6 address, or IPv4 mapped (::ffff:a.b.c.d).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub addr: [u8; 16],
}

/// Per-CPU counters of a service or endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L4Stat {
    /// Packets and bytes toward the endpoints (client->VIP).
    pub packets: u64,
    pub bytes: u64,
    /// Packets and bytes of replies (endpoint->client).
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// Flows created (ring picks).
    pub flows: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for EndpointValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for NatValue {}
    unsafe impl aya::Pod for L4Config {}
    unsafe impl aya::Pod for RateKey {}
    unsafe impl aya::Pod for L4Stat {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<ServiceValue>(), 16);
        assert_eq!(size_of::<EndpointValue>(), 24);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowValue>(), 24);
        assert_eq!(size_of::<NatValue>(), 48);
        assert_eq!(size_of::<L4Config>(), 72);
        assert_eq!(size_of::<L4Stat>(), 40);
    }
}
