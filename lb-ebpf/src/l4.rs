//! L4 services in the kernel: replies matched through the NAT index, then the connection table;
//! a new flow (TCP SYN, any UDP) is rate-checked, picked from the service's Maglev ring and NAT'd.

use aya_ebpf::bindings::xdp_md;
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::programs::XdpContext;
use lb_common::{
    EndpointValue, FlowKey, FlowValue, L4Config, L4Stat, NatValue, Reason, ServiceKey,
    ServiceValue, CFG_SNAT_V4, CFG_SNAT_V6, FAMILY_V4, FAMILY_V6, FLOW_CLOSING, FLOW_OPEN,
    NAT_PORT_PROBES, PROTO_TCP,
};

use crate::l4maps::{
    Scratch, CONFIG, ENDPOINTS, ENDPOINT_STATS, FLOWS, NAT, RING, SCRATCH, SERVICES, SERVICE_STATS,
};
use crate::nat::{self, words, Rewrite};
use crate::parse::{Ip, Ports, Source};
use crate::ratelimit;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
/// Untagged Ethernet: the only framing the L4 path rewrites (tagged frames go to the stack).
const ETH_LEN: usize = 14;

/// The L4 verdict for a TCP/UDP packet, or `None` when it is not service traffic.
#[inline(always)]
pub fn handle(ctx: &XdpContext, ip: &Ip, p: &Ports) -> Option<Reason> {
    let reason = handle_raw(ctx.ctx, ip, p);
    if reason == NOT_L4 {
        None
    } else {
        Reason::from_index(reason)
    }
}

/// `handle_raw`'s "not service traffic" answer (BPF subprograms return scalars).
const NOT_L4: u32 = u32::MAX;

/// A BPF subprogram: its own stack frame, so the parser's frame and the NAT frame both fit.
#[inline(never)]
fn handle_raw(raw: *mut xdp_md, ip: &Ip, p: &Ports) -> u32 {
    let ctx = &XdpContext::new(raw);
    match classify(ctx, ip, p) {
        Some(reason) => reason.index(),
        None => NOT_L4,
    }
}

#[inline(always)]
fn classify(ctx: &XdpContext, ip: &Ip, p: &Ports) -> Option<Reason> {
    let cfg = CONFIG.get(0)?;
    // SAFETY: the per-CPU scratch slot is ours for this run; keys live there, not on the stack.
    let s = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    let v4 = matches!(ip.src, Source::V4(_));
    let family = if v4 { FAMILY_V4 } else { FAMILY_V6 };
    s.skey = ServiceKey {
        addr: ip.dst,
        port: p.dport,
        proto: p.proto,
        family,
    };
    match &ip.src {
        Source::V4(a) => {
            s.key.src = [0; 16];
            s.key.src[..4].copy_from_slice(a);
        }
        Source::V6(a) => s.key.src = *a,
    }
    let syn = p.proto == PROTO_TCP && p.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if cfg.flags & (CFG_SNAT_V4 | CFG_SNAT_V6) == 0 {
        // No L4 service can exist; only the SYN limit (if any) applies.
        return syn_limit(cfg, s, v4, syn);
    }
    if ip.l3_off != ETH_LEN {
        return None;
    }
    s.key.dst = ip.dst;
    s.key.sport = p.sport;
    s.key.dport = p.dport;
    s.key.proto = p.proto;
    s.key.family = family;
    s.key._pad = [0; 2];
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(reason) = reply(ctx, ip, p, cfg, s, v4, now) {
        return Some(reason);
    }
    let svc = match unsafe { SERVICES.get(&s.skey) } {
        Some(svc) => svc,
        None => return syn_limit(cfg, s, v4, syn),
    };
    Some(forward(ctx, ip, p, cfg, s, svc, v4, syn, now))
}

#[inline(always)]
fn syn_limit(cfg: &L4Config, s: &mut Scratch, v4: bool, syn: bool) -> Option<Reason> {
    if !syn {
        return None;
    }
    s.rate = ratelimit::key(&s.key.src, v4);
    if ratelimit::over(cfg, &s.rate, &s.skey) {
        return Some(Reason::RateLimited);
    }
    None
}

