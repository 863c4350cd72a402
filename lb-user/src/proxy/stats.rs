//! Request tallies for the stats page and status API: counts by status class and the mean
//! time to response headers, as relaxed atomics (routes and endpoints, kept across reloads).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Tally {
    classes: [AtomicU64; 5],
    time_us: AtomicU64,
    timed: AtomicU64,
}

impl Tally {
    pub fn record(&self, status: u16, response: Option<Duration>) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        if let Some(t) = response {
            self.time_us
                .fetch_add(t.as_micros() as u64, Ordering::Relaxed);
            self.timed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn classes(&self) -> [u64; 5] {
        [0, 1, 2, 3, 4].map(|i| self.classes[i].load(Ordering::Relaxed))
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
    fn tally_counts_and_means() {
        let t = Tally::default();
        t.record(200, Some(Duration::from_millis(2)));
        t.record(503, Some(Duration::from_millis(4)));
        t.record(404, None);
        assert_eq!(t.classes(), [0, 1, 0, 1, 1]);
        assert_eq!(mean_ms(t.timing()), serde_json::json!(3.0));
        assert_eq!(mean_ms((0, 0)), serde_json::Value::Null);
    }
}
