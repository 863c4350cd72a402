//! Offline `kubectl apply --dry-run=client`: a loopback stand-in for the API server's discovery
//! (fixed JSON documents by path, 404 Status for every object) and a bounded kubectl run against it.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest a discovery server lives, whatever the test does.
const LIFETIME: Duration = Duration::from_secs(60);
/// Longest one kubectl run may take.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `docs` (by request path, query ignored) as JSON; stops on drop.
pub struct Discovery {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Discovery {
    pub fn start(docs: BTreeMap<String, Value>) -> Result<Discovery> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the discovery stub")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let until = Instant::now() + LIFETIME;
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = answer(stream, &docs);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Discovery {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request per connection (`Connection: close`).
fn answer(mut stream: TcpStream, docs: &BTreeMap<String, Value>) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 65536 {
            bail!("incomplete request head");
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    let (status, body) = match docs.get(path) {
        Some(doc) => ("200 OK", doc.clone()),
        None => (
            "404 Not Found",
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
        ),
    };
    let body = body.to_string();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// One API resource for discovery: `(group, version, plural, kind, namespaced)`.
pub type ApiResource = (String, String, String, String, bool);

/// The legacy discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/G/V`) for `resources`.
pub fn discovery_docs(resources: &[ApiResource]) -> BTreeMap<String, Value> {
    let mut by_gv: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for (group, version, plural, kind, namespaced) in resources {
        by_gv
            .entry((group.clone(), version.clone()))
            .or_default()
            .push(json!({"name": plural, "singularName": kind.to_lowercase(),
                         "namespaced": namespaced, "kind": kind,
                         "verbs": ["get", "list", "create", "update", "patch", "delete"]}));
    }
    let mut docs = BTreeMap::new();
    docs.insert(
        "/api".into(),
        json!({"kind": "APIVersions", "versions": ["v1"]}),
    );
    let mut groups = Vec::new();
    for ((group, version), list) in by_gv {
        let gv = if group.is_empty() {
            version.clone()
        } else {
            format!("{group}/{version}")
        };
        let path = if group.is_empty() {
            format!("/api/{version}")
        } else {
            let v = json!({"groupVersion": gv, "version": version});
            groups.push(json!({"name": group, "versions": [v], "preferredVersion": v}));
            format!("/apis/{gv}")
        };
        docs.insert(
            path,
            json!({"kind": "APIResourceList", "groupVersion": gv, "resources": list}),
        );
    }
    docs.insert(
        "/apis".into(),
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    );
    docs
}

/// The kubectl binary on PATH, if any (it is not part of this project's toolchain).
pub fn find() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

/// Runs `kubectl apply --dry-run=client --validate=false -f FILE...` against `server` with a
/// throwaway home (no kubeconfig, cache or config of the user's); returns (success, stdout,
/// stderr). Killed after [`KUBECTL_TIMEOUT`].
pub fn dry_run_apply(
    kubectl: &Path,
    server: &str,
    files: &[&Path],
) -> Result<(bool, String, String)> {
    let home = tempfile::tempdir()?;
    // Files, not pipes: nothing can block on a full pipe while the loop below waits.
    let (out_path, err_path) = (home.path().join("stdout"), home.path().join("stderr"));
    let mut cmd = Command::new(kubectl);
    cmd.args([
        "apply",
        "--dry-run=client",
        "--validate=false",
        "--request-timeout=10s",
    ])
    .arg(format!("--server={server}"))
    .env("HOME", home.path())
    .env_remove("KUBECONFIG")
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(&out_path)?)
    .stderr(std::fs::File::create(&err_path)?);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", kubectl.display()))?;
    let deadline = Instant::now() + KUBECTL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("kubectl did not finish within {KUBECTL_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok((
        status.success(),
        std::fs::read_to_string(&out_path)?,
        std::fs::read_to_string(&err_path)?,
    ))
}
