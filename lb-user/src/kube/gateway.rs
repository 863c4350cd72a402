//! Gateway API → routes, clusters, certificates and the status to write back: our GatewayClasses
//! (controllerName), their Gateways' listeners mapped onto the config file's by port, HTTPRoutes.
//!
//! Listeners: the DaemonSet's sockets come from the config file, so a Gateway listener is served
//! by every config listener on the same port (HTTP: without TLS, HTTPS: with TLS); a port lb does
//! not listen on makes that listener Accepted=False (PortUnavailable), Programmed=False.
//! HTTPS listeners terminate TLS with their `certificateRefs` (kubernetes.io/tls Secrets; in another
//! namespace only with a ReferenceGrant), served on every TLS listener by SNI like Ingress TLS.
//! `allowedRoutes.namespaces.from`: Same (default) and All; Selector is not supported (no route
//! attaches). Routes: see gateway/route.rs.

mod filters;
mod matches;
mod refs;
mod route;
pub mod status;
pub mod types;

use super::{ObjectError, Objects, Options, TlsCert};
use crate::config::{self, Cluster, Route};
use status::{Cond, GatewayStatus, ListenerStatus, Status};
use std::collections::BTreeMap;
use types::{Gateway, GatewayClass};
#[cfg(test)]
pub(super) use {matches::duration, route::intersect};

/// What the Gateway API objects give: config parts, rejections and the status to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayMapped {
    pub routes: Vec<Route>,
    pub clusters: Vec<Cluster>,
    pub tls: Vec<TlsCert>,
    pub rejected: Vec<ObjectError>,
    pub status: Status,
    /// Where each cluster's endpoints come from (the endpoint fast path).
    pub sources: super::fastpath::Sources,
}

/// One Gateway listener as routes see it.
struct Attach {
    /// Index into `Status::gateways`, and the listener's index there.
    gw: usize,
    listener: usize,
    gw_ns: String,
    gw_name: String,
    name: String,
    hostname: Option<String>,
    port: i32,
    /// The config listeners serving it (empty: not programmed, routes do not attach).
    serves: Vec<String>,
    /// `allowedRoutes.namespaces.from`: Same, All (Selector → None: nothing attaches).
    from_all: Option<bool>,
    /// `allowedRoutes.kinds` allows HTTPRoute.
    kinds_ok: bool,
}

fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    let ns = m.namespace.clone().unwrap_or_else(|| "default".into());
    (ns, m.name.clone().unwrap_or_default())
}

fn watched(opts: &Options, ns: &str) -> bool {
    opts.namespaces.is_empty() || opts.namespaces.iter().any(|n| n == ns)
}

/// Maps the Gateway API objects of ours, sorted by namespace/name (arrival order never shows).
/// `listeners` are the config file's. Never fails as a whole: bad parts are left out, listed in
/// `rejected` (field named) and reported in the status.
pub fn map(objs: &Objects, opts: &Options, listeners: &[config::Listener]) -> GatewayMapped {
    let mut out = GatewayMapped::default();
    let mut classes: Vec<&GatewayClass> = (objs.gateway_classes.items())
        .filter(|c| c.spec.controller_name == opts.controller)
        .collect();
    classes.sort_by_key(|c| c.metadata.name.clone());
    for c in &classes {
        let gen = c.metadata.generation;
        let msg = "handled by this controller";
        out.status.classes.push(status::ClassStatus {
            name: c.metadata.name.clone().unwrap_or_default(),
            conditions: vec![Cond::yes("Accepted", "Accepted", msg, gen)],
        });
    }
    let ours = |g: &&Gateway| {
        classes
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(&g.spec.gateway_class_name))
            && watched(opts, &key(&g.metadata).0)
    };
    let mut gateways: Vec<&Gateway> = objs.gateways.items().filter(ours).collect();
    gateways.sort_by_key(|g| key(&g.metadata));
    let grants = refs::Grants::new(&objs.reference_grants);
    let mut attach = Vec::new();
    for g in gateways {
        gateway(&mut out, &mut attach, &grants, objs, g, listeners);
    }
    let mut routes: Vec<_> = (objs.http_routes.items())
        .filter(|r| watched(opts, &key(&r.metadata).0))
        .collect();
    routes.sort_by_key(|r| key(&r.metadata));
    let index = super::ingress::Index::new(objs);
    let mut mapper = route::Mapper {
        index: &index,
        grants: &grants,
        clusters: BTreeMap::new(),
        out: &mut out,
    };
    for r in routes {
        mapper.route(r, &attach);
    }
    let clusters = std::mem::take(&mut mapper.clusters);
    out.clusters = clusters.into_values().collect();
    for g in &mut out.status.gateways {
        g.finish();
    }
    out
}

