//! The counters the request path bumps: plain relaxed atomics held by the table's routes,
//! clusters, endpoints and listeners (carried across reloads by name), read at scrape time.

use http::Method;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Status classes, by index.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Method classes: read (GET, HEAD, OPTIONS), write (POST, PUT, PATCH, DELETE), other.
pub const METHOD_CLASSES: [&str; 3] = ["read", "write", "other"];
/// Whose fault an error was (see [`crate::error::Side`]).
pub const SOURCES: [&str; 3] = ["downstream", "upstream", "internal"];
/// Upper bounds (seconds) of the request duration histogram; +Inf follows.
pub const BUCKETS: [f64; 5] = [0.005, 0.025, 0.1, 0.5, 2.5];
/// Why a TLS handshake failed.
pub const TLS_FAILURES: [&str; 5] = [
    "timeout",
    "unknown_sni",
    "protocol",
    "bad_message",
    "closed",
];
/// Mirror outcomes: a response class, failed (no response), dropped (too many in flight),
/// skipped (body not copyable).
pub const MIRROR_RESULTS: [&str; 8] = [
    "1xx", "2xx", "3xx", "4xx", "5xx", "failed", "dropped", "skipped",
];

pub fn class(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
}

pub fn method_class(m: &Method) -> usize {
    match *m {
        Method::GET | Method::HEAD | Method::OPTIONS => 0,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => 1,
        _ => 2,
    }
}

pub fn source(side: crate::error::Side) -> usize {
    match side {
        crate::error::Side::Downstream => 0,
        crate::error::Side::Upstream => 1,
        crate::error::Side::Internal => 2,
    }
}

fn get<const N: usize>(a: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| a[i].load(Relaxed))
}

/// A fixed-bucket histogram without locks (count is the sum of the buckets).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with upper bounds; the last is +Inf).
    pub fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let counts = get(&self.buckets);
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(counts)
            .collect();
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        (sum, counts.iter().sum(), buckets)
    }
}

/// One route: requests by method class and status class, duration to the last byte, bytes.
#[derive(Debug, Default)]
pub struct RouteStats {
    requests: [[AtomicU64; 5]; 3],
    pub duration: Histogram,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl RouteStats {
    pub fn count(&self, method: usize, status: u16) {
        self.requests[method.min(2)][class(status)].fetch_add(1, Relaxed);
    }

    pub fn requests(&self) -> [[u64; 5]; 3] {
        [
            get(&self.requests[0]),
            get(&self.requests[1]),
            get(&self.requests[2]),
        ]
    }

    pub fn finished(&self, took: Duration, bytes_in: u64, bytes_out: u64) {
        self.duration.observe(took);
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
    }
}

/// Requests answered (by status class) and errors (by source) of a cluster or an endpoint.
#[derive(Debug, Default)]
pub struct Outcomes {
    requests: [AtomicU64; 5],
    errors: [AtomicU64; 3],
}

impl Outcomes {
    pub fn count(&self, status: u16) {
        self.requests[class(status)].fetch_add(1, Relaxed);
    }

    pub fn error(&self, side: crate::error::Side) {
        self.errors[source(side)].fetch_add(1, Relaxed);
    }

    pub fn requests(&self) -> [u64; 5] {
        get(&self.requests)
    }

    pub fn errors(&self) -> [u64; 3] {
        get(&self.errors)
    }
}

/// A cluster's counters beyond its outcomes: retries and time spent queued for an endpoint.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub outcomes: Outcomes,
    pub retries: AtomicU64,
    pub queue_waits: AtomicU64,
    pub queue_us: AtomicU64,
}

impl ClusterStats {
    pub fn queued(&self, waited: Duration) {
        self.queue_waits.fetch_add(1, Relaxed);
        self.queue_us.fetch_add(waited.as_micros() as u64, Relaxed);
    }
}

/// A listener: connections accepted and open, TLS handshakes done and failed by reason.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    pub handshakes: AtomicU64,
    handshake_failures: [AtomicU64; 5],
}

impl ListenerStats {
    pub fn handshake_failed(&self, reason: usize) {
        self.handshake_failures[reason.min(4)].fetch_add(1, Relaxed);
    }

    pub fn handshake_failures(&self) -> [u64; 5] {
        get(&self.handshake_failures)
    }

    /// Counts a connection as open until the guard drops.
    pub fn open(self: &std::sync::Arc<Self>) -> OpenConn {
        self.accepted.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        OpenConn(self.clone())
    }
}

pub struct OpenConn(std::sync::Arc<ListenerStats>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// Mirror results of one route (see [`MIRROR_RESULTS`]).
#[derive(Debug, Default)]
pub struct MirrorCounters([AtomicU64; 8]);

impl MirrorCounters {
    pub fn inc(&self, result: &str) {
        if let Some(i) = MIRROR_RESULTS.iter().position(|r| *r == result) {
            self.0[i].fetch_add(1, Relaxed);
        }
    }

    pub fn get(&self, result: &str) -> u64 {
        MIRROR_RESULTS
            .iter()
            .position(|r| *r == result)
            .map_or(0, |i| self.0[i].load(Relaxed))
    }
}

/// Top-level HTTP counters: every response by exact code, and requests no route matched.
#[derive(Debug)]
pub struct HttpStats {
    codes: [AtomicU64; 500],
    pub unrouted: AtomicU64,
}

impl Default for HttpStats {
    fn default() -> Self {
        HttpStats {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            unrouted: AtomicU64::new(0),
        }
    }
}

impl HttpStats {
    pub fn count(&self, status: u16) {
        if let Some(c) = self.codes.get(usize::from(status).wrapping_sub(100)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// (code, count) for every code answered at least once.
    pub fn codes(&self) -> Vec<(u16, u64)> {
        (100u16..600)
            .zip(&self.codes)
            .map(|(code, c)| (code, c.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_sum() {
        let h = Histogram::default();
        for ms in [1, 5, 6, 100, 3000] {
            h.observe(Duration::from_millis(ms));
        }
        let (sum, count, b) = h.read();
        assert_eq!(count, 5);
        assert!((sum - 3.112).abs() < 1e-9, "{sum}");
        let counts: Vec<u64> = b.iter().map(|x| x.1).collect();
        assert_eq!(counts, [2, 1, 1, 0, 0, 1]);
        assert_eq!(b[5].0, f64::MAX);
    }

    #[test]
    fn classes_and_codes() {
        assert_eq!(class(100), 0);
        assert_eq!(class(599), 4);
        assert_eq!(class(0), 0);
        assert_eq!(method_class(&Method::HEAD), 0);
        assert_eq!(method_class(&Method::DELETE), 1);
        assert_eq!(method_class(&Method::CONNECT), 2);
        let h = HttpStats::default();
        for s in [500, 503, 503, 99, 600, 200] {
            h.count(s);
        }
        assert_eq!(h.codes(), [(200, 1), (500, 1), (503, 2)]);
    }
}
