//! Cluster config: endpoints and weights, the balancing algorithm, upstream protocol and TLS,
//! timeouts, retries with their budget, and per-endpoint connection limits with a queue.

use super::health::{Backups, Health};
use super::scalars::{Interval, Weight};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub balance: Balance,
    /// Keys for `balance: hash`.
    #[serde(default)]
    pub hash: Option<HashOn>,
    /// Session affinity: we set this cookie to the endpoint that served the client and send
    /// later requests carrying it to the same endpoint while it is available.
    #[serde(default)]
    pub affinity: Option<Affinity>,
    /// Upstream protocol: `http1` (pooled keep-alive) or `http2` (one multiplexed connection).
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub tls: Option<BackendTls>,
    /// Send a PROXY protocol header (`v1` or `v2`) on each upstream connection. Such connections
    /// carry one client's address, so they are not shared between requests.
    #[serde(default)]
    pub send_proxy: Option<ProxyVersion>,
    /// Time allowed to establish a connection to an endpoint (then 503, HAProxy `timeout connect`).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Interval,
    /// Time from sending the request until the response headers arrive (then 504).
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Interval,
    /// Pooled upstream connections idle longer than this are closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Interval,
    /// Whole request, across retries, until the response headers (then 504). Default: none.
    #[serde(default)]
    pub request_timeout: Option<Interval>,
    /// Concurrent requests per endpoint (HAProxy server `maxconn`); 0 = no limit.
    #[serde(default)]
    pub max_connections_per_endpoint: u32,
    /// Where requests wait when every endpoint is at its limit.
    #[serde(default)]
    pub queue: Queue,
    #[serde(default)]
    pub retries: Retries,
    /// Active and passive health checks, slow start.
    #[serde(default)]
    pub health: Health,
    /// Which backup endpoints serve when every primary is down: `first` or `all`.
    #[serde(default)]
    pub backups: Backups,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub address: SocketAddr,
    #[serde(default)]
    pub weight: Weight,
    /// Name used by the runtime API, stats and metrics; default: the address.
    #[serde(default)]
    pub name: Option<String>,
    /// Serves only when no primary endpoint can (down, in maintenance or at weight 0).
    #[serde(default)]
    pub backup: bool,
}

impl Endpoint {
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConnections,
    /// Two weighted random choices, the less loaded wins (P2C).
    Random,
    /// Consistent hash (Maglev) of the key in `hash`; stable under endpoint changes.
    Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, tag = "on", rename_all = "snake_case")]
pub enum HashOn {
    SourceIp,
    Header { name: String },
    Cookie { name: String },
    Uri,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    pub cookie: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    /// PEM CA bundle that endpoint certificates must chain to.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Name checked in the endpoint certificate and sent as SNI; default: the endpoint address.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Client certificate (mutual TLS).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Accept any endpoint certificate (signatures are still checked). For tests only.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// Requests that may wait for an endpoint slot; beyond it they get 503 at once.
    #[serde(default = "default_queue_size")]
    pub size: u32,
    /// Longest wait for a slot (then 503, HAProxy `timeout queue`).
    #[serde(default = "default_queue_timeout")]
    pub timeout: Interval,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            size: default_queue_size(),
            timeout: default_queue_timeout(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Extra attempts after the first (0 = never retry).
    #[serde(default)]
    pub attempts: u32,
    /// Conditions: `connect_failure`, `reset`, `502`, `503`, `504` (a response timeout).
    #[serde(default = "default_retry_on")]
    pub conditions: Vec<RetryOn>,
    /// Also retry POST/PATCH and other non-idempotent methods.
    #[serde(default)]
    pub non_idempotent: bool,
    /// Retries in flight may be at most this percentage of requests in flight...
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// ...but this many are always allowed.
    #[serde(default = "default_budget_min")]
    pub budget_min: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 0,
            conditions: default_retry_on(),
            non_idempotent: false,
            budget_percent: default_budget_percent(),
            budget_min: default_budget_min(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    ConnectFailure,
    Reset,
    BadGateway,
    Unavailable,
    Timeout,
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        let s = match &v {
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::String(s) => s.clone(),
            _ => String::new(),
        };
        Ok(match s.as_str() {
            "connect_failure" => RetryOn::ConnectFailure,
            "reset" => RetryOn::Reset,
            "502" => RetryOn::BadGateway,
            "503" => RetryOn::Unavailable,
            "504" => RetryOn::Timeout,
            _ => {
                let msg = "expected connect_failure, reset, 502, 503 or 504";
                let err = format!("unknown retry condition {s:?}: {msg}");
                return Err(serde::de::Error::custom(err));
            }
        })
    }
}

fn default_connect_timeout() -> Interval {
    Interval(Duration::from_secs(5))
}

fn default_response_timeout() -> Interval {
    Interval(Duration::from_secs(60))
}

fn default_idle_timeout() -> Interval {
    Interval(Duration::from_secs(30))
}

fn default_queue_size() -> u32 {
    1024
}

fn default_queue_timeout() -> Interval {
    Interval(Duration::from_secs(5))
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure, RetryOn::Reset]
}

fn default_budget_percent() -> u32 {
    20
}

fn default_budget_min() -> u32 {
    3
}
