//! Endpoint-only Kubernetes changes: when nothing but EndpointSlices changed since the last full
//! merge, the clusters fed by the changed Services get new endpoints and nothing is remapped.
//!
//! A full merge maps 10k Ingresses in hundreds of milliseconds; a scale event must be served in
//! tens. The patch gives exactly what a full merge would: every cluster records where its
//! endpoints come from ([`EndpointSource`]), and a change that could alter anything else (a
//! Service whose endpoints an L4 service, a rejected or an unused cluster reads; a patched
//! cluster that fails its checks) is refused, so the caller merges in full.

use super::endpoints::{self, EndpointSource, SERVICE_NAME_LABEL};
use super::Objects;
use crate::config::{self, Config};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// (namespace, Service name).
pub type ServiceKey = (String, String);

/// What a mapping records for the fast path: each cluster's endpoint sources (by cluster name,
/// including clusters that were rejected or left unused), and Services read in other ways.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources {
    pub clusters: BTreeMap<String, Vec<EndpointSource>>,
    /// Services whose endpoints decide more than one cluster's endpoint list (L4 services:
    /// capacities, rings).
    pub opaque: BTreeSet<ServiceKey>,
}

impl Sources {
    /// Adds `other`'s records; a cluster already recorded keeps its first sources (the merge
    /// keeps the first cluster of a name too).
    pub fn extend(&mut self, other: Sources) {
        for (name, s) in other.clusters {
            self.clusters.entry(name).or_insert(s);
        }
        self.opaque.extend(other.opaque);
    }
}

/// The last config served from Kubernetes objects, and how to patch its endpoints.
pub struct Served {
    objs: Arc<Objects>,
    config: Arc<Config>,
    /// Clusters (index into `config.clusters`) by the Services their endpoints come from.
    by_service: HashMap<ServiceKey, Vec<usize>>,
    sources: HashMap<usize, Vec<EndpointSource>>,
    /// Services a patch may not touch: a full merge decides what their change does.
    opaque: HashSet<ServiceKey>,
}

impl Served {
    /// `config` is the merge of `objs` whose mapping recorded `sources`.
    pub fn new(objs: Arc<Objects>, config: Arc<Config>, sources: Sources) -> Served {
        let index: HashMap<&str, usize> = (config.clusters.iter().enumerate())
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let mut s = Served {
            by_service: HashMap::new(),
            sources: HashMap::new(),
            opaque: sources.opaque.into_iter().collect(),
            objs,
            config: config.clone(),
        };
        // An L4 service's cluster: its endpoint count is checked against the dataplane's capacity.
        let l4: HashSet<&str> = (config.l4_services.iter())
            .map(|s| s.cluster.as_str())
            .collect();
        for (name, srcs) in sources.clusters {
            let keys = srcs
                .iter()
                .map(|e| (e.namespace.clone(), e.service.clone()));
            match index
                .get(name.as_str())
                .filter(|_| !l4.contains(name.as_str()))
            {
                Some(&i) => {
                    for k in keys {
                        s.by_service.entry(k).or_default().push(i);
                    }
                    s.sources.insert(i, srcs);
                }
                // Rejected (its endpoints may be why), unused, or behind an L4 service: a
                // change re-decides it.
                None => s.opaque.extend(keys),
            }
        }
        s
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The config for `new`, if it differs from the last objects in EndpointSlices only and the
    /// patch is exact: then `self` moves to `new` and the patched config is returned (the same
    /// `Arc` when no cluster changed). `None` (self unchanged): merge in full.
    pub fn patch(&mut self, new: &Arc<Objects>) -> Option<Arc<Config>> {
        if !new.same_except_slices(&self.objs) {
            return None;
        }
        let changed = changed_services(&self.objs.endpoint_slices, &new.endpoint_slices);
        if changed.iter().any(|k| self.opaque.contains(k)) {
            return None;
        }
        let touched: BTreeSet<usize> = (changed.iter())
            .filter_map(|k| self.by_service.get(k))
            .flatten()
            .copied()
            .collect();
        if touched.is_empty() {
            self.objs = new.clone();
            return Some(self.config.clone());
        }
        // A few Services: a list, so the walk over every slice allocates nothing.
        let wanted: Vec<(&str, &str)> = (touched.iter())
            .flat_map(|i| &self.sources[i])
            .map(|e| (e.namespace.as_str(), e.service.as_str()))
            .collect();
        let mut slices: HashMap<ServiceKey, Vec<&EndpointSlice>> = HashMap::new();
        for sl in new.endpoint_slices.items() {
            if let Some(k) = service_of(sl).filter(|k| wanted.contains(k)) {
                let k = (k.0.to_string(), k.1.to_string());
                slices.entry(k).or_default().push(sl);
            }
        }
        let mut cfg = Config::clone(&self.config);
        for &i in &touched {
            let c = cfg.clusters.get_mut(i)?;
            Arc::make_mut(c).endpoints = endpoints::resolve(&self.sources[&i], |ns, svc| {
                let k = (ns.to_string(), svc.to_string());
                slices.get(&k).cloned().unwrap_or_default()
            });
            let alone = Config {
                clusters: vec![c.clone()],
                ..Config::default()
            };
            if config::check(&alone).is_err() {
                return None; // the full merge rejects it, with the reason and an Event
            }
        }
        let cfg = Arc::new(cfg);
        self.objs = new.clone();
        self.config = cfg.clone();
        Some(cfg)
    }
}

/// (namespace, Service) a slice belongs to (its `kubernetes.io/service-name` label).
fn service_of(sl: &EndpointSlice) -> Option<(&str, &str)> {
    let ns = sl.metadata.namespace.as_deref().unwrap_or("default");
    let labels = sl.metadata.labels.as_ref()?;
    Some((ns, labels.get(SERVICE_NAME_LABEL)?.as_str()))
}

/// The Services whose slices differ between `old` and `new` (added, removed or changed; a
/// slice moved to another Service counts for both). Equal resourceVersions mean equal slices.
/// One walk over both lists in (namespace, name) order (the order the watch keeps them in).
pub fn changed_services(
    old: &[Arc<EndpointSlice>],
    new: &[Arc<EndpointSlice>],
) -> BTreeSet<ServiceKey> {
    let (old, new) = (in_order(old), in_order(new));
    let mut out = BTreeSet::new();
    let mut add = |s: &EndpointSlice| {
        if let Some((ns, svc)) = service_of(s) {
            out.insert((ns.to_string(), svc.to_string()));
        }
    };
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) => order_key(o).cmp(&order_key(n)),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                add(old[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                add(new[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (o, n) = (old[i], new[j]);
                let rvs = (&o.metadata.resource_version, &n.metadata.resource_version);
                let same = std::ptr::eq(o, n)
                    || match rvs {
                        (Some(a), Some(b)) if a == b => true,
                        _ => o == n,
                    };
                if !same {
                    add(o);
                    add(n);
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// The slices by (namespace, name): as given when already in that order.
fn in_order(v: &[Arc<EndpointSlice>]) -> Vec<&EndpointSlice> {
    let mut refs: Vec<&EndpointSlice> = v.iter().map(|s| &**s).collect();
    if !refs.is_sorted_by(|a, b| order_key(a) <= order_key(b)) {
        refs.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    }
    refs
}

fn order_key(s: &EndpointSlice) -> (Option<&String>, Option<&String>) {
    (s.metadata.namespace.as_ref(), s.metadata.name.as_ref())
}
