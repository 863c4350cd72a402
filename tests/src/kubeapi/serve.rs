//! The HTTP side of the mock API server: a thread per connection, keep-alive for lists, one
//! chunked stream per watch; every read, loop and watch bounded; bad input answers 400/404.

use super::{
    event_line, fields_match, parse_fields, selects, status, Msg, Res, Shared, Watcher, QUEUE,
    RESOURCES,
};
use crate::http::{content_length, find, parse_head, Conn};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest (and default) watch; `timeoutSeconds` can only shorten it.
const MAX_WATCH: u64 = 60;
const MAX_CONNS: usize = 256;
const MAX_REQUESTS_PER_CONN: usize = 10_000;
const MAX_EVENTS_PER_WATCH: usize = 1_000_000;
const IDLE: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(20);

pub(super) fn accept_loop(listener: &TcpListener, sh: &Arc<Shared>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !sh.stop.load(Ordering::Relaxed) && Instant::now() < sh.until {
        match listener.accept() {
            Ok((stream, _)) => {
                conns.retain(|c| !c.is_finished());
                if conns.len() >= MAX_CONNS {
                    continue; // dropped: the client sees a reset
                }
                let sh = sh.clone();
                let spawned = thread::Builder::new()
                    .name("mock-kubeapi-conn".into())
                    .spawn(move || serve_conn(&sh, stream));
                conns.extend(spawned.ok());
            }
            Err(_) => thread::sleep(TICK),
        }
    }
    sh.stop.store(true, Ordering::Relaxed);
    sh.lock().watchers.clear();
    for c in conns {
        let _ = c.join();
    }
}

enum Reply {
    Json(u16, Value),
    Watch(u64, Vec<Arc<str>>, Receiver<Msg>, Instant),
}

