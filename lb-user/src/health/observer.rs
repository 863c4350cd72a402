//! Passive observation on the request path: per-endpoint atomic counters of outcomes, and a
//! signal to the health monitor when an endpoint reaches its consecutive-error limit.

use super::EpKey;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::sync::mpsc;

/// What one attempt at an endpoint came to, for passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A 5xx response (except 501 and 505, which say nothing about the server's health).
    Status(u16),
    ConnectFailure,
    Timeout,
    Reset,
}

impl Outcome {
    pub fn from_status(status: u16) -> Outcome {
        if status >= 500 && status != 501 && status != 505 {
            Outcome::Status(status)
        } else {
            Outcome::Ok
        }
    }

    fn code(self) -> u32 {
        match self {
            Outcome::Ok => 0,
            Outcome::Status(s) => u32::from(s),
            Outcome::ConnectFailure => 1,
            Outcome::Timeout => 2,
            Outcome::Reset => 3,
        }
    }

    pub fn describe(code: u32) -> String {
        match code {
            1 => "connect failure".into(),
            2 => "timeout".into(),
            3 => "connection reset".into(),
            s => format!("status {s}"),
        }
    }
}

/// A request-path report: this endpoint just reached `count` errors in a row.
#[derive(Debug)]
pub struct Streak {
    pub key: EpKey,
    pub count: u32,
    pub last: u32,
}

/// Per endpoint, shared by every table that has it (kept across reloads by the monitor).
#[derive(Debug)]
pub struct Observer {
    pub key: EpKey,
    /// Errors in a row; reset by a success or by the monitor when it ejects.
    pub consecutive: AtomicU32,
    /// Limit from the cluster config (0: consecutive errors are not judged).
    pub limit: AtomicU32,
    pub total: AtomicU64,
    pub errors: AtomicU64,
    pub last_error: AtomicU32,
    /// Health events the monitor counts for /metrics.
    pub events: HealthEvents,
    tx: mpsc::Sender<Streak>,
}

/// Ejections, state changes and active check results of one endpoint (monotonic counters).
#[derive(Debug, Default)]
pub struct HealthEvents {
    pub ejections: AtomicU64,
    pub went_up: AtomicU64,
    pub went_down: AtomicU64,
    pub checks_ok: AtomicU64,
    pub checks_failed: AtomicU64,
}

impl Observer {
    pub fn new(key: EpKey, tx: mpsc::Sender<Streak>) -> Self {
        Observer {
            key,
            consecutive: AtomicU32::new(0),
            limit: AtomicU32::new(0),
            total: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: AtomicU32::new(0),
            events: HealthEvents::default(),
            tx,
        }
    }

    /// Records an outcome: a few relaxed atomics; a channel send only when a streak hits the
    /// limit (then again every `limit` errors while the monitor cannot eject).
    pub fn record(&self, o: Outcome) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if o == Outcome::Ok {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.last_error.store(o.code(), Ordering::Relaxed);
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.limit.load(Ordering::Relaxed);
        if limit > 0 && n.is_multiple_of(limit) {
            // Full channel: the monitor is behind and will see the next streak.
            let _ = self.tx.try_send(Streak {
                key: self.key.clone(),
                count: n,
                last: o.code(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streak_reported_at_the_limit_and_reset_by_success() {
        let (tx, mut rx) = mpsc::channel(8);
        let o = Observer::new(("c".into(), "127.0.0.1:1".parse().unwrap()), tx);
        o.limit.store(3, Ordering::Relaxed);
        o.record(Outcome::Status(503));
        o.record(Outcome::Status(503));
        o.record(Outcome::Ok);
        o.record(Outcome::from_status(501));
        assert!(
            rx.try_recv().is_err(),
            "501 is not an error, success resets"
        );
        o.record(Outcome::Status(500));
        o.record(Outcome::Timeout);
        o.record(Outcome::ConnectFailure);
        let s = rx.try_recv().unwrap();
        assert_eq!(
            (s.count, Outcome::describe(s.last).as_str()),
            (3, "connect failure")
        );
        assert_eq!(o.total.load(Ordering::Relaxed), 7);
        assert_eq!(o.errors.load(Ordering::Relaxed), 5);
    }
}
