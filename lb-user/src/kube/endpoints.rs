//! Endpoints of one cluster (namespace, Service, Service port) from the Service's EndpointSlices:
//! port matched by name (then target port number), conditions → weight, dual-stack, stable names.

use crate::config::{Cluster, Endpoint, Weight};
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The label that ties an EndpointSlice to its Service.
pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A cluster with our defaults (as if written `{name: ...}` in a config file) and these endpoints.
pub(super) fn cluster(name: String, endpoints: Vec<Endpoint>) -> Cluster {
    // A constant document, not object data: this cannot fail.
    let mut c: Cluster =
        serde_yaml::from_str("name: template").expect("a cluster with only a name deserializes");
    c.name = name;
    c.endpoints = endpoints;
    c
}

/// Weight for an endpoint's conditions: ready → 1; serving and terminating → 0 (drain: no new
/// requests, in-flight ones finish); otherwise left out. Unset `ready` counts as ready and unset
/// `serving` as `ready` (as the API documents for consumers).
fn weight(c: Option<&EndpointConditions>) -> Option<Weight> {
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    if ready && !terminating {
        Some(Weight(1))
    } else if serving && terminating {
        Some(Weight(0))
    } else {
        None
    }
}

/// The slice's port for this Service port: same name (`""` for an unnamed single port), else
/// the Service's numeric targetPort.
fn slice_port(slice: &EndpointSlice, sp: &ServicePort) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let want = sp.name.as_deref().unwrap_or("");
    let by_name = ports
        .iter()
        .find(|p| p.name.as_deref().unwrap_or("") == want)
        .and_then(|p| p.port);
    let by_number = || match &sp.target_port {
        Some(IntOrString::Int(n)) => ports.iter().find(|p| p.port == Some(*n)).map(|_| *n),
        _ => None,
    };
    let port = by_name.or_else(by_number)?;
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// Where part of a cluster's endpoints come from: a Service port's EndpointSlices (the fast path
/// recomputes a cluster's endpoints from these when only slices changed).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSource {
    pub namespace: String,
    pub service: String,
    pub port: ServicePort,
    /// These endpoints are the cluster's backups (a backup Service).
    pub backup: bool,
}

impl EndpointSource {
    pub(super) fn new(ns: &str, svc: &str, port: &ServicePort, backup: bool) -> EndpointSource {
        EndpointSource {
            namespace: ns.into(),
            service: svc.into(),
            port: port.clone(),
            backup,
        }
    }
}

/// A cluster's endpoints from its sources, in order (backups marked), as the mapping builds
/// them; `slices(ns, svc)` gives the slices of a Service (others may be included).
pub(super) fn resolve<'a>(
    sources: &[EndpointSource],
    slices: impl Fn(&str, &str) -> Vec<&'a EndpointSlice>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for s in sources {
        let found = slices(&s.namespace, &s.service);
        let eps = endpoints(&s.namespace, &s.service, &s.port, found);
        out.extend(eps.into_iter().map(|e| Endpoint {
            backup: s.backup,
            ..e
        }));
    }
    out
}

/// Endpoints of Service `ns/svc` for port `sp`, sorted by address (IPv4 first). Names are the
/// pod names (targetRef.name), else unset (the address); a name already used in this cluster (the IPv6
/// address of a dual-stack pod) gets `_v6` (or `_v4`) appended, then `_v6_2`, `_v6_3`... (names allow
/// letters, digits, `.`, `_` and `-` only; pod names are DNS labels).
pub(super) fn endpoints<'a>(
    ns: &str,
    svc: &str,
    sp: &ServicePort,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<Endpoint> {
    let mut found: BTreeMap<SocketAddr, (Weight, Option<String>)> = BTreeMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let ours = slice.metadata.namespace.as_deref().unwrap_or("default") == ns
            && labels
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(svc);
        // FQDN slices would need DNS resolution: not supported (yet).
        if !ours || !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = slice_port(slice, sp) else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(w) = weight(ep.conditions.as_ref()) else {
                continue;
            };
            let pod = ep.target_ref.as_ref().and_then(|r| r.name.clone());
            for a in &ep.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    continue;
                };
                let addr = SocketAddr::new(ip, port);
                // The same address in two slices (during a slice update): the better state wins.
                let e = found.entry(addr).or_insert((w, pod.clone()));
                if w.0 > e.0 .0 {
                    *e = (w, pod.clone());
                }
            }
        }
    }
    let mut used = std::collections::HashSet::new();
    found
        .into_iter()
        .map(|(address, (weight, pod))| {
            let name = pod.map(|p| {
                let family = if address.is_ipv4() { "v4" } else { "v6" };
                let mut cand = p.clone();
                let mut k = 1;
                while !used.insert(cand.clone()) {
                    k += 1;
                    cand = match k {
                        2 => format!("{p}_{family}"),
                        _ => format!("{p}_{family}_{}", k - 1),
                    };
                }
                cand
            });
            Endpoint {
                address,
                weight,
                name,
                backup: false,
            }
        })
        .collect()
}