fn serve_conn(sh: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut conn = Conn::new(stream, Some(&sh.stop));
    for _ in 0..MAX_REQUESTS_PER_CONN {
        let deadline = Instant::now() + IDLE;
        let Ok(Some(head)) = conn.until(b"\r\n\r\n", deadline) else {
            break;
        };
        let Some((first, headers)) = parse_head(&head) else {
            let _ = respond(
                &mut out,
                400,
                &status(400, "BadRequest", "malformed request head"),
            );
            break;
        };
        let body = match content_length(&headers) {
            _ if find(&headers, "transfer-encoding").is_some() => None,
            Ok(Some(n)) => conn.exact(n, deadline).ok(),
            Ok(None) => Some(Vec::new()),
            Err(_) => None,
        };
        let Some(body) = body else {
            let _ = respond(
                &mut out,
                400,
                &status(400, "BadRequest", "bad request body"),
            );
            break;
        };
        let mut parts = first.split(' ');
        let (method, target, version) = (parts.next(), parts.next(), parts.next());
        let close = version != Some("HTTP/1.1")
            || find(&headers, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let (method, target) = (method.unwrap_or(""), target.unwrap_or(""));
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let reply = super::write::route(sh, method, path, &body)
            .map_or_else(|| route(sh, method, target), |(c, v)| Reply::Json(c, v));
        let keep = match reply {
            Reply::Json(code, body) => respond(&mut out, code, &body).is_ok(),
            Reply::Watch(id, initial, rx, until) => {
                stream_watch(sh, &mut out, id, initial, &rx, until);
                false
            }
        };
        if !keep || close {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
}

fn respond(out: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        201 => "Created",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        _ => "Error",
    };
    let msg = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    out.write_all(msg.as_bytes())
}

fn stream_watch(
    sh: &Shared,
    out: &mut TcpStream,
    id: u64,
    initial: Vec<Arc<str>>,
    rx: &Receiver<Msg>,
    until: Instant,
) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let chunk = |out: &mut TcpStream, line: &str| {
        out.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
    };
    let mut ok = out.write_all(head.as_bytes()).is_ok();
    for line in &initial {
        ok = ok && chunk(out, line).is_ok();
    }
    for _ in 0..MAX_EVENTS_PER_WATCH {
        let left = until.saturating_duration_since(Instant::now());
        if !ok || left.is_zero() || sh.stop.load(Ordering::Relaxed) {
            break;
        }
        match rx.recv_timeout(left.min(TICK)) {
            Ok(Msg::Line(line)) => ok = chunk(out, &line).is_ok(),
            Ok(Msg::Last(line)) => {
                ok = chunk(out, &line).is_ok();
                break;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    sh.lock().watchers.retain(|w| w.id != id);
    if ok {
        let _ = out.write_all(b"0\r\n\r\n");
    }
}

fn route(sh: &Shared, method: &str, target: &str) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let hidden = |res: &(Res, Option<&str>)| {
        let group = res.0 .0.split_once('/').map_or("", |(g, _)| g);
        sh.lock().hidden_groups.iter().any(|h| h == group)
    };
    let found = resolve(path).filter(|r| method == "GET" && !hidden(r));
    let Some((res, ns)) = found else {
        let msg = format!("the server could not find the requested resource ({method} {path})");
        return Reply::Json(404, status(404, "NotFound", &msg));
    };
    let bad = |m: &str| Reply::Json(400, status(400, "BadRequest", m));
    let mut q = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()).take(64) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (decode(k), decode(v)) {
            (Some(k), Some(v)) => q.insert(k, v),
            _ => return bad("bad query encoding"),
        };
    }
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let rv = match get("resourceVersion") {
        "" | "0" => None,
        v => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => return bad("invalid resourceVersion"),
        },
    };
    let fields = match parse_fields(get("fieldSelector")) {
        Ok(f) => f,
        Err(e) => return bad(&e),
    };
    let mut st = sh.lock();
    let gone = |v: u64, rv: u64| {
        let msg = format!("too old resource version: {v} ({rv})");
        Reply::Json(410, status(410, "Expired", &msg))
    };
    if !matches!(get("watch"), "true" | "1") {
        let limit = match get("limit") {
            "" => 0,
            l => match l.parse::<usize>() {
                Ok(l) => l,
                Err(_) => return bad("invalid limit"),
            },
        };
        let (list_rv, after) = match get("continue") {
            "" => (st.rv, None),
            c => match c
                .split_once(':')
                .and_then(|(v, k)| Some((v.parse::<u64>().ok()?, k)))
            {
                Some((v, k)) => (v, Some(k.split_once(':').unwrap_or(("", k)))),
                None => return bad("invalid continue token"),
            },
        };
        if let Some(v) = rv.into_iter().chain(Some(list_rv)).find(|&v| v < st.floor) {
            return gone(v, st.rv);
        }
        let mut items = st.objects.iter().filter(|((a, k, n, name), o)| {
            selects(res, ns, (a, k, n))
                && fields_match(o, &fields)
                && after.is_none_or(|(an, aname)| (n.as_str(), name.as_str()) > (an, aname))
        });
        let page: Vec<_> = items
            .by_ref()
            .take(if limit == 0 { usize::MAX } else { limit })
            .collect();
        let mut meta = json!({"resourceVersion": list_rv.to_string()});
        if let (Some(((_, _, n, name), _)), true) = (page.last(), items.next().is_some()) {
            meta["continue"] = json!(format!("{list_rv}:{n}:{name}"));
        }
        let items: Vec<Value> = page.into_iter().map(|(_, o)| o.clone()).collect();
        sh.lists.fetch_add(1, Ordering::Relaxed);
        let kind = format!("{}List", res.2);
        return Reply::Json(
            200,
            json!({"kind": kind, "apiVersion": res.0, "metadata": meta, "items": items}),
        );
    }
    let secs = match get("timeoutSeconds") {
        "" | "0" => MAX_WATCH,
        t => match t.parse::<u64>() {
            Ok(t) => t.min(MAX_WATCH),
            Err(_) => return bad("invalid timeoutSeconds"),
        },
    };
    let initial: Vec<Arc<str>> = match rv {
        // As the real API server (and what kube-runtime re-lists on): 200, one ERROR event with
        // a 410 Status, then the end of the stream. Lists from an old version get HTTP 410.
        Some(v) if v < st.floor.max(st.history_from) => {
            let msg = format!("too old resource version: {v} ({})", st.rv);
            let line = event_line("ERROR", &status(410, "Expired", &msg));
            let (_closed, rx) = sync_channel(1);
            return Reply::Watch(0, vec![line], rx, Instant::now());
        }
        Some(v) => st
            .history
            .iter()
            .filter(|e| e.rv > v && selects(res, ns, (&e.api_version, &e.kind, &e.ns)))
            .filter(|e| fields.is_empty() || line_matches(&e.line, &fields))
            .map(|e| e.line.clone())
            .collect(),
        None => st
            .objects
            .iter()
            .filter(|((a, k, n, _), o)| selects(res, ns, (a, k, n)) && fields_match(o, &fields))
            .map(|(_, o)| event_line("ADDED", o))
            .collect(),
    };
    let (tx, rx) = sync_channel(QUEUE);
    st.next_watch += 1;
    let id = st.next_watch;
    let bookmarks = get("allowWatchBookmarks") == "true";
    st.watchers.push(Watcher {
        id,
        res,
        ns: ns.map(String::from),
        bookmarks,
        fields,
        tx,
    });
    sh.watches.fetch_add(1, Ordering::Relaxed);
    let until = (Instant::now() + Duration::from_secs(secs)).min(sh.until);
    Reply::Watch(id, initial, rx, until)
}

/// Whether a recorded event line's object matches the field selector.
fn line_matches(line: &str, fields: &[(String, String)]) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| fields_match(&v["object"], fields))
}

/// `/api/v1/[namespaces/NS/]PLURAL` or `/apis/GROUP/VERSION/[namespaces/NS/]PLURAL`.
fn resolve(path: &str) -> Option<(Res, Option<&str>)> {
    let segs: Vec<&str> = path.strip_prefix('/')?.split('/').take(8).collect();
    let (group_version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (ns, plural) = match rest {
        [plural] => (None, *plural),
        ["namespaces", ns, plural] if !ns.is_empty() => (Some(*ns), *plural),
        _ => return None,
    };
    let res = RESOURCES
        .into_iter()
        .find(|r| r.0 == group_version && r.1 == plural)?;
    (res.3 || ns.is_none()).then_some((res, ns))
}

/// Percent-decoding of a query component (`+` is a space); None if malformed.
fn decode(s: &str) -> Option<String> {
    let (b, mut out, mut i) = (s.as_bytes(), Vec::with_capacity(s.len()), 0);
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
