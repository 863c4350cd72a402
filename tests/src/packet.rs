//! Ethernet frame builder for XDP fixture tests (BPF_PROG_TEST_RUN), correct by default.
//! Knobs break lengths, headers and checksums; `verify_checksums` re-checks rewritten frames.

use crate::checksum::pseudo_tail;
pub use crate::checksum::{ipv4_checksum, verify_checksums};

/// Default source MAC of built frames.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Default destination MAC of built frames.
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

#[derive(Clone, Debug)]
enum L3 {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
    Raw(Vec<u8>),
}

impl Default for L3 {
    fn default() -> L3 {
        L3::Raw(Vec::new())
    }
}

/// L4 header template: protocol, header bytes (payload appended at build), checksum offset.
#[derive(Clone, Debug, Default)]
struct L4 {
    proto: u8,
    hdr: Vec<u8>,
    csum_at: Option<usize>,
}

/// Chainable frame builder; see the module docs. `build()` produces the frame.
#[derive(Clone, Debug, Default)]
pub struct Packet {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlans: Vec<(Option<u16>, u16)>,
    ethertype: Option<u16>,
    l3: L3,
    l4: L4,
    payload: Vec<u8>,
    ttl: u8,
    v4_options: Vec<u8>,
    v4_ihl: Option<u8>,
    v4_total_len: Option<u16>,
    v4_frag: (bool, u16),
    v4_csum: Option<u16>,
    version: Option<u8>,
    v6_ext: Vec<(u8, usize)>,
    v6_payload_len: Option<u16>,
    tcp_doff: Option<u8>,
    udp_len: Option<u16>,
    l4_csum: Option<u16>,
    truncate: Option<usize>,
}

