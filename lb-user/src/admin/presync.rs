//! The admin address before the first Kubernetes sync: `/readyz` (and `/healthz`) 503, nothing is
//! served yet, until the real admin endpoint takes the address over.
//!
//! `/healthz` stays "started" (deploy/'s startupProbe keeps liveness off until it answers, and
//! tests/tests/deploy_capabilities.rs reads it as "XDP attached"), so it is 503 here too.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The waiting server; [`PreSync::stop`] frees the address.
pub struct PreSync {
    task: JoinHandle<()>,
}

/// Binds `addr` and answers probes on the current runtime until stopped.
pub async fn serve(addr: SocketAddr) -> Result<PreSync> {
    let sock = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin endpoint on {addr}"))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = sock.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(answer);
                let _ = http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(PreSync { task })
}

impl PreSync {
    /// Closes the listening socket (open probe connections are ended too).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/readyz" | "/healthz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first full list from the Kubernetes API\n",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: waiting for the first full list from the Kubernetes API\n",
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}
