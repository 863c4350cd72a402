//! `lb ctl`: the runtime API from the command line: show clusters and endpoints, set weights
//! (absolute or percent), drain, maint, ready, reset. One HTTP/1.1 request per command.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Action {
    Status,
    SetWeight(String),
    State(&'static str),
    Reset,
    /// The L7 workers of listeners with workers > 1.
    Workers,
    /// Drain or ready worker K (on every listener that has it, or on one).
    WorkerState {
        worker: u32,
        state: &'static str,
        listener: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Ctl {
    pub admin: SocketAddr,
    pub token_file: Option<PathBuf>,
    pub json: bool,
}

impl Ctl {
    /// Runs one command; returns what to print.
    pub async fn run(&self, action: Action, target: Option<(String, String)>) -> Result<String> {
        let (method, path, body) = match (&action, &target) {
            (Action::Status, _) => ("GET", "/api/v1/status".to_string(), None),
            (Action::Workers, _) => ("GET", "/api/v1/workers".to_string(), None),
            (
                Action::WorkerState {
                    worker,
                    state,
                    listener,
                },
                _,
            ) => {
                let body = json!({ "state": state, "listener": listener });
                let path = format!("/api/v1/workers/{worker}");
                ("PUT", path, Some(body.to_string()))
            }
            (a, Some((c, e))) => {
                let body = match a {
                    Action::SetWeight(w) => match w.parse::<u64>() {
                        Ok(n) => json!({ "weight": n }),
                        Err(_) => json!({ "weight": w }),
                    },
                    Action::State(s) => json!({ "state": s }),
                    Action::Reset => json!({ "reset": true }),
                    _ => unreachable!("handled above"),
                };
                let path = format!("/api/v1/clusters/{}/endpoints/{}", encode(c), encode(e));
                ("PUT", path, Some(body.to_string()))
            }
            _ => bail!("this command needs CLUSTER and ENDPOINT"),
        };
        let (status, text) = self.request(method, &path, body).await?;
        let v: Value = serde_json::from_str(&text).with_context(|| {
            format!("the admin endpoint answered {status} with non-JSON: {text}")
        })?;
        if !(200..300).contains(&status) {
            let msg = v["error"].as_str().unwrap_or(text.trim());
            bail!("{status}: {msg}");
        }
        if self.json {
            return Ok(serde_json::to_string_pretty(&v)?);
        }
        Ok(match action {
            Action::Status => status_table(&v),
            Action::Workers => workers_table(&v),
            Action::WorkerState { worker, state, .. } => {
                let names: Vec<&str> = v["listeners"]
                    .as_array()
                    .map(|ls| ls.iter().filter_map(|l| l["listener"].as_str()).collect())
                    .unwrap_or_default();
                format!("worker {worker}: {state} on {}", names.join(", "))
            }
            _ => {
                let e = &v["endpoint"];
                format!(
                    "{}/{}: state {}, weight {} (effective {}), version {}",
                    v["cluster"].as_str().unwrap_or(""),
                    e["name"].as_str().unwrap_or(""),
                    e["state"].as_str().unwrap_or("?"),
                    e["weight"],
                    e["effective_weight"],
                    v["version"]
                )
            }
        })
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String)> {
        let token = match &self.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let work = async {
            let stream = tokio::net::TcpStream::connect(self.admin)
                .await
                .with_context(|| format!("connecting to the admin endpoint {}", self.admin))?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, self.admin.to_string())
                .header(http::header::CONTENT_TYPE, "application/json");
            if let Some(t) = token {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
            let resp = send.send_request(req).await?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .map_err(|_| anyhow!("the admin endpoint {} did not answer in 10 s", self.admin))?
    }
}

/// Path segment encoding for endpoint names and addresses (`[::1]:80`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn status_table(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "snapshot version {}", v["version"]);
    let empty = Vec::new();
    for c in v["clusters"].as_array().unwrap_or(&empty) {
        let _ = writeln!(
            out,
            "\ncluster {} ({}, backups: {}, in flight {})",
            c["name"].as_str().unwrap_or(""),
            c["balance"].as_str().unwrap_or(""),
            c["backups"].as_str().unwrap_or(""),
            c["active"]
        );
        let _ = writeln!(
            out,
            "  {:<16} {:<22} {:<6} {:>6} {:>9} {:>7} {:>8} {:>8}  health",
            "ENDPOINT", "ADDRESS", "STATE", "WEIGHT", "EFFECTIVE", "ACTIVE", "2XX", "5XX"
        );
        for e in c["endpoints"].as_array().unwrap_or(&empty) {
            let backup = if e["backup"] == true { " (backup)" } else { "" };
            let reason = e["health"]["reason"].as_str().unwrap_or("");
            let _ = writeln!(
                out,
                "  {:<16} {:<22} {:<6} {:>6} {:>9} {:>7} {:>8} {:>8}  {}{}{}",
                e["name"].as_str().unwrap_or(""),
                e["address"].as_str().unwrap_or(""),
                e["state"].as_str().unwrap_or(""),
                e["weight"].to_string(),
                e["effective_weight"].to_string(),
                e["active_connections"].to_string(),
                e["requests"]["2xx"].to_string(),
                e["requests"]["5xx"].to_string(),
                e["health"]["active"].as_str().unwrap_or(""),
                backup,
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                },
            );
        }
    }
    out
}

fn workers_table(v: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let listeners = v["listeners"].as_array().unwrap_or(&empty);
    if listeners.is_empty() {
        out.push_str("no listener has workers > 1\n");
    }
    for l in listeners {
        let _ = writeln!(
            out,
            "listener {} ({}, steering {}, program {})",
            l["listener"].as_str().unwrap_or(""),
            l["address"].as_str().unwrap_or(""),
            l["steering"].as_str().unwrap_or(""),
            l["program"].as_str().unwrap_or(""),
        );
        let _ = writeln!(
            out,
            "  {:<6} {:<6} {:>11} {:>10}",
            "WORKER", "STATE", "CONNECTIONS", "ACCEPTED"
        );
        for w in l["workers"].as_array().unwrap_or(&empty) {
            let _ = writeln!(
                out,
                "  {:<6} {:<6} {:>11} {:>10}",
                w["worker"].to_string(),
                w["state"].as_str().unwrap_or(""),
                w["connections"].to_string(),
                w["accepted"].to_string(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_addresses_and_prints_a_table() {
        assert_eq!(encode("[::1]:80"), "%5B::1%5D:80");
        assert_eq!(encode("on prem"), "on%20prem");
        let v = json!({"version": 3, "clusters": [{"name": "app", "balance": "round_robin",
            "backups": "first", "active": 0, "endpoints": [{"name": "cloud",
            "address": "127.0.0.1:1", "state": "down", "weight": 5, "effective_weight": 0,
            "active_connections": 0, "backup": false, "requests": {"2xx": 1, "5xx": 4},
            "health": {"active": "unchecked", "reason": "3 consecutive errors"}}]}]});
        let t = status_table(&v);
        assert!(t.contains("cluster app (round_robin"), "{t}");
        assert!(
            t.contains("cloud") && t.contains("down") && t.contains("3 consecutive errors"),
            "{t}"
        );
    }
}
