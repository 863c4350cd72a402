//! Lock-free per-client-IP request rate limiting: a token bucket per hash slot, with each
//! slot's tokens and last-refill time packed into one `AtomicU64` and updated by CAS.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Low bits of a slot: tokens, in milli-tokens.
const TOKEN_BITS: u32 = 24;
const TOKEN_MASK: u64 = (1 << TOKEN_BITS) - 1;
/// High bits of a slot: last refill, in ms since the limiter's epoch (2^40 ms ≈ 34.8 years;
/// later times saturate, which stops refills — a documented, practically unreachable limit).
const TIME_MAX: u64 = (1 << (64 - TOKEN_BITS)) - 1;
const MILLI: u64 = 1000;

/// Largest burst a slot can hold (24 bits of milli-tokens); larger bursts are clamped.
pub const MAX_BURST: u32 = (TOKEN_MASK / MILLI) as u32;
/// Fewest slots a limiter has.
pub const MIN_SLOTS: usize = 1024;
/// Most slots a limiter has (32 MiB of state).
pub const MAX_SLOTS: usize = 1 << 22;

/// Token-bucket rate limiter keyed by client IP: `rate` tokens/s, `burst` capacity, one
/// token per request.
///
/// State is a fixed array of slots indexed by a seeded hash of the client's key; there is no
/// per-IP allocation and no eviction, so memory is constant under any address spray.
///
/// * **Collisions:** two keys that hash to the same slot share one bucket, so each may be
///   limited earlier than its own rate alone would warrant — never later. With `n` active
///   clients and `s` slots a given client shares with probability ≈ `n / s`. The hash seed
///   is random per limiter, so a client cannot pick addresses that land on a victim's slot.
/// * **Keys:** IPv4 addresses are keyed by the full address (IPv4-mapped IPv6 such as
///   `::ffff:192.0.2.1`, as seen on dual-stack sockets, counts as the IPv4 address). IPv6
///   addresses are keyed by their /64 prefix, because one host usually controls a whole /64
///   and could otherwise dodge the limit by rotating addresses within it; the cost is that
///   all hosts in one /64 share a bucket.
/// * **Time:** `now` is passed in; refill uses whole milliseconds since the limiter was
///   created. A `now` earlier than a slot's last refill (clock skew between callers' reads)
///   adds nothing and never moves the slot's time backwards.
pub struct RateLimiter {
    slots: Box<[AtomicU64]>,
    mask: usize,
    /// Refill per ms in milli-tokens, which equals the rate in tokens per second.
    rate: u64,
    /// Bucket capacity in milli-tokens.
    capacity: u64,
    epoch: Instant,
    seed: u64,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate_per_sec", &self.rate)
            .field("burst", &(self.capacity / MILLI))
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

fn pack(tokens: u64, time_ms: u64) -> u64 {
    (time_ms.min(TIME_MAX) << TOKEN_BITS) | tokens.min(TOKEN_MASK)
}

fn unpack(word: u64) -> (u64, u64) {
    (word & TOKEN_MASK, word >> TOKEN_BITS)
}

impl RateLimiter {
    /// `rate_per_sec` tokens are added per second up to `burst` (clamped to
    /// `1..=MAX_BURST`); a new client starts with a full bucket. `slots` is rounded up to a
    /// power of two within `MIN_SLOTS..=MAX_SLOTS`.
    pub fn new(rate_per_sec: u32, burst: u32, slots: usize) -> Self {
        Self::with_seed(rate_per_sec, burst, slots, fastrand::u64(..))
    }

    fn with_seed(rate_per_sec: u32, burst: u32, slots: usize, seed: u64) -> Self {
        if burst > MAX_BURST {
            tracing::warn!(burst, max = MAX_BURST, "rate limit burst clamped");
        }
        let capacity = u64::from(burst.clamp(1, MAX_BURST)) * MILLI;
        let n = slots
            .clamp(MIN_SLOTS, MAX_SLOTS)
            .checked_next_power_of_two()
            .unwrap_or(MAX_SLOTS);
        let full = pack(capacity, 0);
        RateLimiter {
            slots: (0..n).map(|_| AtomicU64::new(full)).collect(),
            mask: n - 1,
            rate: u64::from(rate_per_sec),
            capacity,
            epoch: Instant::now(),
            seed,
        }
    }

    fn index(&self, ip: IpAddr) -> usize {
        let (key, family) = match ip.to_canonical() {
            IpAddr::V4(v4) => (u64::from(u32::from(v4)), 4),
            IpAddr::V6(v6) => ((u128::from(v6) >> 64) as u64, 6),
        };
        (crate::maglev::fmix64(crate::maglev::fmix64(key ^ self.seed) ^ family) as usize)
            & self.mask
    }

    fn millis(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX).min(TIME_MAX)
    }

