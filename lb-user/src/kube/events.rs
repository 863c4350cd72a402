//! Kubernetes Events for what the mapping rejected: one Warning `Rejected` Event (events.k8s.io/v1)
//! per rejected object part, posted by a background task once per object generation and message.
//!
//! Each recompute reports the full list of rejections; only those not posted yet are posted (a
//! rejection that goes away and comes back is posted again). A post that fails (API server down,
//! no RBAC) is logged once per outage and tried again with the next report.

use super::{ObjectError, Objects};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `reason` of every Event we post.
pub const REASON: &str = "Rejected";
/// `action`: what we were doing when we rejected the object.
const ACTION: &str = "Sync";
/// The API server refuses longer notes.
const MAX_NOTE: usize = 1024;

/// What makes two Events the same: the object (as of its generation) and the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    /// `metadata.generation` (spec changes; not resourceVersion, which status writes move).
    generation: Option<i64>,
    message: String,
}

type Report = Vec<(Key, ObjectReference)>;

/// The posting task; dropping this stops it.
pub struct Events {
    tx: watch::Sender<Report>,
    task: JoinHandle<()>,
}

impl Events {
    /// Starts the posting task on the current tokio runtime (panics outside one). `controller`
    /// is the Events' reportingController; the instance is this node's hostname.
    pub fn start(client: Client, controller: &str) -> Events {
        let (tx, rx) = watch::channel(Report::new());
        let instance = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "lb".into());
        let from = Reporter {
            client,
            controller: cut(controller, 128),
            instance: cut(&instance, 128),
        };
        Events {
            tx,
            task: tokio::spawn(run(from, rx)),
        }
    }

    /// The rejections of one mapping of `objs` (all of them: what is not in the list any more
    /// is forgotten). Returns at once; posting happens in the background.
    pub fn report(&self, objs: &Objects, rejected: &[ObjectError]) {
        let list = rejected.iter().map(|r| rejection(objs, r)).collect();
        self.tx.send_replace(list);
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The object a rejection is about, as an Event's `regarding`, and its key.
fn rejection(objs: &Objects, r: &ObjectError) -> (Key, ObjectReference) {
    let found = match r.kind.as_str() {
        "Ingress" => find(&objs.ingresses, r),
        "Service" => find(&objs.services, r),
        "Secret" => find(&objs.secrets, r),
        _ => None,
    };
    let (reference, generation) = found.unwrap_or_else(|| {
        let reference = ObjectReference {
            api_version: api_version(&r.kind).map(String::from),
            kind: Some(r.kind.clone()),
            namespace: Some(r.namespace.clone()),
            name: Some(r.name.clone()),
            ..ObjectReference::default()
        };
        (reference, None)
    });
    let key = Key {
        kind: r.kind.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        uid: reference.uid.clone().unwrap_or_default(),
        generation,
        message: r.message.clone(),
    };
    (key, reference)
}

/// The API group/version of kinds the mapping may reject but [`rejection`] does not look up.
fn api_version(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "Service" | "Secret" | "ConfigMap" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "GatewayClass" | "Gateway" | "HTTPRoute" => "gateway.networking.k8s.io/v1",
        "ReferenceGrant" => "gateway.networking.k8s.io/v1beta1",
        _ => return None,
    })
}

fn find<K: Resource<DynamicType = ()>>(
    list: &[Arc<K>],
    r: &ObjectError,
) -> Option<(ObjectReference, Option<i64>)> {
    let o = list.iter().find(|o| {
        let m = o.meta();
        m.namespace.as_deref().unwrap_or("default") == r.namespace
            && m.name.as_deref() == Some(r.name.as_str())
    })?;
    let mut reference = o.object_ref(&());
    reference
        .resource_version
        .clone_from(&o.meta().resource_version);
    Some((reference, o.meta().generation))
}

struct Reporter {
    client: Client,
    controller: String,
    instance: String,
}

async fn run(from: Reporter, mut rx: watch::Receiver<Report>) {
    let mut posted: HashSet<Key> = HashSet::new();
    let mut failing = false;
    while rx.changed().await.is_ok() {
        let report = rx.borrow_and_update().clone();
        let current: HashSet<&Key> = report.iter().map(|(k, _)| k).collect();
        posted.retain(|k| current.contains(k));
        for (key, regarding) in &report {
            if rx.has_changed().unwrap_or(true) {
                break; // a newer report: start over with it
            }
            if posted.contains(key) {
                continue;
            }
            match from.post(key, regarding).await {
                Ok(()) => {
                    posted.insert(key.clone());
                    if std::mem::take(&mut failing) {
                        tracing::info!("kube: posting Events works again");
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "kube: cannot post Events (rejections are still logged); retrying with the next change");
                }
                Err(e) => tracing::debug!(error = %e, "kube: still cannot post Events"),
            }
        }
    }
}

impl Reporter {
    async fn post(&self, key: &Key, regarding: &ObjectReference) -> kube::Result<()> {
        let now = Timestamp::now();
        let ns = if key.namespace.is_empty() {
            "default"
        } else {
            &key.namespace
        };
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", cut(&key.name, 200), now.as_nanosecond())),
                namespace: Some(ns.to_string()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some("Warning".into()),
            reason: Some(REASON.into()),
            action: Some(ACTION.into()),
            note: Some(cut(&key.message, MAX_NOTE)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        api.create(&PostParams::default(), &event).await.map(drop)
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_point_at_their_object_generation() {
        let ing: k8s_openapi::api::networking::v1::Ingress = serde_json::from_value(
            serde_json::json!({"metadata": {"namespace": "shop", "name": "web", "uid": "u-1",
                               "generation": 3, "resourceVersion": "77"}}),
        )
        .unwrap();
        let objs = Objects {
            ingresses: vec![ing].into(),
            ..Objects::default()
        };
        let err = |kind: &str, name: &str| ObjectError {
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
            message: "bad".into(),
        };
        let (key, r) = rejection(&objs, &err("Ingress", "web"));
        assert_eq!((key.uid.as_str(), key.generation), ("u-1", Some(3)));
        assert_eq!(r.api_version.as_deref(), Some("networking.k8s.io/v1"));
        assert_eq!(r.kind.as_deref(), Some("Ingress"));
        assert_eq!(r.resource_version.as_deref(), Some("77"));
        let (key, r) = rejection(&objs, &err("ConfigMap", "gone"));
        assert_eq!((key.uid.as_str(), r.name.as_deref()), ("", Some("gone")));
        assert_eq!(r.api_version.as_deref(), Some("v1"));
        assert_eq!(cut("éé", 3), "é");
    }
}
