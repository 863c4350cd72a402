//! The mock API server's writes: GET of one object, POST (create) and PUT (replace, 409 on a stale
//! resourceVersion) as a Lease elector uses them, and merge PATCH on `.../status`, recorded.

use super::{status, MockApi, Res, Shared, State, RESOURCES};
use serde_json::{json, Value};
use std::time::Instant;

/// One merge patch received on a status subresource.
#[derive(Debug, Clone)]
pub struct StatusWrite {
    pub kind: String,
    /// "" for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    /// The patch body as sent.
    pub patch: Value,
    pub at: Instant,
}

/// What a write path names: resource, namespace ("" if cluster-scoped), name, `/status`.
struct Target<'a> {
    res: Res,
    ns: &'a str,
    name: Option<&'a str>,
    status: bool,
}

/// `/api/v1/...` or `/apis/G/V/...` then `[namespaces/NS/]PLURAL[/NAME[/status]]`.
fn target(path: &str) -> Option<Target<'_>> {
    let segs: Vec<&str> = path.strip_prefix('/')?.split('/').take(10).collect();
    let (gv, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !ns.is_empty() && !rest.is_empty() => (*ns, rest),
        _ => ("", rest),
    };
    let (plural, name, status) = match rest {
        [p] => (*p, None, false),
        [p, n] => (*p, Some(*n), false),
        [p, n, "status"] => (*p, Some(*n), true),
        _ => return None,
    };
    let res = RESOURCES.into_iter().find(|r| r.0 == gv && r.1 == plural)?;
    (res.3 != ns.is_empty()).then_some(Target {
        res,
        ns,
        name,
        status,
    })
}

/// RFC 7386 JSON merge patch.
fn merge(into: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *into = patch.clone();
        return;
    };
    if !into.is_object() {
        *into = json!({});
    }
    if let Value::Object(o) = into {
        for (k, v) in p {
            if v.is_null() {
                o.remove(k);
            } else {
                merge(o.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

impl State {
    /// Stores `obj` under a new resourceVersion and tells the watches.
    fn store(&mut self, t: &Target, name: &str, mut obj: Value, typ: &str) -> Value {
        self.rv += 1;
        let rv = self.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (t.res.0.into(), t.res.2.into(), t.ns.into(), name.into());
        self.record(rv, t.res.0, t.res.2, t.ns, typ, &obj);
        self.objects.insert(key, obj.clone());
        obj
    }
}

/// Answers GET of one object, POST, PUT and PATCH `/status`; None for anything else (lists,
/// watches and unknown paths go to the read side).
pub(super) fn route(sh: &Shared, method: &str, path: &str, body: &[u8]) -> Option<(u16, Value)> {
    let t = target(path)?;
    let bad = |m: &str| Some((400, status(400, "BadRequest", m)));
    let body: Value = match method {
        "POST" | "PUT" | "PATCH" => match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return bad("the body is not a JSON object"),
        },
        _ => Value::Null,
    };
    let mut st = sh.lock();
    let key = |name: &str| (t.res.0.into(), t.res.2.into(), t.ns.into(), name.into());
    let not_found = |name: &str| {
        let msg = format!("{} {name:?} not found", t.res.1);
        Some((404, status(404, "NotFound", &msg)))
    };
    match (method, t.name, t.status) {
        ("GET", Some(name), false) => match st.objects.get(&key(name)) {
            Some(o) => Some((200, o.clone())),
            None => not_found(name),
        },
        ("POST", None, false) => {
            let Some(name) = body["metadata"]["name"].as_str().map(String::from) else {
                return bad("metadata.name is required");
            };
            if st.objects.contains_key(&key(&name)) {
                let msg = format!("{} {name:?} already exists", t.res.1);
                return Some((409, status(409, "AlreadyExists", &msg)));
            }
            let mut obj = body;
            obj["apiVersion"] = json!(t.res.0);
            obj["kind"] = json!(t.res.2);
            if t.res.3 {
                obj["metadata"]["namespace"] = json!(t.ns);
            }
            st.uids += 1;
            obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-9000-{:012x}", st.uids));
            Some((201, st.store(&t, &name, obj, "ADDED")))
        }
        ("PUT", Some(name), false) => {
            let Some(old) = st.objects.get(&key(name)) else {
                return not_found(name);
            };
            let have = old["metadata"]["resourceVersion"].clone();
            let sent = &body["metadata"]["resourceVersion"];
            if !sent.is_null() && *sent != have {
                let msg = format!(
                    "Operation cannot be fulfilled on {} {name:?}: the object has been modified",
                    t.res.1
                );
                return Some((409, status(409, "Conflict", &msg)));
            }
            let mut obj = body;
            obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            Some((200, st.store(&t, name, obj, "MODIFIED")))
        }
        ("PATCH", Some(name), true) => {
            let Some(old) = st.objects.get(&key(name)) else {
                return not_found(name);
            };
            // As the API server: only `status` changes through the status subresource.
            let mut obj = old.clone();
            merge(&mut obj["status"], &body["status"]);
            st.status_writes.push(StatusWrite {
                kind: t.res.2.into(),
                namespace: t.ns.into(),
                name: name.into(),
                patch: body,
                at: Instant::now(),
            });
            Some((200, st.store(&t, name, obj, "MODIFIED")))
        }
        _ => None,
    }
}

impl MockApi {
    /// The stored object, if any (`namespace` None for cluster-scoped kinds).
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let key = (
            api_version.into(),
            kind.into(),
            namespace.unwrap_or("").into(),
            name.into(),
        );
        self.shared.lock().objects.get(&key).cloned()
    }

    /// Every status merge patch received, in order.
    pub fn status_writes(&self) -> Vec<StatusWrite> {
        self.shared.lock().status_writes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge(&mut v, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(v, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    #[test]
    fn paths_resolve_to_resources() {
        let t = target("/apis/coordination.k8s.io/v1/namespaces/lb/leases/w").unwrap();
        assert_eq!(
            (t.res.2, t.ns, t.name, t.status),
            ("Lease", "lb", Some("w"), false)
        );
        let t = target("/apis/gateway.networking.k8s.io/v1/gatewayclasses/lb/status").unwrap();
        assert_eq!(
            (t.res.2, t.ns, t.name, t.status),
            ("GatewayClass", "", Some("lb"), true)
        );
        assert!(target("/apis/gateway.networking.k8s.io/v1/gateways/x/status").is_none());
        assert!(target("/api/v1/namespaces/a/nothings/x").is_none());
    }
}
