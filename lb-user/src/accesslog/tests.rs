//! Tests for accesslog.rs.
use super::*;
use std::sync::Mutex;
use std::time::Duration;

fn record(id: u32) -> Record {
    Record {
        time: "2024-02-29T12:34:56.789Z".into(),
        client: "192.0.2.10:51234".parse().unwrap(),
        listener: "https".into(),
        tls: true,
        protocol: "HTTP/1.1".into(),
        method: "GET".into(),
        host: "example.com".into(),
        path: "/v1/items?id=7".into(),
        status: 200,
        bytes_in: 321,
        bytes_out: 1234,
        route: Some("api".into()),
        cluster: Some("web".into()),
        endpoint: Some("10.0.0.5:8080".into()),
        retries: 1,
        request_id: Some(format!("req-{id}")),
        trace_id: Some(format!("{id:032x}")),
        t_queue_ms: Some(0.4),
        t_connect_ms: Some(1.6),
        t_response_ms: Some(12.9),
        t_total_ms: 15.2,
        termination: "--".into(),
        error: Some("none".into()),
        error_source: Some("upstream".into()),
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Shared {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn json_round_trips_every_field() {
    let line = format_json(&record(1));
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let obj = v.as_object().unwrap();
    let fields = "time client listener tls protocol method host path status bytes_in \
        bytes_out route cluster endpoint retries request_id trace_id t_queue_ms t_connect_ms \
        t_response_ms t_total_ms termination error error_source";
    let fields: Vec<&str> = fields.split_whitespace().collect();
    assert_eq!(obj.len(), fields.len());
    for f in fields {
        assert!(obj.contains_key(f), "missing {f}");
    }
    assert_eq!(v["client"], "192.0.2.10:51234");
    assert_eq!(v["status"], 200);
    assert_eq!(v["t_total_ms"], 15.2);
    assert_eq!(v["request_id"], "req-1");
    let mut r = record(2);
    r.route = None;
    r.t_queue_ms = None;
    let v: serde_json::Value = serde_json::from_str(&format_json(&r)).unwrap();
    assert!(v["route"].is_null() && v["t_queue_ms"].is_null());
}

#[test]
fn text_line_exact() {
    assert_eq!(
        format_text(&record(1)),
        "192.0.2.10:51234 [2024-02-29T12:34:56.789Z] https api/web/10.0.0.5:8080 \
         -1/0/1/12/15 200 1234 - - -- 1 \"GET /v1/items?id=7 HTTP/1.1\""
    );
    let mut r = record(1);
    r.client = "[2001:db8::1]:443".parse().unwrap();
    (r.route, r.cluster, r.endpoint) = (None, None, None);
    (r.t_queue_ms, r.t_connect_ms, r.t_response_ms) = (None, Some(f64::NAN), Some(-3.0));
    (r.status, r.bytes_out, r.retries, r.t_total_ms) = (502, 0, 0, 3.99);
    r.termination = "SC".into();
    r.protocol = "HTTP/2".into();
    r.host = String::new();
    r.path = "/a b\"c\\\n\u{2028}".into();
    assert_eq!(
        format_text(&r),
        "[2001:db8::1]:443 [2024-02-29T12:34:56.789Z] https -/-/- -1/-1/-1/-1/3 502 0 - - \
         SC 0 \"GET /a\\x20b\\x22c\\x5c\\x0a\\u{2028} HTTP/2\""
    );
}

#[test]
fn rfc3339_known_times() {
    for (ms, want) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_709_210_096_789, "2024-02-29T12:34:56.789Z"),
        (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
        (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_234_567_890_123, "2009-02-13T23:31:30.123Z"),
    ] {
        assert_eq!(rfc3339_ms(UNIX_EPOCH + Duration::from_millis(ms)), want);
    }
    let before = UNIX_EPOCH - Duration::from_micros(500);
    assert_eq!(rfc3339_ms(before), "1969-12-31T23:59:59.999Z");
    let before = UNIX_EPOCH - Duration::from_millis(86_400_000 + 1);
    assert_eq!(rfc3339_ms(before), "1969-12-30T23:59:59.999Z");
}

#[test]
fn writer_gets_one_line_per_record_after_drop() {
    for format in [LogFormat::Json, LogFormat::Text] {
        let out = Shared::default();
        let log = AccessLog::to_writer(format, 1024, Box::new(out.clone()));
        assert_eq!(log.format(), format);
        for i in 0..100 {
            log.log(record(i));
        }
        drop(log);
        let lines = out.lines();
        assert_eq!(lines.len(), 100);
        let want = |i| match format {
            LogFormat::Json => format_json(&record(i)),
            _ => format_text(&record(i)),
        };
        assert!((0..100).all(|i| lines[i as usize] == want(i)));
    }
}

#[test]
fn off_writes_nothing() {
    let out = Shared::default();
    let log = AccessLog::to_writer(LogFormat::Off, 8, Box::new(out.clone()));
    log.log(record(1));
    drop(log);
    assert!(out.lines().is_empty());
    fn send_sync<T: Send + Sync>() {}
    send_sync::<AccessLog>();
}

/// Signals, then blocks inside its first write until released.
struct Gate(Shared, Option<(mpsc::Sender<()>, Receiver<()>)>);
impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some((entered, release)) = self.1.take() {
            let _ = entered.send(());
            let _ = release.recv();
        }
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn full_channel_drops_without_blocking() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let out = Shared::default();
    let gate = Gate(out.clone(), Some((entered_tx, release_rx)));
    let log = AccessLog::to_writer(LogFormat::Json, 1, Box::new(gate));
    log.log(record(0));
    entered_rx.recv_timeout(Duration::from_secs(10)).unwrap(); // writer now stuck on #0
    std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel();
        let log = &log;
        s.spawn(move || {
            log.log(record(1)); // fills the 1-slot queue
            log.log(record(2));
            log.log(record(3));
            let _ = done_tx.send(());
        });
        let finished = done_rx.recv_timeout(Duration::from_secs(5));
        release_tx.send(()).unwrap(); // also unblocks a (buggy) blocking log()
        assert!(finished.is_ok(), "log() blocked on a full channel");
    });
    assert_eq!(log.dropped(), 2);
    drop(log);
    let lines = out.lines();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("req-0") && lines[1].contains("req-1"));
}
