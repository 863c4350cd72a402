//! One request's bookkeeping from accept to last byte: resources it holds (endpoint slot,
//! in-flight counts) are released, and its access-log line written, when it is dropped.

use super::conn::ConnInfo;
use super::table::{ClusterRuntime, Endpoint, Table};
use crate::accesslog::{LogFormat, Record};
use crate::error::Side;
use crate::metrics::stats::method_class;
use crate::trace::{SpanCtx, SpanEnd};
use http::{HeaderValue, Method, Uri, Version};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::OwnedSemaphorePermit;

/// An endpoint chosen for an attempt: counted in flight (and holding its slot) until dropped.
pub struct InFlight {
    pub endpoint: Arc<Endpoint>,
    pub _permit: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    pub fn new(endpoint: Arc<Endpoint>, permit: Option<OwnedSemaphorePermit>) -> Self {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint,
            _permit: permit,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a request in its cluster's in-flight total (the retry budget's base).
pub struct ClusterActive(pub Arc<ClusterRuntime>);

impl ClusterActive {
    pub fn new(rt: Arc<ClusterRuntime>) -> Self {
        rt.active.fetch_add(1, Ordering::Relaxed);
        ClusterActive(rt)
    }
}

impl Drop for ClusterActive {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Exchange {
    pub table: Arc<Table>,
    pub conn: Arc<ConnInfo>,
    /// When the request began (one clock read; the wall-clock time is derived from it when a
    /// log line or span needs it, see [`Exchange::accepted`]).
    pub start: Instant,
    pub method: Method,
    pub uri: Uri,
    pub host: String,
    pub version: Version,
    pub request_id: Option<HeaderValue>,
    /// The request's span (trace context sent upstream; exported when it ends, if sampled).
    pub span: Option<SpanCtx>,
    pub route: Option<usize>,
    pub cluster: Option<usize>,
    pub inflight: Option<InFlight>,
    pub cluster_active: Option<ClusterActive>,
    pub retries: u32,
    pub status: u16,
    pub bytes_in: u64,
    pub t_queue: Option<Duration>,
    pub t_connect: Option<Duration>,
    pub t_response: Option<Duration>,
    pub error: Option<(Side, String)>,
    pub termination: [u8; 2],
    pub bytes_out: u64,
}

impl Exchange {
    pub fn new(
        table: Arc<Table>,
        conn: Arc<ConnInfo>,
        method: Method,
        uri: Uri,
        version: Version,
    ) -> Self {
        Exchange {
            table,
            conn,
            start: Instant::now(),
            method,
            uri,
            host: String::new(),
            version,
            request_id: None,
            span: None,
            route: None,
            cluster: None,
            inflight: None,
            cluster_active: None,
            retries: 0,
            status: 0,
            bytes_in: 0,
            t_queue: None,
            t_connect: None,
            t_response: None,
            error: None,
            termination: *b"--",
            bytes_out: 0,
        }
    }

    /// The wall-clock time the request began.
    pub fn accepted(&self) -> SystemTime {
        SystemTime::now()
            .checked_sub(self.start.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    pub fn set_error(&mut self, side: Side, message: String) {
        self.error = Some((side, message));
    }

    /// Ends the exchange: releases everything and logs (see Drop).
    pub fn finish(mut self, bytes_out: u64, termination: [u8; 2]) {
        self.bytes_out = bytes_out;
        if termination != *b"--" || self.termination == *b"--" {
            self.termination = termination;
        }
    }

    /// Counts the response in /metrics when its headers go out: by exact code, on the route
    /// (or as unrouted), its cluster and its endpoint. Duration, bytes and errors are counted
    /// when the exchange ends (Drop).
    pub fn count_response(&self) {
        let (t, status) = (&self.table, self.status);
        t.metrics.http.count(status);
        match self.route.and_then(|r| t.routes.get(r)) {
            Some(r) => r.stats.count(method_class(&self.method), status),
            None => {
                t.metrics.http.unrouted.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(c) = self.cluster.and_then(|c| t.clusters.get(c)) {
            c.runtime.stats.outcomes.count(status);
        }
        if let Some(f) = &self.inflight {
            f.endpoint.stats.count(status);
        }
    }

    fn span_end(&self) -> SpanEnd {
        SpanEnd {
            route: self
                .route
                .and_then(|r| self.table.routes.get(r))
                .map(|r| r.name.to_string()),
            cluster: self
                .cluster
                .and_then(|c| self.table.clusters.get(c))
                .map(|c| c.name.to_string()),
            endpoint: self.inflight.as_ref().map(|f| f.endpoint.name.to_string()),
            method: self.method.to_string(),
            host: self.host.clone(),
            path: self.uri.path().to_string(),
            status: self.status,
            error: self.error.as_ref().map(|(_, m)| m.clone()),
            end: SystemTime::now(),
        }
    }

    fn record(&self) -> Record {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let route = self.route.and_then(|r| self.table.routes.get(r));
        let cluster = self.cluster.and_then(|c| self.table.clusters.get(c));
        Record {
            time: crate::accesslog::rfc3339_ms(self.accepted()),
            client: self.conn.client,
            listener: self.conn.listener.to_string(),
            tls: self.conn.tls,
            protocol: format!("{:?}", self.version),
            method: self.method.to_string(),
            host: self.host.clone(),
            path: self
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.to_string()),
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            route: route.map(|r| r.name.to_string()),
            cluster: cluster.map(|c| c.name.to_string()),
            endpoint: self
                .inflight
                .as_ref()
                .map(|f| f.endpoint.address.to_string()),
            retries: self.retries,
            request_id: self
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            trace_id: self.span.as_ref().map(SpanCtx::trace_id_hex),
            t_queue_ms: self.t_queue.map(ms),
            t_connect_ms: self.t_connect.map(ms),
            t_response_ms: self.t_response.map(ms),
            t_total_ms: ms(self.start.elapsed()),
            termination: String::from_utf8_lossy(&self.termination).into_owned(),
            error: self.error.as_ref().map(|(_, m)| m.clone()),
            error_source: self.error.as_ref().map(|(s, _)| s.as_str().to_string()),
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(r) = self.route.and_then(|r| self.table.routes.get(r)) {
            r.tally.record(self.t_response);
            r.stats
                .finished(self.start.elapsed(), self.bytes_in, self.bytes_out);
        }
        let cluster = self.cluster.and_then(|c| self.table.clusters.get(c));
        if let Some(c) = cluster {
            if let Some(q) = self.t_queue {
                c.runtime.stats.queued(q);
            }
        }
        if let Some(f) = &self.inflight {
            f.endpoint.tally.record(self.t_response);
        }
        if let Some((side, _)) = &self.error {
            if let Some(c) = cluster {
                c.runtime.stats.outcomes.error(*side);
            }
            if let Some(f) = &self.inflight {
                f.endpoint.stats.error(*side);
            }
        }
        if let Some((side, msg)) = &self.error {
            tracing::debug!(client = %self.conn.client, side = side.as_str(), status = self.status, "{msg}");
        }
        if self.table.log.format() != LogFormat::Off {
            self.table.log.log(self.record());
        }
        if let Some(span) = self.span.take() {
            if self.table.tracer.wants(&span) {
                let end = self.span_end();
                self.table.tracer.finish(span, end);
            }
        }
    }
}
