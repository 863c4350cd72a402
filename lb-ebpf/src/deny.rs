//! Deny-list: source prefixes (LPM tries, one per family) whose packets are dropped before any
//! further parsing. Seeded by lb-user's bpf::maps from the config's `xdp.deny`.

use aya_ebpf::{macros::map, maps::lpm_trie::Key, maps::LpmTrie};
use lb_common::{DenyKeyV4, DenyKeyV6, DenyValue, Reason, DENY_CAPACITY};

use crate::parse::{Ip, Source};

#[map(name = "LB_DENY_V4")]
static DENY_V4: LpmTrie<DenyKeyV4, DenyValue> = LpmTrie::with_max_entries(DENY_CAPACITY, 0);

#[map(name = "LB_DENY_V6")]
static DENY_V6: LpmTrie<DenyKeyV6, DenyValue> = LpmTrie::with_max_entries(DENY_CAPACITY, 0);

/// The drop reason when the packet's source is deny-listed.
#[inline(always)]
pub fn check(ip: &Ip) -> Option<Reason> {
    match ip.src {
        Source::V4(addr) => DENY_V4.get(Key::new(32, addr)).map(|_| Reason::DenyV4),
        Source::V6(addr) => DENY_V6.get(Key::new(128, addr)).map(|_| Reason::DenyV6),
    }
}
