//! Names, capacities and key/value layouts of every BPF map and program in the object.
//! Both sides use these constants, so a rename cannot silently split them.

/// The main XDP program: parse, deny-list, count, verdict.
pub const PROG_XDP: &str = "lb_xdp";
/// A program that passes everything; attached to veth peers so native XDP_TX/REDIRECT deliver.
pub const PROG_XDP_PASS: &str = "lb_xdp_pass";

/// Per-CPU array of [`crate::StatValue`], indexed by [`crate::Reason`].
pub const MAP_STATS: &str = "LB_STATS";
/// LPM trie: IPv4 source prefixes to drop. Key data: address bytes in network order.
pub const MAP_DENY_V4: &str = "LB_DENY_V4";
/// LPM trie: IPv6 source prefixes to drop. Key data: address bytes in network order.
pub const MAP_DENY_V6: &str = "LB_DENY_V6";

/// Capacity of each deny-list trie; the config validator rejects more entries than this.
pub const DENY_CAPACITY: u32 = 16_384;

/// Global in the object (aya-log-ebpf) that gates log statements; the loader sets it to 0 (off)
/// unless XDP debug logging is asked for.
pub const GLOBAL_LOG_LEVEL: &str = "AYA_LOG_LEVEL";

/// Key data of the IPv4 deny trie (the prefix length travels in the LPM key header).
pub type DenyKeyV4 = [u8; 4];
/// Key data of the IPv6 deny trie.
pub type DenyKeyV6 = [u8; 16];

/// Value of a deny-list entry: which configured rule put it there (index into `xdp.deny`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyValue {
    pub rule: u32,
    /// Explicit padding to 8 bytes so the layout is identical on both sides.
    pub _pad: u32,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for DenyValue {}

/// Largest number of IPv6 extension headers the parser walks before giving up (and passing).
pub const MAX_IPV6_EXT_HDRS: usize = 6;
/// Largest number of VLAN tags (802.1Q / 802.1ad) the parser strips.
pub const MAX_VLAN_TAGS: usize = 2;
