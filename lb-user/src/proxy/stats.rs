//! Response-time tallies for the stats page and status API: the mean time to response headers,
//! as relaxed atomics (routes and endpoints, kept across reloads). Counts by status class come
//! from the /metrics counters (crate::metrics::stats).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Tally {
    time_us: AtomicU64,
    timed: AtomicU64,
}

impl Tally {
    pub fn record(&self, response: Option<Duration>) {
        if let Some(t) = response {
            self.time_us
                .fetch_add(t.as_micros() as u64, Ordering::Relaxed);
            self.timed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (sum of response times in µs, number of timed responses).
    pub fn timing(&self) -> (u64, u64) {
        (
            self.time_us.load(Ordering::Relaxed),
            self.timed.load(Ordering::Relaxed),
        )
    }
}

/// `{"1xx": n, ...}` from class counts.
pub fn classes_json(c: [u64; 5]) -> serde_json::Value {
    serde_json::json!({"1xx": c[0], "2xx": c[1], "3xx": c[2], "4xx": c[3], "5xx": c[4]})
}

/// Mean milliseconds, or null without samples.
pub fn mean_ms((sum_us, n): (u64, u64)) -> serde_json::Value {
    if n == 0 {
        serde_json::Value::Null
    } else {
        serde_json::json!(((sum_us as f64 / n as f64) / 10.0).round() / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_means() {
        let t = Tally::default();
        t.record(Some(Duration::from_millis(2)));
        t.record(Some(Duration::from_millis(4)));
        t.record(None);
        assert_eq!(t.timing(), (6000, 2));
        assert_eq!(mean_ms(t.timing()), serde_json::json!(3.0));
        assert_eq!(mean_ms((0, 0)), serde_json::Value::Null);
    }
}