/// One Gateway: its listeners (config listeners by port, certificates), its status skeleton.
fn gateway(
    out: &mut GatewayMapped,
    attach: &mut Vec<Attach>,
    grants: &refs::Grants,
    objs: &Objects,
    g: &Gateway,
    base: &[config::Listener],
) {
    let (ns, name) = key(&g.metadata);
    let gen = g.metadata.generation;
    let gw = out.status.gateways.len();
    let mut st = GatewayStatus {
        namespace: ns.clone(),
        name: name.clone(),
        generation: gen,
        conditions: Vec::new(),
        listeners: Vec::new(),
    };
    for (k, l) in g.spec.listeners.iter().enumerate() {
        let field = format!("spec.listeners[{k}]");
        let mut ls = ListenerStatus {
            name: l.name.clone(),
            attached_routes: 0,
            conditions: Vec::new(),
        };
        let tls = match l.protocol.as_str() {
            "HTTP" => Some(false),
            "HTTPS" => Some(true),
            _ => None,
        };
        let serves: Vec<String> = base
            .iter()
            .filter(|c| i32::from(c.address.port()) == l.port && Some(c.tls.is_some()) == tls)
            .map(|c| c.name.clone())
            .collect();
        let mut problem: Option<(&str, &str, String)> = None;
        if tls.is_none() {
            let m = format!("{field}.protocol: {:?} is not HTTP or HTTPS", l.protocol);
            problem = Some(("Accepted", "UnsupportedProtocol", m));
        } else if serves.is_empty() {
            let what = if tls == Some(true) {
                "with TLS"
            } else {
                "without TLS"
            };
            let m = format!(
                "{field}.port: lb has no listener {what} on port {} (listeners come from the config file)",
                l.port
            );
            problem = Some(("Accepted", "PortUnavailable", m));
        } else if tls == Some(true) {
            match refs::listener_certs(objs, grants, &ns, l, &field) {
                Ok(certs) => out.tls.extend(certs),
                Err((reason, m)) => problem = Some(("ResolvedRefs", reason, m)),
            }
        }
        let kinds_ok = l.allowed_routes.as_ref().is_none_or(|a| {
            a.kinds.is_empty()
                || a.kinds.iter().any(|k| {
                    k.kind == "HTTPRoute"
                        && k.group.as_deref().unwrap_or(types::GROUP) == types::GROUP
                })
        });
        let from = l
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref());
        let from_all = match from.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
            "Same" => Some(false),
            "All" => Some(true),
            _ => None,
        };
        if problem.is_none() && !kinds_ok {
            let m = format!("{field}.allowedRoutes.kinds: only HTTPRoute is supported");
            problem = Some(("ResolvedRefs", "InvalidRouteKinds", m));
        }
        match &problem {
            None => {
                ls.conditions = vec![
                    Cond::yes("Accepted", "Accepted", "listener accepted", gen),
                    Cond::yes("ResolvedRefs", "ResolvedRefs", "references resolved", gen),
                    Cond::yes("Programmed", "Programmed", &serves.join(", "), gen),
                ];
            }
            Some((cond, reason, m)) => {
                out.rejected.push(ObjectError {
                    kind: "Gateway".into(),
                    namespace: ns.clone(),
                    name: name.clone(),
                    message: m.clone(),
                });
                let accepted = if *cond == "Accepted" {
                    Cond::no("Accepted", reason, m, gen)
                } else {
                    Cond::yes("Accepted", "Accepted", "listener accepted", gen)
                };
                let refs = if *cond == "ResolvedRefs" {
                    Cond::no("ResolvedRefs", reason, m, gen)
                } else {
                    Cond::yes("ResolvedRefs", "ResolvedRefs", "references resolved", gen)
                };
                ls.conditions = vec![accepted, refs, Cond::no("Programmed", "Invalid", m, gen)];
            }
        }
        attach.push(Attach {
            gw,
            listener: st.listeners.len(),
            gw_ns: ns.clone(),
            gw_name: name.clone(),
            name: l.name.clone(),
            hostname: l.hostname.clone().filter(|h| !h.is_empty()),
            port: l.port,
            serves: if problem.is_none() {
                serves
            } else {
                Vec::new()
            },
            from_all,
            kinds_ok,
        });
        st.listeners.push(ls);
    }
    out.status.gateways.push(st);
}
