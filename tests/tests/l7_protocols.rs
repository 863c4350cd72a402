//! The real `lb` process on loopback, protocol and TLS side: certificates chosen by SNI, TLS
//! versions, ALPN, h2c, HTTP/2 upstreams, trailers, WebSocket tunnels, streamed bodies,
//! certificate reloads (file watch and SIGHUP), bad certificates, backend TLS and HSTS.

mod support;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::Frame;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_tests::http as blocking;
use lb_tests::lb::{free_local_addr, Lb};
use lb_tests::lb_bin;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use support::certs::{self, Ca, Leaf};
use support::origin::{Origin, OriginOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Bound on every network await (generous: debug builds on a shared 2-core machine).
const T: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, std::io::Error>;

// ---------- shared helpers ----------

/// Awaits `f` for at most [`T`]; panics naming `what` when it takes longer.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(T, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {T:?}"),
    }
}

/// An origin named `web`, a CA with a certificate `a` for a.test (files in a temp dir living as
/// long as this value), and a free address for lb's listener.
struct Site {
    dir: tempfile::TempDir,
    ca: Ca,
    a: Leaf,
    origin: Origin,
    listen: SocketAddr,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::Builder::new()
            .prefix("lbt-pki-")
            .tempdir()
            .unwrap();
        let ca = Ca::new(dir.path(), "test").unwrap();
        let a = ca.leaf("a", &["a.test"]).unwrap();
        let (origin, listen) = (Origin::plain("web").unwrap(), free_local_addr());
        Site {
            dir,
            ca,
            a,
            origin,
            listen,
        }
    }
    fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        self.ca.leaf(file, names).unwrap()
    }
    /// One TLS listener serving `certs` (`tls_extra` inside `tls`), every host to `web`.
    fn tls_yaml(&self, certs: &[&Leaf], tls_extra: &str) -> String {
        let l = tls_listener("tls", self.listen, certs, tls_extra, "");
        config(&[l], "", "", self.origin.addr())
    }
    /// One plain listener, every host to `web` (`cluster_extra` added to the cluster).
    fn plain_yaml(&self, cluster_extra: &str) -> String {
        config(
            &[plain("plain", self.listen)],
            "",
            cluster_extra,
            self.origin.addr(),
        )
    }
    /// Client config verifying against the test CA.
    fn verify(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        certs::client_config(&self.ca.pem_path, alpn, None).unwrap()
    }
}

fn start(yaml: &str, extra: &[&str]) -> Lb<'static> {
    Lb::start(&lb_bin(), None, yaml, free_local_addr(), extra).unwrap()
}

/// A plain listener (YAML flow map).
fn plain(name: &str, addr: SocketAddr) -> String {
    format!("{{name: {name}, address: \"{addr}\"}}")
}

/// A TLS listener: `tls_extra` goes inside `tls`, `extra` at listener level (both start with ", ").
fn tls_listener(
    name: &str,
    addr: SocketAddr,
    certs: &[&Leaf],
    tls_extra: &str,
    extra: &str,
) -> String {
    let certs: Vec<String> = certs
        .iter()
        .map(|l| format!("{{cert: {:?}, key: {:?}}}", l.cert, l.key))
        .collect();
    format!(
        "{{name: {name}, address: \"{addr}\", tls: {{certificates: [{}]{tls_extra}}}{extra}}}",
        certs.join(", ")
    )
}

/// `listeners`, one route for every host (plus `route_extra`) to cluster `web` = `origin`.
fn config(
    listeners: &[String],
    route_extra: &str,
    cluster_extra: &str,
    origin: SocketAddr,
) -> String {
    let ls: String = listeners.iter().map(|l| format!("  - {l}\n")).collect();
    format!(
        "listeners:\n{ls}routes:\n  - {{hosts: [\"*\"], cluster: web{route_extra}}}\n\
         clusters:\n  - {{name: web, endpoints: [{{address: \"{origin}\"}}]{cluster_extra}}}\n"
    )
}

fn der(pem: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem).unwrap().to_vec()
}

