//! Full NAT of one packet: the next hop from bpf_fib_lookup first, then addresses, ports, TTL and
//! checksums rewritten in place (incrementally), MACs set, and XDP_TX or a devmap redirect.

use aya_ebpf::bindings::{
    bpf_fib_lookup, xdp_action, xdp_md, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
};
use aya_ebpf::helpers::{bpf_csum_diff, bpf_fib_lookup as fib_lookup};
use aya_ebpf::programs::XdpContext;
use aya_ebpf::EbpfContext;
use core::mem::size_of;
use lb_common::{Reason, PROTO_TCP};

use crate::csum::Delta;
use crate::l4maps::{Scratch, SCRATCH, TX_PORTS};
use crate::parse::{Ip, Ports};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The packet's new addresses and ports (ports in network order).
pub struct Rewrite {
    pub src: [u32; 4],
    pub sport: u16,
    pub dst: [u32; 4],
    pub dport: u16,
    pub v4: bool,
    /// Endpoint -> client (counted under the reply reasons).
    pub reply: bool,
}

#[repr(C)]
struct Eth {
    dst: [u8; 6],
    src: [u8; 6],
}

#[inline(always)]
fn ptr_mut<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut T)
}

/// Translates the packet as the scratch slot's `rw` says and sends it; the reason says what
/// happened to it.
#[inline(always)]
pub fn send(ctx: &XdpContext, ip: &Ip, p: &Ports) -> Reason {
    send_raw(ctx.ctx, ip, p)
}

/// A BPF subprogram (its own stack frame): the three callers would not fit one 512-byte frame.
#[inline(never)]
fn send_raw(raw: *mut xdp_md, ip: &Ip, p: &Ports) -> Reason {
    let ctx = &XdpContext::new(raw);
    // SAFETY: the per-CPU scratch slot is ours for this run.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Reason::L4FibFail;
    };
    let scratch = unsafe { &mut *scratch };
    let reply = scratch.rw.reply;
    let fib: &mut bpf_fib_lookup = &mut scratch.fib;
    let rw = &scratch.rw;
    // Zeroed word by word: a zeroed() temporary would cost 64 bytes of BPF stack.
    let raw = fib as *mut bpf_fib_lookup as *mut u64;
    let mut i = 0;
    while i < size_of::<bpf_fib_lookup>() / 8 {
        unsafe { *raw.add(i) = 0 };
        i += 1;
    }
    fib.l4_protocol = p.proto;
    fib.sport = rw.sport;
    fib.dport = rw.dport;
    fib.__bindgen_anon_1.tot_len = (ip.end - ip.l3_off) as u16;
    fib.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if rw.v4 {
        fib.family = AF_INET;
        fib.__bindgen_anon_3.ipv4_src = rw.src[0];
        fib.__bindgen_anon_4.ipv4_dst = rw.dst[0];
    } else {
        fib.family = AF_INET6;
        fib.__bindgen_anon_3.ipv6_src = rw.src;
        fib.__bindgen_anon_4.ipv6_dst = rw.dst;
    }
    let rc = unsafe { fib_lookup(ctx.as_ptr(), fib, size_of::<bpf_fib_lookup>() as i32, 0) } as u32;
    let forward = rc == BPF_FIB_LKUP_RET_SUCCESS;
    // Forwarded here: this hop decrements the TTL; passed: the stack's forwarding does.
    let (smac, dmac, egress) = (fib.smac, fib.dmac, fib.ifindex);
    match rewrite(ctx, ip, p, forward, scratch) {
        Ok(()) => {}
        Err(reason) => return reason,
    }
    if !forward {
        return if rc == BPF_FIB_LKUP_RET_NO_NEIGH {
            Reason::L4NoNeigh
        } else {
            Reason::L4FibFail
        };
    }
    let Some(eth) = ptr_mut::<Eth>(ctx, 0) else {
        return Reason::L4FibFail;
    };
    unsafe {
        (*eth).dst = dmac;
        (*eth).src = smac;
    }
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if egress == ingress {
        return if reply {
            Reason::L4ReplyTx
        } else {
            Reason::L4Tx
        };
    }
    match TX_PORTS.redirect(egress, xdp_action::XDP_PASS as u64) {
        Ok(_) => {
            if reply {
                Reason::L4ReplyRedirect
            } else {
                Reason::L4Redirect
            }
        }
        // Not an interface we may redirect to: the stack forwards the translated packet.
        Err(_) => Reason::L4FibFail,
    }
}

