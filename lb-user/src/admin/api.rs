//! The runtime API (`/api/v1`): read the status document, change an endpoint's weight or
//! state. Loopback (or `admin.allow`) only, bearer token when configured; errors are 4xx JSON.

use super::{Admin, Reply};
use crate::publisher::Input;
use crate::runtime::{Command, Refused};
use http_body_util::{BodyExt, Limited};
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const MAX_BODY: usize = 64 * 1024;
const JSON: &str = "application/json";

fn error(status: u16, message: impl Into<String>) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        JSON,
        json!({"error": message.into()}).to_string() + "\n",
    )
}

pub async fn handle(admin: &Admin, peer: SocketAddr, req: Request<hyper::body::Incoming>) -> Reply {
    let table = admin.ctx.table.load_full();
    let snap = &table.snapshot;
    let ip = peer.ip().to_canonical();
    if !snap.config.admin.allow.iter().any(|c| c.0.contains(&ip)) {
        tracing::warn!(client = %peer, "runtime API request refused: address not in admin.allow");
        return error(
            403,
            format!("{ip} may not use the runtime API (admin.allow)"),
        );
    }
    if let Some(token) = &snap.admin_token {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())) {
            return error(401, "missing or wrong bearer token");
        }
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segs: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (req.method().clone(), segs.as_slice()) {
        (Method::GET, ["api", "v1", "status"]) => ok(super::status::document(&table)),
        (Method::GET, ["api", "v1", "clusters"]) => {
            let doc = super::status::document(&table);
            ok(json!({"version": doc["version"], "clusters": doc["clusters"]}))
        }
        (Method::GET, ["api", "v1", "clusters", c]) => {
            let doc = super::status::document(&table);
            match doc["clusters"]
                .as_array()
                .and_then(|cs| cs.iter().find(|x| x["name"] == *c))
            {
                Some(cl) => ok(cl.clone()),
                None => error(404, format!("unknown cluster {c:?}")),
            }
        }
        (Method::PUT | Method::POST, ["api", "v1", "clusters", c, "endpoints", e]) => {
            let (c, e) = (c.to_string(), e.to_string());
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(413, format!("body larger than {MAX_BODY} bytes")),
            };
            change(admin, &c, &e, &body).await
        }
        (Method::GET, ["api", "v1", "workers"]) => ok(admin.metrics.workers.status()),
        (Method::PUT | Method::POST, ["api", "v1", "workers", k]) => {
            let k = k.to_string();
            match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => match admin.metrics.workers.put(&k, &b.to_bytes()) {
                    Ok(v) => ok(v),
                    Err(crate::proxy::workers::Refused(s, m)) => error(s, m),
                },
                Err(_) => error(413, format!("body larger than {MAX_BODY} bytes")),
            }
        }
        (_, ["api", "v1", "status" | "clusters" | "workers"] | ["api", "v1", "clusters", _]) => {
            error(405, "only GET")
        }
        (_, ["api", "v1", "clusters", _, "endpoints", _] | ["api", "v1", "workers", _]) => {
            error(405, "use PUT or POST")
        }
        _ => error(
            404,
            "unknown API path: GET /api/v1/status, GET /api/v1/clusters[/NAME], PUT /api/v1/clusters/NAME/endpoints/NAME, GET /api/v1/workers, PUT /api/v1/workers/K",
        ),
    }
}

fn ok(v: serde_json::Value) -> Reply {
    (StatusCode::OK, JSON, v.to_string() + "\n")
}

/// Sends the command to the publisher, then waits until the proxy serves that version, so a
/// 200 means the change is in effect.
async fn change(admin: &Admin, cluster: &str, endpoint: &str, body: &[u8]) -> Reply {
    let cmd = match Command::from_json(cluster, endpoint, body) {
        Ok(c) => c,
        Err(Refused(s, m)) => return error(s, m),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if admin.inputs.send(Input::Runtime(cmd, tx)).is_err() {
        return error(503, "shutting down");
    }
    let version = match rx.await {
        Ok(Ok(v)) => v,
        Ok(Err(Refused(s, m))) => return error(s, m),
        Err(_) => return error(503, "shutting down"),
    };
    let mut applied = admin.ctx.applied.subscribe();
    let live = tokio::time::timeout(Duration::from_secs(2), applied.wait_for(|v| *v >= version));
    if !matches!(live.await, Ok(Ok(_))) {
        return error(503, format!("version {version} not applied within 2 s"));
    }
    let t = admin.ctx.table.load();
    // Only this cluster's part of the status document.
    let found = t
        .clusters
        .iter()
        .enumerate()
        .find(|(_, c)| *c.name == *cluster)
        .map(|(i, c)| {
            let views = t.snapshot.clusters.get(i).map(|v| &v.endpoints[..]);
            super::status::cluster(c, views)
        });
    let found = found
        .as_ref()
        .and_then(|c| c["endpoints"].as_array())
        .and_then(|es| {
            es.iter()
                .find(|x| x["name"] == endpoint || x["address"] == endpoint)
        })
        .cloned();
    ok(json!({"version": t.snapshot.version, "cluster": cluster, "endpoint": found}))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `%5B::1%5D:80` → `[::1]:80`; malformed escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_and_compare() {
        assert_eq!(percent_decode("%5B::1%5D:80"), "[::1]:80");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%aé"), "%aé");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
