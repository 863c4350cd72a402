//! Status written back to the API server, only by the holder of the status-writer Lease (lease.rs):
//! Gateway API conditions (gateway/status.rs) and Ingress `status.loadBalancer` addresses.
//!
//! Each object's status is built as JSON and compared with what the object already has (a
//! condition keeps its `lastTransitionTime` while its status does not change); only differences
//! are written, as merge patches to the status subresource. HTTPRoute `status.parents` entries of
//! other controllers are kept. Ingress addresses: `$LB_STATUS_ADDRESSES` (comma-separated IPs or
//! host names), else the holder's node (`$HOST_IP`, the downward API's status.hostIP); none: the
//! Ingress status is left alone.

use super::gateway::status::{Cond, Status};
use super::gateway::types::{Gateway, GatewayClass, HTTPRoute, ParentRef, GROUP};
use super::lease::{self, LeaseConfig};
use super::{ingress, Objects, Options};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the mapping hands the status it decided to the writer (a no-op without a writer).
#[derive(Debug, Clone)]
pub struct Publisher(Arc<watch::Sender<Option<Arc<Status>>>>);

impl Default for Publisher {
    fn default() -> Self {
        Publisher(Arc::new(watch::Sender::new(None)))
    }
}

impl Publisher {
    pub fn publish(&self, s: &Status) {
        self.0.send_if_modified(|old| {
            let changed = old.as_deref() != Some(s);
            if changed {
                *old = Some(Arc::new(s.clone()));
            }
            changed
        });
    }
}

/// The writer's view of one condition list: current conditions by type.
fn conditions(want: &[Cond], current: Option<&Value>) -> Value {
    let now = Timestamp::from_second(Timestamp::now().as_second())
        .map_or_else(|_| Timestamp::now().to_string(), |t| t.to_string());
    let cur: Vec<Value> = current
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default();
    let list: Vec<Value> = want
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let same = cur
                .iter()
                .find(|x| x["type"] == c.type_.as_str() && x["status"] == status);
            let since = same.map_or(json!(now), |x| x["lastTransitionTime"].clone());
            let mut v = json!({"type": c.type_, "status": status, "reason": c.reason,
                               "message": c.message, "lastTransitionTime": since});
            if let Some(g) = c.observed_generation {
                v["observedGeneration"] = json!(g);
            }
            v
        })
        .collect();
    json!(list)
}

fn parent_ref(p: &ParentRef, route_ns: &str) -> Value {
    let mut v = json!({"group": p.group.as_deref().unwrap_or(GROUP),
                       "kind": p.kind.as_deref().unwrap_or("Gateway"),
                       "namespace": p.namespace.as_deref().unwrap_or(route_ns), "name": p.name});
    if let Some(s) = &p.section_name {
        v["sectionName"] = json!(s);
    }
    if let Some(port) = p.port {
        v["port"] = json!(port);
    }
    v
}

/// The desired `status` of every object with one, by (kind, namespace, name).
type Desired = BTreeMap<(&'static str, String, String), Value>;

fn find<'o, K: Resource>(list: &'o [Arc<K>], ns: &str, name: &str) -> Option<&'o K> {
    let found = list.iter().find(|o| {
        o.meta().namespace.as_deref().unwrap_or("") == ns && o.meta().name.as_deref() == Some(name)
    });
    found.map(|o| &**o)
}

