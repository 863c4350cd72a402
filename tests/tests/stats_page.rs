//! The admin `/stats` page in a real headless Chromium: it renders routes, clusters and endpoints
//! from `/stats.json` (states, badges, counters, mirror), shows no error banner, can be
//! screenshotted (kept at `target/stats-page.png` for humans), and refreshes itself: a state
//! change made through the runtime API shows up in an already open page within a few refreshes.
//!
//! Chromium must be installed at /usr/bin/chromium (`cargo xtask setup` installs it); the test
//! fails, it does not skip, when it is missing. Chromium only talks to loopback: the page and
//! its DevTools endpoint are on 127.0.0.1, background networking is off and every host name
//! resolves to nothing.

mod support;

use lb_tests::http::{self, Backend, KeepAliveClient};
use lb_tests::lb::{free_local_addr, Lb};
use lb_tests::lb_bin;
use lb_tests::process::ChildGuard;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::admin::{put_endpoint, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";
const T: Duration = Duration::from_secs(5);
/// Upper bound for one Chromium run (dump or screenshot).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an open page may take to show a change (it polls /stats.json every 2 s).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Chromium

fn chromium() -> PathBuf {
    let path = PathBuf::from(CHROMIUM);
    assert!(
        path.is_file(),
        "{CHROMIUM} not found: the /stats page test needs Chromium (Debian package `chromium`); \
         run `cargo xtask setup` to install it"
    );
    path
}

/// A headless Chromium in its own process group with its own profile directory; the whole
/// group is SIGKILLed and the leader reaped on drop (then the profile is removed).
struct Browser {
    child: ChildGuard,
    profile: tempfile::TempDir,
    out: PathBuf,
    err: PathBuf,
}

impl Browser {
    /// `chromium --headless=new ... EXTRA... URL`, stdout and stderr to files in the profile dir.
    fn spawn(extra: &[String], url: &str) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("lbt-chromium-")
            .tempdir()
            .unwrap();
        let (out, err) = (
            profile.path().join("stdout.txt"),
            profile.path().join("stderr.txt"),
        );
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            // Loopback only: no background services, and host names never resolve.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--no-first-run",
            "--no-default-browser-check",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0);
        let child = ChildGuard(cmd.spawn().expect("spawning chromium"));
        Browser {
            child,
            profile,
            out,
            err,
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    /// The last lines of stderr (Chromium is chatty about D-Bus and the like).
    fn stderr_tail(&self) -> String {
        let bytes = std::fs::read(&self.err).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs to completion within [`BROWSER_TIMEOUT`] (killed otherwise) and must exit 0.
    fn finish(mut self, what: &str) -> Browser {
        let status = self.child.wait_timeout(BROWSER_TIMEOUT);
        self.kill_group();
        match status {
            Some(s) if s.success() => self,
            Some(s) => panic!(
                "chromium ({what}) exited with {s}; stderr:\n{}",
                self.stderr_tail()
            ),
            None => panic!(
                "chromium ({what}) did not finish within {BROWSER_TIMEOUT:?} (killed); stderr:\n{}",
                self.stderr_tail()
            ),
        }
    }

    /// SIGKILL to this browser's own process group (leader and its helpers), then reap.
    fn kill_group(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.0.kill();
        let _ = self.child.wait_timeout(Duration::from_secs(5));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}

fn stats_url(admin: SocketAddr) -> String {
    format!("http://{admin}/stats")
}

/// The DOM after the page had 5 s of (virtual) time: the first fetches of /stats.json rendered.
fn dump_dom(admin: SocketAddr) -> String {
    let extra = [
        "--virtual-time-budget=5000".to_string(),
        "--dump-dom".into(),
    ];
    let b = Browser::spawn(&extra, &stats_url(admin)).finish("--dump-dom");
    let dom = b.stdout();
    assert!(
        dom.contains("</html>"),
        "chromium --dump-dom printed no document ({} bytes); stderr:\n{}",
        dom.len(),
        b.stderr_tail()
    );
    dom
}

/// A 1400x900 screenshot of the page; returns the PNG bytes.
fn screenshot(admin: SocketAddr) -> Vec<u8> {
    let dir = tempfile::Builder::new()
        .prefix("lbt-shot-")
        .tempdir()
        .unwrap();
    let png = dir.path().join("stats.png");
    let extra = [
        "--virtual-time-budget=5000".to_string(),
        format!("--screenshot={}", png.display()),
        "--window-size=1400,900".into(),
    ];
    let b = Browser::spawn(&extra, &stats_url(admin)).finish("--screenshot");
    std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {}: {e}; stderr:\n{}",
            png.display(),
            b.stderr_tail()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// A minimal Chrome DevTools Protocol client (WebSocket over std TcpStream), enough to evaluate
// an expression in the open page.

struct Cdp {
    stream: TcpStream,
    next_id: u64,
}

impl Cdp {
    /// Waits for the browser's DevTools port, finds the page showing `url_part`, connects.
    fn connect(browser: &Browser, url_part: &str) -> Cdp {
        let port_file = browser.profile.path().join("DevToolsActivePort");
        let mut port: Option<u16> = None;
        let found = wait_until(BROWSER_TIMEOUT, || {
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            port = text.lines().next().and_then(|l| l.trim().parse().ok());
            port.is_some()
        });
        assert!(
            found,
            "chromium wrote no DevToolsActivePort within {BROWSER_TIMEOUT:?}; stderr:\n{}",
            browser.stderr_tail()
        );
        let devtools = SocketAddr::from(([127, 0, 0, 1], port.unwrap()));
        // The page target's ws://HOST[:PORT]/devtools/page/ID (HOST echoes our Host header).
        let (mut list, mut path) = (Value::Null, None);
        let found = wait_until(BROWSER_TIMEOUT, || {
            let r = http::get(devtools, "127.0.0.1", "/json/list", T);
            list = r.map_or(Value::Null, |r| {
                serde_json::from_slice(&r.body).unwrap_or_default()
            });
            let page = list.as_array().into_iter().flatten().find(|t| {
                t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains(url_part))
            });
            let ws = page.and_then(|t| t["webSocketDebuggerUrl"].as_str());
            path = ws.and_then(|ws| Some(ws[ws.find("/devtools/")?..].to_string()));
            path.is_some()
        });
        assert!(
            found,
            "no DevTools page target for {url_part} within {BROWSER_TIMEOUT:?}: {list}"
        );
        let path = path.unwrap();
        let mut stream = TcpStream::connect_timeout(&devtools, T).unwrap();
        stream.set_write_timeout(Some(T)).unwrap();
        let handshake = format!(
            "GET {path} HTTP/1.1\r\nHost: {devtools}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(handshake.as_bytes()).unwrap();
        let deadline = Instant::now() + T;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            assert!(
                head.len() < 16 * 1024,
                "oversized WebSocket handshake reply"
            );
            let mut byte = [0u8; 1];
            read_exact_by(&mut stream, &mut byte, deadline);
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "DevTools WebSocket handshake for {path} refused: {head}"
        );
        Cdp { stream, next_id: 1 }
    }

    /// Runtime.evaluate of `expr`, whose value must be a string; returns that string.
    fn eval(&mut self, expr: &str) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": "Runtime.evaluate",
            "params": {"expression": expr, "returnByValue": true}});
        self.send(msg.to_string().as_bytes());
        let deadline = Instant::now() + T;
        for _ in 0..1000 {
            let reply: Value = serde_json::from_str(&self.recv(deadline))
                .unwrap_or_else(|e| panic!("DevTools sent no JSON: {e}"));
            if reply["id"] != id {
                continue; // an event or an older reply
            }
            return match reply["result"]["result"]["value"].as_str() {
                Some(v) => v.to_string(),
                None => panic!("Runtime.evaluate gave no string value: {reply}"),
            };
        }
        panic!("no reply to DevTools request {id}")
    }

    /// One masked text frame.
    fn send(&mut self, payload: &[u8]) {
        let mask = [0x5a, 0x13, 0xc4, 0x7e];
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// One whole (possibly fragmented) text message.
    fn recv(&mut self, deadline: Instant) -> String {
        let mut message = Vec::new();
        for _ in 0..10_000 {
            let mut h = [0u8; 2];
            read_exact_by(&mut self.stream, &mut h, deadline);
            let (fin, opcode, masked) = (h[0] & 0x80 != 0, h[0] & 0x0f, h[1] & 0x80 != 0);
            // Extended payload length: 2 or 8 more bytes, big-endian.
            let extended = |stream: &mut TcpStream, n: usize| {
                let mut b = [0u8; 8];
                read_exact_by(stream, &mut b[8 - n..], deadline);
                u64::from_be_bytes(b)
            };
            let len = match h[1] & 0x7f {
                126 => extended(&mut self.stream, 2),
                127 => extended(&mut self.stream, 8),
                n => u64::from(n),
            };
            assert!(len <= 64 << 20, "DevTools frame of {len} bytes");
            let mut mask = [0u8; 4];
            if masked {
                read_exact_by(&mut self.stream, &mut mask, deadline);
            }
            let mut payload = vec![0u8; len as usize];
            read_exact_by(&mut self.stream, &mut payload, deadline);
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            match opcode {
                0x8 => panic!("DevTools closed the WebSocket"),
                0x9 | 0xa => continue, // ping/pong: not expected, ignored
                _ => message.extend_from_slice(&payload),
            }
            if fin {
                return String::from_utf8_lossy(&message).into_owned();
            }
        }
        panic!("DevTools message in too many fragments")
    }
}

fn read_exact_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    assert!(!left.is_zero(), "DevTools did not answer in time");
    stream.set_read_timeout(Some(left)).unwrap();
    stream
        .read_exact(buf)
        .unwrap_or_else(|e| panic!("reading from DevTools: {e}"));
}

