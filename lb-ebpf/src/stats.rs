//! Per-CPU packet and byte counters, one slot per [`Reason`]; summed by the daemon at scrape time.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use lb_common::{Reason, StatValue, REASON_COUNT};

#[map(name = "LB_STATS")]
static STATS: PerCpuArray<StatValue> = PerCpuArray::with_max_entries(REASON_COUNT, 0);

#[inline(always)]
pub fn count(reason: Reason, len: usize) {
    if let Some(slot) = STATS.get_ptr_mut(reason.index()) {
        // Per-CPU slot: no other writer, plain adds are safe.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += len as u64;
        }
    }
}
