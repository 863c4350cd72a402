//! Endpoint choice without locks: smooth weighted round robin (a schedule computed per table
//! build, one atomic add per pick), least connections, P2C random, and Maglev consistent hashing.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

/// How a cluster chooses among its endpoints (built once per table).
#[derive(Debug)]
pub enum Picker {
    RoundRobin(Wrr),
    LeastConnections(AtomicUsize),
    Random(Vec<u64>),
    /// Maglev table, and a rotation for requests without a key (round robin among the idle).
    Hash(Vec<u32>, AtomicUsize),
}

impl Picker {
    pub fn round_robin(weights: &[u32], start: usize) -> Self {
        Picker::RoundRobin(Wrr::starting_at(weights, start))
    }

    pub fn least_connections() -> Self {
        Picker::LeastConnections(AtomicUsize::new(0))
    }

    /// P2C over weights: cumulative sums for weighted sampling.
    pub fn random(weights: &[u32]) -> Self {
        let mut acc = 0u64;
        Picker::Random(
            weights
                .iter()
                .map(|w| {
                    acc += u64::from(*w);
                    acc
                })
                .collect(),
        )
    }

    /// Maglev over `(stable endpoint key, weight)`.
    pub fn hash(keys: &[(u64, u32)]) -> Self {
        Picker::Hash(
            crate::maglev::build(keys, crate::maglev::DEFAULT_TABLE_SIZE).unwrap_or_default(),
            AtomicUsize::new(0),
        )
    }

    /// An endpoint with weight > 0 not in `exclude` (endpoints already tried by this request).
    /// `load(i)` is endpoint i's in-flight requests; `key` the request's hash key, if any.
    pub fn pick(
        &self,
        weights: &[u32],
        load: &dyn Fn(usize) -> u32,
        key: Option<u64>,
        exclude: &[usize],
    ) -> Option<usize> {
        let ok = |i: usize| weights.get(i).is_some_and(|w| *w > 0) && !exclude.contains(&i);
        let first = match self {
            Picker::RoundRobin(wrr) => {
                // Skip excluded slots, at most one pass over the endpoints.
                (0..weights.len().max(1))
                    .filter_map(|_| wrr.pick())
                    .find(|i| ok(*i))
            }
            Picker::LeastConnections(rotate) => {
                let start = rotate.fetch_add(1, AtomicOrdering::Relaxed);
                least_loaded(weights, load, &ok, start)
            }
            Picker::Random(cumulative) => {
                let a = weighted_random(cumulative).filter(|i| ok(*i));
                let b = weighted_random(cumulative).filter(|i| ok(*i));
                match (a, b) {
                    (Some(a), Some(b)) => Some(if lighter(weights, load, b, a) { b } else { a }),
                    (a, b) => a.or(b),
                }
            }
            Picker::Hash(table, rotate) => match key {
                Some(k) => crate::maglev::lookup(table, k)
                    .map(|i| i as usize)
                    .filter(|i| ok(*i)),
                // No key (header/cookie absent): spread like HAProxy's round-robin fallback.
                None => {
                    let start = rotate.fetch_add(1, AtomicOrdering::Relaxed);
                    least_loaded(weights, load, &ok, start)
                }
            },
        };
        first.or_else(|| least_loaded(weights, load, &ok, 0))
    }
}

/// Is `a` less loaded than `b` relative to their weights? (load+1)/weight compared exactly.
fn lighter(weights: &[u32], load: &dyn Fn(usize) -> u32, a: usize, b: usize) -> bool {
    let (la, lb) = (u64::from(load(a)) + 1, u64::from(load(b)) + 1);
    la * u64::from(weights[b]) < lb * u64::from(weights[a])
}

fn least_loaded(
    weights: &[u32],
    load: &dyn Fn(usize) -> u32,
    ok: &dyn Fn(usize) -> bool,
    start: usize,
) -> Option<usize> {
    let n = weights.len();
    let mut best: Option<usize> = None;
    for k in 0..n {
        let i = (start + k) % n;
        if ok(i) && best.is_none_or(|b| lighter(weights, load, i, b)) {
            best = Some(i);
        }
    }
    best
}

fn weighted_random(cumulative: &[u64]) -> Option<usize> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let x = fastrand::u64(0..total);
    Some(cumulative.partition_point(|c| *c <= x))
}