// ---------------------------------------------------------------------------------------------
// DOM helpers (string search over the serialized DOM)

/// The text between the first `start` and the next `end` after it.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

/// The start tag (`<tr id="..." ...>`) of the element with this id.
fn start_tag<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!(" id=\"{id}\""))?;
    let open = dom[..at].rfind('<')?;
    let close = at + dom[at..].find('>')?;
    Some(&dom[open..=close])
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    between(tag, &format!(" {name}=\""), "\"")
}

/// The whole element with this id, up to its closing `</tag>` (elements used here do not
/// nest in themselves).
fn element<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let tag = start_tag(dom, id)?;
    let open = dom.find(tag)?;
    let name: String = tag[1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let close = format!("</{name}>");
    let end = open + dom[open..].find(&close)? + close.len();
    Some(&dom[open..end])
}

/// Text content of markup: tags dropped, the few entities the serializer writes decoded.
fn text(markup: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in markup.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}

/// Texts of the `cell` children (`td` or `th`) in order.
fn cells(markup: &str, cell: &str) -> Vec<String> {
    let open = format!("<{cell}");
    let close = format!("</{cell}>");
    markup
        .split(&open)
        .skip(1)
        .filter_map(|part| {
            let body = &part[part.find('>')? + 1..];
            Some(text(&body[..body.find(&close)?]))
        })
        .collect()
}

