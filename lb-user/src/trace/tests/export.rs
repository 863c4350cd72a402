//! OTLP export against a fake collector on loopback: what arrives (ids, name, attributes,
//! resource), what a stuck or dead collector costs (nothing on `finish`), and https.

use super::super::otlp::Limits;
use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::time::Instant;

const FAST: Limits = Limits {
    queue: 64,
    batch: 16,
    delay: Duration::from_millis(20),
};

type Received = tokio::sync::mpsc::UnboundedReceiver<ExportTraceServiceRequest>;

/// A fake OTLP/HTTP collector: every POST /v1/traces body, decoded.
async fn collector() -> (String, Received) {
    collector_with(None).await
}

/// The same collector, over TLS when an acceptor is given.
async fn collector_with(tls: Option<tokio_rustls::TlsAcceptor>) -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let addr = listener.local_addr().expect("addr");
    let url = format!("{scheme}://{addr}/v1/traces");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let tx = tx.clone();
            let svc = hyper::service::service_fn(move |req| receive(req, tx.clone()));
            let http1 = hyper::server::conn::http1::Builder::new();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _ = match tls {
                    None => {
                        let io = hyper_util::rt::TokioIo::new(sock);
                        http1.serve_connection(io, svc).await
                    }
                    Some(acceptor) => match acceptor.accept(sock).await {
                        Ok(s) => {
                            let io = hyper_util::rt::TokioIo::new(s);
                            http1.serve_connection(io, svc).await
                        }
                        Err(_) => return,
                    },
                };
            });
        }
    });
    (url, rx)
}

