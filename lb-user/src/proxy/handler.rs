//! One request, front half: rate limit, framing checks, host and route, ACLs, redirects, body
//! limits, cluster choice (canary, weights), header work; then forward.rs, then the response.

use super::body::{DownBody, Finish, ReqBody};
use super::conn::ConnInfo;
use super::exchange::{ClusterActive, Exchange};
use super::forward::{self, InBody, Prepared};
use super::headers::{self, cookie};
use super::mirror::{Copy, MirrorState};
use super::router::{request_host, HostError};
use super::table::{Action, ListenerState, RouteState, Table};
use super::upstream::ConnFor;
use super::ProxyCtx;
use crate::error::ProxyError;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

const TRACEPARENT: header::HeaderName = header::HeaderName::from_static("traceparent");
const TRACESTATE: header::HeaderName = header::HeaderName::from_static("tracestate");

pub async fn handle(
    ctx: Arc<ProxyCtx>,
    conn: Arc<ConnInfo>,
    req: Request<ReqBody>,
) -> Result<Response<DownBody>, Infallible> {
    let table = ctx.table.load_full();
    let mut ex = Exchange::new(
        table.clone(),
        conn.clone(),
        req.method().clone(),
        req.uri().clone(),
        req.version(),
    );
    // The framing guard stops checking after an Upgrade or CONNECT request: if we do not
    // switch protocols, nothing else may be read from this connection.
    let must_close = is_upgrade(&req) || req.method() == hyper::Method::CONNECT;
    let outcome = serve(&table, &conn, &mut ex, req).await;
    let mut resp = match outcome {
        Ok(Outcome::Local(resp)) => {
            ex.status = resp.status().as_u16();
            ex.count_response();
            let len = body_len(resp.body());
            ex.finish(len, *b"--");
            resp
        }
        Ok(Outcome::Proxied(resp, pooled)) => {
            ex.status = resp.status().as_u16();
            ex.count_response();
            resp.map(|inner| DownBody::Proxied {
                inner,
                finish: Some(Box::new(Finish {
                    exchange: ex,
                    conn: pooled,
                })),
                bytes: 0,
            })
        }
        Err(err) => {
            let status = err.status();
            ex.status = status.as_u16();
            ex.count_response();
            ex.set_error(err.side(), err.to_string());
            let termination = err.termination();
            let resp = local_response(
                status,
                &err.to_string(),
                matches!(err, ProxyError::RateLimited),
            );
            let len = body_len(resp.body());
            ex.finish(len, termination);
            resp
        }
    };
    if must_close && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

pub enum Outcome {
    Local(Response<DownBody>),
    Proxied(
        Response<super::body::RespBody>,
        Option<(super::upstream::Conn, Arc<super::table::Endpoint>)>,
    ),
}

async fn serve(
    table: &Arc<Table>,
    conn: &ConnInfo,
    ex: &mut Exchange,
    mut req: Request<ReqBody>,
) -> Result<Outcome, ProxyError> {
    let listener = table.listeners.get(&*conn.listener).cloned();
    if let Some((_, rl)) = listener.as_ref().and_then(|l| l.rate.as_ref()) {
        if !rl.check(conn.client.ip(), Instant::now()) {
            return Err(ProxyError::RateLimited);
        }
    }
    check_framing(&req)?;
    let host = match request_host(&req) {
        Ok(h) => h.map(|h| h.into_owned()).unwrap_or_default(),
        Err(HostError::Missing) => return Err(ProxyError::BadRequest("missing Host header")),
        Err(HostError::Multiple) => {
            return Err(ProxyError::BadRequest("more than one Host header"))
        }
        Err(HostError::Invalid) => return Err(ProxyError::BadRequest("invalid Host header")),
    };
    ex.host = host;
    let host = (!ex.host.is_empty()).then_some(ex.host.as_str());
    let m = table
        .snapshot
        .routes
        .lookup(&conn.listener, host, &req)
        .ok_or(ProxyError::NoRoute)?;
    ex.route = Some(m.route);
    let route = table.routes.get(m.route).ok_or(ProxyError::NoRoute)?;
    let ip = conn.client.ip().to_canonical();
    if (!route.allow.is_empty() && !route.allow.iter().any(|n| n.contains(&ip)))
        || route.deny.iter().any(|n| n.contains(&ip))
    {
        return Err(ProxyError::Forbidden(ip));
    }
    // The route's limit after the listener's: only requests that reach this route count.
    if let Some((_, rl)) = &route.rate {
        if !rl.check(conn.client.ip(), Instant::now()) {
            return Err(ProxyError::RateLimited);
        }
    }
    if let Action::Redirect(rd) = &route.action {
        let port = super::router::request_port(&req);
        let loc = headers::redirect_location(rd, req.uri(), &ex.host, port, conn.tls, m.prefix_len)
            .ok_or(ProxyError::Internal(
                "cannot build redirect location".into(),
            ))?;
        let status = StatusCode::from_u16(rd.status).unwrap_or(StatusCode::FOUND);
        let mut resp = local_response(status, "", false);
        resp.headers_mut().insert(header::LOCATION, loc);
        finish_response(route, conn, resp.headers_mut());
        return Ok(Outcome::Local(resp));
    }
    let max_body = listener.as_ref().map_or(0, |l| l.limits.max_body_bytes);
    if max_body > 0 && content_length(&req).is_some_and(|n| n > max_body) {
        return Err(ProxyError::TooLarge(max_body));
    }
    let cluster_idx = choose_cluster(route, &req);
    let cluster = table
        .clusters
        .get(cluster_idx)
        .ok_or_else(|| ProxyError::Internal("route names a missing cluster".into()))?;
    ex.cluster = Some(cluster_idx);
    ex.cluster_active = Some(ClusterActive::new(cluster.runtime.clone()));

    // Header work on the way up.
    let upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let upgrade_value = req.headers().get(header::UPGRADE).cloned();
    let h = req.headers_mut();
    headers::strip_hop_by_hop(h, cluster.cfg.protocol == crate::config::Protocol::Http2);
    if let (Some(_), Some(v)) = (&upgrade, upgrade_value) {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, v);
    }
    let trusted = trusted(listener.as_deref(), conn);
    let (set, gen_id) = listener
        .as_ref()
        .map_or((headers::ForwardedSet::ALL, true), |l| {
            (l.forwarded_set, l.generate_request_id)
        });
    headers::forwarded(h, set, &conn.client_id, conn.tls, &ex.host, trusted);
    ex.request_id = match gen_id {
        true => Some(headers::request_id(h)),
        false => h.get(headers::REQUEST_ID).cloned(),
    };
    if table.tracer.propagates() {
        let span = table.tracer.start_at(h, ex.accepted());
        h.insert(TRACEPARENT, span.traceparent());
        match span.tracestate() {
            Some(v) => h.insert(TRACESTATE, v.clone()),
            None => h.remove(TRACESTATE),
        };
        ex.span = Some(span);
    }
    route.request_edits.apply(h);
    if let Some(auth) = req.uri().authority() {
        if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let path = match &route.rewrite {
        Some(p) => headers::rewrite_prefix(req.uri(), m.prefix_len, p)
            .ok_or_else(|| ProxyError::Internal("cannot rewrite path".into()))?,
        None => req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or(http::uri::PathAndQuery::from_static("/")),
    };
    let affinity = cluster
        .cfg
        .affinity
        .as_ref()
        .and_then(|a| cookie(req.headers(), &a.cookie).map(str::to_string));
    let (parts, body) = req.into_parts();
    let body = match route.mirror.as_ref().filter(|m| m.select()) {
        Some(m) => mirror(table, conn, m, &parts, &path, body, max_body).await?,
        None => InBody::Stream(body),
    };
    let prepared = Prepared::new(
        (parts, body),
        path,
        max_body,
        cluster,
        ex,
        upgrade,
        affinity.clone(),
    )
    .await?;
    let (mut resp, pooled, endpoint) = forward::run(cluster, conn, ex, prepared).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        headers::strip_hop_by_hop(resp.headers_mut(), false);
    }
    finish_response(route, conn, resp.headers_mut());
    if let Some(aff) = &cluster.cfg.affinity {
        if affinity.as_deref() != Some(endpoint.affinity_id.as_str()) {
            let v = format!("{}={}; Path=/; HttpOnly", aff.cookie, endpoint.affinity_id);
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }
    Ok(Outcome::Proxied(resp, pooled))
}

/// Copies the request to the route's mirror. A body is read ahead when it may be copied
/// (known length within the mirror's limit); otherwise the request is not mirrored (skipped).
async fn mirror(
    table: &Arc<Table>,
    conn: &ConnInfo,
    m: &MirrorState,
    parts: &http::request::Parts,
    path: &http::uri::PathAndQuery,
    body: ReqBody,
    max_body: u64,
) -> Result<InBody, ProxyError> {
    let len = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let fits = |n: u64| n == 0 || (m.body && n <= m.max_body && (max_body == 0 || n <= max_body));
    if parts.headers.contains_key(header::UPGRADE) || !len.is_some_and(fits) {
        m.counters.inc("skipped");
        return Ok(InBody::Stream(body));
    }
    let bytes = if len == Some(0) {
        Bytes::new()
    } else {
        Box::pin(http_body_util::Limited::new(body, m.max_body as usize).collect())
            .await
            .map_err(|e| ProxyError::BadBody(e.to_string()))?
            .to_bytes()
    };
    let copy = Copy {
        method: parts.method.clone(),
        uri: hyper::Uri::from(path.clone()),
        headers: parts.headers.clone(),
        body: (!bytes.is_empty()).then(|| bytes.clone()),
    };
    let who = ConnFor {
        client: conn.client,
        local: conn.local,
        upgrade: false,
    };
    m.send(table.clone(), who, copy);
    Ok(InBody::Buffered(bytes))
}

fn finish_response(route: &RouteState, conn: &ConnInfo, h: &mut hyper::HeaderMap) {
    route.response_edits.apply(h);
    if let (Some(v), true) = (&route.hsts, conn.tls) {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
}

fn trusted(listener: Option<&ListenerState>, conn: &ConnInfo) -> bool {
    let ip = conn.peer.ip().to_canonical();
    listener.is_some_and(|l| l.forwarded_trusted.iter().any(|n| n.contains(&ip)))
}

/// Canary header/cookie first, then the weighted split.
fn choose_cluster<B>(route: &RouteState, req: &Request<B>) -> usize {
    if let Some((c, h, ck)) = &route.canary {
        let by_header = h.as_ref().is_some_and(|h| {
            req.headers()
                .get_all(h.name.as_str())
                .iter()
                .any(|v| v.as_bytes() == h.value.as_bytes())
        });
        let by_cookie = ck
            .as_ref()
            .is_some_and(|ck| cookie(req.headers(), &ck.name) == Some(ck.value.as_str()));
        if by_header || by_cookie {
            return *c;
        }
    }
    match &route.action {
        Action::Cluster(c) => *c,
        Action::Split { wrr, clusters } => wrr
            .pick()
            .and_then(|i| clusters.get(i).copied())
            .unwrap_or(usize::MAX),
        Action::Redirect(_) => usize::MAX,
    }
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Framing a proxy must not forward (request smuggling), checked again after the raw-byte
/// guard (h1guard.rs) for what reaches us by other paths; CONNECT (no tunnels here).
fn check_framing<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.method() == hyper::Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    let h = req.headers();
    if h.contains_key(header::TRANSFER_ENCODING) {
        if h.contains_key(header::CONTENT_LENGTH) {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if req.version() == Version::HTTP_10 {
            return Err(ProxyError::BadRequest("Transfer-Encoding in HTTP/1.0"));
        }
    }
    Ok(())
}

fn body_len(b: &DownBody) -> u64 {
    hyper::body::Body::size_hint(b).exact().unwrap_or(0)
}

/// A response we generate ourselves (errors, redirects): short text body, never cached.
/// Rate-limited clients are told when to come back.
pub fn local_response(status: StatusCode, message: &str, retry_after: bool) -> Response<DownBody> {
    let body = format!(
        "{} {}\n{message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(DownBody::local(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if status.is_client_error()
        && status != StatusCode::NOT_FOUND
        && status != StatusCode::FORBIDDEN
        && status != StatusCode::TOO_MANY_REQUESTS
    {
        // The framing of what follows cannot be trusted: do not read another request.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
