//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016; weights as in Katran),
//! shared by the L7 proxy and the XDP L4 path so that every node maps a key to the same endpoint.

/// Default lookup-table size: prime, and large enough that endpoint shares stay within a
/// fraction of a percent of their weights for up to a few hundred endpoints.
pub const DEFAULT_TABLE_SIZE: usize = 65537; // prime

/// Largest table [`build`] accepts (keeps memory and build time bounded on any input).
pub const MAX_TABLE_SIZE: usize = 1 << 24;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Seeds that derive a permutation's `offset` and `skip` from an endpoint's key hash.
/// Part of the wire-stable algorithm: changing them reshuffles every table.
const OFFSET_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const SKIP_SEED: u64 = 0xc2b2_ae3d_27d4_eb4f;

const EMPTY: u32 = u32::MAX;

/// Stable 64-bit hash: FNV-1a 64 over `bytes`, then the MurmurHash3 `fmix64` finalizer
/// (FNV-1a alone mixes its high bits poorly; `fmix64` gives full avalanche).
///
/// This must never change between releases or machines: nodes (and the L4 XDP path) must
/// agree on it. `tests::hash64_golden` pins known values.
pub fn hash64(bytes: &[u8]) -> u64 {
    fmix64(fnv1a64(bytes))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET_BASIS;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finalizer (also mixes the rate limiter's slot index).
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Trial division; fine for table sizes (up to [`MAX_TABLE_SIZE`]).
pub fn is_prime(n: usize) -> bool {
    let n = n as u64;
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Per-endpoint state while populating the table.
struct Filler {
    index: u32,
    weight: u64,
    credit: u64,
    pos: u64,
    skip: u64,
}

/// Builds a weighted Maglev lookup table.
///
/// `endpoints` are `(stable key hash, weight)`, e.g. `(hash64(b"10.0.0.5:8080"), 100)`;
/// weight 0 means "not in the table" (draining). Each of the `size` entries is an index into
/// `endpoints`. Returns an empty `Vec` if no endpoint has weight > 0.
///
/// Errors if `size` is not prime, is not greater than `endpoints.len()`, or exceeds
/// [`MAX_TABLE_SIZE`].
///
/// The result depends only on the set of (key, weight) pairs, not on their order in
/// `endpoints` (endpoints are filled in key-hash order), so nodes that list endpoints
/// differently still agree as long as the keys and weights agree. Weight-0 endpoints do not
/// affect other endpoints' entries. Endpoints with equal keys get the same permutation and
/// split its slots; give them distinct keys.
///
/// Weights follow Katran: every round each endpoint earns `weight` credit and claims its
/// next preferred free slot once its credit reaches the largest weight, so shares track
/// weights closely. Cost is O(size × endpoints) in the worst case (one heavy endpoint among
/// many very light ones), typically O(size · log size).
pub fn build(endpoints: &[(u64, u32)], size: usize) -> Result<Vec<u32>, String> {
    if size > MAX_TABLE_SIZE {
        return Err(format!(
            "maglev table size {size} exceeds the maximum {MAX_TABLE_SIZE}"
        ));
    }
    if !is_prime(size) {
        return Err(format!("maglev table size {size} is not prime"));
    }
    if size <= endpoints.len() {
        return Err(format!(
            "maglev table size {size} must be greater than the number of endpoints ({})",
            endpoints.len()
        ));
    }
    let size64 = size as u64;
    let mut fillers: Vec<(u64, Filler)> = Vec::new();
    for (i, &(key, weight)) in endpoints.iter().enumerate() {
        // `i < size <= MAX_TABLE_SIZE < u32::MAX`, so this cannot fail.
        let Ok(index) = u32::try_from(i) else {
            return Err("too many endpoints".to_string());
        };
        if weight == 0 {
            continue;
        }
        fillers.push((
            key,
            Filler {
                index,
                weight: u64::from(weight),
                credit: 0,
                pos: fmix64(key ^ OFFSET_SEED) % size64,
                skip: fmix64(key ^ SKIP_SEED) % (size64 - 1) + 1,
            },
        ));
    }
    if fillers.is_empty() {
        return Ok(Vec::new());
    }
    fillers.sort_by_key(|(key, f)| (*key, f.index));
    let max_weight = fillers.iter().map(|(_, f)| f.weight).max().unwrap_or(1);

    let mut table = vec![EMPTY; size];
    let mut filled = 0usize;
    // The heaviest endpoint claims a slot every round, so this ends within `size` rounds.
    loop {
        for (_, f) in fillers.iter_mut() {
            f.credit += f.weight;
            if f.credit < max_weight {
                continue;
            }
            f.credit -= max_weight;
            // `skip` is in 1..size and `size` is prime, so the permutation visits every slot;
            // since the table is not full yet, a free slot is found within `size` steps.
            loop {
                let slot = f.pos as usize;
                f.pos = (f.pos + f.skip) % size64;
                if let Some(entry) = table.get_mut(slot) {
                    if *entry == EMPTY {
                        *entry = f.index;
                        break;
                    }
                }
            }
            filled += 1;
            if filled == size {
                return Ok(table);
            }
        }
    }
}

/// Looks up the endpoint index for `key_hash` (e.g. [`hash64`] of a client address or a
/// header value). `None` if the table is empty.
pub fn lookup(table: &[u32], key_hash: u64) -> Option<u32> {
    if table.is_empty() {
        return None;
    }
    table.get((key_hash % table.len() as u64) as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| hash64(format!("10.0.{}.{}:8080", i / 250, i % 250).as_bytes()))
            .collect()
    }

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &e in table {
            c[e as usize] += 1;
        }
        c
    }

    fn assert_shares(weights: &[u32]) {
        let k = keys(weights.len());
        let eps: Vec<(u64, u32)> = k.iter().copied().zip(weights.iter().copied()).collect();
        let table = build(&eps, DEFAULT_TABLE_SIZE).unwrap();
        let total_w: u32 = weights.iter().sum();
        for (i, &c) in counts(&table, eps.len()).iter().enumerate() {
            let want = f64::from(weights[i]) / f64::from(total_w);
            let got = c as f64 / table.len() as f64;
            assert!(
                (got - want).abs() <= 0.02 * want,
                "endpoint {i}: share {got} vs weight share {want}"
            );
        }
    }

    #[test]
    fn hash64_golden() {
        // FNV-1a 64 reference vectors, and MurmurHash3 fmix64(0) == 0.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fmix64(0), 0);
        // Pinned forever: every node and the XDP path must compute identical hashes.
        assert_eq!(hash64(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash64(b"a"), 0x82a2_a958_a9be_ce5b);
        assert_eq!(hash64(b"10.0.0.1:8080"), 0xe8c7_2115_6ed5_2b14);
        assert_eq!(hash64(b"backend-1"), 0xefe7_ca5b_895e_9a23);
    }

    #[test]
    fn deterministic_and_pinned() {
        let eps: Vec<(u64, u32)> = keys(5).into_iter().zip([1, 2, 3, 1, 5]).collect();
        let a = build(&eps, DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(a, build(&eps, DEFAULT_TABLE_SIZE).unwrap());
        // Pin a small table so the algorithm can't drift between releases or processes.
        let small = build(&eps[..3], 13).unwrap();
        assert_eq!(small, vec![0, 2, 2, 1, 2, 2, 2, 1, 0, 1, 2, 2, 1]);
        // Input order does not matter.
        let mut rev = eps.clone();
        rev.reverse();
        let b = build(&rev, DEFAULT_TABLE_SIZE).unwrap();
        let n = eps.len() as u32;
        assert!(a.iter().zip(&b).all(|(x, y)| *x == n - 1 - *y));
    }

    #[test]
    fn entries_valid_and_weight_zero_excluded() {
        let eps: Vec<(u64, u32)> = keys(6).into_iter().zip([3, 0, 1, 0, 2, 7]).collect();
        let table = build(&eps, 1009).unwrap();
        assert_eq!(table.len(), 1009);
        assert!(table.iter().all(|&e| (e as usize) < eps.len()));
        let c = counts(&table, eps.len());
        assert_eq!((c[1], c[3]), (0, 0));
        assert!(c[0] > 0 && c[2] > 0 && c[4] > 0 && c[5] > 0);
        // Weight-0 endpoints don't disturb the others (same keys → same slots).
        let live: Vec<(u64, u32)> = [0, 2, 4, 5].iter().map(|&i| eps[i]).collect();
        let t2 = build(&live, 1009).unwrap();
        let map = [0u32, 2, 4, 5];
        assert!(table.iter().zip(&t2).all(|(a, b)| *a == map[*b as usize]));
    }

    #[test]
    fn shares_track_weights() {
        assert_shares(&[1, 2, 3, 4]);
        assert_shares(&[1; 10]);
        assert_shares(&[100, 1, 50, 7, 7]);
    }

    /// Fraction of entries not owned by `ignore_key` (in either table) that changed owner.
    fn moved_fraction(
        a: &[u32],
        a_keys: &[u64],
        b: &[u32],
        b_keys: &[u64],
        ignore_key: u64,
    ) -> f64 {
        let (mut moved, mut others) = (0usize, 0usize);
        for (x, y) in a.iter().zip(b) {
            let (kx, ky) = (a_keys[*x as usize], b_keys[*y as usize]);
            if kx == ignore_key || ky == ignore_key {
                continue;
            }
            others += 1;
            moved += usize::from(kx != ky);
        }
        moved as f64 / others as f64
    }

    #[test]
    fn removing_and_adding_an_endpoint_is_minimally_disruptive() {
        let all = keys(10);
        let full: Vec<(u64, u32)> = all.iter().map(|&k| (k, 1)).collect();
        let t_full = build(&full, DEFAULT_TABLE_SIZE).unwrap();
        for removed in [0usize, 4, 9] {
            let fewer_keys: Vec<u64> = (0..10).filter(|&i| i != removed).map(|i| all[i]).collect();
            let fewer: Vec<(u64, u32)> = fewer_keys.iter().map(|&k| (k, 1)).collect();
            let t_fewer = build(&fewer, DEFAULT_TABLE_SIZE).unwrap();
            let gone = all[removed];
            assert!(t_fewer.iter().all(|&e| fewer_keys[e as usize] != gone));
            let f = moved_fraction(&t_full, &all, &t_fewer, &fewer_keys, gone);
            assert!(f < 0.03, "removal of {removed} moved {f} of other entries");
            // Adding it back (this is exactly t_full again, by determinism).
            let f = moved_fraction(&t_fewer, &fewer_keys, &t_full, &all, gone);
            assert!(f < 0.03, "re-adding {removed} moved {f} of other entries");
        }
    }

    /// Issue 5, item 6: at the default size every endpoint's share is within 1% (relative) of
    /// its weight share, equal or skewed weights, few or many endpoints.
    #[test]
    fn shares_within_one_percent_of_weight_shares_at_default_size() {
        let mut rng = fastrand::Rng::with_seed(5);
        let random: Vec<u32> = (0..20).map(|_| rng.u32(1..=256)).collect();
        for weights in [
            vec![1, 1],
            vec![1; 3],
            vec![1; 10],
            vec![1; 100],
            vec![1, 2, 3, 4],
            vec![256, 128, 64, 32],
            vec![20, 20, 20, 15, 15, 10],
            random,
        ] {
            let k = keys(weights.len());
            let eps: Vec<(u64, u32)> = k.into_iter().zip(weights.iter().copied()).collect();
            let table = build(&eps, DEFAULT_TABLE_SIZE).unwrap();
            let total: u32 = weights.iter().sum();
            for (i, &c) in counts(&table, eps.len()).iter().enumerate() {
                let want = f64::from(weights[i]) / f64::from(total);
                let got = c as f64 / table.len() as f64;
                assert!(
                    (got - want).abs() <= 0.01 * want,
                    "weights {weights:?}: endpoint {i} has {got:.5} of the slots, weight share {want:.5}"
                );
            }
        }
    }

    /// Issue 5, item 6: removing 1 of N endpoints moves at most 1/N + 1% of all slots (its
    /// own slots plus the few others Maglev reshuffles), for several N and positions.
    #[test]
    fn removing_one_of_n_moves_at_most_a_share_plus_one_percent() {
        for n in [2usize, 3, 5, 10, 25, 100] {
            let all = keys(n);
            let full: Vec<(u64, u32)> = all.iter().map(|&k| (k, 1)).collect();
            let before = build(&full, DEFAULT_TABLE_SIZE).unwrap();
            for removed in [0, n / 2, n - 1] {
                let rest: Vec<u64> = (0..n).filter(|&i| i != removed).map(|i| all[i]).collect();
                let eps: Vec<(u64, u32)> = rest.iter().map(|&k| (k, 1)).collect();
                let after = build(&eps, DEFAULT_TABLE_SIZE).unwrap();
                let moved = before
                    .iter()
                    .zip(&after)
                    .filter(|(b, a)| all[**b as usize] != rest[**a as usize])
                    .count();
                let frac = moved as f64 / DEFAULT_TABLE_SIZE as f64;
                let bound = 1.0 / n as f64 + 0.01;
                assert!(
                    frac <= bound,
                    "{n} endpoints, removing {removed}: {frac:.4} of slots moved, bound {bound:.4}"
                );
            }
        }
    }

    #[test]
    fn empty_and_bad_sizes() {
        assert_eq!(build(&[], 7), Ok(vec![]));
        assert_eq!(build(&[(1, 0), (2, 0)], 7), Ok(vec![]));
        assert_eq!(lookup(&[], 42), None);
        assert!(build(&[(1, 1)], 65536).is_err()); // not prime
        assert!(build(&[(1, 1)], 1).is_err());
        assert!(build(&[(1, 1)], 0).is_err());
        assert!(build(&[(1, 1), (2, 1), (3, 1)], 3).is_err()); // not > endpoints
        assert!(build(&[(1, 1), (2, 1)], 3).is_ok());
        assert!(build(&[(1, 1)], 16_777_259).is_err()); // prime but too large
        assert!(build(&[(1, 1)], 2).is_ok());
    }

    #[test]
    fn lookup_follows_table() {
        let eps: Vec<(u64, u32)> = keys(3).into_iter().map(|k| (k, 1)).collect();
        let table = build(&eps, 13).unwrap();
        for h in [0u64, 1, 12, 13, u64::MAX, hash64(b"client")] {
            assert_eq!(lookup(&table, h), Some(table[(h % 13) as usize]));
        }
    }
}