/// A reply from an endpoint to a NAT'd port: back to the client, from the VIP.
#[inline(always)]
fn reply(
    ctx: &XdpContext,
    ip: &Ip,
    p: &Ports,
    cfg: &L4Config,
    s: &mut Scratch,
    v4: bool,
    now: u64,
) -> Option<Reason> {
    let nv: &NatValue = unsafe { NAT.get(&s.key) }?;
    let fp = FLOWS.get_ptr_mut(&nv.flow)?;
    // SAFETY: LRU value pointer, valid for this run; concurrent writers only race on
    // last_seen/state, which are advisory.
    let f = unsafe { &mut *fp };
    if f.endpoint != nv.endpoint || f.gen != nv.gen || f.nat_port != s.key.dport {
        return None;
    }
    if expired(cfg, f, p.proto, now) {
        return None;
    }
    touch(f, p.flags, now);
    let (svc, ep) = (f.service, f.endpoint);
    s.rw = Rewrite {
        src: words(&nv.flow.dst),
        sport: nv.flow.dport,
        dst: words(&nv.flow.src),
        dport: nv.flow.sport,
        v4,
        reply: true,
    };
    let reason = nat::send(ctx, ip, p);
    count(svc, ep, ctx.data_end() - ctx.data(), true, false);
    Some(reason)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward(
    ctx: &XdpContext,
    ip: &Ip,
    p: &Ports,
    cfg: &L4Config,
    s: &mut Scratch,
    svc: &ServiceValue,
    v4: bool,
    syn: bool,
    now: u64,
) -> Reason {
    let snat = match snat(cfg, v4) {
        Some(a) => a,
        None => return Reason::L4NoSnat,
    };
    let len = ctx.data_end() - ctx.data();
    // A live flow whose endpoint is gone: picked again (a TCP peer then answers with a reset,
    // which ends the connection quickly instead of leaving it hanging).
    let mut repick = false;
    if let Some(fp) = FLOWS.get_ptr_mut(&s.key) {
        // SAFETY: as in `reply`.
        let f = unsafe { &mut *fp };
        let reopen = syn && f.state == FLOW_CLOSING;
        if !reopen && !expired(cfg, f, p.proto, now) {
            if let Some(ep) = ENDPOINTS.get(f.endpoint) {
                if ep.live == 1 && ep.gen == f.gen {
                    touch(f, p.flags, now);
                    s.rw = Rewrite {
                        src: snat,
                        sport: f.nat_port,
                        dst: words(&ep.addr),
                        dport: ep.port,
                        v4,
                        reply: false,
                    };
                    let (svc_id, ep_id) = (f.service, f.endpoint);
                    let reason = nat::send(ctx, ip, p);
                    count(svc_id, ep_id, len, false, false);
                    return reason;
                }
            }
            repick = true;
        }
    }
    // A new flow: only a SYN may open a TCP one.
    if p.proto == PROTO_TCP && !syn && !repick {
        return Reason::L4NoFlow;
    }
    s.rate = ratelimit::key(&s.key.src, v4);
    if !repick && ratelimit::over(cfg, &s.rate, &s.skey) {
        return Reason::RateLimited;
    }
    if svc.ring_size == 0 {
        return Reason::L4NoEndpoint;
    }
    let (svc_id, ring_off, ring_size) = (svc.id, svc.ring_off, svc.ring_size);
    let h = flow_hash(&s.key);
    let id = match RING.get(ring_off.wrapping_add(h % ring_size)) {
        Some(id) => *id,
        None => return Reason::L4NoEndpoint,
    };
    let ep: &EndpointValue = match ENDPOINTS.get(id) {
        Some(e) if e.live == 1 => e,
        _ => return Reason::L4NoEndpoint,
    };
    let (ep_addr, ep_port, gen) = (words(&ep.addr), ep.port, ep.gen);
    let nat_port = match alloc_port(cfg, s, &ep_addr, ep_port, id, gen, &snat, h, now) {
        Some(port) => port,
        None => return Reason::L4NoPort,
    };
    s.flow = FlowValue {
        endpoint: id,
        gen,
        service: svc_id,
        nat_port,
        state: FLOW_OPEN,
        _pad: 0,
        last_seen: now,
    };
    if FLOWS.insert(&s.key, &s.flow, BPF_ANY).is_err() {
        return Reason::L4NoPort;
    }
    s.rw = Rewrite {
        src: snat,
        sport: nat_port,
        dst: ep_addr,
        dport: ep_port,
        v4,
        reply: false,
    };
    let reason = nat::send(ctx, ip, p);
    count(svc_id, id, len, false, true);
    reason
}

/// The node's source address for the family, as words (IPv4: the first word, rest zero).
#[inline(always)]
fn snat(cfg: &L4Config, v4: bool) -> Option<[u32; 4]> {
    if v4 {
        if cfg.flags & CFG_SNAT_V4 == 0 {
            return None;
        }
        // SAFETY: snat_v4 sits at offset 0 of the 8-aligned L4Config.
        let w = unsafe { *(cfg.snat_v4.as_ptr() as *const u32) };
        Some([w, 0, 0, 0])
    } else {
        if cfg.flags & CFG_SNAT_V6 == 0 {
            return None;
        }
        Some(words(&cfg.snat_v6))
    }
}

/// Claims a node port for (endpoint, port): probes a few hash-chosen ports, taking a free one or
/// one whose flow is gone (stale NAT entries are reused, never trusted).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn alloc_port(
    cfg: &L4Config,
    s: &mut Scratch,
    ep_addr: &[u32; 4],
    ep_port: u16,
    id: u32,
    gen: u32,
    snat: &[u32; 4],
    h: u32,
    now: u64,
) -> Option<u16> {
    if cfg.port_max < cfg.port_min {
        return None;
    }
    let range = (cfg.port_max - cfg.port_min) as u32 + 1;
    s.nat.flow = s.key;
    s.nat.endpoint = id;
    s.nat.gen = gen;
    // SAFETY: FlowKey is 4-aligned with `src` at offset 0 and `dst` at 16.
    unsafe {
        *(s.rkey.src.as_mut_ptr() as *mut [u32; 4]) = *ep_addr;
        *(s.rkey.dst.as_mut_ptr() as *mut [u32; 4]) = *snat;
    }
    s.rkey.sport = ep_port;
    s.rkey.proto = s.key.proto;
    s.rkey.family = s.key.family;
    s.rkey._pad = [0; 2];
    let mut seed = fmix32(h ^ 0x5bd1_e995);
    for _ in 0..NAT_PORT_PROBES {
        let port = (cfg.port_min + (seed % range) as u16).to_be();
        s.rkey.dport = port;
        if NAT.insert(&s.rkey, &s.nat, BPF_NOEXIST).is_ok() {
            return Some(port);
        }
        if stale(cfg, &s.rkey, now) && NAT.insert(&s.rkey, &s.nat, BPF_ANY).is_ok() {
            return Some(port);
        }
        seed = fmix32(seed.wrapping_add(0x9e37_79b9));
    }
    None
}