/// Generates chainable setters: `name(arg: Ty) => field = value;`.
macro_rules! knobs {
    ($($(#[$m:meta])* $name:ident($arg:ident: $ty:ty) => $field:ident = $val:expr;)*) => {
        $($(#[$m])* pub fn $name(mut self, $arg: $ty) -> Packet {
            self.$field = $val;
            self
        })*
    };
}

impl Packet {
    fn with_l3(l3: L3) -> Packet {
        let (src_mac, dst_mac) = (SRC_MAC, DST_MAC);
        Packet {
            src_mac,
            dst_mac,
            l3,
            ttl: 64,
            l4: L4 {
                proto: 59,
                ..L4::default()
            },
            ..Packet::default()
        }
    }
    pub fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Packet {
        Packet::with_l3(L3::V4 { src, dst })
    }
    pub fn ipv6(src: [u8; 16], dst: [u8; 16]) -> Packet {
        Packet::with_l3(L3::V6 { src, dst })
    }
    /// Arbitrary L3 bytes behind `ethertype` (e.g. ARP 0x0806).
    pub fn raw(ethertype: u16, l3: &[u8]) -> Packet {
        Packet::with_l3(L3::Raw(l3.to_vec())).ethertype(ethertype)
    }
    /// Sets TCP flags (`TCP_*`); no effect unless `tcp()` was chosen before.
    pub fn tcp_flags(mut self, flags: u8) -> Packet {
        if self.l4.proto == 6 && self.l4.hdr.len() == 20 {
            self.l4.hdr[13] = flags;
        }
        self
    }
    /// ICMP (protocol 1) message; `rest` is bytes 4..8 of the header.
    pub fn icmp(self, ty: u8, code: u8, rest: [u8; 4]) -> Packet {
        self.l4(1, [&[ty, code, 0, 0][..], &rest].concat(), Some(2))
    }
    /// ICMPv6 (protocol 58) message, checksummed with the pseudo-header.
    pub fn icmpv6(self, ty: u8, code: u8, rest: [u8; 4]) -> Packet {
        self.l4(58, [&[ty, code, 0, 0][..], &rest].concat(), Some(2))
    }
    /// ICMP echo request, id 0x4242, seq 1.
    pub fn icmp_echo(self) -> Packet {
        self.icmp(8, 0, [0x42, 0x42, 0, 1])
    }
    /// ICMPv6 echo request, id 0x4242, seq 1.
    pub fn icmpv6_echo(self) -> Packet {
        self.icmpv6(128, 0, [0x42, 0x42, 0, 1])
    }
    /// TCP with seq 1, ack 0, window 65535 and flags `ACK` (see `tcp_flags`).
    pub fn tcp(self, sport: u16, dport: u16) -> Packet {
        let mut h = [
            &sport.to_be_bytes()[..],
            &dport.to_be_bytes(),
            &[0, 0, 0, 1],
        ]
        .concat();
        h.extend_from_slice(&[0, 0, 0, 0, 0x50, TCP_ACK, 0xff, 0xff, 0, 0, 0, 0]);
        self.l4(6, h, Some(16))
    }
    /// UDP; the length field is filled in at build time (see `udp_len`).
    pub fn udp(self, sport: u16, dport: u16) -> Packet {
        let h = [
            &sport.to_be_bytes()[..],
            &dport.to_be_bytes(),
            &[0, 0, 0, 0],
        ]
        .concat();
        self.l4(17, h, Some(6))
    }
    /// Any other IP protocol; the payload is the whole L4 segment, no checksum.
    pub fn proto(self, proto: u8) -> Packet {
        self.l4(proto, Vec::new(), None)
    }
    fn l4(mut self, proto: u8, hdr: Vec<u8>, csum_at: Option<usize>) -> Packet {
        self.l4 = L4 {
            proto,
            hdr,
            csum_at,
        };
        self
    }
    /// Adds an 802.1Q tag; tags appear on the wire in call order (first call = outermost).
    /// All tags but the innermost use TPID 0x88a8 (802.1ad).
    pub fn vlan(self, vid: u16) -> Packet {
        self.vlan_tpid_opt(None, vid)
    }
    /// Adds a tag with an explicit TPID (e.g. 0x8100 outer for odd QinQ fixtures).
    pub fn vlan_tpid(self, tpid: u16, vid: u16) -> Packet {
        self.vlan_tpid_opt(Some(tpid), vid)
    }
    fn vlan_tpid_opt(mut self, tpid: Option<u16>, vid: u16) -> Packet {
        self.vlans.push((tpid, vid));
        self
    }
    /// Pushes an IPv6 extension header (chain order = push order). Hop-by-hop (0),
    /// routing (43), dest opts (60) and unknown kinds: `len` rounded up to 8 (min 8);
    /// fragment (44): always 8 bytes, offset 0, M=0; AH (51): rounded up to 4 (min 12).
    pub fn ipv6_ext(mut self, kind: u8, len_bytes: usize) -> Packet {
        self.v6_ext.push((kind, len_bytes));
        self
    }
    knobs! {
        payload(bytes: &[u8]) => payload = bytes.to_vec();
        /// Replaces everything after the Ethernet/VLAN headers with `bytes`.
        raw_l3(bytes: &[u8]) => l3 = L3::Raw(bytes.to_vec());
        ethertype(ethertype: u16) => ethertype = Some(ethertype);
        src_mac(mac: [u8; 6]) => src_mac = mac;
        dst_mac(mac: [u8; 6]) => dst_mac = mac;
        /// IPv4 TTL or IPv6 hop limit (default 64).
        ttl(ttl: u8) => ttl = ttl;
        /// IPv4 options, zero-padded to a multiple of 4 bytes; IHL follows.
        ipv4_options(opts: &[u8]) => v4_options = opts.to_vec();
        /// Overrides the IHL nibble (the header checksum still covers the real header).
        ipv4_ihl(ihl: u8) => v4_ihl = Some(ihl);
        ipv4_total_len(len: u16) => v4_total_len = Some(len);
        /// Overrides the IPv4 header checksum field.
        ipv4_csum(csum: u16) => v4_csum = Some(csum);
        /// Overrides the IP version nibble (v4 or v6 header).
        ip_version(version: u8) => version = Some(version);
        ipv6_payload_len(len: u16) => v6_payload_len = Some(len);
        /// Overrides the TCP data offset nibble (no options are actually added).
        tcp_doff(doff: u8) => tcp_doff = Some(doff);
        /// Overrides the UDP length field (the checksum uses the real length).
        udp_len(len: u16) => udp_len = Some(len);
        /// Overrides the TCP/UDP/ICMP checksum field.
        l4_csum(csum: u16) => l4_csum = Some(csum);
        /// Cuts the final frame to `len` bytes (applied last).
        truncate(len: usize) => truncate = Some(len);
    }
    /// Sets the MF flag and the fragment offset (in 8-byte units).
    pub fn ipv4_fragment(mut self, more_fragments: bool, offset_units: u16) -> Packet {
        self.v4_frag = (more_fragments, offset_units);
        self
    }

    /// Builds the L4 segment; `pseudo` holds the source and destination addresses.
    fn build_l4(&self, pseudo: &[u8]) -> Vec<u8> {
        let L4 { proto, csum_at, .. } = self.l4;
        let mut seg = self.l4.hdr.clone();
        if let (6, Some(doff)) = (proto, self.tcp_doff) {
            seg[12] = doff << 4;
        }
        if proto == 17 && seg.len() == 8 {
            let len = self.udp_len.unwrap_or((8 + self.payload.len()) as u16);
            seg[4..6].copy_from_slice(&len.to_be_bytes());
        }
        seg.extend_from_slice(&self.payload);
        if let Some(at) = csum_at {
            let mut sum_over = Vec::with_capacity(40 + seg.len());
            if proto != 1 {
                sum_over.extend_from_slice(pseudo);
                sum_over.extend_from_slice(&pseudo_tail(pseudo.len(), seg.len(), proto));
            }
            sum_over.extend_from_slice(&seg);
            let csum = match ipv4_checksum(&sum_over) {
                0 if proto == 17 => 0xffff,
                c => c,
            };
            seg[at..at + 2].copy_from_slice(&self.l4_csum.unwrap_or(csum).to_be_bytes());
        }
        seg
    }

    fn build_v6_ext(&self) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        for (i, &(kind, len)) in self.v6_ext.iter().enumerate() {
            let next = self.v6_ext.get(i + 1).map_or(self.l4.proto, |e| e.0);
            let start = out.len();
            match kind {
                44 => out.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0x42, 0x42]),
                51 => {
                    let len = len.max(12).div_ceil(4) * 4;
                    out.resize(start + len, 0);
                    out[start] = next;
                    out[start + 1] = (len / 4 - 2) as u8;
                }
                _ => {
                    let len = len.max(8).div_ceil(8) * 8;
                    out.resize(start + len, 0);
                    out[start] = next;
                    out[start + 1] = (len / 8 - 1) as u8;
                    if kind == 0 || kind == 60 {
                        // One PadN option fills the header so it parses cleanly.
                        out[start + 2] = 1;
                        out[start + 3] = (len - 4) as u8;
                    }
                }
            }
        }
        (self.v6_ext.first().map_or(self.l4.proto, |e| e.0), out)
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (i, &(tpid, vid)) in self.vlans.iter().enumerate() {
            let default = [0x88a8, 0x8100][usize::from(i + 1 == self.vlans.len())];
            f.extend_from_slice(&tpid.unwrap_or(default).to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        let default_et = match self.l3 {
            L3::V4 { .. } => 0x0800,
            L3::V6 { .. } => 0x86dd,
            L3::Raw(_) => 0x88b5, // local experimental
        };
        f.extend_from_slice(&self.ethertype.unwrap_or(default_et).to_be_bytes());
        match &self.l3 {
            L3::Raw(bytes) => f.extend_from_slice(bytes),
            L3::V4 { src, dst } => {
                let mut opts = self.v4_options.clone();
                opts.resize(opts.len().div_ceil(4) * 4, 0);
                let mut h = vec![0u8; 20];
                h.extend_from_slice(&opts);
                let ihl = self.v4_ihl.unwrap_or((h.len() / 4) as u8);
                h[0] = (self.version.unwrap_or(4) << 4) | (ihl & 0x0f);
                h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
                let frag = (u16::from(self.v4_frag.0) << 13) | (self.v4_frag.1 & 0x1fff);
                h[6..8].copy_from_slice(&frag.to_be_bytes());
                h[8] = self.ttl;
                h[9] = self.l4.proto;
                h[12..16].copy_from_slice(src);
                h[16..20].copy_from_slice(dst);
                let pseudo = [&src[..], &dst[..]].concat();
                let seg = self.build_l4(&pseudo);
                let total = self.v4_total_len.unwrap_or((h.len() + seg.len()) as u16);
                h[2..4].copy_from_slice(&total.to_be_bytes());
                let csum = self.v4_csum.unwrap_or_else(|| ipv4_checksum(&h));
                h[10..12].copy_from_slice(&csum.to_be_bytes());
                f.extend_from_slice(&h);
                f.extend_from_slice(&seg);
            }
            L3::V6 { src, dst } => {
                let (first_next, ext) = self.build_v6_ext();
                let pseudo = [&src[..], &dst[..]].concat();
                let seg = self.build_l4(&pseudo);
                let plen = self
                    .v6_payload_len
                    .unwrap_or((ext.len() + seg.len()) as u16);
                f.push(self.version.unwrap_or(6) << 4);
                f.extend_from_slice(&[0, 0, 0]);
                f.extend_from_slice(&plen.to_be_bytes());
                f.extend_from_slice(&[first_next, self.ttl]);
                f.extend_from_slice(src);
                f.extend_from_slice(dst);
                f.extend_from_slice(&ext);
                f.extend_from_slice(&seg);
            }
        }
        if let Some(n) = self.truncate {
            f.truncate(n);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::be16;

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];
    const A6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const B6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    fn at16(b: &[u8], at: usize) -> u16 {
        be16(b, at).unwrap()
    }

    #[test]
    fn lengths_and_checksums_valid() {
        let p = Packet::ipv4(A, B).tcp(1234, 80).payload(b"hi").build();
        assert_eq!(
            (p.len(), at16(&p, 12), at16(&p, 16), p[23]),
            (56, 0x0800, 42, 6)
        );
        let u = Packet::ipv6(A6, B6).udp(53, 53).payload(b"abc").build();
        assert_eq!(
            (u.len(), at16(&u, 18), at16(&u, 58), u[20]),
            (65, 11, 11, 17)
        );
        let o = Packet::ipv4(A, B).ipv4_options(&[1]).udp(1, 2).build();
        assert_eq!((o[14], o.len()), (0x46, 14 + 24 + 8));
        for p in [
            p,
            u,
            o,
            Packet::ipv4(A, B).icmp_echo().payload(b"ping").build(),
            Packet::ipv6(A6, B6).icmpv6_echo().build(),
            Packet::ipv6(A6, B6).tcp(1, 2).tcp_flags(TCP_SYN).build(),
            Packet::ipv4(A, B).proto(47).payload(&[0; 4]).build(),
        ] {
            verify_checksums(&p).unwrap();
        }
    }

    #[test]
    fn vlan_placement() {
        let one = Packet::ipv4(A, B).vlan(100).udp(1, 2).build();
        assert_eq!(&one[12..18], &[0x81, 0x00, 0x00, 100, 0x08, 0x00]);
        let two = Packet::ipv6(A6, B6).vlan(10).vlan(20).udp(1, 2).build();
        let tags = [0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x86, 0xdd];
        assert_eq!(&two[12..22], &tags);
        verify_checksums(&two).unwrap();
        let arp = Packet::ipv4(A, B).vlan(5).ethertype(0x0806).raw_l3(&[1, 2]);
        assert_eq!(&arp.build()[16..], &[0x08, 0x06, 1, 2]);
    }

    #[test]
    fn ipv6_ext_chaining() {
        let mut p = Packet::ipv6(A6, B6);
        for (kind, len) in [(0, 8), (43, 20), (44, 8), (51, 12), (60, 16)] {
            p = p.ipv6_ext(kind, len);
        }
        let p = p.tcp(1, 2).build();
        let ip = &p[14..];
        assert_eq!(ip[6], 0);
        let mut at = 40;
        for (next, len) in [(43, 8), (44, 24), (51, 8), (60, 12), (6, 16)] {
            assert_eq!(ip[at], next, "next header at {at}");
            at += len;
        }
        assert_eq!((ip[40 + 8 + 1], ip[40 + 40 + 1]), (2, 1)); // routing 24 B, AH 12 B
        assert_eq!(at16(ip, 4), 8 + 24 + 8 + 12 + 16 + 20);
        verify_checksums(&p).unwrap();
    }

    #[test]
    fn overrides_and_truncate() {
        let p = Packet::ipv4(A, B)
            .ipv4_ihl(4)
            .ipv4_total_len(9)
            .ipv4_fragment(true, 3);
        let p = p.tcp(1, 2).tcp_doff(15).build();
        assert_eq!(
            (p[14], at16(&p, 16), at16(&p, 20), p[46]),
            (0x44, 9, 0x2003, 0xf0)
        );
        assert_eq!(ipv4_checksum(&p[14..34]), 0);
        let v = Packet::ipv6(A6, B6)
            .ip_version(4)
            .ipv6_payload_len(1)
            .udp(1, 2);
        let v = v.udp_len(99).build();
        assert_eq!((v[14] >> 4, at16(&v, 18), at16(&v, 58)), (4, 1, 99));
        let t = Packet::ipv4(A, B).tcp(1, 2).truncate(30).build();
        assert_eq!(t.len(), 30);
        assert!(verify_checksums(&t).is_err());
    }
}
