//! One request: find the host's cluster, take the next endpoint by weight, forward over the
//! cluster's pool with hop-by-hop headers removed, count the outcome, map failures to statuses.

use super::router::{request_host, HostError};
use super::table::Table;
use super::ProxyCtx;
use crate::admin::metrics::RequestCounters;
use crate::error::ProxyError;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri, Version};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

pub type ProxyBody = Either<Incoming, Full<Bytes>>;

pub async fn handle(
    ctx: Arc<ProxyCtx>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let table = ctx.table.load_full();
    Ok(match forward(&table, req).await {
        Ok(resp) => resp,
        Err((err, counters)) => {
            let status = err.status();
            counters.record(status.as_u16());
            tracing::debug!(%peer, side = err.side().as_str(), status = status.as_u16(), error = %err, "request failed");
            local_response(status, &err.to_string())
        }
    })
}

type Failure<'a> = (ProxyError, &'a RequestCounters);

async fn forward(
    table: &Table,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Failure<'_>> {
    let cluster_index = match request_host(&req) {
        Ok(host) => table.snapshot.routes.lookup(host.as_deref()),
        Err(e) => {
            let why = match e {
                HostError::Missing => "missing Host header",
                HostError::Multiple => "more than one Host header",
                HostError::Invalid => "invalid Host header",
            };
            return Err((ProxyError::BadRequest(why), &table.unrouted));
        }
    };
    let Some(cluster) = cluster_index.and_then(|i| table.clusters.get(i)) else {
        return Err((ProxyError::NoRoute, &table.unrouted));
    };
    let Some(endpoint) = cluster.wrr.pick().and_then(|i| cluster.endpoints.get(i)) else {
        return Err((
            ProxyError::NoEndpoint(cluster.name.clone()),
            &cluster.unplaced,
        ));
    };
    let counters = &endpoint.counters;
    let upstream_req =
        to_upstream(req, &endpoint.authority).map_err(|e| (ProxyError::Internal(e), counters))?;
    let sent = tokio::time::timeout(
        cluster.response_timeout,
        cluster.client.request(upstream_req),
    );
    let err = match sent.await {
        Ok(Ok(mut resp)) => {
            strip_hop_by_hop(resp.headers_mut());
            counters.record(resp.status().as_u16());
            return Ok(resp.map(Either::Left));
        }
        Ok(Err(source)) if source.is_connect() => ProxyError::UpstreamConnect {
            endpoint: endpoint.address.to_string(),
            source,
        },
        Ok(Err(source)) => ProxyError::Upstream {
            endpoint: endpoint.address.to_string(),
            source,
        },
        Err(_) => ProxyError::UpstreamTimeout {
            endpoint: endpoint.address.to_string(),
            timeout: cluster.response_timeout,
        },
    };
    Err((err, counters))
}

/// Rewrites the request for the endpoint: absolute URI for the pool, HTTP/1.1, Host kept.
fn to_upstream(req: Request<Incoming>, authority: &Authority) -> Result<Request<Incoming>, String> {
    let (mut parts, body) = req.into_parts();
    // An absolute-form request names its host in the URI: that is the Host upstream sees.
    if let Some(orig) = parts.uri.authority() {
        let value = HeaderValue::from_str(orig.as_str()).map_err(|e| e.to_string())?;
        parts.headers.insert(header::HOST, value);
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| e.to_string())?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    Ok(Request::from_parts(parts, body))
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes RFC 9110 hop-by-hop headers and every header the Connection header names. Most
/// messages carry none: one scan of the names present (no hashing) skips the removals.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| HOP_BY_HOP.contains(&k.as_str())) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A response we generate ourselves (errors): short text body, never cached.
pub fn local_response(status: hyper::StatusCode, message: &str) -> Response<ProxyBody> {
    let body = format!(
        "{} {}\n{message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }
}