/// Client config accepting any certificate: to see what is served for names it does not cover.
fn any_cert(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let tls = lb_user::tls::BackendTls {
        insecure_skip_verify: true,
        ..Default::default()
    };
    lb_user::tls::client_config(&tls, alpn).unwrap()
}

async fn tls(
    addr: SocketAddr,
    cfg: &Arc<ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(sni.to_string()).unwrap();
    within("TLS handshake", async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(cfg.clone()).connect(name, tcp).await
    })
    .await
}

fn peer_der(s: &TlsStream<TcpStream>) -> Vec<u8> {
    let certs = s.get_ref().1.peer_certificates();
    certs
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

fn alpn(s: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// New handshakes until one is served `want` (up to ~10 s): certificate reloads are asynchronous.
async fn wait_for_cert(addr: SocketAddr, cfg: &Arc<ClientConfig>, sni: &str, want: &[u8]) -> bool {
    for _ in 0..50 {
        if tls(addr, cfg, sni)
            .await
            .is_ok_and(|s| peer_der(&s) == want)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(empty()).unwrap()
}

/// A body handed out piece by piece, without a length: HTTP/1.1 sends it chunked.
struct Chunks(VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A hyper client connection (HTTP/1.1 or HTTP/2) over any stream.
enum Client {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

struct Reply {
    status: u16,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    async fn handshake<I>(io: I, h2: bool) -> Client
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let (s, conn) = within("h2 handshake", http2::handshake(TokioExecutor::new(), io))
                .await
                .unwrap();
            tokio::spawn(conn);
            Client::H2(s)
        } else {
            let (s, conn) = within("h1 handshake", http1::handshake(io)).await.unwrap();
            tokio::spawn(conn);
            Client::H1(s)
        }
    }

    /// Sends `req` (absolute URI; HTTP/1.1 gets origin form + Host) and reads the whole reply.
    async fn send(&mut self, mut req: Request<Body>) -> Reply {
        let resp = within("response", async {
            match self {
                Client::H1(s) => {
                    if let Some(a) = req.uri().authority() {
                        let host = HeaderValue::from_str(a.as_str()).unwrap();
                        req.headers_mut().insert(header::HOST, host);
                        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                        *req.uri_mut() = path.parse().unwrap();
                    }
                    s.ready().await?;
                    s.send_request(req).await
                }
                Client::H2(s) => {
                    s.ready().await?;
                    s.send_request(req).await
                }
            }
        })
        .await
        .expect("request failed");
        let (parts, body) = resp.into_parts();
        let collected = within("response body", body.collect()).await.unwrap();
        Reply {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            trailers: collected.trailers().cloned(),
            body: collected.to_bytes(),
        }
    }
}

async fn tcp_client(addr: SocketAddr, h2: bool) -> Client {
    let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    Client::handshake(tcp, h2).await
}

// ---------- 1. SNI ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_exact_then_wildcard_then_first_certificate() {
    let site = Site::new();
    let wild = site.leaf("wild", &["*.wild.test"]);
    let _lb = start(&site.tls_yaml(&[&site.a, &wild], ""), &[]);
    let s = tls(site.listen, &site.verify(&[]), "a.test").await.unwrap();
    assert_eq!(
        peer_der(&s),
        der(&site.a.cert),
        "exact name gets certificate A"
    );
    let r = Client::handshake(s, false)
        .await
        .send(get("https://a.test/"))
        .await;
    assert_eq!((r.status, r.header("x-backend")), (200, Some("web")));
    let s = tls(site.listen, &site.verify(&[]), "x.wild.test")
        .await
        .unwrap();
    assert_eq!(peer_der(&s), der(&wild.cert), "wildcard name");
    let s = tls(site.listen, &any_cert(&[]), "unknown.test")
        .await
        .unwrap();
    assert_eq!(
        peer_der(&s),
        der(&site.a.cert),
        "unknown SNI: the first one"
    );
    let s = tls(site.listen, &any_cert(&[]), "127.0.0.1").await.unwrap();
    assert_eq!(peer_der(&s), der(&site.a.cert), "no SNI: the first one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_without_default_refuses_unknown_names_and_keeps_serving() {
    let site = Site::new();
    let wild = site.leaf("wild", &["*.wild.test"]);
    let yaml = site.tls_yaml(&[&site.a, &wild], ", default_certificate: none");
    let lb = start(&yaml, &[]);
    // Any certificate would be accepted: only the lack of one can fail this handshake.
    let refused = tls(site.listen, &any_cert(&[]), "unknown.test").await;
    assert!(refused.is_err(), "unknown SNI must not get a certificate");
    let refused = tls(site.listen, &any_cert(&[]), "127.0.0.1").await;
    assert!(
        refused.is_err(),
        "no SNI (IP address) must not get a certificate"
    );
    let s = tls(site.listen, &site.verify(&[]), "x.wild.test")
        .await
        .unwrap();
    assert_eq!(peer_der(&s), der(&wild.cert));
    let r = Client::handshake(s, false)
        .await
        .send(get("https://x.wild.test/"))
        .await;
    assert_eq!(r.status, 200, "{}", lb.log());
}

// ---------- 2. TLS versions ----------

/// A TLS 1.0 ClientHello record, no extensions (so no supported_versions either).
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01]; // client_version: TLS 1.0
    body.extend([7u8; 32]); // random
    body.push(0); // session id
    body.extend([0x00, 0x04, 0x00, 0x2f, 0x00, 0x35]); // AES128-SHA, AES256-SHA
    body.extend([0x01, 0x00]); // compression: null
    let mut hs = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, (hs.len() >> 8) as u8, hs.len() as u8];
    record.extend(hs);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_client_works_and_tls10_hello_gets_an_alert() {
    let site = Site::new();
    let lb = start(&site.tls_yaml(&[&site.a], ""), &[]);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(der(&site.ca.pem_path)))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let s = tls(site.listen, &Arc::new(tls12), "a.test").await.unwrap();
    let version = s.get_ref().1.protocol_version();
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_2));
    let r = Client::handshake(s, false)
        .await
        .send(get("https://a.test/"))
        .await;
    assert_eq!(r.status, 200);
    let reply = blocking::raw(site.listen, &tls10_client_hello(), T).unwrap();
    assert!(
        reply.is_empty() || (reply[0] == 0x15 && reply.get(5) == Some(&2)),
        "expected a fatal alert or a close, got {:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(64)])
    );
    assert!(
        !String::from_utf8_lossy(&reply).contains("HTTP/"),
        "{reply:?}"
    );
    let s = tls(site.listen, &site.verify(&[]), "a.test").await;
    assert!(s.is_ok(), "still serving after the old hello: {}", lb.log());
}

