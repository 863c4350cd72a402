//! Per-source limit on new flows (TCP SYN, new UDP flows to services): GCRA, one u64 per source
//! in an LRU map, so a flood of spoofed sources ages out instead of filling memory.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{L4Config, RateKey, ServiceKey, CFG_RATE_ALL, CFG_RATE_PROTECTED};

use crate::l4maps::{PROTECT, RATE};

/// The source address as a rate key: IPv6 as is, IPv4 mapped to ::ffff:a.b.c.d.
#[inline(always)]
pub fn key(src: &[u8; 16], v4: bool) -> RateKey {
    if !v4 {
        return RateKey { addr: *src };
    }
    let mut addr = [0u8; 16];
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr[12] = src[0];
    addr[13] = src[1];
    addr[14] = src[2];
    addr[15] = src[3];
    RateKey { addr }
}

/// Whether a new flow from `src` to `dst` is over the limit (and must be dropped).
#[inline(always)]
pub fn over(cfg: &L4Config, src: &RateKey, dst: &ServiceKey) -> bool {
    if cfg.rate_interval_ns == 0 {
        return false;
    }
    let applies = if cfg.flags & CFG_RATE_PROTECTED != 0 {
        unsafe { PROTECT.get(dst) }.is_some()
    } else {
        cfg.flags & CFG_RATE_ALL != 0
    };
    if !applies {
        return false;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    match RATE.get_ptr_mut(src) {
        Some(tat) => {
            // SAFETY: an LRU value pointer stays valid for this program run; racing CPUs can
            // lose an update, which only makes the limit slightly generous.
            let tat = unsafe { &mut *tat };
            let at = if *tat < now { now } else { *tat };
            if at - now > cfg.rate_tolerance_ns {
                return true;
            }
            *tat = at + cfg.rate_interval_ns;
            false
        }
        None => {
            let _ = RATE.insert(src, now + cfg.rate_interval_ns, 0);
            false
        }
    }
}
