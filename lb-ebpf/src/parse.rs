//! Bounded, verifier-friendly header parsing: Ethernet, up to two VLAN tags, IPv4 (options
//! skipped by IHL), IPv6 (a bounded walk over extension headers), then TCP, UDP and ICMP checks.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use lb_common::{Reason, MAX_IPV6_EXT_HDRS, MAX_VLAN_TAGS};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_MH: u8 = 135;
const IPPROTO_HIP: u8 = 139;
const IPPROTO_SHIM6: u8 = 140;

// Header layouts as byte arrays: alignment 1, no endianness surprises.
#[repr(C)]
struct EthHdr {
    _dst: [u8; 6],
    _src: [u8; 6],
    proto: [u8; 2],
}

#[repr(C)]
struct VlanHdr {
    _tci: [u8; 2],
    proto: [u8; 2],
}

#[repr(C)]
struct Ipv4Hdr {
    ver_ihl: u8,
    _tos: u8,
    tot_len: [u8; 2],
    _id: [u8; 2],
    frag_off: [u8; 2],
    _ttl: u8,
    proto: u8,
    _csum: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    ver_tc_flow: [u8; 4],
    payload_len: [u8; 2],
    next: u8,
    _hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// The first 8 bytes every IPv6 extension header starts with.
#[repr(C)]
struct ExtHdr {
    next: u8,
    len: u8,
    _rest: [u8; 6],
}

#[repr(C)]
struct TcpHdr {
    sport: [u8; 2],
    dport: [u8; 2],
    _seq: [u8; 4],
    _ack: [u8; 4],
    doff_res: u8,
    flags: u8,
    _win: [u8; 2],
    _csum: [u8; 2],
    _urg: [u8; 2],
}

#[repr(C)]
struct UdpHdr {
    sport: [u8; 2],
    dport: [u8; 2],
    len: [u8; 2],
    _csum: [u8; 2],
}

#[repr(C)]
struct IcmpHdr {
    _type_code: [u8; 2],
    _csum: [u8; 2],
    _rest: [u8; 4],
}

pub enum Source {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// What the network layer told us; offsets are from the start of the frame.
pub struct Ip {
    pub src: Source,
    /// Destination, IPv4 in the first 4 bytes (lb_common's address convention).
    pub dst: [u8; 16],
    /// Where the IP header starts.
    pub l3_off: usize,
    /// IPv4 protocol or IPv6 next header after the fixed header.
    pub proto: u8,
    /// First byte after the IPv4 header (with options) or the fixed IPv6 header.
    pub l4_off: usize,
    /// End of the IP datagram as its length field says (never past the frame).
    pub end: usize,
    /// IPv4 fragment (MF set or non-zero offset): no transport header to trust.
    pub fragment: bool,
}

#[inline(always)]
fn header<T>(ctx: &XdpContext, off: usize) -> Option<&T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(unsafe { &*((start + off) as *const T) })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Ethernet, VLAN tags and the IP header. Errors are pass reasons (malformed or not IP).
#[inline(always)]
pub fn ip(ctx: &XdpContext) -> Result<Ip, Reason> {
    let eth: &EthHdr = header(ctx, 0).ok_or(Reason::MalformedEth)?;
    let mut proto = be16(eth.proto);
    let mut off = size_of::<EthHdr>();
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let vlan: &VlanHdr = header(ctx, off).ok_or(Reason::MalformedVlan)?;
        proto = be16(vlan.proto);
        off += size_of::<VlanHdr>();
    }
    match proto {
        ETH_P_IP => ipv4(ctx, off),
        ETH_P_IPV6 => ipv6(ctx, off),
        _ => Err(Reason::NotIp),
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, off: usize) -> Result<Ip, Reason> {
    let h: &Ipv4Hdr = header(ctx, off).ok_or(Reason::MalformedIpv4)?;
    if h.ver_ihl >> 4 != 4 {
        return Err(Reason::MalformedIpVersion);
    }
    let ihl = ((h.ver_ihl & 0x0f) as usize) * 4;
    if ihl < size_of::<Ipv4Hdr>() || ctx.data() + off + ihl > ctx.data_end() {
        return Err(Reason::MalformedIpv4Ihl);
    }
    let tot_len = be16(h.tot_len) as usize;
    if tot_len < ihl || ctx.data() + off + tot_len > ctx.data_end() {
        return Err(Reason::MalformedIpv4Len);
    }
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&h.dst);
    Ok(Ip {
        src: Source::V4(h.src),
        dst,
        l3_off: off,
        proto: h.proto,
        l4_off: off + ihl,
        end: off + tot_len,
        fragment: be16(h.frag_off) & 0x3fff != 0,
    })
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, off: usize) -> Result<Ip, Reason> {
    let h: &Ipv6Hdr = header(ctx, off).ok_or(Reason::MalformedIpv6)?;
    if h.ver_tc_flow[0] >> 4 != 6 {
        return Err(Reason::MalformedIpVersion);
    }
    let l4_off = off + size_of::<Ipv6Hdr>();
    let payload = be16(h.payload_len) as usize;
    // A zero payload length means a jumbogram (RFC 2675): the frame is the bound. Only the
    // bounded (16-bit) length may meet packet pointers, or the verifier refuses the program.
    let end = if payload == 0 {
        ctx.data_end() - ctx.data()
    } else {
        if ctx.data() + l4_off + payload > ctx.data_end() {
            return Err(Reason::MalformedIpv6);
        }
        l4_off + payload
    };
    Ok(Ip {
        src: Source::V6(h.src),
        dst: h.dst,
        l3_off: off,
        proto: h.next,
        l4_off,
        end,
        fragment: false,
    })
}

#[inline(always)]
fn is_ipv6_ext(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_HOPOPTS
            | IPPROTO_ROUTING
            | IPPROTO_FRAGMENT
            | IPPROTO_AH
            | IPPROTO_DSTOPTS
            | IPPROTO_MH
            | IPPROTO_HIP
            | IPPROTO_SHIM6
    )
}

