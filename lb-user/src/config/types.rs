//! Top-level config types as operators write them: listeners (TLS, PROXY protocol, limits,
//! forwarding trust), the access log and the XDP section. Routes and clusters have their own files.

use super::cluster::Cluster;
use super::route::Route;
use super::scalars::{Cidr, Interval};
use crate::accesslog::LogFormat;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the L7 workers accept HTTP connections.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Routes, matched by host then path/method/headers/query (see docs/config.md for precedence).
    #[serde(default)]
    pub routes: Vec<Arc<Route>>,
    #[serde(default)]
    pub clusters: Vec<Arc<Cluster>>,
    /// VIP:port/protocol services balanced in XDP over a cluster's endpoints (docs/config.md).
    #[serde(default)]
    pub l4_services: Vec<super::l4::L4Service>,
    #[serde(default)]
    pub access_log: AccessLog,
    #[serde(default)]
    pub xdp: Xdp,
    /// Runtime API access and whether reloads keep its overrides.
    #[serde(default)]
    pub admin: super::health::Admin,
    /// Detail of /metrics (per-endpoint and per-route series).
    #[serde(default)]
    pub metrics: super::metrics::Metrics,
    /// W3C trace context and optional OTLP export.
    #[serde(default)]
    pub tracing: super::tracing::Tracing,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    /// Terminate TLS here (certificates chosen by SNI).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Accept HTTP/2: h2c with prior knowledge in clear text, `h2` by ALPN over TLS.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Expect a PROXY protocol v1/v2 header from these sources.
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Open client connections at most; further clients wait in the kernel backlog (0 = no limit).
    #[serde(default)]
    pub max_connections: u32,
    /// Requests per second per client IP (token bucket); over it the client gets 429.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub limits: Limits,
    /// Who may set X-Forwarded-* / Forwarded headers that we keep (append to).
    #[serde(default)]
    pub forwarded: Forwarded,
    /// Give requests without a sane `X-Request-Id` a fresh one (false: pass it as it came).
    #[serde(default = "yes")]
    pub generate_request_id: bool,
    /// Hand a connection to the workers only once its client has sent data (TCP_DEFER_ACCEPT,
    /// HAProxy's `defer-accept`, nginx's `deferred`); a client that sends nothing is accepted
    /// after ~1 s anyway. Off for protocols where the server speaks first.
    #[serde(default = "yes")]
    pub defer_accept: bool,
    /// Worker threads accepting on this address, each with its own SO_REUSEPORT socket and
    /// single-threaded runtime (1: one socket served by the shared runtime).
    #[serde(default = "one")]
    pub workers: u32,
    /// How the SK_REUSEPORT program picks a worker for a new connection (workers > 1).
    #[serde(default)]
    pub steering: Steering,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Steering {
    /// The connection's 4-tuple hash modulo the workers not drained.
    #[default]
    FlowHash,
    /// The worker (not drained) with the fewest open connections.
    LeastLoaded,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chains and keys; names served come from each certificate's SANs.
    pub certificates: Vec<CertificateFiles>,
    /// Index into `certificates` served when SNI is missing or unknown; `none` refuses the
    /// handshake instead. Default: the first certificate (as HAProxy does).
    #[serde(default)]
    pub default_certificate: DefaultCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultCert {
    #[default]
    First,
    Index(usize),
    None,
}

impl<'de> Deserialize<'de> for DefaultCert {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        match &v {
            serde_yaml::Value::Number(n) if n.as_u64().is_some() => {
                Ok(DefaultCert::Index(n.as_u64().unwrap_or(0) as usize))
            }
            serde_yaml::Value::String(s) if s == "none" => Ok(DefaultCert::None),
            _ => Err(serde::de::Error::custom(
                "default_certificate must be an index into certificates or \"none\"",
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocol {
    /// Peers that must send a PROXY header (garbage from them closes the connection). Other
    /// peers are served as plain clients: a PROXY header from them is a bad request.
    pub trusted: Vec<Cidr>,
    #[serde(default = "default_proxy_timeout")]
    pub timeout: Interval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: u32,
    /// Bucket size: requests a client may send at once after being idle. Default: the rate.
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line + headers) in bytes; larger gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most request header fields; more gets 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Largest request body in bytes (0 = no limit); larger gets 413.
    #[serde(default)]
    pub max_body_bytes: u64,
    /// Time a client has to send a request head, and keep-alive idle time between requests.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Interval,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_body_bytes: 0,
            header_timeout: default_header_timeout(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarded {
    /// Clients whose X-Forwarded-For / Forwarded values are kept and appended to; from anyone
    /// else they are overwritten with what we saw.
    #[serde(default)]
    pub trusted: Vec<Cidr>,
    /// Which forwarding headers are set (default all four; `[]`: none, incoming ones pass).
    #[serde(default = "ForwardedHeader::all")]
    pub headers: Vec<ForwardedHeader>,
}

impl Default for Forwarded {
    fn default() -> Self {
        Forwarded {
            trusted: Vec::new(),
            headers: ForwardedHeader::all(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Forwarded,
}

impl ForwardedHeader {
    pub fn all() -> Vec<ForwardedHeader> {
        use ForwardedHeader::*;
        vec![XForwardedFor, XForwardedProto, XForwardedHost, Forwarded]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// `json` (default), `text` (HAProxy httplog-like) or `off`.
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xdp {
    /// Source prefixes dropped by the XDP program before anything else sees them.
    #[serde(default)]
    pub deny: Vec<Cidr>,
    /// The L4 dataplane's node settings: SNAT addresses and ports, table sizes, timeouts.
    #[serde(default)]
    pub l4: super::l4::XdpL4,
    /// Per-source limit on new flows, enforced in XDP.
    #[serde(default)]
    pub rate_limit: Option<super::l4::XdpRateLimit>,
}

pub(super) fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn default_proxy_timeout() -> Interval {
    Interval(Duration::from_secs(5))
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_max_headers() -> usize {
    100
}

fn default_header_timeout() -> Interval {
    Interval(Duration::from_secs(30))
}
