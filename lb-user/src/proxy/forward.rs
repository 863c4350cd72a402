//! One request, back half: pick an endpoint (affinity, algorithm), wait for its slot, send on a
//! pooled connection, and retry/redispatch on the configured conditions within the retry budget.

use super::body::{ReqStats, RespBody, UpBody};
use super::conn::ConnInfo;
use super::exchange::{Exchange, InFlight};
use super::table::{ClusterRuntime, ClusterState, Endpoint};
use super::upstream::{Conn, ConnFor};
use crate::config::RetryOn;
use crate::error::ProxyError;
use crate::health::observer::Outcome;
use hyper::header;
use hyper::{Request, Response, Uri, Version};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

pub use super::prepared::{InBody, Prepared};

type Sent = (
    Response<RespBody>,
    Option<(Conn, Arc<Endpoint>)>,
    Arc<Endpoint>,
);

struct Failure {
    err: ProxyError,
    retry_on: Option<RetryOn>,
    back: Option<Request<UpBody>>,
}

pub async fn run(
    cluster: &ClusterState,
    conn: &ConnInfo,
    ex: &mut Exchange,
    mut p: Prepared,
) -> Result<Sent, ProxyError> {
    let cfg = &cluster.cfg;
    let deadline = cfg.request_timeout.map(|t| Instant::now() + t.0);
    // Endpoints tried so far (at most 1 + 10 retries + 1 stale-connection retry): no allocation.
    let mut tried = [usize::MAX; 12];
    let mut ntried = 0usize;
    let mut back: Option<Request<UpBody>> = None;
    let mut stale_retried = false;
    let mut retry_guard: Option<RetryGuard> = None;
    loop {
        let idx = pick(cluster, &p, &tried[..ntried])
            .or_else(|| pick(cluster, &p, &[]))
            .ok_or_else(|| ProxyError::NoEndpoint(cluster.name.to_string()))?;
        if ntried < tried.len() {
            tried[ntried] = idx;
            ntried += 1;
        }
        let ep = cluster.endpoints[idx].clone();
        let permit = acquire(&ep, cluster, ex).await?;
        ex.inflight = Some(InFlight::new(ep.clone(), permit));
        let Some(req) = p.next_request(back.take()) else {
            return Err(ProxyError::Internal("request cannot be replayed".into()));
        };
        let remaining = match deadline {
            Some(d) => {
                d.checked_duration_since(Instant::now())
                    .ok_or(ProxyError::RequestTimeout(
                        cfg.request_timeout.map_or(Duration::ZERO, |t| t.0),
                    ))?
            }
            None => Duration::MAX,
        };
        let who = ConnFor {
            client: conn.client,
            local: conn.local,
            upgrade: p.upgrade.is_some(),
        };
        let result = attempt(&ep, cluster, ex, who, req, remaining, p.stats.as_deref()).await;
        drop(retry_guard.take());
        observe(&ep, &result);
        let failure = match result {
            Ok((resp, checkout)) => {
                let status = resp.status().as_u16();
                let on = match status {
                    502 => Some(RetryOn::BadGateway),
                    503 => Some(RetryOn::Unavailable),
                    504 => Some(RetryOn::Timeout),
                    _ => None,
                };
                if on.is_some_and(|on| can_retry(cluster, &p, ex, on, deadline, false)) {
                    retry_guard = Some(start_retry(cluster, ex));
                    continue;
                }
                ex.t_response = Some(ex.start.elapsed());
                if let (0, Some(stats)) = (ex.bytes_in, &p.stats) {
                    ex.bytes_in = stats.bytes.load(Ordering::Relaxed);
                }
                let mut resp = resp;
                if let (Some(down), 101) = (p.upgrade.take(), status) {
                    super::tunnel::spawn(down, hyper::upgrade::on(&mut resp));
                }
                let pooled = checkout.map(|c| (c, ep.clone()));
                return Ok((resp, pooled, ep));
            }
            Err(f) => f,
        };
        // A pooled connection the endpoint had closed: the request never left; try again.
        if let Some(req) = failure.back {
            if failure.retry_on == Some(RetryOn::Reset) && !stale_retried {
                stale_retried = true;
                back = Some(req);
                ntried = ntried.saturating_sub(1);
                continue;
            }
            back = Some(req);
        }
        match failure.retry_on {
            Some(on) if can_retry(cluster, &p, ex, on, deadline, back.is_some()) => {
                retry_guard = Some(start_retry(cluster, ex));
            }
            _ => return Err(failure.err),
        }
    }
}