// ---------- 3. ALPN ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_chooses_h2_or_http11_and_http2_false_never_offers_h2() {
    let site = Site::new();
    let (on, off) = (site.listen, free_local_addr());
    let listeners = [
        tls_listener("on", on, &[&site.a], "", ""),
        tls_listener("off", off, &[&site.a], "", ", http2: false"),
    ];
    let _lb = start(&config(&listeners, "", "", site.origin.addr()), &[]);
    // (listener, client offers h2 too, h2 expected)
    for (addr, offer_h2, h2) in [(on, true, true), (on, false, false), (off, true, false)] {
        let offer: &[&[u8]] = if offer_h2 {
            &[b"h2", b"http/1.1"]
        } else {
            &[b"http/1.1"]
        };
        let s = tls(addr, &site.verify(offer), "a.test").await.unwrap();
        let want: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        assert_eq!(
            alpn(&s).as_deref(),
            Some(want),
            "listener {addr} offered {offer:?}"
        );
        let version = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let r = Client::handshake(s, h2)
            .await
            .send(get("https://a.test/alpn"))
            .await;
        assert_eq!((r.status, r.version), (200, version));
        assert_eq!(r.header("x-backend"), Some("web"));
    }
}

// ---------- 4. h2c ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_on_plain_listener_goes_upstream_as_http11() {
    let site = Site::new();
    let _lb = start(&site.plain_yaml(""), &[]);
    let r = tcp_client(site.listen, true)
        .await
        .send(get("http://h2c.test/h2c"))
        .await;
    assert_eq!((r.status, r.version), (200, Version::HTTP_2));
    assert_eq!(r.header("x-protocol"), Some("HTTP/1.1"), "upstream leg");
    let seen = site.origin.last().unwrap();
    assert_eq!(
        (seen.uri.as_str(), seen.version.as_str()),
        ("/h2c", "HTTP/1.1")
    );
}

