//! OTLP/HTTP (protobuf) export of finished spans: a bounded queue filled without blocking, and
//! one background task that batches it into the opentelemetry-otlp exporter.

use super::{SpanCtx, SpanEnd};
use crate::config;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Queue and batch sizes (the SDK's batch processor defaults, with a shorter delay).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Spans waiting for export; beyond this `finish` drops.
    pub queue: usize,
    /// Spans per export request.
    pub batch: usize,
    /// How long a partial batch waits for more spans.
    pub delay: Duration,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        queue: 2048,
        batch: 512,
        delay: Duration::from_secs(1),
    };
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub exported: u64,
    pub dropped: u64,
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

pub(super) struct Exporter {
    tx: mpsc::Sender<SpanData>,
    scope: InstrumentationScope,
    counters: Arc<Counters>,
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Bound on `shutdown`'s wait.
    wait: Duration,
}

impl Exporter {
    /// Builds the OTLP exporter and spawns its batching task on the current runtime.
    pub fn start(cfg: &config::Otlp, limits: Limits) -> anyhow::Result<Exporter> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| anyhow::anyhow!("OTLP export needs a tokio runtime: {e}"))?;
        let timeout = cfg.timeout.0;
        let builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.endpoint.clone())
            .with_timeout(timeout);
        let https = cfg
            .endpoint
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.scheme_str().map(|s| s.eq_ignore_ascii_case("https")))
            == Some(true);
        let builder = if https {
            builder.with_http_client(super::https::HttpsClient::new(timeout)?)
        } else {
            builder.with_http_client(
                opentelemetry_http::hyper::HyperClient::with_default_connector(timeout, None),
            )
        };
        let mut exporter = builder
            // One attempt per batch: a retry would only hold back newer spans.
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()
            .map_err(|e| anyhow::anyhow!("tracing.otlp: {e}"))?;
        exporter.set_resource(
            &opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        );
        let (tx, rx) = mpsc::channel(limits.queue.max(1));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(Notify::new());
        let task = rt.spawn(run(
            exporter,
            rx,
            limits,
            timeout,
            counters.clone(),
            stop.clone(),
        ));
        Ok(Exporter {
            tx,
            scope: InstrumentationScope::builder("lb")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            counters,
            stop,
            task: Mutex::new(Some(task)),
            // The task bounds its flush by timeout + delay after the stop; this adds slack.
            wait: timeout + limits.delay + Duration::from_millis(500),
        })
    }

    /// Queues one span; never waits. A full (or stopped) queue costs no span building.
    pub fn push(&self, span: &SpanCtx, end: SpanEnd) {
        if self.tx.capacity() == 0 || self.tx.try_send(span_data(span, end, &self.scope)).is_err() {
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            exported: self.counters.exported.load(Relaxed),
            dropped: self.counters.dropped.load(Relaxed),
            failed: self.counters.failed.load(Relaxed),
        }
    }

    /// Flushes the queue and stops the task, waiting at most `timeout + delay`.
    pub async fn shutdown(&self) {
        self.stop.notify_one();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(mut task) = task {
            if tokio::time::timeout(self.wait, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(
                    "OTLP export: shutdown gave up flushing after {:?}",
                    self.wait
                );
            }
        }
    }
}

