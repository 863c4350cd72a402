//! The request made ready for forwarding: its body buffered for replay when retries may need
//! it (or read ahead for a mirror), the balancing hash key and affinity, and rebuilds for retries.

use super::body::{ReqBody, ReqStats, UpBody};
use super::exchange::Exchange;
use super::table::ClusterState;
use crate::config::HashOn;
use crate::error::ProxyError;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Limited};

use hyper::body::Body;
use hyper::header::HeaderMap;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Uri, Version};
use std::sync::Arc;

/// Request bodies up to this size are buffered when retries are on, so they can be replayed.
const REPLAY_LIMIT: u64 = 64 * 1024;

pub struct Prepared {
    first: Option<Request<UpBody>>,
    /// Method, URI (origin form), headers: set when the request may be rebuilt for a retry.
    pub(super) template: Option<(Method, Uri, HeaderMap)>,
    replay: Option<Option<Bytes>>,
    /// What happened to a streamed body (None: the body is empty or buffered).
    pub(super) stats: Option<Arc<ReqStats>>,
    pub(super) retry_allowed: bool,
    pub(super) hash_key: Option<u64>,
    pub(super) affinity: Option<String>,
    pub(super) upgrade: Option<OnUpgrade>,
}

impl Prepared {
    pub async fn new(
        (mut parts, body): (http::request::Parts, InBody),
        path: PathAndQuery,
        max_body: u64,
        cluster: &ClusterState,
        ex: &mut Exchange,
        upgrade: Option<OnUpgrade>,
        affinity: Option<String>,
    ) -> Result<Prepared, ProxyError> {
        let cfg = &cluster.cfg;
        let hash_key = cfg.hash.as_ref().and_then(|on| hash_key(on, &parts, ex));
        let body = match body {
            InBody::Stream(b) => b,
            InBody::Buffered(bytes) => {
                // Read ahead (for a mirror): replayable as it is.
                ex.bytes_in = bytes.len() as u64;
                let full = (!bytes.is_empty()).then_some(bytes);
                return Ok(Prepared::from_full(
                    parts, path, full, cfg, hash_key, affinity, upgrade,
                ));
            }
        };
        let retry_allowed = cfg.retries.attempts > 0
            && upgrade.is_none()
            && (parts.method.is_idempotent() || cfg.retries.non_idempotent);
        let mut stats = None;
        let known = body.size_hint().exact();
        let (body, replay) = if body.is_end_stream() {
            (UpBody::Full(None), Some(None))
        } else if retry_allowed
            && known.is_some_and(|n| n <= REPLAY_LIMIT.min(max_body.max(REPLAY_LIMIT)))
        {
            // Boxed: a rare path whose state would otherwise enlarge every request's future.
            let bytes = Box::pin(Limited::new(body, REPLAY_LIMIT as usize).collect())
                .await
                .map_err(|e| ProxyError::BadBody(e.to_string()))?
                .to_bytes();
            ex.bytes_in = bytes.len() as u64;
            (UpBody::Full(Some(bytes.clone())), Some(Some(bytes)))
        } else {
            let shared = Arc::new(ReqStats::default());
            stats = Some(shared.clone());
            let body = UpBody::Stream {
                inner: body,
                stats: shared,
                limit: max_body,
            };
            (body, None)
        };
        parts.uri = Uri::from(path);
        parts.version = Version::HTTP_11;
        let template = (retry_allowed && replay.is_some()).then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });
        Ok(Prepared {
            first: Some(Request::from_parts(parts, body)),
            template,
            replay,
            stats,
            retry_allowed,
            hash_key,
            affinity,
            upgrade,
        })
    }

    fn from_full(
        mut parts: http::request::Parts,
        path: PathAndQuery,
        full: Option<Bytes>,
        cfg: &crate::config::Cluster,
        hash_key: Option<u64>,
        affinity: Option<String>,
        upgrade: Option<OnUpgrade>,
    ) -> Prepared {
        let retry_allowed = cfg.retries.attempts > 0
            && upgrade.is_none()
            && (parts.method.is_idempotent() || cfg.retries.non_idempotent);
        parts.uri = Uri::from(path);
        parts.version = Version::HTTP_11;
        let template = retry_allowed.then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });
        Prepared {
            first: Some(Request::from_parts(parts, UpBody::Full(full.clone()))),
            template,
            replay: Some(full),
            stats: None,
            retry_allowed,
            hash_key,
            affinity,
            upgrade,
        }
    }

    /// The request for the next attempt: the first one, one handed back unsent, or a rebuild.
    pub(super) fn next_request(
        &mut self,
        back: Option<Request<UpBody>>,
    ) -> Option<Request<UpBody>> {
        if let Some(r) = back.or_else(|| self.first.take()) {
            return Some(r);
        }
        let (method, uri, headers) = self.template.as_ref()?;
        let body = UpBody::Full(self.replay.clone()?);
        let mut r = Request::new(body);
        *r.method_mut() = method.clone();
        *r.uri_mut() = uri.clone();
        *r.headers_mut() = headers.clone();
        Some(r)
    }
}

/// A request body as it reaches forwarding: still streaming, or already read (mirroring).
pub enum InBody {
    Stream(ReqBody),
    Buffered(Bytes),
}

fn hash_key(on: &HashOn, req: &http::request::Parts, ex: &Exchange) -> Option<u64> {
    use crate::maglev::hash64;
    match on {
        HashOn::SourceIp => Some(match ex.conn.client.ip().to_canonical() {
            std::net::IpAddr::V4(a) => hash64(&a.octets()),
            std::net::IpAddr::V6(a) => hash64(&a.octets()),
        }),
        HashOn::Header { name } => req.headers.get(name.as_str()).map(|v| hash64(v.as_bytes())),
        HashOn::Cookie { name } => {
            super::headers::cookie(&req.headers, name).map(|v| hash64(v.as_bytes()))
        }
        HashOn::Uri => req
            .uri
            .path_and_query()
            .map(|p| hash64(p.as_str().as_bytes())),
    }
}