// ---------- 5. HTTP/2 upstream ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_multiplexes_requests_on_one_connection() {
    let site = Site::new();
    let _lb = start(&site.plain_yaml(", protocol: http2"), &[]);
    let mut c = tcp_client(site.listen, false).await;
    let r = c.send(get("http://up.test/first")).await;
    assert_eq!((r.status, r.header("x-protocol")), (200, Some("HTTP/2.0")));
    // 20 concurrent requests from an h2 client, then 5 sequential HTTP/1.1 ones.
    let Client::H2(h2) = tcp_client(site.listen, true).await else {
        unreachable!()
    };
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let mut c = Client::H2(h2.clone());
            tokio::spawn(async move { c.send(get(&format!("http://up.test/c{i}"))).await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(within("task", t).await.unwrap(), 200);
    }
    for _ in 0..5 {
        assert_eq!(c.send(get("http://up.test/seq")).await.status, 200);
    }
    let seen = site.origin.seen();
    assert_eq!(seen.len(), 26);
    assert!(seen.iter().all(|s| s.version == "HTTP/2.0"), "{seen:?}");
    assert_eq!(
        site.origin.connections(),
        1,
        "one multiplexed upstream connection"
    );
}

// ---------- 6. trailers ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_trailers_pass_through_h2_both_legs() {
    let site = Site::new();
    let _lb = start(&site.plain_yaml(", protocol: http2"), &[]);
    let mut req = get("http://grpc.test/trailers");
    req.headers_mut()
        .insert("te", HeaderValue::from_static("trailers"));
    let grpc = HeaderValue::from_static("application/grpc");
    req.headers_mut().insert("content-type", grpc);
    let r = tcp_client(site.listen, true).await.send(req).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    let trailers = r.trailers.expect("trailers");
    let trailer = |n: &str| trailers.get(n).and_then(|v| v.to_str().ok());
    assert_eq!(
        (trailer("grpc-status"), trailer("grpc-message")),
        (Some("0"), Some("fine"))
    );
    assert_eq!(site.origin.last().unwrap().version, "HTTP/2.0");
}

// ---------- 7. WebSocket ----------

