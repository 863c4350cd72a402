//! Weighted round robin without locks: a smooth schedule (earliest-deadline-first over weights)
//! is computed once per table build; each request takes the next slot with one atomic add.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

#[derive(Debug, Default)]
pub struct Wrr {
    schedule: Vec<u32>,
    next: AtomicUsize,
}

impl Wrr {
    pub fn new(weights: &[u16]) -> Self {
        Wrr {
            schedule: smooth_schedule(weights),
            next: AtomicUsize::new(0),
        }
    }

    /// Index of the next endpoint, or None when every weight is 0.
    pub fn pick(&self) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, AtomicOrdering::Relaxed);
        Some(self.schedule[n % self.schedule.len()] as usize)
    }
}

/// A cycle in which endpoint `i` appears exactly `w_i / g` times (g = gcd of the non-zero
/// weights), spread evenly: at each step take the endpoint whose next ideal time
/// `(2 * picks_i + 1) / (2 * w_i)` (the middle of its next share) is earliest, ties to the
/// lower index. Exactly the deadlines below 1 fall in one cycle, so the shares are exact.
pub fn smooth_schedule(weights: &[u16]) -> Vec<u32> {
    let g = weights
        .iter()
        .filter(|w| **w > 0)
        .fold(0u64, |g, w| gcd(g, u64::from(*w)));
    if g == 0 {
        return Vec::new();
    }
    let total: u64 = weights.iter().map(|w| u64::from(*w) / g).sum();
    let mut heap: BinaryHeap<Slot> = weights
        .iter()
        .enumerate()
        .filter(|(_, w)| **w > 0)
        .map(|(i, w)| Slot {
            next: 1,
            weight: u64::from(*w) / g,
            index: i as u32,
        })
        .collect();
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let Some(mut slot) = heap.pop() else { break };
        out.push(slot.index);
        slot.next += 1;
        heap.push(slot);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The `next`-th pick of an endpoint of weight `weight` is ideally due at `(2 next - 1) / 2 weight`.
#[derive(Debug, PartialEq, Eq)]
struct Slot {
    next: u64,
    weight: u64,
    index: u32,
}

impl Ord for Slot {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest deadline (then lowest index) must be greatest.
        ((2 * other.next - 1) * self.weight)
            .cmp(&((2 * self.next - 1) * other.weight))
            .then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: &[u32], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| s.iter().filter(|x| **x as usize == i).count())
            .collect()
    }

    #[test]
    fn exact_shares_per_cycle() {
        let s = smooth_schedule(&[5, 3, 2]);
        assert_eq!(s.len(), 10);
        assert_eq!(counts(&s, 3), [5, 3, 2]);
    }

    #[test]
    fn reduced_by_gcd_and_zero_weight_drained() {
        let s = smooth_schedule(&[100, 0, 50]);
        assert_eq!(s, [0, 2, 0]);
        assert!(smooth_schedule(&[0, 0]).is_empty());
        assert!(smooth_schedule(&[]).is_empty());
    }

    #[test]
    fn smooth_not_bursty() {
        // 1% canary: the light endpoint appears once, not at the start of a burst of 99.
        let s = smooth_schedule(&[99, 1]);
        assert_eq!(counts(&s, 2), [99, 1]);
        let s = smooth_schedule(&[1, 1, 1]);
        assert_eq!(s, [0, 1, 2]);
        // No endpoint with weight 2 of 4 is picked twice in a row.
        let s = smooth_schedule(&[2, 1, 1]);
        assert!(s.windows(2).all(|w| w[0] != w[1]), "{s:?}");
    }

    #[test]
    fn pick_cycles_through_schedule() {
        let w = Wrr::new(&[3, 1]);
        let picks: Vec<usize> = (0..8).filter_map(|_| w.pick()).collect();
        assert_eq!(
            counts(&picks.iter().map(|p| *p as u32).collect::<Vec<_>>(), 2),
            [6, 2]
        );
        assert_eq!(Wrr::new(&[0]).pick(), None);
    }
}