    /// Takes one token from `ip`'s bucket: `true` = allowed, `false` = over the limit.
    /// `now` is passed in for testability (normally `Instant::now()`).
    pub fn check(&self, ip: IpAddr, now: Instant) -> bool {
        let now_ms = self.millis(now);
        let Some(slot) = self.slots.get(self.index(ip)) else {
            return true; // unreachable: index is masked to the slot count
        };
        // Relaxed is enough: each slot is an independent cell and all updates are RMWs on it.
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (tokens, last) = unpack(current);
            // Refill is exact (rate milli-tokens per ms), so a refusal need not write back.
            let elapsed = now_ms.saturating_sub(last);
            let available = tokens
                .saturating_add(elapsed.saturating_mul(self.rate))
                .min(self.capacity);
            if available < MILLI {
                return false;
            }
            let next = pack(available - MILLI, now_ms.max(last));
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_refusal() {
        let rl = RateLimiter::new(1, 5, 1024);
        let t0 = Instant::now();
        let ip = v4("192.0.2.1");
        assert!((0..5).all(|_| rl.check(ip, t0)));
        assert!(!rl.check(ip, t0));
        assert!(!rl.check(ip, t0 + ms(999)));
    }

    #[test]
    fn refill_one_per_second() {
        let rl = RateLimiter::new(1, 1, 1024);
        let t0 = Instant::now();
        let ip = v4("192.0.2.2");
        assert!(rl.check(ip, t0));
        assert!(!rl.check(ip, t0 + ms(500)));
        assert!(!rl.check(ip, t0 + ms(999)));
        assert!(rl.check(ip, t0 + ms(1000)));
        assert!(!rl.check(ip, t0 + ms(1000)));
        // Polling every 250 ms for 10 more simulated seconds yields exactly 10 requests.
        let allowed = (1..=40)
            .filter(|i| rl.check(ip, t0 + ms(1000 + 250 * i)))
            .count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn refill_with_non_integral_period() {
        // 3/s = one token every 333.3 ms; fractions carry over exactly in milli-tokens.
        let rl = RateLimiter::new(3, 2, 1024);
        let t0 = Instant::now();
        let ip = v4("192.0.2.3");
        let allowed = (0..=10_000).filter(|&i| rl.check(ip, t0 + ms(i))).count();
        assert_eq!(allowed, 2 + 30);
    }

    #[test]
    fn idle_refill_is_capped_at_burst() {
        let rl = RateLimiter::new(100, 3, 1024);
        let t0 = Instant::now();
        let ip = v4("192.0.2.4");
        assert!((0..3).all(|_| rl.check(ip, t0)));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| rl.check(ip, later)).count(), 3);
    }

    #[test]
    fn different_ips_are_independent() {
        let rl = RateLimiter::with_seed(1, 2, 1024, 7);
        let (a, b) = (v4("198.51.100.1"), v4("198.51.100.2"));
        assert_ne!(rl.index(a), rl.index(b));
        let t0 = Instant::now();
        assert!(rl.check(a, t0) && rl.check(a, t0) && !rl.check(a, t0));
        assert!(rl.check(b, t0) && rl.check(b, t0) && !rl.check(b, t0));
    }

    #[test]
    fn ipv6_same_64_shares_and_mapped_v4_is_v4() {
        let rl = RateLimiter::with_seed(1, 2, 1024, 7);
        let t0 = Instant::now();
        let (a, b) = (v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff:ee:dd:9"));
        let other = v6("2001:db8:1:3::1");
        assert_ne!(rl.index(a), rl.index(other));
        assert!(rl.check(a, t0) && rl.check(b, t0));
        assert!(!rl.check(a, t0) && !rl.check(b, t0));
        assert!(rl.check(other, t0));
        // Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d.
        let (plain, mapped) = (v4("203.0.113.9"), v6("::ffff:203.0.113.9"));
        assert_eq!(rl.index(plain), rl.index(mapped));
        assert!(rl.check(plain, t0) && rl.check(mapped, t0));
        assert!(!rl.check(plain, t0) && !rl.check(mapped, t0));
    }

    #[test]
    fn concurrent_frozen_time_takes_exactly_burst() {
        let rl = RateLimiter::new(1000, 1000, 65536);
        let now = Instant::now();
        let ip = v4("192.0.2.50");
        let allowed = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let n = (0..5000).filter(|_| rl.check(ip, now)).count();
                    allowed.fetch_add(n, Ordering::Relaxed);
                });
            }
        });
        assert_eq!(allowed.into_inner(), 1000);
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let rl = RateLimiter::new(1, 2, 1024);
        let t0 = Instant::now();
        let ip = v4("192.0.2.60");
        let (t5, t10) = (t0 + Duration::from_secs(5), t0 + Duration::from_secs(10));
        assert!(rl.check(ip, t10));
        // An earlier `now` (another thread's older clock read) may spend a token but must
        // not move the slot's time back, which would re-credit the last 5 s later on.
        assert!(rl.check(ip, t5));
        assert!(!rl.check(ip, t5) && !rl.check(ip, t0));
        if let Some(before_epoch) = t0.checked_sub(Duration::from_secs(3600)) {
            assert!(!rl.check(ip, before_epoch));
        }
        assert!(!rl.check(ip, t10 + ms(999)));
        assert!(rl.check(ip, t10 + ms(1000)));
        assert!(!rl.check(ip, t10 + ms(1000)));
    }

    #[test]
    fn sizes_and_limits_are_clamped() {
        assert_eq!(RateLimiter::new(1, 1, 0).slots.len(), MIN_SLOTS);
        assert_eq!(RateLimiter::new(1, 1, 3000).slots.len(), 4096);
        assert_eq!(RateLimiter::new(1, 1, usize::MAX).slots.len(), MAX_SLOTS);
        let rl = RateLimiter::new(u32::MAX, u32::MAX, 1024);
        assert_eq!(rl.capacity, u64::from(MAX_BURST) * MILLI);
        if let Some(far) = Instant::now().checked_add(Duration::from_secs(100 * 365 * 86400)) {
            assert!(rl.check(v4("192.0.2.70"), far));
        }
        // burst 0 behaves as 1; rate 0 never refills.
        let rl = RateLimiter::new(0, 0, 1024);
        let t0 = Instant::now();
        assert!(rl.check(v4("192.0.2.71"), t0));
        assert!(!rl.check(v4("192.0.2.71"), t0 + Duration::from_secs(60)));
    }
}