/// Reads into `buf` until `done(buf)` (bounded by [`T`] and 1 MiB).
async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    within("reading", async {
        let mut chunk = [0u8; 16384];
        while !done(buf) && buf.len() < 1 << 20 {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed early after {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_tunnels_arbitrary_bytes_both_ways() {
    let site = Site::new();
    let _lb = start(&site.plain_yaml(""), &[]);
    let mut s = within("connect", TcpStream::connect(site.listen))
        .await
        .unwrap();
    let head = "GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n");
    read_until(&mut s, &mut buf, |b| end(b).is_some()).await;
    let split = end(&buf).unwrap() + 4;
    let resp = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    assert!(resp.starts_with("http/1.1 101"), "{resp}");
    assert!(resp.contains("upgrade: websocket"), "{resp}");
    let mut echoed = buf.split_off(split);
    for round in 0..2u8 {
        let mut payload: Vec<u8> = (0..=255u8).map(|b| b ^ round).collect();
        payload.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        payload.extend([0u8, 0xff, 0x80, 0x0d, 0x0a]);
        s.write_all(&payload).await.unwrap();
        read_until(&mut s, &mut echoed, |b| b.len() >= payload.len()).await;
        assert_eq!(echoed, payload, "round {round}");
        echoed.clear();
    }
    let requests = site.origin.requests();
    assert_eq!(
        requests, 1,
        "the tunnelled request line is data, not a request"
    );
}

// ---------- 8. streamed bodies ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_and_large_download_arrive_intact() {
    let site = Site::new();
    let _lb = start(&site.plain_yaml(""), &[]);
    let data: Vec<u8> = (0..3usize << 20)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect();
    let data = Bytes::from(data);
    let chunks = (0..data.len())
        .step_by(65536)
        .map(|i| data.slice(i..i + 65536));
    let body = Chunks(chunks.collect()).boxed();
    let mut c = tcp_client(site.listen, false).await;
    let r = c
        .send(Request::post("http://big.test/echo").body(body).unwrap())
        .await;
    assert_eq!((r.status, r.body.len()), (200, data.len()));
    assert!(r.body == data, "echoed body differs");
    assert_eq!(site.origin.last().unwrap().body_len, 3 << 20);
    let r = c.send(get("http://big.test/big/5000000")).await;
    assert_eq!((r.status, r.body.len()), (200, 5_000_000));
    assert!(r.body.iter().all(|&b| b == b'x'));
}

// ---------- 9. certificate reloads ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificate_files_are_reloaded_and_open_connections_kept() {
    let site = Site::new();
    let lb = start(&site.tls_yaml(&[&site.a], ""), &["--watch-secs", "1"]);
    let s = tls(site.listen, &site.verify(&[]), "a.test").await.unwrap();
    assert_eq!(peer_der(&s), der(&site.a.cert));
    let mut old = Client::handshake(s, false).await;
    assert_eq!(old.send(get("https://a.test/before")).await.status, 200);
    // New files written aside, then renamed over the served ones.
    let v2 = site.leaf("a-v2", &["a.test"]);
    let v2_der = der(&v2.cert);
    std::fs::rename(&v2.key, &site.a.key).unwrap();
    std::fs::rename(&v2.cert, &site.a.cert).unwrap();
    let reloaded = wait_for_cert(site.listen, &site.verify(&[]), "a.test", &v2_der).await;
    assert!(reloaded, "v2 never served; log:\n{}", lb.log());
    let r = old.send(get("https://a.test/after")).await;
    assert_eq!(
        r.status, 200,
        "the connection opened before the reload still serves"
    );
    assert_eq!(site.origin.last().unwrap().uri, "/after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_switches_to_a_new_certificate_file() {
    let site = Site::new();
    let v3 = site.leaf("a-v3", &["a.test"]);
    let lb = start(&site.tls_yaml(&[&site.a], ""), &["--watch-secs", "0"]);
    let s = tls(site.listen, &site.verify(&[]), "a.test").await.unwrap();
    let mut old = Client::handshake(s, false).await;
    lb.reload(&site.tls_yaml(&[&v3], "")).unwrap();
    let reloaded = wait_for_cert(site.listen, &site.verify(&[]), "a.test", &der(&v3.cert)).await;
    assert!(reloaded, "v3 never served; log:\n{}", lb.log());
    assert_eq!(old.send(get("https://a.test/")).await.status, 200);
    let ok = lb.metric("lb_config_reloads_total", &[("result", "ok")]);
    assert_eq!(ok.unwrap(), 1.0);
}

// ---------- 10. bad certificates ----------

#[test]
fn missing_certificate_file_fails_startup_naming_the_field() {
    let site = Site::new();
    let missing = Leaf {
        cert: site.dir.path().join("nope.pem"),
        key: site.dir.path().join("nope.key"),
    };
    let yaml = site.tls_yaml(&[&missing], "");
    let err = match Lb::start(&lb_bin(), None, &yaml, free_local_addr(), &[]) {
        Ok(lb) => panic!("lb started without its certificate; log:\n{}", lb.log()),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("listeners[0].tls.certificates[0]"), "{err}");
    assert!(err.contains("nope.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_certificate_on_reload_is_rejected_and_old_one_kept() {
    let site = Site::new();
    let garbage = Leaf {
        cert: site.dir.path().join("garbage.pem"),
        key: site.a.key.clone(),
    };
    let pem = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
    std::fs::write(&garbage.cert, pem).unwrap();
    let lb = start(&site.tls_yaml(&[&site.a], ""), &["--watch-secs", "0"]);
    let invalid = || {
        lb.metric("lb_config_reloads_total", &[("result", "invalid")])
            .unwrap()
    };
    assert_eq!(invalid(), 0.0);
    lb.reload(&site.tls_yaml(&[&garbage], "")).unwrap();
    lb.wait_log("config reload rejected", T).unwrap();
    assert!(
        lb.log().contains("listeners[0].tls.certificates[0]"),
        "{}",
        lb.log()
    );
    assert_eq!(invalid(), 1.0);
    let s = tls(site.listen, &site.verify(&[]), "a.test").await.unwrap();
    assert_eq!(peer_der(&s), der(&site.a.cert), "still the old certificate");
    let r = Client::handshake(s, false)
        .await
        .send(get("https://a.test/"))
        .await;
    assert_eq!(r.status, 200);
}

// ---------- 11. backend TLS and HSTS ----------

#[test]
fn backend_tls_checks_the_ca_and_presents_a_client_certificate() {
    let site = Site::new();
    let other = Ca::new(site.dir.path(), "other").unwrap();
    let leaf = site.leaf("origin", &["origin.test"]);
    let client = site.leaf("client", &["lb.client"]);
    let tls_origin = |name: &str, client_ca| {
        Origin::start(OriginOptions {
            name: name.into(),
            tls: Some((leaf.cert.clone(), leaf.key.clone())),
            client_ca,
            ..Default::default()
        })
        .unwrap()
    };
    let open = tls_origin("open", None);
    let mutual = tls_origin("mutual", Some(site.ca.pem_path.clone()));
    let cluster = |name: &str, ca: &Path, origin: &Origin, extra: &str| {
        let addr = origin.addr();
        format!(
            "  - {{name: {name}, endpoints: [{{address: \"{addr}\"}}], \
             tls: {{ca: {ca:?}, server_name: origin.test{extra}}}}}\n"
        )
    };
    let client_files = format!(
        ", client_cert: {:?}, client_key: {:?}",
        client.cert, client.key
    );
    let yaml = format!(
        "listeners: [{}]\nroutes:\n  - {{hosts: [good.test], cluster: good}}\n  \
         - {{hosts: [badca.test], cluster: badca}}\n  - {{hosts: [mtls.test], cluster: mtls}}\n\
         clusters:\n{}{}{}",
        plain("plain", site.listen),
        cluster("good", &site.ca.pem_path, &open, ""),
        cluster("badca", &other.pem_path, &open, ""),
        cluster("mtls", &site.ca.pem_path, &mutual, &client_files),
    );
    let lb = start(&yaml, &[]);
    let get = |host: &str, path: &str| blocking::get(site.listen, host, path, T).unwrap();
    let r = get("good.test", "/good");
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("open")),
        "{}",
        r.text()
    );
    assert!(!open.last().unwrap().client_cert);
    let r = get("badca.test", "/badca");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(open.seen().iter().all(|s| s.uri != "/badca"));
    lb.wait_log("invalid peer certificate", T).unwrap();
    let r = get("mtls.test", "/mtls");
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("mutual")),
        "{}",
        lb.log()
    );
    let seen = mutual.last().unwrap();
    assert!(seen.client_cert && seen.uri == "/mtls", "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_added_on_tls_listeners_only() {
    let site = Site::new();
    let clear = free_local_addr();
    let listeners = [
        tls_listener("tls", site.listen, &[&site.a], "", ""),
        plain("plain", clear),
    ];
    let hsts = ", hsts: {max_age: 600, include_subdomains: true}";
    let _lb = start(&config(&listeners, hsts, "", site.origin.addr()), &[]);
    let want = Some("max-age=600; includeSubDomains");
    for h2 in [true, false] {
        let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        let s = tls(site.listen, &site.verify(&[alpn]), "a.test")
            .await
            .unwrap();
        let r = Client::handshake(s, h2)
            .await
            .send(get("https://a.test/"))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("strict-transport-security"), want, "h2: {h2}");
    }
    let r = tcp_client(clear, false)
        .await
        .send(get("http://a.test/"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("strict-transport-security"),
        None,
        "never on clear text"
    );
}