/// The value of column `column` (by its header text) in row `row_id` of the table in
/// `section`.
fn column(section: &str, row_id: &str, column: &str) -> String {
    let head =
        block(section, "<thead", "</thead>").unwrap_or_else(|| panic!("no <thead> in {section}"));
    let heads = cells(head, "th");
    let i = heads
        .iter()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("no column {column:?} in {heads:?}"));
    let row = element(section, row_id).unwrap_or_else(|| panic!("no row {row_id} in {section}"));
    let tds = cells(row, "td");
    assert_eq!(tds.len(), heads.len(), "row {row_id}: {tds:?} vs {heads:?}");
    tds[i].clone()
}

/// The element with this id (panics with the DOM when there is none).
fn must<'a>(dom: &'a str, id: &str) -> &'a str {
    element(dom, id).unwrap_or_else(|| panic!("no #{id}; DOM:\n{dom}"))
}

/// The cloud endpoint's row shows `state`: its `data-state` and its badge.
fn assert_cloud_row(dom: &str, state: &str) {
    let row = must(dom, "ep-app-cloud");
    let tag = start_tag(row, "ep-app-cloud").unwrap();
    assert_eq!(attr(tag, "data-state"), Some(state), "{tag}");
    let badge = format!(r#"<span class="state state-{state}">{state}</span>"#);
    assert!(
        row.contains(&badge),
        "no {state} badge in the cloud row: {row}"
    );
}

/// The error banner is there and hidden.
fn assert_no_error(dom: &str) {
    let error = start_tag(dom, "error").unwrap_or_else(|| panic!("no #error; DOM:\n{dom}"));
    let banner = element(dom, "error");
    assert!(error.contains(" hidden"), "error banner shown: {banner:?}");
}

/// From the first `open` to the next `close` (included).
fn block<'a>(markup: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = markup.find(open)?;
    let end = start + markup[start..].find(close)? + close.len();
    Some(&markup[start..end])
}