/// A parsed TCP or UDP header (ports in network order), for the L4 dataplane.
pub struct Ports {
    pub proto: u8,
    /// Where the TCP/UDP header starts.
    pub off: usize,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (0 for UDP).
    pub flags: u8,
}

/// Everything after the IP header: a well-formed reason with the ports when it is TCP or UDP,
/// or `Err` with a malformed (or deliberately unparsed) reason; all of those pass.
#[inline(always)]
pub fn transport(ctx: &XdpContext, ip: &Ip) -> Result<(Reason, Option<Ports>), Reason> {
    if ip.fragment {
        return Ok((Reason::Fragment, None));
    }
    let v6 = matches!(ip.src, Source::V6(_));
    let mut proto = ip.proto;
    let mut off = ip.l4_off;
    if v6 {
        for _ in 0..MAX_IPV6_EXT_HDRS {
            if !is_ipv6_ext(proto) {
                break;
            }
            let ext: &ExtHdr = header(ctx, off).ok_or(Reason::MalformedIpv6Ext)?;
            if proto == IPPROTO_FRAGMENT {
                return Ok((Reason::Fragment, None));
            }
            let len = if proto == IPPROTO_AH {
                (ext.len as usize + 2) * 4
            } else {
                (ext.len as usize + 1) * 8
            };
            proto = ext.next;
            off += len;
            if off > ip.end {
                return Err(Reason::MalformedIpv6Ext);
            }
        }
        if is_ipv6_ext(proto) {
            return Ok((Reason::Ipv6ExtLimit, None));
        }
    }
    match proto {
        IPPROTO_TCP => {
            let tcp: &TcpHdr = header(ctx, off).ok_or(Reason::MalformedTcp)?;
            let doff = ((tcp.doff_res >> 4) as usize) * 4;
            if doff < size_of::<TcpHdr>() {
                return Err(Reason::MalformedTcpDoff);
            }
            if off + doff > ip.end {
                return Err(Reason::MalformedTcp);
            }
            let ports = Ports {
                proto: IPPROTO_TCP,
                off,
                sport: u16::from_ne_bytes(tcp.sport),
                dport: u16::from_ne_bytes(tcp.dport),
                flags: tcp.flags,
            };
            Ok((Reason::Tcp, Some(ports)))
        }
        IPPROTO_UDP => {
            let udp: &UdpHdr = header(ctx, off).ok_or(Reason::MalformedUdp)?;
            let len = be16(udp.len) as usize;
            if len < size_of::<UdpHdr>() || off + len > ip.end {
                return Err(Reason::MalformedUdp);
            }
            let ports = Ports {
                proto: IPPROTO_UDP,
                off,
                sport: u16::from_ne_bytes(udp.sport),
                dport: u16::from_ne_bytes(udp.dport),
                flags: 0,
            };
            Ok((Reason::Udp, Some(ports)))
        }
        IPPROTO_ICMP if !v6 => icmp(ctx, off, ip).map(|r| (r, None)),
        IPPROTO_ICMPV6 if v6 => icmp(ctx, off, ip).map(|r| (r, None)),
        _ => Ok((Reason::OtherL4, None)),
    }
}

#[inline(always)]
fn icmp(ctx: &XdpContext, off: usize, ip: &Ip) -> Result<Reason, Reason> {
    let _: &IcmpHdr = header(ctx, off).ok_or(Reason::MalformedIcmp)?;
    if off + size_of::<IcmpHdr>() > ip.end {
        return Err(Reason::MalformedIcmp);
    }
    Ok(Reason::Icmp)
}