/// Passive health: what this attempt says about the endpoint. A stale pooled connection
/// (request handed back unsent) and client-side failures say nothing.
fn observe(ep: &Endpoint, result: &Result<(Response<RespBody>, Option<Conn>), Failure>) {
    let outcome = match result {
        Ok((resp, _)) => Outcome::from_status(resp.status().as_u16()),
        Err(f) if f.back.is_some() && f.retry_on == Some(RetryOn::Reset) => return,
        Err(f) => match &f.err {
            ProxyError::UpstreamConnect { .. } => Outcome::ConnectFailure,
            ProxyError::UpstreamTimeout { .. } | ProxyError::RequestTimeout(_) => Outcome::Timeout,
            ProxyError::Upstream { .. } => Outcome::Reset,
            _ => return,
        },
    };
    ep.observer.record(outcome);
}

/// A retry in flight, counted against the cluster's budget until its attempt ends.
struct RetryGuard(Arc<ClusterRuntime>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::Relaxed);
    }
}

fn start_retry(cluster: &ClusterState, ex: &mut Exchange) -> RetryGuard {
    ex.retries += 1;
    cluster
        .runtime
        .stats
        .retries
        .fetch_add(1, Ordering::Relaxed);
    cluster.runtime.retrying.fetch_add(1, Ordering::Relaxed);
    RetryGuard(cluster.runtime.clone())
}

fn can_retry(
    cluster: &ClusterState,
    p: &Prepared,
    ex: &Exchange,
    on: RetryOn,
    deadline: Option<Instant>,
    have_request: bool,
) -> bool {
    let r = &cluster.cfg.retries;
    if !p.retry_allowed || ex.retries >= r.attempts || !r.conditions.contains(&on) {
        return false;
    }
    if p.template.is_none() && !have_request {
        return false;
    }
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return false;
    }
    let rt = &cluster.runtime;
    let active = rt.active.load(Ordering::Relaxed);
    let budget = (active.saturating_mul(r.budget_percent) / 100).max(r.budget_min);
    if rt.retrying.load(Ordering::Relaxed) >= budget {
        tracing::debug!(cluster = %cluster.name, "retry budget exhausted");
        return false;
    }
    true
}

fn pick(cluster: &ClusterState, p: &Prepared, exclude: &[usize]) -> Option<usize> {
    if let Some(id) = &p.affinity {
        let hit = cluster.endpoints.iter().position(|e| e.affinity_id == *id);
        if let Some(i) = hit.filter(|i| cluster.weights[*i] > 0 && !exclude.contains(i)) {
            return Some(i);
        }
    }
    let load = |i: usize| cluster.endpoints.get(i).map_or(0, |e| e.load());
    cluster
        .picker
        .pick(&cluster.weights, &load, p.hash_key, exclude)
}