// ---------------------------------------------------------------------------------------------
// lb side

fn backend(name: &str) -> Backend {
    Backend::start(None, "127.0.0.1:0".parse().unwrap(), name).unwrap()
}

fn config(listen: SocketAddr, onprem: &Backend, cloud: &Backend, shadow: &Backend) -> String {
    format!(
        r#"
listeners: [{{name: http, address: "{listen}"}}]
routes:
  - name: main
    hosts: ["*"]
    cluster: app
    mirror: {{cluster: shadow, percent: 50}}
clusters:
  - name: app
    endpoints:
      - {{name: onprem, address: "{a}"}}
      - {{name: cloud, address: "{b}"}}
    health:
      passive: {{consecutive_errors: 5}}
  - name: shadow
    endpoints:
      - {{name: sink, address: "{c}"}}
"#,
        a = onprem.addr(),
        b = cloud.addr(),
        c = shadow.addr(),
    )
}

/// PUT /api/v1/clusters/app/endpoints/ENDPOINT {"state": STATE}; returns the new version.
fn set_state(admin: SocketAddr, endpoint: &str, state: &str) -> u64 {
    let v = put_endpoint(admin, "app", endpoint, json!({ "state": state }));
    v["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in the API reply {v}"))
}

fn target_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => manifest.join("..").join(d),
        None => manifest.join("..").join("target"),
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn stats_page_renders_live_state_in_chromium() {
    chromium(); // fail first, and clearly, when Chromium is missing
    let (onprem, cloud, shadow) = (backend("onprem"), backend("cloud"), backend("shadow"));
    let (listen, admin) = (free_local_addr(), free_local_addr());
    let yaml = config(listen, &onprem, &cloud, &shadow);
    let lb = Lb::start(&lb_bin(), None, &yaml, admin, &[]).unwrap();

    // Traffic: 20 requests over app (round robin), every 2nd one mirrored to shadow.
    let mut client = KeepAliveClient::connect(listen, T).unwrap();
    for i in 0..20 {
        let r = client.get("app.test", &format!("/req/{i}")).unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    drop(client);
    let app_2xx = |lb: &Lb, ep: &str| {
        let labels = [("cluster", "app"), ("endpoint", ep), ("class", "2xx")];
        lb.metric("lb_endpoint_requests_total", &labels).unwrap()
    };
    let mirrored = [("route", "main"), ("result", "2xx")];
    let counted = wait_until(Duration::from_secs(10), || {
        app_2xx(&lb, "onprem") + app_2xx(&lb, "cloud") == 20.0
            && lb.metric("lb_mirror_requests_total", &mirrored).unwrap() == 10.0
    });
    let metrics = || lb.metrics().unwrap_or_default();
    assert!(
        counted,
        "not 20 app 2xx and 10 mirrored 2xx within 10 s:\n{}",
        metrics()
    );
    let (onprem_2xx, cloud_2xx) = (app_2xx(&lb, "onprem"), app_2xx(&lb, "cloud"));
    assert!(
        onprem_2xx > 0.0 && cloud_2xx > 0.0,
        "round robin should use both: onprem {onprem_2xx}, cloud {cloud_2xx}"
    );

    // cloud to maintenance through the runtime API.
    let maint_version = set_state(admin, "cloud", "maint");

    // 1. The rendered DOM.
    let dom = dump_dom(admin);
    let onprem_tag = start_tag(&dom, "ep-app-onprem")
        .unwrap_or_else(|| panic!("no ep-app-onprem row; DOM:\n{dom}"));
    assert_eq!(attr(onprem_tag, "data-state"), Some("up"), "{onprem_tag}");
    assert_cloud_row(&dom, "maint");
    let app = must(&dom, "cluster-app");
    assert_eq!(column(app, "ep-app-onprem", "State"), "up");
    assert_eq!(column(app, "ep-app-cloud", "State"), "maint");
    assert_eq!(column(app, "ep-app-onprem", "2xx"), onprem_2xx.to_string());
    assert_eq!(column(app, "ep-app-cloud", "2xx"), cloud_2xx.to_string());
    assert_eq!(column(app, "ep-app-onprem", "5xx"), "0");
    assert_eq!(column(app, "ep-app-onprem", "Override"), "-");
    assert_eq!(column(app, "ep-app-cloud", "Override"), "state maint");
    assert_eq!(column(app, "ep-app-cloud", "In use"), "no");
    assert_eq!(
        column(must(&dom, "cluster-shadow"), "ep-shadow-sink", "2xx"),
        "10"
    );
    let routes = block(&dom, r#"<table class="routes""#, "</table>")
        .unwrap_or_else(|| panic!("no routes table; DOM:\n{dom}"));
    let route_main = start_tag(routes, "route-main");
    assert!(route_main.is_some(), "no route-main row; DOM:\n{dom}");
    assert_eq!(column(routes, "route-main", "2xx"), "20");
    assert_eq!(column(routes, "route-main", "Clusters"), "app");
    let mirror = column(routes, "route-main", "Mirror");
    assert!(
        mirror.starts_with("shadow 50% — sent 10 / ok 10 / failed 0"),
        "mirror cell: {mirror:?}"
    );
    assert_no_error(&dom);
    let version = element(&dom, "version").map(text);
    assert_eq!(version, Some(maint_version.to_string()), "#version");

    // 2. A screenshot for humans (and a sanity check that something was painted).
    let png = screenshot(admin);
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "screenshot is not a PNG ({} bytes)",
        png.len()
    );
    assert!(png.len() > 10 * 1024, "screenshot only {} bytes", png.len());
    let target = target_dir();
    std::fs::create_dir_all(&target).unwrap();
    let keep = target.canonicalize().unwrap().join("stats-page.png");
    std::fs::write(&keep, &png).unwrap();
    println!("stats page screenshot: {}", keep.display());

    // 3. An open page refreshes itself: it shows maint, then up after the API change.
    let live = Browser::spawn(
        &["--remote-debugging-port=0".to_string()],
        &stats_url(admin),
    );
    let mut cdp = Cdp::connect(&live, "/stats");
    // "<cloud state> <#version> <ok|error>"; parts are "none" while the page is still loading.
    let probe = "(() => { const $ = (id) => document.getElementById(id); \
                 return [$('ep-app-cloud')?.dataset.state ?? 'none', $('version')?.textContent ?? 'none', \
                 $('error') ? ($('error').hidden ? 'ok' : 'error') : 'none'].join(' '); })()";
    let wait_for = |cdp: &mut Cdp, want: &str| {
        let mut seen = String::new();
        let shown = wait_until(REFRESH_TIMEOUT, || {
            seen = cdp.eval(probe);
            seen == want
        });
        assert!(
            shown,
            "open page did not show {want:?} within {REFRESH_TIMEOUT:?}; last {seen:?}; stderr:\n{}",
            live.stderr_tail()
        );
    };
    wait_for(&mut cdp, &format!("maint {maint_version} ok"));
    let ready_version = set_state(admin, "cloud", "ready");
    assert!(
        ready_version > maint_version,
        "{ready_version} <= {maint_version}"
    );
    wait_for(&mut cdp, &format!("up {ready_version} ok"));
    drop(cdp);
    drop(live);

    // 4. And a fresh page shows cloud up again.
    let dom = dump_dom(admin);
    assert_cloud_row(&dom, "up");
    assert_no_error(&dom);

    lb.stop(T).unwrap();
}
