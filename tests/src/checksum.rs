//! RFC 1071 checksums and a frame checker that validates the IPv4 header and
//! TCP/UDP/ICMP/ICMPv6 checksums of built or rewritten (e.g. NATed) frames.

/// Length + protocol part of the pseudo-header (v4: 4 bytes, v6: 8 bytes).
pub(crate) fn pseudo_tail(addr_bytes: usize, len: usize, proto: u8) -> Vec<u8> {
    if addr_bytes == 8 {
        let mut t = vec![0, proto];
        t.extend_from_slice(&(len as u16).to_be_bytes());
        t
    } else {
        let mut t = (len as u32).to_be_bytes().to_vec();
        t.extend_from_slice(&[0, 0, 0, proto]);
        t
    }
}

/// RFC 1071 Internet checksum of `data`: over a header whose checksum field is zero it is
/// the value to store; over a header with a correct checksum in place it is 0.
pub fn ipv4_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub(crate) fn be16(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("frame too short at offset {at}"))
}

/// Parses `frame` (VLAN tags, IPv4/IPv6 with extension headers) and validates the IPv4
/// header checksum and the TCP/UDP/ICMP/ICMPv6 checksum. Fragments skip the L4 check;
/// non-IP frames and other protocols pass.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let mut off = 12;
    let mut et = be16(frame, off)?;
    let mut tags = 0;
    while (et == 0x8100 || et == 0x88a8) && tags < 8 {
        off += 4;
        et = be16(frame, off)?;
        tags += 1;
    }
    let l3 = &frame[off + 2..];
    let (proto, pseudo, seg) = match et {
        0x0800 => {
            let ihl = usize::from(l3.first().ok_or("no IPv4 header")? & 0x0f) * 4;
            let total = usize::from(be16(l3, 2)?);
            if ihl < 20 || l3.len() < ihl || total < ihl || l3.len() < total {
                return Err(format!("bad IPv4 lengths ihl={ihl} total={total}"));
            }
            if ipv4_checksum(&l3[..ihl]) != 0 {
                return Err(format!("bad IPv4 header checksum {:#06x}", be16(l3, 10)?));
            }
            if be16(l3, 6)? & 0x3fff != 0 {
                return Ok(());
            }
            (l3[9], l3[12..20].to_vec(), &l3[ihl..total])
        }
        0x86dd => {
            let end = 40 + usize::from(be16(l3, 4)?);
            if l3.len() < end {
                return Err(format!(
                    "IPv6 payload length beyond frame ({end} > {})",
                    l3.len()
                ));
            }
            let (mut next, mut at) = (l3[6], 40);
            for _ in 0..16 {
                let hdr_len = match next {
                    0 | 43 | 60 => usize::from(*l3.get(at + 1).ok_or("short ext")?) * 8 + 8,
                    51 => usize::from(*l3.get(at + 1).ok_or("short AH")?) * 4 + 8,
                    44 if be16(l3, at + 2)? & 0xfff9 != 0 => return Ok(()),
                    44 => 8,
                    _ => break,
                };
                next = *l3.get(at).ok_or("short ext")?;
                at += hdr_len;
            }
            if at > end {
                return Err("IPv6 extension headers overrun payload".into());
            }
            (next, l3[8..40].to_vec(), &l3[at..end])
        }
        _ => return Ok(()),
    };
    let (min, at) = match proto {
        6 => (20, 16),
        17 => (8, 6),
        1 | 58 => (8, 2),
        _ => return Ok(()),
    };
    if seg.len() < min {
        return Err(format!(
            "L4 proto {proto} segment too short ({})",
            seg.len()
        ));
    }
    if proto == 17 && pseudo.len() == 8 && be16(seg, at)? == 0 {
        return Ok(()); // IPv4 UDP without checksum
    }
    let mut sum_over = Vec::with_capacity(40 + seg.len());
    if proto != 1 {
        sum_over.extend_from_slice(&pseudo);
        sum_over.extend_from_slice(&pseudo_tail(pseudo.len(), seg.len(), proto));
    }
    sum_over.extend_from_slice(seg);
    match ipv4_checksum(&sum_over) {
        0 => Ok(()),
        _ => Err(format!(
            "bad proto {proto} checksum {:#06x}",
            be16(seg, at)?
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];
    const A6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const B6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    #[test]
    fn checksum_known_vectors() {
        let hdr = "45000073000040004011 0000 c0a80001c0a800c7".replace(' ', "");
        let hdr: Vec<u8> = (0..20)
            .map(|i| u8::from_str_radix(&hdr[2 * i..2 * i + 2], 16))
            .map(Result::unwrap)
            .collect();
        assert_eq!(ipv4_checksum(&hdr), 0xb861);
        // RFC 1071 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        assert_eq!(
            ipv4_checksum(&[0, 1, 0xf2, 3, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        assert_eq!(ipv4_checksum(&[0xff]), 0x00ff);
    }

    #[test]
    fn broken_checksums_detected() {
        let bad = Packet::ipv4(A, B).tcp(1, 2).l4_csum(0x1234).build();
        assert!(verify_checksums(&bad).is_err());
        let bad = Packet::ipv4(A, B).udp(1, 2).ipv4_csum(0x1234).build();
        assert!(verify_checksums(&bad).is_err());
        let mut flipped = Packet::ipv6(A6, B6).udp(1, 2).payload(b"x").build();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(verify_checksums(&flipped).is_err());
    }
}