/// The endpoint's slot when it has a connection limit: now, after a bounded wait (added to
/// the exchange's queue time), or 503.
async fn acquire(
    ep: &Endpoint,
    cluster: &ClusterState,
    ex: &mut Exchange,
) -> Result<Option<OwnedSemaphorePermit>, ProxyError> {
    let Some(limit) = ep.limit.load_full() else {
        return Ok(None);
    };
    if let Ok(p) = limit.slots.clone().try_acquire_owned() {
        ex.t_queue.get_or_insert(Duration::ZERO);
        return Ok(Some(p));
    }
    let queued = Instant::now();
    let q = &cluster.cfg.queue;
    if limit.queued.fetch_add(1, Ordering::Relaxed) >= q.size {
        limit.queued.fetch_sub(1, Ordering::Relaxed);
        return Err(ProxyError::QueueFull(ep.address.to_string()));
    }
    let waited = tokio::time::timeout(q.timeout.0, limit.slots.clone().acquire_owned()).await;
    limit.queued.fetch_sub(1, Ordering::Relaxed);
    *ex.t_queue.get_or_insert(Duration::ZERO) += queued.elapsed();
    match waited {
        Ok(Ok(p)) => Ok(Some(p)),
        _ => Err(ProxyError::QueueTimeout(
            ep.address.to_string(),
            q.timeout.0,
        )),
    }
}

async fn attempt(
    ep: &Endpoint,
    cluster: &ClusterState,
    ex: &mut Exchange,
    who: ConnFor,
    mut req: Request<UpBody>,
    remaining: Duration,
    stats: Option<&ReqStats>,
) -> Result<(Response<RespBody>, Option<Conn>), Failure> {
    let endpoint = || ep.address.to_string();
    let mut co = match ep.pool.checkout(who).await {
        Ok(c) => c,
        Err(e) => {
            return Err(Failure {
                err: ProxyError::UpstreamConnect {
                    endpoint: endpoint(),
                    message: e.to_string(),
                },
                retry_on: Some(RetryOn::ConnectFailure),
                back: Some(req),
            })
        }
    };
    if let Some(t) = co.connect_time {
        *ex.t_connect.get_or_insert(Duration::ZERO) += t;
    }
    if co.conn.is_http2() {
        to_http2(&mut req, ep, cluster.cfg.tls.is_some());
    }
    let timeout = cluster.cfg.response_timeout.0.min(remaining);
    match co.conn.send(req, timeout).await {
        Ok(resp) => Ok((resp, co.poolable.then_some(co.conn))),
        Err(e) if e.timed_out => Err(Failure {
            err: if timeout < cluster.cfg.response_timeout.0 {
                ProxyError::RequestTimeout(cluster.cfg.request_timeout.map_or(timeout, |t| t.0))
            } else {
                ProxyError::UpstreamTimeout {
                    endpoint: endpoint(),
                    timeout,
                }
            },
            retry_on: Some(RetryOn::Timeout),
            back: None,
        }),
        Err(e) => {
            let back = e.back.map(|b| *b);
            if stats.is_some_and(|s| s.too_large.load(Ordering::Relaxed)) {
                let limit = match back.as_ref().map(|r| r.body()) {
                    Some(UpBody::Stream { limit, .. }) => *limit,
                    _ => 0,
                };
                return Err(Failure {
                    err: ProxyError::TooLarge(limit),
                    retry_on: None,
                    back: None,
                });
            }
            if stats.is_some_and(|s| s.client_failed.load(Ordering::Relaxed)) {
                return Err(Failure {
                    err: ProxyError::BadBody(e.message),
                    retry_on: None,
                    back: None,
                });
            }
            let retry_on = if e.parse {
                Some(RetryOn::BadGateway)
            } else {
                Some(RetryOn::Reset)
            };
            // A request handed back unsent on a reused connection is a stale keep-alive race.
            let back = back.filter(|_| co.reused);
            Err(Failure {
                err: ProxyError::Upstream {
                    endpoint: endpoint(),
                    message: e.message,
                },
                retry_on,
                back,
            })
        }
    }
}

/// HTTP/2 upstream: absolute URI with the client's host as :authority, no Host header.
pub(super) fn to_http2(req: &mut Request<UpBody>, ep: &Endpoint, tls: bool) {
    let host = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|v| v.to_str().ok().map(str::to_string))
        .unwrap_or_else(|| ep.authority.to_string());
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let scheme = if tls { "https" } else { "http" };
    if let Ok(uri) = format!("{scheme}://{host}{pq}").parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_2;
}
