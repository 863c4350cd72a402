//! A mock Kubernetes API server for tests: the real list/watch protocol (paginated lists, chunked
//! watch streams, resourceVersion, bookmarks, 410 Gone) on loopback, for the Kubernetes watcher tests.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod serve;
mod write;

pub use write::StatusWrite;

/// The server (and every watch) stops this long after `start` (`start_for` chooses).
const LIFETIME: Duration = Duration::from_secs(120);
/// Events kept for replay; a watch from before the oldest one answers 410.
const HISTORY: usize = 4096;
/// Live events queued per watch; a watch that falls further behind is ended (it resumes).
const QUEUE: usize = 4096;

/// Served resources: (apiVersion, plural, kind, namespaced).
const RESOURCES: [(&str, &str, &str, bool); 13] = [
    (
        "networking.k8s.io/v1",
        "ingressclasses",
        "IngressClass",
        false,
    ),
    ("networking.k8s.io/v1", "ingresses", "Ingress", true),
    ("v1", "services", "Service", true),
    (
        "discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        true,
    ),
    ("v1", "secrets", "Secret", true),
    ("v1", "configmaps", "ConfigMap", true),
    ("coordination.k8s.io/v1", "leases", "Lease", true),
    GW_CLASSES,
    ("gateway.networking.k8s.io/v1", "gateways", "Gateway", true),
    (
        "gateway.networking.k8s.io/v1",
        "httproutes",
        "HTTPRoute",
        true,
    ),
    GW_GRANTS,
    // Events lb posts on objects it rejects (both API groups accept them).
    ("events.k8s.io/v1", "events", "Event", true),
    ("v1", "events", "Event", true),
];
const GW_CLASSES: Res = (
    "gateway.networking.k8s.io/v1",
    "gatewayclasses",
    "GatewayClass",
    false,
);
const GW_GRANTS: Res = (
    "gateway.networking.k8s.io/v1beta1",
    "referencegrants",
    "ReferenceGrant",
    true,
);
type Res = (&'static str, &'static str, &'static str, bool);

/// (apiVersion, kind, namespace or "", name)
type Key = (String, String, String, String);

struct Event {
    rv: u64,
    api_version: String,
    kind: String,
    ns: String,
    line: Arc<str>,
}

enum Msg {
    Line(Arc<str>),
    /// The last event of the watch (ERROR on expire).
    Last(Arc<str>),
}

struct Watcher {
    id: u64,
    res: Res,
    ns: Option<String>,
    bookmarks: bool,
    /// fieldSelector terms (field, value); all must match.
    fields: Vec<(String, String)>,
    tx: SyncSender<Msg>,
}

impl Watcher {
    fn wants(&self, api_version: &str, kind: &str, ns: &str, obj: &Value) -> bool {
        selects(self.res, self.ns.as_deref(), (api_version, kind, ns))
            && fields_match(obj, &self.fields)
    }
}

/// `fieldSelector` terms `field=value` (or `==`), comma-separated, on the fields the mock knows:
/// metadata.name, metadata.namespace and (Secrets') type.
fn parse_fields(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for term in s.split(',').filter(|t| !t.is_empty()) {
        let (k, v) = match term.split_once("==").or_else(|| term.split_once('=')) {
            Some((k, v)) if !k.ends_with('!') => (k, v),
            _ => return Err(format!("unsupported field selector term {term:?}")),
        };
        if !matches!(k, "metadata.name" | "metadata.namespace" | "type") {
            return Err(format!("field label not supported: {k}"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn fields_match(obj: &Value, fields: &[(String, String)]) -> bool {
    fields.iter().all(|(k, v)| {
        let at = format!("/{}", k.replace('.', "/"));
        obj.pointer(&at).and_then(Value::as_str).unwrap_or("") == v
    })
}

/// Whether a request for `res` (in namespace `ns`, or all) covers an object (apiVersion, kind, ns).
fn selects(res: Res, ns: Option<&str>, (api_version, kind, obj_ns): (&str, &str, &str)) -> bool {
    res.0 == api_version && res.2 == kind && ns.is_none_or(|n| n == obj_ns)
}

struct State {
    rv: u64,
    /// Set by expire(): any resourceVersion below it answers 410.
    floor: u64,
    /// Replay is complete for watches from this resourceVersion on.
    history_from: u64,
    uids: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
    watchers: Vec<Watcher>,
    next_watch: u64,
    status_writes: Vec<StatusWrite>,
    /// API groups answered with 404, as an API server without those CRDs does.
    hidden_groups: Vec<String>,
}

struct Shared {
    stop: AtomicBool,
    state: Mutex<State>,
    lists: AtomicU64,
    watches: AtomicU64,
    until: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The mock API server; stops (and closes every watch) on Drop.
pub struct MockApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl MockApi {
    /// Listens on 127.0.0.1:0, plain HTTP, no auth; serves for at most 120 s.
    pub fn start() -> Result<MockApi> {
        MockApi::start_for(LIFETIME)
    }

    /// [`MockApi::start`] serving for at most `lifetime` (benchmarks outlast 120 s).
    pub fn start_for(lifetime: Duration) -> Result<MockApi> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the mock API server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = State {
            rv: 1,
            floor: 0,
            history_from: 0,
            uids: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            watchers: Vec::new(),
            next_watch: 0,
            status_writes: Vec::new(),
            hidden_groups: Vec::new(),
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            state: Mutex::new(state),
            lists: AtomicU64::new(0),
            watches: AtomicU64::new(0),
            until: Instant::now() + lifetime,
        });
        let sh = shared.clone();
        let accept = thread::Builder::new()
            .name("mock-kubeapi".into())
            .spawn(move || serve::accept_loop(&listener, &sh))?;
        Ok(MockApi {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates or replaces by (apiVersion, kind, namespace, name); sets resourceVersion (one global
    /// counter), uid and creationTimestamp if missing (namespace "default" if a namespaced kind has
    /// none); ADDED or MODIFIED to matching watches. Panics on an object without apiVersion, kind
    /// or metadata.name (a test bug).
    pub fn apply(&self, mut obj: Value) {
        let api_version = obj["apiVersion"].as_str().expect("apiVersion").to_string();
        let kind = obj["kind"].as_str().expect("kind").to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let namespaced = resource_of(&api_version, &kind).is_none_or(|r| r.3);
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        let meta = &mut obj["metadata"];
        let ns = match (namespaced, meta["namespace"].as_str()) {
            (false, _) => String::new(),
            (true, Some(ns)) => ns.to_string(),
            (true, None) => {
                meta["namespace"] = json!("default");
                "default".to_string()
            }
        };
        let key = (api_version.clone(), kind.clone(), ns.clone(), name);
        let old = st.objects.get(&key).map(|o| o["metadata"].clone());
        for field in ["uid", "creationTimestamp"] {
            if meta[field].is_null() {
                meta[field] = match old.as_ref().map(|m| &m[field]) {
                    Some(v) if !v.is_null() => v.clone(),
                    _ if field == "uid" => {
                        json!(format!("00000000-0000-4000-8000-{:012x}", st.uids))
                    }
                    _ => json!(rfc3339_now()),
                };
                st.uids += u64::from(field == "uid");
            }
        }
        meta["resourceVersion"] = json!(rv.to_string());
        let typ = if old.is_some() { "MODIFIED" } else { "ADDED" };
        st.record(rv, &api_version, &kind, &ns, typ, &obj);
        st.objects.insert(key, obj);
    }

    /// Deletes (no-op if absent); DELETED event with the last object at a new resourceVersion.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
        let ns = namespace.unwrap_or("").to_string();
        let key = (api_version.into(), kind.into(), ns.clone(), name.into());
        let mut st = self.shared.lock();
        let Some(mut obj) = st.objects.remove(&key) else {
            return;
        };
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.record(rv, api_version, kind, &ns, "DELETED", &obj);
    }

    /// BOOKMARK (kind, apiVersion, metadata.resourceVersion) to every watch with allowWatchBookmarks.
    pub fn bookmark(&self) {
        let mut st = self.shared.lock();
        let rv = st.rv.to_string();
        st.watchers.retain(|w| {
            let obj = json!({"kind": w.res.2, "apiVersion": w.res.0, "metadata": {"resourceVersion": rv}});
            !w.bookmarks || w.tx.try_send(Msg::Line(event_line("BOOKMARK", &obj))).is_ok()
        });
    }

    /// Compaction: every open watch gets ERROR 410 Expired and ends; any later list or watch from
    /// an older resourceVersion answers HTTP 410 (re-list with resourceVersion "" or "0").
    pub fn expire(&self) {
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        (st.floor, st.history_from) = (rv, rv);
        st.history.clear();
        let msg = format!("too old resource version (compacted at {rv})");
        let line = event_line("ERROR", &status(410, "Expired", &msg));
        for w in st.watchers.drain(..) {
            let _ = w.tx.try_send(Msg::Last(line.clone()));
        }
    }

    /// List requests answered 200.
    /// From now on the API group `group` (e.g. `gateway.networking.k8s.io`) is not served:
    /// lists and watches of its kinds get 404, as when its CRDs are not installed.
    pub fn hide_group(&self, group: &str) {
        self.shared.lock().hidden_groups.push(group.to_string());
    }

    pub fn lists(&self) -> u64 {
        self.shared.lists.load(Ordering::Relaxed)
    }

    /// Watch requests answered 200 (streams started).
    pub fn watches(&self) -> u64 {
        self.shared.watches.load(Ordering::Relaxed)
    }

    /// Every Event stored (created by clients with POST, in either API group), oldest first.
    pub fn events(&self) -> Vec<Value> {
        let st = self.shared.lock();
        let mut events: Vec<Value> = (st.objects.iter())
            .filter(|((_, kind, _, _), _)| kind == "Event")
            .map(|(_, o)| o.clone())
            .collect();
        let rv = |o: &Value| {
            let v = o["metadata"]["resourceVersion"].as_str().unwrap_or("0");
            v.parse::<u64>().unwrap_or(0)
        };
        events.sort_by_key(rv);
        events
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.lock().watchers.clear();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl State {
    fn record(&mut self, rv: u64, api_version: &str, kind: &str, ns: &str, typ: &str, obj: &Value) {
        let line = event_line(typ, obj);
        self.watchers.retain(|w| {
            !w.wants(api_version, kind, ns, obj) || w.tx.try_send(Msg::Line(line.clone())).is_ok()
        });
        if self.history.len() >= HISTORY {
            if let Some(e) = self.history.pop_front() {
                self.history_from = e.rv;
            }
        }
        let (api_version, kind, ns) = (api_version.into(), kind.into(), ns.into());
        self.history.push_back(Event {
            rv,
            api_version,
            kind,
            ns,
            line,
        });
    }
}

fn resource_of(api_version: &str, kind: &str) -> Option<Res> {
    RESOURCES
        .into_iter()
        .find(|r| r.0 == api_version && r.2 == kind)
}

fn event_line(typ: &str, obj: &Value) -> Arc<str> {
    format!("{}\n", json!({"type": typ, "object": obj})).into()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// Now as RFC 3339 UTC, seconds precision (civil-from-days, H. Hinnant).
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}
