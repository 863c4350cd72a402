//! The XDP program: classify every packet (parse -> deny-list -> transport checks), count it under
//! exactly one reason, and return that reason's verdict. Anything not understood is passed.
#![no_std]
#![no_main]

mod csum;
mod deny;
mod l4;
mod l4maps;
mod nat;
mod parse;
mod ratelimit;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use lb_common::Reason;

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let reason = classify(&ctx);
    stats::count(reason, ctx.data_end() - ctx.data());
    if reason.verdict() == lb_common::Verdict::Drop {
        debug!(&ctx, "drop: reason {}", reason.index());
    }
    reason.verdict().action()
}

/// Passes everything. Attached to the receiving end of a veth pair so that native-mode
/// XDP_TX / XDP_REDIRECT frames are delivered (see docs/build.md).
#[xdp]
pub fn lb_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Reason {
    let ip = match parse::ip(ctx) {
        Ok(ip) => ip,
        Err(reason) => return reason,
    };
    if let Some(reason) = deny::check(&ip) {
        return reason;
    }
    match parse::transport(ctx, &ip) {
        Ok((reason, None)) => reason,
        Ok((reason, Some(ports))) => l4::handle(ctx, &ip, &ports).unwrap_or(reason),
        Err(reason) => reason,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
