//! Access log: one line per request on stdout, JSON (default) or HAProxy-httplog-like text,
//! formatted and written by a dedicated thread fed through a bounded channel, off the request path.

use std::fmt::{self, Write as _};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
    Off,
}

/// One finished request. Timings are milliseconds, each as measured by the caller.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    /// Accept time, RFC 3339 UTC with milliseconds (see [`rfc3339_ms`]).
    pub time: String,
    pub client: SocketAddr,
    pub listener: String,
    pub tls: bool,
    /// "HTTP/1.1", "HTTP/2".
    pub protocol: String,
    pub method: String,
    pub host: String,
    /// Path and query.
    pub path: String,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub route: Option<String>,
    pub cluster: Option<String>,
    pub endpoint: Option<String>,
    pub retries: u32,
    pub request_id: Option<String>,
    /// W3C trace id (32 hex digits) of the request's span.
    pub trace_id: Option<String>,
    pub t_queue_ms: Option<f64>,
    pub t_connect_ms: Option<f64>,
    /// Until the first response header.
    pub t_response_ms: Option<f64>,
    pub t_total_ms: f64,
    /// Two chars like HAProxy: who ended it (C client, S server, P proxy/limit, R resource,
    /// I internal, '-' normal), then at which stage (R request, Q queue, C connect,
    /// H headers, D data, '-' normal).
    pub termination: String,
    pub error: Option<String>,
    /// "downstream" | "upstream" | "internal".
    pub error_source: Option<String>,
}

/// Formats `t` as RFC 3339 UTC with milliseconds, e.g. `2024-02-29T12:34:56.789Z`
/// (proleptic Gregorian calendar; times before 1970 work too; sub-ms digits are truncated).
pub fn rfc3339_ms(t: SystemTime) -> String {
    let ms: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
        Err(e) => {
            let d = e.duration();
            let partial = i128::from(d.subsec_nanos() % 1_000_000 != 0);
            -i128::try_from(d.as_millis()).unwrap_or(i128::MAX) - partial
        }
    };
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    (y, m, d)
}

/// One JSON object on one line (serde_json escapes every control character).
pub fn format_json(r: &Record) -> String {
    serde_json::to_string(r)
        .unwrap_or_else(|_| r#"{"error":"access log record serialization failed"}"#.to_string())
}

/// Displays a string with spaces, quotes, backslashes and control/line-separator
/// characters escaped (`\xHH`, `\u{HHHH}`) so a client-supplied value can't split or forge
/// fields or lines; `-` if empty.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for c in self.0.chars() {
            match c {
                ' ' | '"' | '\\' => write!(f, "\\x{:02x}", u32::from(c))?,
                c if c.is_control() => write!(f, "\\x{:02x}", u32::from(c))?,
                '\u{2028}' | '\u{2029}' => write!(f, "\\u{{{:04x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn esc_opt(s: &Option<String>) -> Esc<'_> {
    Esc(s.as_deref().unwrap_or(""))
}

/// Displays whole milliseconds (truncated), or -1 when unknown or not sane (HAProxy style).
struct Ms(Option<f64>);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) if v.is_finite() && v >= 0.0 => write!(f, "{}", v as u64),
            _ => f.write_str("-1"),
        }
    }
}

/// HAProxy-httplog-like line (fields separated by single spaces; empty/None values are `-`):
///
/// ```text
/// client:port [time] listener route/cluster/endpoint Tq/Tw/Tc/Tr/Ta status bytes - - TERM retries "METHOD path PROTO"
/// 192.0.2.10:51234 [2024-02-29T12:34:56.789Z] https api/web/10.0.0.5:8080 -1/0/1/12/15 200 1234 - - -- 0 "GET /x?y=1 HTTP/1.1"
/// ```
///
/// * `Tq` (time to receive the request) is not in [`Record`] and is always -1; `Tw` =
///   `t_queue_ms`, `Tc` = `t_connect_ms`, `Tr` = `t_response_ms`, `Ta` = `t_total_ms`;
///   whole ms, -1 when unknown (as HAProxy does for stages never reached).
/// * `bytes` = `bytes_out` (bytes sent to the client, like HAProxy's `bytes_read`).
/// * The two `-` stand where HAProxy logs captured request/response cookies.
/// * `time` is the record's RFC 3339 time rather than HAProxy's `dd/Mon/yyyy:hh:mm:ss.mmm`.
/// * Client IPv6 addresses print as `[addr]:port`. Values are escaped by `Esc`.
/// * As in HAProxy's httplog, the host is not in the request field (the JSON format has it).
pub fn format_text(r: &Record) -> String {
    let (c, t, l) = (r.client, Esc(&r.time), Esc(&r.listener));
    let (ro, cl, ep) = (esc_opt(&r.route), esc_opt(&r.cluster), esc_opt(&r.endpoint));
    let (tw, tc, tr) = (Ms(r.t_queue_ms), Ms(r.t_connect_ms), Ms(r.t_response_ms));
    let (ta, st, by) = (Ms(Some(r.t_total_ms)), r.status, r.bytes_out);
    let (te, re, me) = (Esc(&r.termination), r.retries, Esc(&r.method));
    let (pa, pr) = (Esc(&r.path), Esc(&r.protocol));
    format!(
        "{c} [{t}] {l} {ro}/{cl}/{ep} -1/{tw}/{tc}/{tr}/{ta} {st} {by} - - {te} {re} \
         \"{me} {pa} {pr}\""
    )
}

