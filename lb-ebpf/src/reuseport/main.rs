//! The SK_REUSEPORT steering program: picks which L7 worker socket of a SO_REUSEPORT group gets
//! each new connection (flow hash or least loaded, drained workers skipped). Its own object.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::sk_action,
    macros::{map, sk_reuseport},
    maps::{Array, ReusePortSockArray},
    programs::SkReuseportContext,
};
use lb_common::reuseport::{SteerPolicy, MAX_WORKERS, STEER_LEAST_LOADED};

#[map(name = "LB_RP_SOCKS")]
static SOCKS: ReusePortSockArray = ReusePortSockArray::with_max_entries(MAX_WORKERS, 0);

#[map(name = "LB_RP_POLICY")]
static POLICY: Array<SteerPolicy> = Array::with_max_entries(1, 0);

#[map(name = "LB_RP_LOAD")]
static LOAD: Array<u32> = Array::with_max_entries(MAX_WORKERS, 0);

/// Always SK_PASS: with a socket selected the connection goes to it; without one (nothing
/// selectable, or the slot is empty) the kernel picks by its own hash over the whole group.
#[sk_reuseport]
pub fn lb_reuseport(ctx: SkReuseportContext) -> u32 {
    if let Some(policy) = POLICY.get(0) {
        let n = policy.live_count;
        if n > 0 && n <= MAX_WORKERS {
            let hash = ctx.hash();
            let k = if policy.mode == STEER_LEAST_LOADED {
                least_loaded(policy, n, hash)
            } else {
                u32::from(policy.live[slot(hash % n)])
            };
            // An empty slot fails the helper: the kernel's default selection applies.
            let _ = SOCKS.select_reuseport(&ctx, k);
        }
    }
    sk_action::SK_PASS
}

/// The live worker with the fewest open connections; among equals the first one met going
/// round the live list from `hash % n`, so ties spread over the tied workers. Every value the
/// loop carries is a range, never a constant that differs by path, so the verifier prunes.
#[inline(always)]
fn least_loaded(policy: &SteerPolicy, n: u32, hash: u32) -> u32 {
    let start = hash % n;
    // (load << 32 | position in the round): the minimum is the least loaded, first met.
    let mut best = u64::MAX;
    for j in 0..MAX_WORKERS {
        if j >= n {
            break;
        }
        let k = u32::from(policy.live[slot((start + j) % n)]);
        let load = LOAD.get(k).map_or(0, |l| *l);
        let key = (u64::from(load) << 32) | u64::from(j);
        if key < best {
            best = key;
        }
    }
    let j = (best & 0xffff_ffff) as u32;
    u32::from(policy.live[slot((start + j) % n)])
}

/// `i` as an index into `live` that the verifier can see is in bounds. LLVM knows `x % n` is
/// below 64 when `n <= 64` and would drop a plain mask; the volatile read hides that, so the
/// mask stays and bounds the register.
#[inline(always)]
fn slot(i: u32) -> usize {
    // SAFETY: reads a local.
    let i = unsafe { core::ptr::read_volatile(&i) };
    (i & (MAX_WORKERS - 1)) as usize
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
