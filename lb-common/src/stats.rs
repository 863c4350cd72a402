//! Every packet the XDP program sees is counted under exactly one [`Reason`]; each reason
//! implies one verdict. The daemon exports these as `lb_xdp_packets_total{verdict,reason}`.

/// What the XDP program did with a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass = 2,
    Drop = 1,
    /// Sent back out of the interface it came in on (XDP_TX).
    Tx = 3,
    /// Sent out of another interface (XDP_REDIRECT through the devmap).
    Redirect = 4,
}

impl Verdict {
    /// The XDP action code (`XDP_PASS` = 2, `XDP_DROP` = 1).
    pub const fn action(self) -> u32 {
        self as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::Tx => "tx",
            Verdict::Redirect => "redirect",
        }
    }
}

macro_rules! reasons {
    ($($variant:ident = $idx:literal, $name:literal, $verdict:ident;)+) => {
        /// Why a packet got its verdict. The discriminant is its index in the stats map.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $($variant = $idx,)+
        }

        impl Reason {
            /// All reasons, in index order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)+];

            /// Stable label used in metrics and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)+
                }
            }

            pub const fn verdict(self) -> Verdict {
                match self {
                    $(Reason::$variant => Verdict::$verdict,)+
                }
            }
        }
    };
}

reasons! {
    // Well-formed traffic, passed to the stack.
    Tcp = 0, "tcp", Pass;
    Udp = 1, "udp", Pass;
    Icmp = 2, "icmp", Pass;
    OtherL4 = 3, "other_l4", Pass;
    NotIp = 4, "not_ip", Pass;
    Fragment = 5, "fragment", Pass;
    Ipv6ExtLimit = 6, "ipv6_ext_limit", Pass;
    // Malformed or truncated: never dropped for that alone, but counted.
    MalformedEth = 7, "malformed_eth", Pass;
    MalformedVlan = 8, "malformed_vlan", Pass;
    MalformedIpv4 = 9, "malformed_ipv4", Pass;
    MalformedIpv4Ihl = 10, "malformed_ipv4_ihl", Pass;
    MalformedIpv4Len = 11, "malformed_ipv4_len", Pass;
    MalformedIpv6 = 12, "malformed_ipv6", Pass;
    MalformedIpv6Ext = 13, "malformed_ipv6_ext", Pass;
    MalformedTcp = 14, "malformed_tcp", Pass;
    MalformedTcpDoff = 15, "malformed_tcp_doff", Pass;
    MalformedUdp = 16, "malformed_udp", Pass;
    MalformedIcmp = 17, "malformed_icmp", Pass;
    MalformedIpVersion = 18, "malformed_ip_version", Pass;
    // Dropped by policy.
    DenyV4 = 19, "deny_v4", Drop;
    DenyV6 = 20, "deny_v6", Drop;
    // The L4 dataplane (services in `l4_services`).
    L4Tx = 21, "l4_tx", Tx;
    L4Redirect = 22, "l4_redirect", Redirect;
    L4ReplyTx = 23, "l4_reply_tx", Tx;
    L4ReplyRedirect = 24, "l4_reply_redirect", Redirect;
    // Translated, but the next hop's MAC is not known yet: the stack forwards it (and resolves).
    L4NoNeigh = 25, "l4_no_neigh", Pass;
    // Translated, but the FIB has no forwarding route (or forwarding is off): the stack decides.
    L4FibFail = 26, "l4_fib_fail", Pass;
    // TTL / hop limit would expire: the stack answers with ICMP time exceeded.
    L4TtlExceeded = 27, "l4_ttl_exceeded", Pass;
    // A TCP segment other than SYN to a service with no flow entry (expired or never seen).
    L4NoFlow = 28, "l4_no_flow", Pass;
    // A new flow to a service with no endpoint that takes new flows.
    L4NoEndpoint = 29, "l4_no_endpoint", Drop;
    // Every probed NAT source port was in use.
    L4NoPort = 30, "l4_no_port", Drop;
    // The service's family has no SNAT address configured.
    L4NoSnat = 31, "l4_no_snat", Drop;
    // A source opened new flows faster than `xdp.rate_limit` allows.
    RateLimited = 32, "rate_limited", Drop;
}

/// Number of entries in the stats map.
pub const REASON_COUNT: u32 = 33;

impl Reason {
    pub const fn index(self) -> u32 {
        self as u32
    }

    pub fn from_index(index: u32) -> Option<Reason> {
        Reason::ALL.get(index as usize).copied()
    }
}

/// Per-CPU counter pair stored at each reason's index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatValue {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for StatValue {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_ordered() {
        assert_eq!(Reason::ALL.len() as u32, REASON_COUNT);
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index() as usize, i, "{}", r.name());
            assert_eq!(Reason::from_index(i as u32), Some(*r));
        }
        assert_eq!(Reason::from_index(REASON_COUNT), None);
    }

    #[test]
    fn only_deny_reasons_drop() {
        for r in Reason::ALL {
            let drops = matches!(
                r,
                Reason::DenyV4
                    | Reason::DenyV6
                    | Reason::L4NoEndpoint
                    | Reason::L4NoPort
                    | Reason::L4NoSnat
                    | Reason::RateLimited
            );
            assert_eq!(r.verdict() == Verdict::Drop, drops, "{}", r.name());
        }
    }
}