/// A NAT entry whose flow no longer points back at it (or expired) may be taken over.
#[inline(always)]
fn stale(cfg: &L4Config, rkey: &FlowKey, now: u64) -> bool {
    let nv = match unsafe { NAT.get(rkey) } {
        Some(v) => v,
        None => return true,
    };
    match unsafe { FLOWS.get(&nv.flow) } {
        None => true,
        Some(f) => {
            f.nat_port != rkey.dport
                || f.endpoint != nv.endpoint
                || f.gen != nv.gen
                || expired(cfg, f, rkey.proto, now)
        }
    }
}

#[inline(always)]
fn expired(cfg: &L4Config, f: &FlowValue, proto: u8, now: u64) -> bool {
    let timeout = if proto != PROTO_TCP {
        cfg.udp_timeout_ns
    } else if f.state == FLOW_CLOSING {
        cfg.tcp_closing_ns
    } else {
        cfg.tcp_timeout_ns
    };
    now.saturating_sub(f.last_seen) > timeout
}

#[inline(always)]
fn touch(f: &mut FlowValue, flags: u8, now: u64) {
    f.last_seen = now;
    if flags & (TCP_FIN | TCP_RST) != 0 {
        f.state = FLOW_CLOSING;
    }
}

/// The flow's hash for the Maglev pick: every node computes the same for the same 5-tuple.
#[inline(always)]
pub fn flow_hash(k: &FlowKey) -> u32 {
    let mut h: u32 = 0x9747_b28c;
    let mut i = 0;
    while i < 16 {
        h = mix(
            h,
            u32::from_ne_bytes([k.src[i], k.src[i + 1], k.src[i + 2], k.src[i + 3]]),
        );
        h = mix(
            h,
            u32::from_ne_bytes([k.dst[i], k.dst[i + 1], k.dst[i + 2], k.dst[i + 3]]),
        );
        i += 4;
    }
    h = mix(h, (k.sport as u32) << 16 | k.dport as u32);
    h = mix(h, k.proto as u32);
    fmix32(h)
}

#[inline(always)]
fn mix(h: u32, w: u32) -> u32 {
    let k = w
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn count(svc: u32, ep: u32, len: usize, reply: bool, new_flow: bool) {
    if let Some(s) = SERVICE_STATS.get_ptr_mut(svc) {
        add(unsafe { &mut *s }, len, reply, new_flow);
    }
    if let Some(s) = ENDPOINT_STATS.get_ptr_mut(ep) {
        add(unsafe { &mut *s }, len, reply, new_flow);
    }
}

#[inline(always)]
fn add(s: &mut L4Stat, len: usize, reply: bool, new_flow: bool) {
    if reply {
        s.reply_packets += 1;
        s.reply_bytes += len as u64;
    } else {
        s.packets += 1;
        s.bytes += len as u64;
    }
    if new_flow {
        s.flows += 1;
    }
}