/// Every status we want, each next to the object's current one (both JSON).
pub fn desired(
    s: &Status,
    objs: &Objects,
    opts: &Options,
    addresses: &[String],
) -> Vec<((&'static str, String, String), Value, Value)> {
    let mut d = Desired::new();
    let mut current = BTreeMap::new();
    for c in &s.classes {
        let cur =
            find::<GatewayClass>(&objs.gateway_classes, "", &c.name).and_then(|o| o.status.clone());
        let conds = conditions(&c.conditions, cur.as_ref().map(|v| &v["conditions"]));
        let k = ("GatewayClass", String::new(), c.name.clone());
        current.insert(k.clone(), cur.unwrap_or(Value::Null));
        d.insert(k, json!({"conditions": conds}));
    }
    for g in &s.gateways {
        let cur =
            find::<Gateway>(&objs.gateways, &g.namespace, &g.name).and_then(|o| o.status.clone());
        let cur_v = cur.clone().unwrap_or(Value::Null);
        let listeners: Vec<Value> = (g.listeners.iter())
            .map(|l| {
                let cl = (cur_v["listeners"].as_array().into_iter().flatten())
                    .find(|x| x["name"] == l.name.as_str());
                json!({"name": l.name, "attachedRoutes": l.attached_routes,
                       "supportedKinds": [{"group": GROUP, "kind": "HTTPRoute"}],
                       "conditions": conditions(&l.conditions, cl.map(|x| &x["conditions"]))})
            })
            .collect();
        let mut st = json!({"conditions": conditions(&g.conditions, Some(&cur_v["conditions"])),
                            "listeners": listeners});
        let addrs: Vec<Value> = addresses.iter().map(|a| address(a, "type")).collect();
        if !addrs.is_empty() {
            st["addresses"] = json!(addrs);
        }
        let k = ("Gateway", g.namespace.clone(), g.name.clone());
        current.insert(k.clone(), cur_v);
        d.insert(k, st);
    }
    for r in &s.routes {
        let cur = find::<HTTPRoute>(&objs.http_routes, &r.namespace, &r.name)
            .and_then(|o| o.status.clone());
        let cur_v = cur.unwrap_or(Value::Null);
        let old = cur_v["parents"].as_array().cloned().unwrap_or_default();
        let mut parents: Vec<Value> = (old.iter())
            .filter(|p| p["controllerName"] != opts.controller.as_str())
            .cloned()
            .collect();
        for p in &r.parents {
            let pr = parent_ref(&p.parent, &r.namespace);
            let mine = old
                .iter()
                .find(|x| x["parentRef"] == pr && x["controllerName"] == opts.controller.as_str());
            parents.push(json!({"parentRef": pr, "controllerName": opts.controller,
                                "conditions": conditions(&p.conditions, mine.map(|x| &x["conditions"]))}));
        }
        let k = ("HTTPRoute", r.namespace.clone(), r.name.clone());
        current.insert(k.clone(), cur_v);
        d.insert(k, json!({"parents": parents}));
    }
    if !addresses.is_empty() {
        let classes = ingress::Classes::new(&objs.ingress_classes, opts);
        let lb: Vec<Value> = addresses.iter().map(|a| address(a, "ip")).collect();
        for i in objs.ingresses.items().filter(|i| classes.is_ours(i)) {
            let ns = i
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let k = ("Ingress", ns, i.metadata.name.clone().unwrap_or_default());
            let cur = i
                .status
                .as_ref()
                .map_or(Value::Null, |s| serde_json::to_value(s).unwrap_or_default());
            current.insert(k.clone(), cur);
            d.insert(k, json!({"loadBalancer": {"ingress": lb}}));
        }
    }
    d.into_iter()
        .map(|(k, want)| {
            let cur = current.remove(&k).unwrap_or(Value::Null);
            (k, want, cur)
        })
        .collect()
}

/// An address entry: IPs as `{ip}` / `{type: IPAddress}`, names as `{hostname}` / `{type: Hostname}`.
fn address(a: &str, style: &str) -> Value {
    let ip = a.parse::<std::net::IpAddr>().is_ok();
    match (style, ip) {
        ("ip", true) => json!({"ip": a}),
        ("ip", false) => json!({"hostname": a}),
        (_, true) => json!({"type": "IPAddress", "value": a}),
        (_, false) => json!({"type": "Hostname", "value": a}),
    }
}

/// `v` without `lastTransitionTime`s (a rebuilt status stamps new conditions with "now").
fn untimed(v: &Value) -> Value {
    match v {
        Value::Object(m) => (m.iter())
            .filter(|(k, _)| *k != "lastTransitionTime")
            .map(|(k, v)| (k.clone(), untimed(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Value::Array(a) => a.iter().map(untimed).collect::<Vec<_>>().into(),
        v => v.clone(),
    }
}

/// `want` is already in `current`: each of its top-level fields is equal there.
fn satisfied(want: &Value, current: &Value) -> bool {
    want.as_object()
        .is_some_and(|w| w.iter().all(|(k, v)| current[k] == *v))
}

async fn patch<K>(client: &Client, ns: &str, name: &str, status: &Value) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()>,
{
    let ar = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = if ns.is_empty() {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    };
    let body = json!({"status": status});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// Status addresses from the environment (see the module comment).
pub fn addresses_from_env() -> Vec<String> {
    let list = std::env::var("LB_STATUS_ADDRESSES")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let list = list
        .or_else(|| std::env::var("HOST_IP").ok())
        .unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

/// Starts the Lease elector and the writer: whenever the published status, the objects or the
/// Lease change, the holder writes what differs. Abort the handles to stop.
pub fn start(
    client: Client,
    published: &Publisher,
    mut objects: watch::Receiver<Option<Arc<Objects>>>,
    opts: Options,
    lease_cfg: LeaseConfig,
    addresses: Vec<String>,
) -> Vec<JoinHandle<()>> {
    let (mut holding, elector) = lease::spawn(client.clone(), lease_cfg);
    let mut status = published.0.subscribe();
    let writer = tokio::spawn(async move {
        // What we wrote and the API server may not have shown us yet.
        let mut written: BTreeMap<(&'static str, String, String), Value> = BTreeMap::new();
        loop {
            let held = *holding.borrow_and_update();
            let st = status.borrow_and_update().clone();
            let objs = objects.borrow_and_update().clone();
            if !held {
                written.clear();
            }
            if let (true, Some(st), Some(objs)) = (held, st, objs) {
                for ((kind, ns, name), want, cur) in desired(&st, &objs, &opts, &addresses) {
                    let key = (kind, ns.clone(), name.clone());
                    if satisfied(&want, &cur) || written.get(&key) == Some(&untimed(&want)) {
                        continue;
                    }
                    let r = match kind {
                        "GatewayClass" => patch::<GatewayClass>(&client, &ns, &name, &want).await,
                        "Gateway" => patch::<Gateway>(&client, &ns, &name, &want).await,
                        "HTTPRoute" => patch::<HTTPRoute>(&client, &ns, &name, &want).await,
                        _ => patch::<Ingress>(&client, &ns, &name, &want).await,
                    };
                    match r {
                        Ok(()) => {
                            tracing::debug!(kind, namespace = %ns, name = %name, "status written");
                            written.insert(key, untimed(&want));
                        }
                        Err(e) => {
                            tracing::warn!(kind, namespace = %ns, name = %name, error = %e, "writing status failed")
                        }
                    }
                }
            }
            tokio::select! {
                r = holding.changed() => if r.is_err() { return },
                r = status.changed() => if r.is_err() { return },
                r = objects.changed() => if r.is_err() { return },
            }
        }
    });
    vec![elector, writer]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::gateway::status::{ClassStatus, Cond};

    fn objects() -> Objects {
        let class = json!({"metadata": {"name": "lb"},
                           "spec": {"controller": crate::kube::DEFAULT_CONTROLLER}});
        let ing = json!({"metadata": {"namespace": "shop", "name": "web"},
                         "spec": {"ingressClassName": "lb"}});
        let other = json!({"metadata": {"namespace": "shop", "name": "theirs"},
                           "spec": {"ingressClassName": "nginx"}});
        let gc = json!({"metadata": {"name": "lb"}, "spec": {"controllerName": "x"}});
        Objects {
            ingress_classes: vec![serde_json::from_value(class).unwrap()].into(),
            ingresses: vec![
                serde_json::from_value(ing).unwrap(),
                serde_json::from_value(other).unwrap(),
            ]
            .into(),
            gateway_classes: vec![serde_json::from_value(gc).unwrap()].into(),
            ..Objects::default()
        }
    }

    #[test]
    fn ingress_addresses_and_conditions_written_only_when_they_differ() {
        let s = Status {
            classes: vec![ClassStatus {
                name: "lb".into(),
                conditions: vec![Cond::yes("Accepted", "Accepted", "ok", Some(4))],
            }],
            ..Status::default()
        };
        let addrs = ["192.0.2.10".to_string(), "lb.example.net".to_string()];
        let mut objs = objects();
        let want = desired(&s, &objs, &Options::default(), &addrs);
        let keys: Vec<_> = want.iter().map(|(k, ..)| k.clone()).collect();
        assert_eq!(
            keys,
            [
                ("GatewayClass", String::new(), "lb".to_string()),
                ("Ingress", "shop".into(), "web".into())
            ]
        );
        let ing = &want[1].1;
        let lb = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"hostname": "lb.example.net"}]}});
        assert_eq!(*ing, lb);
        let class = &want[0].1;
        assert_eq!(class["conditions"][0]["observedGeneration"], 4);
        assert!(!satisfied(class, &want[0].2) && !satisfied(ing, &want[1].2));

        // Once the objects carry them, nothing is to be written; the transition time stays.
        Arc::make_mut(&mut objs.gateway_classes[0]).status = Some(class.clone());
        Arc::make_mut(&mut objs.ingresses[0]).status =
            Some(serde_json::from_value(ing.clone()).unwrap());
        let again = desired(&s, &objs, &Options::default(), &addrs);
        assert!(
            again.iter().all(|(_, w, cur)| satisfied(w, cur)),
            "{again:#?}"
        );
        // A changed condition status is a difference, with a new transition time.
        let flipped = Status {
            classes: vec![ClassStatus {
                name: "lb".into(),
                conditions: vec![Cond::no("Accepted", "InvalidParameters", "no", Some(5))],
            }],
            ..Status::default()
        };
        let d = desired(&flipped, &objs, &Options::default(), &addrs);
        assert!(!satisfied(&d[0].1, &d[0].2));
        assert_eq!(untimed(&d[0].1)["conditions"][0]["status"], "False");
    }
}
