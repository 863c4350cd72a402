//! Active checks: one probe of one endpoint (HTTP request or TCP connect) with a timeout,
//! and the per-endpoint loop that runs it with jitter and reports each result.

use crate::config::{status_range, ActiveCheck, CheckKind};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Bytes of a check response read for `body_contains`.
const BODY_LIMIT: usize = 64 * 1024;

/// One result, sent to the monitor.
#[derive(Debug)]
pub struct CheckResult {
    pub key: super::EpKey,
    pub generation: u64,
    pub result: Result<(), String>,
}

/// Probes `addr` once: Ok, or why it failed.
pub async fn probe(addr: SocketAddr, check: &ActiveCheck) -> Result<(), String> {
    match tokio::time::timeout(check.timeout.0, probe_inner(addr, check)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout after {:?}", check.timeout.0)),
    }
}

async fn probe_inner(addr: SocketAddr, check: &ActiveCheck) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if check.kind == CheckKind::Tcp {
        return Ok(());
    }
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http: {e}"))?;
    let driver = tokio::spawn(conn);
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    let req = http::Request::builder()
        .method(check.method.as_str())
        .uri(check.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "lb-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let result = async {
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("http: {e}"))?;
        let status = resp.status().as_u16();
        let ok = check
            .expect_status
            .iter()
            .filter_map(|s| status_range(s))
            .any(|(a, b)| (a..=b).contains(&status));
        if !ok {
            return Err(format!("status {status}"));
        }
        if let Some(needle) = &check.body_contains {
            let body = match Limited::new(resp.into_body(), BODY_LIMIT).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return Err(format!("reading the body: {e}")),
            };
            if !contains(&body, needle.as_bytes()) {
                return Err(format!("body does not contain {needle:?}"));
            }
        }
        Ok(())
    }
    .await;
    driver.abort();
    result
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Checks one endpoint forever (the monitor aborts the task when its config changes).
/// The first check comes after a random part of the interval, so endpoints do not beat in step.
pub async fn run(
    key: super::EpKey,
    generation: u64,
    check: ActiveCheck,
    tx: mpsc::Sender<CheckResult>,
) {
    let interval = check.interval.0;
    tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
    loop {
        let result = probe(key.1, &check).await;
        let sent = tx
            .send(CheckResult {
                key: key.clone(),
                generation,
                result,
            })
            .await;
        if sent.is_err() {
            return;
        }
        tokio::time::sleep(jittered(interval, check.jitter_percent)).await;
    }
}

fn jittered(interval: Duration, percent: u32) -> Duration {
    let spread = f64::from(percent.min(50)) / 100.0;
    interval.mul_f64(1.0 + spread * (2.0 * fastrand::f64() - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn check(yaml: &str) -> ActiveCheck {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// A one-shot server answering every connection with `reply`.
    async fn server(reply: &'static str) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..16 {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_status_body_and_tcp() {
        let ok = server("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nhealthy").await;
        assert_eq!(probe(ok, &check("{}")).await, Ok(()));
        assert_eq!(probe(ok, &check("{body_contains: healthy}")).await, Ok(()));
        let err = probe(ok, &check("{body_contains: ready}"))
            .await
            .unwrap_err();
        assert!(err.contains("body does not contain"), "{err}");
        let err = probe(ok, &check("{expect_status: ['204']}"))
            .await
            .unwrap_err();
        assert_eq!(err, "status 200");
        let bad = server("HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(probe(bad, &check("{}")).await, Err("status 503".into()));
        assert_eq!(probe(bad, &check("{type: tcp}")).await, Ok(()));
        let garbage = server("garbage\r\n\r\n").await;
        assert!(probe(garbage, &check("{}"))
            .await
            .unwrap_err()
            .starts_with("http"));
    }

    #[tokio::test]
    async fn refused_and_timeout() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = l.local_addr().unwrap();
        drop(l);
        let err = probe(closed, &check("{type: tcp}")).await.unwrap_err();
        assert!(err.starts_with("connect"), "{err}");
        // Accepts (kernel backlog) but never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let err = probe(addr, &check("{timeout: 100ms, interval: 1s}"))
            .await
            .unwrap_err();
        assert!(err.starts_with("timeout"), "{err}");
        drop(silent);
    }

    #[test]
    fn jitter_stays_in_range() {
        let i = Duration::from_secs(2);
        for _ in 0..100 {
            let j = jittered(i, 10);
            assert!(j >= Duration::from_millis(1800) && j <= Duration::from_millis(2200));
        }
    }
}