/// Access-log sink. [`log`](Self::log) never blocks: records go through a bounded channel to
/// a writer thread that formats them and writes one line each, flushing whenever the channel
/// is momentarily empty. A record is dropped (and [`dropped`](Self::dropped) rises) when the
/// channel is full, when the writer thread could not be started, or when writing it failed.
/// Dropping the `AccessLog` closes the channel and joins the thread, which writes what is
/// queued and flushes (so drop blocks as long as the writer does).
#[derive(Debug)]
pub struct AccessLog {
    format: LogFormat,
    tx: Option<SyncSender<Record>>,
    dropped: Arc<AtomicU64>,
    writer: Option<JoinHandle<()>>,
}

impl AccessLog {
    /// Logs to stdout through a `BufWriter`. `capacity` (min 1) is the number of records
    /// that may wait for the writer.
    pub fn stdout(format: LogFormat, capacity: usize) -> Self {
        let out = Box::new(BufWriter::new(std::io::stdout()));
        Self::to_writer(format, capacity, out)
    }

    /// Logs to `w` (written as given: wrap it in a `BufWriter` if it is unbuffered).
    pub fn to_writer(format: LogFormat, capacity: usize, w: Box<dyn Write + Send>) -> Self {
        let dropped = Arc::new(AtomicU64::new(0));
        let (mut tx, mut writer) = (None, None);
        if format != LogFormat::Off {
            let (sender, rx) = mpsc::sync_channel(capacity.max(1));
            let counter = Arc::clone(&dropped);
            let spawned = std::thread::Builder::new()
                .name("accesslog".into())
                .spawn(move || run_writer(rx, format, w, &counter));
            match spawned {
                Ok(handle) => (tx, writer) = (Some(sender), Some(handle)),
                Err(e) => tracing::error!(error = %e, "cannot start access log writer"),
            }
        }
        AccessLog {
            format,
            tx,
            dropped,
            writer,
        }
    }

    /// Queues `r` for writing without blocking; drops it if the queue is full.
    pub fn log(&self, r: Record) {
        if self.format == LogFormat::Off {
            return;
        }
        let queued = self.tx.as_ref().is_some_and(|tx| tx.try_send(r).is_ok());
        if !queued {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records not written: queue full, writer unavailable, or write error.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn format(&self) -> LogFormat {
        self.format
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("access log writer thread panicked");
            }
        }
    }
}

fn run_writer(
    rx: Receiver<Record>,
    format: LogFormat,
    mut w: Box<dyn Write + Send>,
    dropped: &AtomicU64,
) {
    let mut warned = false;
    let mut report = |e: std::io::Error, what: &str| {
        if !warned {
            warned = true;
            tracing::warn!(error = %e, "access log {what} failed (further errors not reported)");
        }
    };
    loop {
        let r = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => {
                if let Err(e) = w.flush() {
                    report(e, "flush");
                }
                match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let mut line = match format {
            LogFormat::Text => format_text(&r),
            _ => format_json(&r),
        };
        line.push('\n');
        if let Err(e) = w.write_all(line.as_bytes()) {
            dropped.fetch_add(1, Ordering::Relaxed);
            report(e, "write");
        }
    }
    if let Err(e) = w.flush() {
        report(e, "flush");
    }
}

#[cfg(test)]
mod tests;