/// 200 for a protobuf POST /v1/traces with a Host header that decodes, 400 otherwise.
async fn receive(
    req: http::Request<hyper::body::Incoming>,
    tx: tokio::sync::mpsc::UnboundedSender<ExportTraceServiceRequest>,
) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let ok = req.method() == http::Method::POST
        && req.uri().path() == "/v1/traces"
        && req.headers().contains_key("host")
        && req.headers().get("content-type").map(|v| v.as_bytes())
            == Some(b"application/x-protobuf");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let status = match prost::Message::decode(body) {
        Ok(msg) if ok => {
            let _ = tx.send(msg);
            200
        }
        _ => 400,
    };
    Ok(http::Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap_or_default())
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn spans_arrive_with_our_ids_name_and_attributes() {
    let (url, mut rx) = collector().await;
    let t = Tracer::with_limits(&Tracing::default().with_otlp(&url), FAST).expect("tracer");
    let child = t.start(&headers(&[(
        "traceparent",
        &format!("00-{TRACE}-{PARENT}-01"),
    )]));
    let child_span = hex(&child.span_id);
    t.finish(child, end(200, None));
    let unsampled = t.start(&headers(&[(
        "traceparent",
        &format!("00-{TRACE}-{PARENT}-00"),
    )]));
    t.finish(unsampled, end(200, None));
    let root = t.start(&HeaderMap::new());
    let root_trace = root.trace_id_hex();
    let mut failed = end(503, Some("connect failed"));
    (failed.route, failed.cluster, failed.endpoint) = (None, None, None);
    t.finish(root, failed);
    t.shutdown().await;
    assert_eq!((t.exported(), t.dropped(), t.failed()), (2, 0, 0));

    let mut spans: Vec<(Span, Vec<KeyValue>)> = Vec::new();
    while let Ok(req) = rx.try_recv() {
        for rs in req.resource_spans {
            let res = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (s, res.clone())));
            }
        }
    }
    assert_eq!(spans.len(), 2, "the unsampled span is not exported");
    let (s, res) = spans
        .iter()
        .find(|(s, _)| hex(&s.trace_id) == TRACE)
        .expect("the continued trace");
    assert_eq!(string(res, "service.name").as_deref(), Some("edge-lb"));
    assert_eq!(hex(&s.span_id), child_span);
    assert_eq!(hex(&s.parent_span_id), PARENT);
    assert_eq!(s.name, "GET shop");
    assert_eq!(s.kind, 2, "SPAN_KIND_SERVER");
    assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
    for (k, v) in [
        ("http.request.method", "GET"),
        ("url.path", "/cart"),
        ("server.address", "shop.example"),
        ("lb.route", "shop"),
        ("lb.cluster", "cloud"),
        ("lb.endpoint", "10.0.0.7:8080"),
    ] {
        assert_eq!(string(&s.attributes, k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(
        attr(&s.attributes, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );
    assert_eq!(s.status.as_ref().map_or(0, |st| st.code), 0, "unset");

    let (s, _) = spans
        .iter()
        .find(|(s, _)| hex(&s.trace_id) == root_trace)
        .expect("the new trace");
    assert!(s.parent_span_id.is_empty(), "a root span");
    assert_eq!(s.name, "GET unrouted");
    assert!(string(&s.attributes, "lb.route").is_none());
    let st = s.status.as_ref().expect("status");
    assert_eq!((st.code, st.message.as_str()), (2, "connect failed"));
}

#[tokio::test]
async fn a_stuck_collector_never_slows_finish_and_counts_drops_and_failures() {
    // Accepts connections and never answers: every export waits for its timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let t = Tracer::with_limits(&Tracing::default().with_otlp(&url), FAST).expect("tracer");
    let n = 1000u64;
    let began = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let span = t.start(&HeaderMap::new());
        let at = Instant::now();
        t.finish(span, end(200, None));
        slowest = slowest.max(at.elapsed());
    }
    // Blocking would cost the export timeout (300 ms) per call: bounds far from both.
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert!(slowest < Duration::from_millis(250), "{slowest:?}");
    // At most one batch in flight and a full queue; the rest were dropped at once.
    let max_kept = (FAST.queue + 2 * FAST.batch) as u64;
    assert!(t.dropped() >= n - max_kept, "dropped {}", t.dropped());

    let began = Instant::now();
    t.shutdown().await;
    // Bounded: timeout (300 ms) + 1 s + delay, plus generous scheduling slack.
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(t.exported(), 0);
    assert!(t.failed() >= 1, "the batch in flight failed");
    assert_eq!(t.failed() + t.dropped(), n, "every span is accounted for");
    // After shutdown nothing is queued any more.
    let before = t.dropped();
    t.finish(t.start(&HeaderMap::new()), end(200, None));
    assert_eq!(t.dropped(), before + 1);
    hold.abort();
}

#[tokio::test]
async fn a_dead_collector_counts_failed_exports() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/v1/traces");
    let t = Tracer::with_limits(&Tracing::default().with_otlp(&url), FAST).expect("tracer");
    for _ in 0..40 {
        t.finish(t.start(&HeaderMap::new()), end(200, None));
    }
    let began = Instant::now();
    t.shutdown().await;
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    assert_eq!((t.exported(), t.dropped(), t.failed()), (0, 0, 40));
}

#[tokio::test]
async fn https_collector_gets_the_request_over_tls() {
    use super::super::https::HttpsClient;
    use opentelemetry_http::HttpClient as _;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let new_ca = || {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("ca");
        (cert, key)
    };
    let (ca, ca_key) = new_ca();
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("leaf");
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let (url, mut rx) = collector_with(Some(acceptor)).await;
    let dir = std::env::temp_dir().join(format!("lb-trace-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (trusted, other) = (dir.join("ca.pem"), dir.join("other.pem"));
    std::fs::write(&trusted, ca.pem()).expect("write ca");
    std::fs::write(&other, new_ca().0.pem()).expect("write other ca");
    let body = bytes::Bytes::from(prost::Message::encode_to_vec(
        &ExportTraceServiceRequest::default(),
    ));
    let post = || {
        http::Request::post(url.as_str())
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .expect("request")
    };

    let client = HttpsClient::with_ca(trusted, Duration::from_secs(5)).expect("client");
    for _ in 0..2 {
        let resp = client.send_bytes(post()).await.expect("answer over TLS");
        assert_eq!(resp.status(), 200);
        assert!(rx.try_recv().is_ok(), "the collector decoded the body");
    }
    // A collector whose certificate we do not trust: an error, not a hang.
    let untrusting = HttpsClient::with_ca(other, Duration::from_secs(5)).expect("client");
    assert!(untrusting.send_bytes(post()).await.is_err());
    // No readable bundle: the exporter is not built.
    assert!(HttpsClient::with_ca(dir.join("missing.pem"), Duration::from_secs(1)).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
