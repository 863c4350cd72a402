//! W3C parsing table, sampling and propagation; OTLP export against fake collectors is in
//! tests/export.rs.

mod export;

use super::*;
use crate::config::{Interval, Otlp, Tracing};
use http::header::HeaderName;
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn tracer(sample_percent: f64) -> Tracer {
    Tracer::new(&Tracing {
        propagate: true,
        sample_percent,
        otlp: None,
    })
    .expect("tracer without export")
}

/// W3C Trace Context level 1, section 3.2 and its test suite's cases.
const VALID: &[&str] = &[
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    // Unknown flag bits are allowed (and not propagated).
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
    // A future version is parsed as 00 when the flags end the value or a '-' follows.
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz",
];

const INVALID: &[&str] = &[
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01xyz",
    // Version ff is forbidden; versions and ids are lowercase hex.
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
    "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    // Short fields, a version-00 value with a tail.
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
    // Bad flags.
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
    // All-zero ids.
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    // Wrong separators or field boundaries.
    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
    "00-4bf92f3577b34da6a3ce929d0e0e47-3600f067aa0ba902b7-01",
    " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "",
    "00",
];

#[test]
fn traceparent_table() {
    for tp in VALID {
        let p = parse_traceparent(tp.as_bytes()).unwrap_or_else(|| panic!("{tp:?} is valid"));
        assert_eq!(
            (hex(&p.trace_id), hex(&p.parent_id)),
            (TRACE.into(), PARENT.into())
        );
    }
    for tp in INVALID {
        assert!(
            parse_traceparent(tp.as_bytes()).is_none(),
            "{tp:?} is invalid"
        );
    }
}

#[test]
fn child_keeps_trace_and_flags_and_gets_its_own_span_id() {
    let t = tracer(0.0);
    for flags in ["01", "00"] {
        let tp = format!("00-{TRACE}-{PARENT}-{flags}");
        let span = t.start(&headers(&[
            ("traceparent", &tp),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ]));
        assert_eq!(span.trace_id_hex(), TRACE);
        assert_eq!(
            span.sampled(),
            flags == "01",
            "the incoming flag wins over 0%"
        );
        let out = span.traceparent();
        let out = out.to_str().expect("ascii");
        assert_eq!(out.len(), 55);
        assert!(out.starts_with(&format!("00-{TRACE}-")), "{out}");
        assert!(out.ends_with(&format!("-{flags}")), "{out}");
        assert_ne!(&out[36..52], PARENT, "our span id, not the parent's");
        assert_eq!(span.parent.map(|p| hex(&p)), Some(PARENT.to_string()));
        assert_eq!(
            span.tracestate().map(|v| v.as_bytes()),
            Some(&b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"[..])
        );
        // What we send is itself a valid traceparent with our span id as the parent.
        let next = parse_traceparent(out.as_bytes()).expect("valid");
        assert_eq!(next.parent_id, span.span_id);
    }
    // Unknown flag bits are not passed on.
    let span = t.start(&headers(&[(
        "traceparent",
        &format!("00-{TRACE}-{PARENT}-ff"),
    )]));
    assert!(span.traceparent().to_str().expect("ascii").ends_with("-01"));
}

#[test]
fn invalid_or_repeated_traceparent_starts_a_new_trace_and_drops_tracestate() {
    let t = tracer(100.0);
    let good = format!("00-{TRACE}-{PARENT}-01");
    for h in [
        headers(&[("tracestate", "a=b")]),
        headers(&[("traceparent", &good.to_uppercase()), ("tracestate", "a=b")]),
        headers(&[
            ("traceparent", &good),
            ("traceparent", &good),
            ("tracestate", "a=b"),
        ]),
    ] {
        let span = t.start(&h);
        assert_ne!(span.trace_id_hex(), TRACE);
        assert_ne!(span.trace_id, [0; 16]);
        assert!(span.parent.is_none());
        assert!(span.tracestate().is_none());
        assert!(span.sampled());
        assert!(parse_traceparent(span.traceparent().as_bytes()).is_some());
    }
}

#[test]
fn sampling_at_zero_and_hundred_percent() {
    let none = tracer(0.0);
    let all = tracer(100.0);
    let empty = HeaderMap::new();
    for _ in 0..1000 {
        assert!(!none.start(&empty).sampled());
        assert!(all.start(&empty).sampled());
    }
    let half = tracer(50.0);
    let n = (0..2000).filter(|_| half.start(&empty).sampled()).count();
    assert!((700..=1300).contains(&n), "{n} of 2000 at 50%");
    let ids: std::collections::HashSet<_> = (0..1000).map(|_| all.start(&empty).trace_id).collect();
    assert_eq!(ids.len(), 1000, "fresh trace ids");
    assert!(all.same_config(&Tracing {
        propagate: true,
        sample_percent: 100.0,
        otlp: None
    }));
    assert!(!all.same_config(&Tracing::default().with_otlp("http://127.0.0.1:1/v1/traces")));
}

#[test]
fn export_needs_a_runtime_and_no_export_counts_nothing() {
    let cfg = Tracing::default().with_otlp("http://127.0.0.1:1/v1/traces");
    assert!(Tracer::new(&cfg).is_err(), "no tokio runtime here");
    let t = tracer(100.0);
    let span = t.start(&HeaderMap::new());
    t.finish(span, end(200, None));
    assert_eq!((t.exported(), t.dropped(), t.failed()), (0, 0, 0));
}

impl Tracing {
    fn with_otlp(mut self, endpoint: &str) -> Tracing {
        self.otlp = Some(Otlp {
            endpoint: endpoint.into(),
            service_name: "edge-lb".into(),
            timeout: Interval(Duration::from_millis(300)),
        });
        self
    }
}

fn end(status: u16, error: Option<&str>) -> SpanEnd {
    SpanEnd {
        route: Some("shop".into()),
        cluster: Some("cloud".into()),
        endpoint: Some("10.0.0.7:8080".into()),
        method: "GET".into(),
        host: "shop.example".into(),
        path: "/cart".into(),
        status,
        error: error.map(Into::into),
        end: SystemTime::now(),
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    push_hex(&mut s, b);
    s
}
