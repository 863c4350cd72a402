//! W3C trace context for proxied requests: continue a valid incoming `traceparent` (or start a
//! trace when it is absent or malformed) and hand finished, sampled spans to the OTLP exporter.

mod https;
mod otlp;
#[cfg(test)]
mod tests;

use crate::config;
use http::header::{HeaderMap, HeaderValue};
use std::sync::Arc;
use std::time::SystemTime;

/// Builds one [`SpanCtx`] per request and exports the sampled ones. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Tracer {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: config::Tracing,
    otlp: Option<otlp::Exporter>,
}

/// The trace context of one request: the ids we send upstream and report in the span.
#[derive(Debug, Clone)]
pub struct SpanCtx {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    sampled: bool,
    tracestate: Option<HeaderValue>,
    start: SystemTime,
}

/// What the proxy knows about a request once it is done.
#[derive(Debug, Clone)]
pub struct SpanEnd {
    pub route: Option<String>,
    pub cluster: Option<String>,
    pub endpoint: Option<String>,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub error: Option<String>,
    pub end: SystemTime,
}

impl Tracer {
    /// Starts the OTLP exporter (a background task on the current tokio runtime) when
    /// `cfg.otlp` is set; fails only if that exporter cannot be built.
    pub fn new(cfg: &config::Tracing) -> anyhow::Result<Tracer> {
        Tracer::with_limits(cfg, otlp::Limits::DEFAULT)
    }

    fn with_limits(cfg: &config::Tracing, limits: otlp::Limits) -> anyhow::Result<Tracer> {
        let otlp = match &cfg.otlp {
            Some(o) => Some(otlp::Exporter::start(o, limits)?),
            None => None,
        };
        Ok(Tracer {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                otlp,
            }),
        })
    }

    /// False when `tracing.propagate` is off: requests get no span and keep their headers.
    pub fn propagates(&self) -> bool {
        self.inner.cfg.propagate
    }

    /// True when `cfg` would build the same tracer, so a reload can keep this one (and its
    /// exporter queue and counters).
    pub fn same_config(&self, cfg: &config::Tracing) -> bool {
        self.inner.cfg == *cfg
    }

    /// The context for a new request: continues the incoming trace when `traceparent` is valid,
    /// otherwise starts one (sampled with probability `sample_percent`).
    pub fn start(&self, headers: &HeaderMap) -> SpanCtx {
        self.start_at(headers, SystemTime::now())
    }

    /// [`Tracer::start`] for a request that began at `start` (the proxy has read the clock).
    pub fn start_at(&self, headers: &HeaderMap, start: SystemTime) -> SpanCtx {
        let span_id = new_span_id();
        if let Some(p) = incoming(headers) {
            return SpanCtx {
                trace_id: p.trace_id,
                span_id,
                parent: Some(p.parent_id),
                sampled: p.flags & SAMPLED != 0,
                tracestate: tracestate(headers),
                start,
            };
        }
        SpanCtx {
            trace_id: fastrand::u128(1..).to_be_bytes(),
            span_id,
            parent: None,
            sampled: fastrand::f64() * 100.0 < self.inner.cfg.sample_percent,
            tracestate: None,
            start,
        }
    }

    /// Whether [`Tracer::finish`] would export `span` (so callers build [`SpanEnd`] only then).
    pub fn wants(&self, span: &SpanCtx) -> bool {
        self.inner.otlp.is_some() && span.sampled
    }

    /// Whether spans are exported at all (OTLP configured).
    pub fn exporting(&self) -> bool {
        self.inner.otlp.is_some()
    }

    /// Hands the span to the exporter when it is sampled and OTLP is on. Never blocks and never
    /// fails: a full queue drops the span and counts it in [`Tracer::dropped`].
    pub fn finish(&self, span: SpanCtx, end: SpanEnd) {
        if let Some(o) = &self.inner.otlp {
            if span.sampled {
                o.push(&span, end);
            }
        }
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.inner.otlp.as_ref().map_or(0, |o| o.counts().exported)
    }

    /// Spans dropped without an export attempt: the queue was full, or the exporter had stopped
    /// (left over at the shutdown bound, or finished after it).
    pub fn dropped(&self) -> u64 {
        self.inner.otlp.as_ref().map_or(0, |o| o.counts().dropped)
    }

    /// Spans in export requests that failed (collector down, slow, or answering an error).
    pub fn failed(&self) -> u64 {
        self.inner.otlp.as_ref().map_or(0, |o| o.counts().failed)
    }

    /// Exports what is queued and stops the exporter, waiting at most `otlp.timeout` (plus
    /// one batch delay). Spans finished afterwards are dropped. Dropping the last `Tracer`
    /// does the same without waiting.
    pub async fn shutdown(&self) {
        if let Some(o) = &self.inner.otlp {
            o.shutdown().await;
        }
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("cfg", &self.inner.cfg)
            .field("exported", &self.exported())
            .field("dropped", &self.dropped())
            .field("failed", &self.failed())
            .finish()
    }
}

impl SpanCtx {
    /// `traceparent` to send upstream: the trace id, our span id, the sampled flag.
    pub fn traceparent(&self) -> HeaderValue {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        HeaderValue::try_from(s).expect("hex digits and dashes are a valid header value")
    }

    /// The incoming `tracestate`, unchanged; `None` when the trace was started here.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// The trace id as 32 lowercase hex digits (for the access log).
    pub fn trace_id_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        push_hex(&mut s, &self.trace_id);
        s
    }

    /// Whether this request's span is recorded (the `sampled` flag we propagate).
    pub fn sampled(&self) -> bool {
        self.sampled
    }
}

const SAMPLED: u8 = 0x01;

struct Parent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

/// The single valid `traceparent`, if any; two or more headers are invalid.
fn incoming(headers: &HeaderMap) -> Option<Parent> {
    let mut all = headers.get_all("traceparent").iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    parse_traceparent(first.as_bytes())
}

/// `version-traceid-parentid-flags` per W3C Trace Context level 1: lowercase hex, version
/// `ff` invalid, ids not all zeros. Version 00 is exactly 55 bytes; a higher version is
/// parsed as 00 when what follows the flags is nothing or a `-` (forward compatibility).
fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_byte(&v[0..2])?;
    match version {
        0xff => return None,
        0x00 if v.len() != 55 => return None,
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    let mut trace_id = [0u8; 16];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
    }
    let mut parent_id = [0u8; 8];
    for (i, b) in parent_id.iter_mut().enumerate() {
        *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&v[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        parent_id,
        flags,
    })
}

/// Every `tracestate` header joined with `,` (the spec allows splitting it over headers).
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut all = headers.get_all("tracestate").iter();
    let first = all.next()?;
    let Some(second) = all.next() else {
        return Some(first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for v in std::iter::once(second).chain(all) {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some((hex_digit(two[0])? << 4) | hex_digit(two[1])?)
}

/// Lowercase only: W3C says uppercase hex makes the header invalid.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
}
