//! Traffic mirroring: an exact share of a route's requests is copied to a mirror cluster in a
//! task of its own, bounded in number and time; responses are read and discarded, results counted.

use super::body::UpBody;
use super::exchange::InFlight;
use super::table::Table;
use super::upstream::ConnFor;
use crate::config::Mirror;
use crate::metrics::MirrorCounters;
use bytes::Bytes;
use hyper::body::Body;
use hyper::{HeaderMap, Method, Request, Uri, Version};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct MirrorState {
    pub cluster: usize,
    pub cluster_name: Arc<str>,
    pub percent: f64,
    /// Requests out of a million that are copied.
    ppm: u64,
    pub body: bool,
    pub max_body: u64,
    seq: AtomicU64,
    max_in_flight: u32,
    in_flight: Arc<Semaphore>,
    /// Results, kept across reloads while the route mirrors to the same cluster.
    pub counters: Arc<MirrorCounters>,
}

/// What is copied of a request.
pub struct Copy {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

impl MirrorState {
    pub fn new(m: &Mirror, cluster: usize, counters: Arc<MirrorCounters>) -> Self {
        MirrorState {
            cluster,
            cluster_name: m.cluster.as_str().into(),
            percent: m.percent,
            ppm: (m.percent * 10_000.0).round() as u64,
            body: m.body,
            max_body: m.max_body_bytes,
            seq: AtomicU64::new(0),
            max_in_flight: m.max_in_flight,
            in_flight: Arc::new(Semaphore::new(m.max_in_flight as usize)),
            counters,
        }
    }

    /// Continues `old`'s selection sequence and in-flight slots when the share and the limit
    /// are unchanged, so frequent snapshots (health, runtime API) neither reset the spread (a
    /// 1% mirror would never fire if every rebuild restarted it) nor lift the limit.
    pub fn carry_from(&mut self, old: &MirrorState) {
        if old.ppm == self.ppm && old.max_in_flight == self.max_in_flight {
            self.seq
                .store(old.seq.load(Ordering::Relaxed), Ordering::Relaxed);
            self.in_flight = old.in_flight.clone();
        }
    }

    /// Whether this request is copied: exactly `percent` of requests, spread evenly.
    pub fn select(&self) -> bool {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        (n + 1) * self.ppm / 1_000_000 > n * self.ppm / 1_000_000
    }

    /// Sends the copy in the background; never waits and never fails the caller.
    pub fn send(&self, table: Arc<Table>, who: ConnFor, copy: Copy) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.counters.inc("dropped");
            return;
        };
        let counters = self.counters.clone();
        let idx = self.cluster;
        tokio::spawn(async move {
            let result = send(&table, idx, who, copy).await;
            counters.inc(result);
            drop(permit);
        });
    }
}

async fn send(table: &Table, idx: usize, who: ConnFor, copy: Copy) -> &'static str {
    let Some(cluster) = table.clusters.get(idx) else {
        return "failed";
    };
    let load = |i: usize| cluster.endpoints.get(i).map_or(0, |e| e.load());
    let Some(i) = cluster.picker.pick(&cluster.weights, &load, None, &[]) else {
        return "failed";
    };
    let ep = cluster.endpoints[i].clone();
    let _inflight = InFlight::new(ep.clone(), None);
    let cfg = &cluster.cfg;
    // Connect (bounded by the pool's connect timeout), response and body each bounded.
    let limit = cfg.connect_timeout.0 + cfg.response_timeout.0 * 2;
    let started = tokio::time::Instant::now();
    let work = async {
        let mut co = ep.pool.checkout(who).await.ok()?;
        let mut req = Request::new(UpBody::Full(copy.body));
        *req.method_mut() = copy.method;
        *req.uri_mut() = copy.uri;
        *req.headers_mut() = copy.headers;
        *req.version_mut() = Version::HTTP_11;
        if co.conn.is_http2() {
            super::forward::to_http2(&mut req, &ep, cfg.tls.is_some());
        }
        let resp = co.conn.send(req, cfg.response_timeout.0).await.ok()?;
        let status = resp.status().as_u16();
        let t = started.elapsed();
        let mut body = resp.into_body();
        let mut complete = body.is_end_stream();
        while !complete {
            match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(_)) => complete = body.is_end_stream(),
                Some(Err(_)) => return Some((status, t, false)),
                None => complete = true,
            }
        }
        if co.poolable {
            ep.pool.checkin(co.conn);
        }
        Some((status, t, true))
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Some((status, t, _))) => {
            ep.stats.count(status);
            cluster.runtime.stats.outcomes.count(status);
            ep.tally.record(Some(t));
            match status / 100 {
                1 => "1xx",
                2 => "2xx",
                3 => "3xx",
                4 => "4xx",
                _ => "5xx",
            }
        }
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_continues_across_rebuilds() {
        let m: Mirror = serde_yaml::from_str("{cluster: m, percent: 10}").unwrap();
        let mut picked = 0;
        let mut s = MirrorState::new(&m, 0, Default::default());
        // A rebuild every 5 requests: 100 requests still give exactly 10 copies.
        for _ in 0..20 {
            let mut next = MirrorState::new(&m, 0, Default::default());
            next.carry_from(&s);
            s = next;
            picked += (0..5).filter(|_| s.select()).count();
        }
        assert_eq!(picked, 10);
        // A changed share starts afresh.
        let m2: Mirror = serde_yaml::from_str("{cluster: m, percent: 20}").unwrap();
        let mut t = MirrorState::new(&m2, 0, Default::default());
        t.carry_from(&s);
        assert_eq!(t.seq.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn selection_is_exact_and_spread() {
        let m: Mirror = serde_yaml::from_str("{cluster: m, percent: 10}").unwrap();
        let s = MirrorState::new(&m, 0, Default::default());
        let picks: Vec<bool> = (0..1000).map(|_| s.select()).collect();
        assert_eq!(picks.iter().filter(|p| **p).count(), 100);
        assert!(
            picks[..20].iter().filter(|p| **p).count() == 2,
            "spread evenly"
        );
        let m: Mirror = serde_yaml::from_str("{cluster: m, percent: 0.5}").unwrap();
        let s = MirrorState::new(&m, 0, Default::default());
        assert_eq!((0..1000).filter(|_| s.select()).count(), 5);
        let m: Mirror = serde_yaml::from_str("{cluster: m, percent: 0}").unwrap();
        let s = MirrorState::new(&m, 0, Default::default());
        assert_eq!((0..1000).filter(|_| s.select()).count(), 0);
    }
}