/// The exporter's task: wait for a span, gather up to a batch for at most `delay`, export,
/// repeat. A stop (or the last sender gone) ends it: what is queued is exported within
/// `timeout + delay` of the stop, counting the in-flight export; the rest counts as dropped.
async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    limits: Limits,
    timeout: Duration,
    counters: Arc<Counters>,
    stop: Arc<Notify>,
) {
    let batch_size = limits.batch.max(1);
    let mut batch = Vec::with_capacity(batch_size);
    let mut failing = false;
    let mut deadline = None;
    'run: loop {
        // `biased`: a stop wins over a queue that is never empty under load.
        let mut closing = tokio::select! {
            biased;
            _ = stop.notified() => true,
            n = rx.recv_many(&mut batch, batch_size) => n == 0,
        };
        let gather_until = Instant::now() + limits.delay;
        while !closing && batch.len() < batch_size {
            let room = batch_size - batch.len();
            tokio::select! {
                biased;
                _ = stop.notified() => closing = true,
                n = rx.recv_many(&mut batch, room) => closing = n == 0,
                _ = tokio::time::sleep_until(gather_until) => break,
            }
        }
        if closing {
            break;
        }
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
        let sending = export(&exporter, spans, timeout, &counters, &mut failing);
        tokio::pin!(sending);
        tokio::select! {
            biased;
            _ = &mut sending => {}
            _ = stop.notified() => {
                let until = Instant::now() + timeout + limits.delay;
                deadline = Some(until);
                let _ = tokio::time::timeout_at(until, &mut sending).await;
                break 'run;
            }
        }
    }
    rx.close();
    let until = deadline.unwrap_or_else(|| Instant::now() + timeout + limits.delay);
    let flush = async {
        loop {
            let spans = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            export(&exporter, spans, timeout, &counters, &mut failing).await;
            if rx.recv_many(&mut batch, batch_size).await == 0 {
                break;
            }
        }
    };
    if tokio::time::timeout_at(until, flush).await.is_err() {
        let mut left = batch.len() as u64;
        while rx.try_recv().is_ok() {
            left += 1;
        }
        counters.dropped.fetch_add(left, Relaxed);
    }
    let _ = exporter.shutdown();
}

async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    spans: Vec<SpanData>,
    timeout: Duration,
    counters: &Counters,
    failing: &mut bool,
) {
    let n = spans.len() as u64;
    if n == 0 {
        return;
    }
    // A batch whose export is cancelled (the shutdown bound) counts as failed too.
    let mut pending = Pending(n, counters);
    // The HTTP client has its own timeout; this one also bounds encoding and a stuck connect.
    let result = tokio::time::timeout(timeout + Duration::from_secs(1), exporter.export(spans))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    pending.0 = 0;
    match result {
        Ok(()) => {
            counters.exported.fetch_add(n, Relaxed);
            if std::mem::take(failing) {
                tracing::info!("OTLP export: the collector accepts spans again");
            }
        }
        Err(e) => {
            counters.failed.fetch_add(n, Relaxed);
            if !std::mem::replace(failing, true) {
                tracing::warn!(error = %e, "OTLP export failed; spans are dropped until it recovers");
            }
        }
    }
}

struct Pending<'a>(u64, &'a Counters);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.1.failed.fetch_add(self.0, Relaxed);
    }
}

/// One SERVER span carrying our ids, so the collector's trace matches the `traceparent` we
/// sent upstream.
fn span_data(span: &SpanCtx, end: SpanEnd, scope: &InstrumentationScope) -> SpanData {
    let state = span
        .tracestate
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let mut attributes = Vec::with_capacity(7);
    attributes.push(KeyValue::new("http.request.method", end.method.clone()));
    attributes.push(KeyValue::new("url.path", end.path));
    attributes.push(KeyValue::new("server.address", end.host));
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(end.status),
    ));
    let name = format!(
        "{} {}",
        end.method,
        end.route.as_deref().unwrap_or("unrouted")
    );
    for (key, value) in [
        ("lb.route", end.route),
        ("lb.cluster", end.cluster),
        ("lb.endpoint", end.endpoint),
    ] {
        if let Some(v) = value {
            attributes.push(KeyValue::new(key, v));
        }
    }
    let status = match end.error {
        Some(e) => Status::error(e),
        None if end.status >= 500 => Status::error(format!("HTTP {}", end.status)),
        None => Status::Unset,
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(span.trace_id),
            SpanId::from_bytes(span.span_id),
            TraceFlags::SAMPLED,
            false,
            state,
        ),
        parent_span_id: span.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: span.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(name),
        start_time: span.start,
        end_time: end.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}