/// The 16 address bytes of an lb_common struct as four words (the structs are 4-aligned).
#[inline(always)]
pub fn words(a: &[u8; 16]) -> [u32; 4] {
    let p = a.as_ptr() as *const u32;
    // SAFETY: 16 readable bytes at a 4-aligned address (lb_common's address-holding structs are
    // `align(4)` with addresses at offsets that are multiples of 4).
    unsafe { [*p, *p.add(1), *p.add(2), *p.add(3)] }
}

/// bpf_csum_diff over `n` bytes (a multiple of 4): the partial sum of `to` minus `from`.
#[inline(always)]
fn csum_diff(from: *mut u32, to: *mut u32, n: u32) -> Result<u32, Reason> {
    let r = unsafe { bpf_csum_diff(from, n, to, n, 0) };
    if r < 0 {
        return Err(Reason::L4FibFail);
    }
    Ok(r as u32)
}

/// Rewrites the IP and TCP/UDP headers in place. `hop`: decrement the TTL / hop limit.
#[inline(always)]
fn rewrite(ctx: &XdpContext, ip: &Ip, p: &Ports, hop: bool, s: &mut Scratch) -> Result<(), Reason> {
    let l4 = ptr_mut::<[u16; 2]>(ctx, p.off).ok_or(Reason::L4FibFail)?;
    let csum_off = if p.proto == PROTO_TCP { 16 } else { 6 };
    let csum = ptr_mut::<u16>(ctx, p.off + csum_off).ok_or(Reason::L4FibFail)?;
    s.ports = [s.rw.sport, s.rw.dport];
    // SAFETY: every packet pointer was bounds-checked against data_end; scratch is ours.
    unsafe {
        let ports_diff = csum_diff(l4 as *mut u32, s.ports.as_mut_ptr() as *mut u32, 4)?;
        let udp_no_csum = p.proto != PROTO_TCP && *csum == 0;
        let mut d = Delta::new(*csum);
        d.diff(ports_diff);
        if s.rw.v4 {
            let h = ptr_mut::<[u16; 10]>(ctx, ip.l3_off).ok_or(Reason::L4FibFail)?;
            let ttl_proto = (*h)[4];
            // Memory order: [ttl, protocol].
            let ttl = ttl_proto.to_ne_bytes()[0];
            if hop && ttl <= 1 {
                return Err(Reason::L4TtlExceeded);
            }
            s.addrs[0] = s.rw.src[0];
            s.addrs[1] = s.rw.dst[0];
            let old = (h as *mut u8).add(12) as *mut u32;
            let addr_diff = csum_diff(old, s.addrs.as_mut_ptr(), 8)?;
            d.diff(addr_diff);
            let mut hd = Delta::new((*h)[5]);
            hd.diff(addr_diff);
            if hop {
                let b = ttl_proto.to_ne_bytes();
                let next = u16::from_ne_bytes([b[0] - 1, b[1]]);
                hd.word(ttl_proto, next);
                (*h)[4] = next;
            }
            (*h)[5] = hd.finish();
            *old = s.rw.src[0];
            *old.add(1) = s.rw.dst[0];
        } else {
            let h = ptr_mut::<[u32; 10]>(ctx, ip.l3_off).ok_or(Reason::L4FibFail)?;
            let hop_at = (h as *mut u8).add(7);
            if hop && *hop_at <= 1 {
                return Err(Reason::L4TtlExceeded);
            }
            let mut i = 0;
            while i < 4 {
                s.addrs[i] = s.rw.src[i];
                s.addrs[4 + i] = s.rw.dst[i];
                i += 1;
            }
            let old = (h as *mut u32).add(2);
            d.diff(csum_diff(old, s.addrs.as_mut_ptr(), 32)?);
            if hop {
                *hop_at -= 1;
            }
            let mut i = 0;
            while i < 8 {
                *old.add(i) = s.addrs[i];
                i += 1;
            }
        }
        (*l4)[0] = s.rw.sport;
        (*l4)[1] = s.rw.dport;
        if !udp_no_csum {
            let mut sum = d.finish();
            if p.proto != PROTO_TCP && sum == 0 {
                sum = 0xffff;
            }
            *csum = sum;
        }
    }
    Ok(())
}