#[derive(Debug, Default)]
pub struct Wrr {
    schedule: Vec<u32>,
    next: AtomicUsize,
}

impl Wrr {
    pub fn new(weights: &[u32]) -> Self {
        Self::starting_at(weights, 0)
    }

    /// A schedule that continues at pick `start` (the previous table's position), so frequent
    /// rebuilds (slow start, health) do not restart the cycle and starve light endpoints.
    pub fn starting_at(weights: &[u32], start: usize) -> Self {
        Wrr {
            schedule: smooth_schedule(weights),
            next: AtomicUsize::new(start),
        }
    }

    pub fn resume_at(&self, position: usize) {
        self.next.store(position, AtomicOrdering::Relaxed);
    }

    /// Picks made so far.
    pub fn position(&self) -> usize {
        self.next.load(AtomicOrdering::Relaxed)
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
pub fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
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
    fn least_connections_prefers_idle_then_weight() {
        let p = Picker::least_connections();
        let loads = [5u32, 0, 3];
        let w = [1u32, 1, 1];
        assert_eq!(p.pick(&w, &|i| loads[i], None, &[]), Some(1));
        assert_eq!(p.pick(&w, &|i| loads[i], None, &[1]), Some(2));
        // Weight 4 with 3 in flight is lighter than weight 1 with 1 in flight.
        let loads = [3u32, 1];
        assert_eq!(p.pick(&[4, 1], &|i| loads[i], None, &[]), Some(0));
        assert_eq!(
            p.pick(&[0, 1], &|_| 0, None, &[1]),
            None,
            "drained and excluded"
        );
    }

    #[test]
    fn random_p2c_follows_weights_and_load() {
        let p = Picker::random(&[3, 1, 0]);
        let mut hits = [0usize; 3];
        for _ in 0..4000 {
            hits[p.pick(&[3, 1, 0], &|_| 0, None, &[]).unwrap()] += 1;
        }
        assert_eq!(hits[2], 0, "weight 0 never chosen");
        assert!(hits[0] > hits[1] * 2, "{hits:?}");
        // A heavily loaded endpoint loses most two-choice contests.
        let loads = [100u32, 0];
        let p = Picker::random(&[1, 1]);
        let busy = (0..1000)
            .filter(|_| p.pick(&[1, 1], &|i| loads[i], None, &[]) == Some(0))
            .count();
        assert!(busy < 350, "{busy}");
    }

    #[test]
    fn hash_is_sticky_and_redispatches_when_excluded() {
        let keys: Vec<(u64, u32)> = (0..4).map(|i| (crate::maglev::hash64(&[i]), 1)).collect();
        let p = Picker::hash(&keys);
        let w = [1u32; 4];
        let k = crate::maglev::hash64(b"client-1");
        let first = p.pick(&w, &|_| 0, Some(k), &[]).unwrap();
        for _ in 0..10 {
            assert_eq!(p.pick(&w, &|_| 0, Some(k), &[]), Some(first));
        }
        let other = p.pick(&w, &|_| 0, Some(k), &[first]).unwrap();
        assert_ne!(other, first);
        let keyless: std::collections::HashSet<usize> = (0..8)
            .filter_map(|_| p.pick(&w, &|_| 0, None, &[]))
            .collect();
        assert_eq!(
            keyless.len(),
            4,
            "requests without a key rotate over all endpoints"
        );
    }

    #[test]
    fn pick_cycles_through_schedule() {
        let w = Wrr::new(&[3, 1]);
        let p = Picker::round_robin(&[3, 1], 0);
        let mut skipped = 0;
        for _ in 0..8 {
            if p.pick(&[3, 1], &|_| 0, None, &[0]) == Some(1) {
                skipped += 1;
            }
        }
        assert_eq!(skipped, 8, "excluded endpoint skipped");
        let picks: Vec<usize> = (0..8).filter_map(|_| w.pick()).collect();
        assert_eq!(
            counts(&picks.iter().map(|p| *p as u32).collect::<Vec<_>>(), 2),
            [6, 2]
        );
        assert_eq!(Wrr::new(&[0]).pick(), None);
        // A rebuilt schedule continues where the old one was.
        let w = Wrr::starting_at(&[20, 1], 10);
        assert_eq!(w.pick(), Some(1), "the light endpoint's slot is mid-cycle");
        assert_eq!(w.position(), 11);
    }
}
