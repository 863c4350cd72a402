//! HTTPRoute → routes: parentRefs attach to our Gateways' listeners (sectionName, port,
//! allowedRoutes, hostnames ∩ listener hostname), each rule × match becomes one route.
//!
//! Matches: path Exact / PathPrefix (segment boundaries, as the spec says) / RegularExpression
//! (whole path, anchored), headers and queryParams (Exact or RegularExpression over the whole
//! value), method. backendRefs → `cluster` (one) or weighted `clusters` (99/1 migration); an
//! invalid backendRef is rejected alone and the rule serves from the others (ResolvedRefs=False)
//! instead of answering its share with 500; a rule with none left is not served. Filters: see
//! filters.rs. `timeouts.request` / `backendRequest` become the cluster's request / response
//! timeout on a cluster of its own (`ns/svc:port@request=10s,backend=2s`).

use super::filters::{self, Actions};
use super::matches::{blank, duration, matcher};
use super::refs::{self, Grants};
use super::status::{Cond, ParentStatus, RouteStatus};
use super::types::{HTTPRoute, Match, ObjectRef, ParentRef, Rule, GROUP};
use super::{key, Attach, GatewayMapped};
use crate::config::{self, Cluster, Interval, Route, WeightedCluster};
use crate::kube::endpoints::{cluster, endpoints, EndpointSource};
use crate::kube::ingress::Index;
use crate::kube::ObjectError;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) struct Mapper<'a, 'g> {
    /// Services and their EndpointSlices by namespace and name.
    pub(super) index: &'g Index<'a>,
    pub(super) grants: &'g Grants<'a>,
    pub(super) clusters: BTreeMap<String, Cluster>,
    pub(super) out: &'g mut GatewayMapped,
}

/// Where one rule's routes go: hosts and config listeners (one group per distinct host set).
type Group = (Vec<String>, Vec<String>);

/// A listener (index into the attach list) a parentRef attached to, with the hostnames served.
type Attached = (usize, Vec<String>);

/// `h` ∩ listener hostname `l` (wildcards `*.x` as in the spec), or None.
pub(crate) fn intersect(h: &str, l: Option<&str>) -> Option<String> {
    let Some(l) = l else {
        return Some(h.to_string());
    };
    let covers = |wild: &str, name: &str| {
        wild.strip_prefix("*.")
            .is_some_and(|s| name.ends_with(&format!(".{s}")))
    };
    if h.eq_ignore_ascii_case(l) || covers(l, h) {
        Some(h.to_string())
    } else if covers(h, l) {
        Some(l.to_string())
    } else {
        None
    }
}

fn parent_is_gateway(p: &ParentRef) -> bool {
    p.group.as_deref().unwrap_or(GROUP) == GROUP
        && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
}

impl Mapper<'_, '_> {
    fn reject(&mut self, ns: &str, name: &str, message: String) {
        self.out.rejected.push(ObjectError {
            kind: "HTTPRoute".into(),
            namespace: ns.into(),
            name: name.into(),
            message,
        });
    }

    /// The cluster for a Service reference (created on first use), with the rule's timeouts.
    pub(super) fn cluster(
        &mut self,
        ns: &str,
        r: &ObjectRef,
        field: &str,
        timeouts: (Option<Interval>, Option<Interval>),
    ) -> Result<String, refs::RefError> {
        let (sns, svc, sp) = refs::service_port(self.index, self.grants, ns, r, field)?;
        let svc_name = svc.metadata.name.clone().unwrap_or_default();
        let mut name = format!("{sns}/{svc_name}:{}", sp.port);
        let mut tags = Vec::new();
        if let Some(t) = timeouts.0 {
            tags.push(format!("request={}ms", t.0.as_millis()));
        }
        if let Some(t) = timeouts.1 {
            tags.push(format!("backend={}ms", t.0.as_millis()));
        }
        if !tags.is_empty() {
            name = format!("{name}@{}", tags.join(","));
        }
        if !self.clusters.contains_key(&name) {
            let found = self.index.slices(&sns, &svc_name).iter().copied();
            let eps = endpoints(&sns, &svc_name, sp, found);
            let source = EndpointSource::new(&sns, &svc_name, sp, false);
            self.out.sources.clusters.insert(name.clone(), vec![source]);
            let mut c = cluster(name.clone(), eps);
            c.request_timeout = timeouts.0.or(c.request_timeout);
            c.response_timeout = timeouts.1.unwrap_or(c.response_timeout);
            self.clusters.insert(name.clone(), c);
        }
        Ok(name)
    }

    /// The listeners of `attach` that parentRef `p` of route `ns` selects and that accept it,
    /// with the hostnames served on each; or the Accepted=False reason and message.
    fn parent(
        &mut self,
        ns: &str,
        hostnames: &[String],
        p: &ParentRef,
        attach: &[Attach],
    ) -> Option<Result<Vec<Attached>, refs::RefError>> {
        let gw_ns = p.namespace.clone().unwrap_or_else(|| ns.to_string());
        let of_gw: Vec<(usize, &Attach)> = (attach.iter().enumerate())
            .filter(|(_, a)| a.gw_ns == gw_ns && a.gw_name == p.name)
            .collect();
        if !parent_is_gateway(p) || of_gw.is_empty() {
            return None; // not one of our Gateways: another controller's business
        }
        let picked: Vec<_> = (of_gw.into_iter())
            .filter(|(_, a)| p.section_name.as_ref().is_none_or(|s| *s == a.name))
            .filter(|(_, a)| p.port.is_none_or(|port| port == a.port))
            .collect();
        if picked.is_empty() {
            let m = format!(
                "Gateway {gw_ns}/{} has no listener matching sectionName/port",
                p.name
            );
            return Some(Err(("NoMatchingParent", m)));
        }
        let allowed: Vec<_> = (picked.into_iter())
            .filter(|(_, a)| {
                let ns_ok =
                    a.from_all == Some(true) || (a.from_all == Some(false) && a.gw_ns == ns);
                ns_ok && a.kinds_ok && !a.serves.is_empty()
            })
            .collect();
        if allowed.is_empty() {
            let m = format!(
                "no programmed listener of Gateway {gw_ns}/{} allows this route",
                p.name
            );
            return Some(Err(("NotAllowedByListeners", m)));
        }
        let mut found = Vec::new();
        for (i, a) in allowed {
            let hosts: Vec<String> = if hostnames.is_empty() {
                vec![a.hostname.clone().unwrap_or_else(|| "*".into())]
            } else {
                let mut h: Vec<String> = (hostnames.iter())
                    .filter_map(|h| intersect(h, a.hostname.as_deref()))
                    .collect();
                h.dedup();
                h
            };
            if !hosts.is_empty() {
                found.push((i, hosts));
            }
        }
        if found.is_empty() {
            let m = "no hostname in common with the listeners' hostnames".to_string();
            return Some(Err(("NoMatchingListenerHostname", m)));
        }
        Some(Ok(found))
    }

    pub(super) fn route(&mut self, r: &HTTPRoute, attach: &[Attach]) {
        let (ns, name) = key(&r.metadata);
        let gen = r.metadata.generation;
        let mut st = RouteStatus {
            namespace: ns.clone(),
            name: name.clone(),
            parents: Vec::new(),
        };
        let mut groups: Vec<Group> = Vec::new();
        let mut accepted = Vec::new();
        for p in &r.spec.parent_refs {
            match self.parent(&ns, &r.spec.hostnames, p, attach) {
                None => {}
                Some(Err((reason, m))) => st.parents.push(ParentStatus {
                    parent: p.clone(),
                    conditions: vec![
                        Cond::no("Accepted", reason, &m, gen),
                        Cond::yes("ResolvedRefs", "ResolvedRefs", "references resolved", gen),
                    ],
                }),
                Some(Ok(found)) => {
                    for (i, hosts) in found {
                        let a = &attach[i];
                        self.out.status.gateways[a.gw].listeners[a.listener].attached_routes += 1;
                        match groups.iter_mut().find(|g| g.0 == hosts) {
                            Some(g) => g.1.extend(a.serves.iter().cloned()),
                            None => groups.push((hosts, a.serves.clone())),
                        }
                    }
                    accepted.push(st.parents.len());
                    st.parents.push(ParentStatus {
                        parent: p.clone(),
                        conditions: Vec::new(),
                    });
                }
            }
        }
        for g in &mut groups {
            g.1.sort();
            g.1.dedup();
        }
        let mut refs_problem: Option<(&str, String)> = None;
        let mut served = 0;
        let mut first_error = None;
        if !groups.is_empty() {
            for (i, rule) in r.spec.rules.iter().enumerate() {
                match self.rule(&ns, &name, rule, i, &groups, &mut refs_problem) {
                    Ok(n) => served += n,
                    Err(m) => {
                        first_error.get_or_insert(m.clone());
                        self.reject(&ns, &name, m);
                    }
                }
            }
        }
        for k in accepted {
            let accepted = match (&first_error, served) {
                (None, _) => Cond::yes("Accepted", "Accepted", "route accepted", gen),
                (Some(m), 0) => Cond::no("Accepted", "UnsupportedValue", m, gen),
                (Some(m), _) => Cond::yes("Accepted", "Accepted", &format!("partly: {m}"), gen),
            };
            let refs = match &refs_problem {
                None => Cond::yes("ResolvedRefs", "ResolvedRefs", "references resolved", gen),
                Some((reason, m)) => Cond::no("ResolvedRefs", reason, m, gen),
            };
            st.parents[k].conditions = vec![accepted, refs];
        }
        if !st.parents.is_empty() {
            self.out.status.routes.push(st);
        }
    }

    /// One rule → one route per (match, group); the number of routes, or why none.
    fn rule(
        &mut self,
        ns: &str,
        name: &str,
        rule: &Rule,
        i: usize,
        groups: &[Group],
        refs_problem: &mut Option<(&'static str, String)>,
    ) -> Result<usize, String> {
        let field = &format!("spec.rules[{i}]");
        let t = rule.timeouts.clone().unwrap_or_default();
        let parse = |v: &Option<String>, sub: &str| match v {
            Some(s) => duration(s).map_err(|e| format!("{field}.timeouts.{sub}: {e}")),
            None => Ok(None),
        };
        let timeouts = (
            parse(&t.request, "request")?,
            parse(&t.backend_request, "backendRequest")?,
        );
        let mut backends = Vec::new();
        for (k, b) in rule.backend_refs.iter().enumerate() {
            let at = format!("{field}.backendRefs[{k}]");
            if !b.filters.is_empty() {
                let m = format!("{at}.filters: per-backend filters are not supported");
                self.reject(ns, name, m.clone());
                refs_problem.get_or_insert(("UnsupportedValue", m));
                continue;
            }
            match self.cluster(ns, b, &at, timeouts) {
                Ok(c) => backends.push(WeightedCluster {
                    name: c,
                    weight: b.weight.unwrap_or(1).max(0) as u32,
                }),
                Err((reason, m)) => {
                    self.reject(ns, name, m.clone());
                    refs_problem.get_or_insert((reason, m));
                }
            }
        }
        let actions: Actions = filters::actions(self, ns, rule, field, refs_problem)?;
        if !actions.has_redirect() && backends.iter().all(|b| b.weight == 0) {
            return Err(format!(
                "{field}.backendRefs: no valid backend with a weight above 0"
            ));
        }
        let default_match = [Match::default()];
        let matches = if rule.matches.is_empty() {
            &default_match[..]
        } else {
            &rule.matches
        };
        let mut built = Vec::new();
        for (j, m) in matches.iter().enumerate() {
            for (gi, (hosts, listeners)) in groups.iter().enumerate() {
                let mut rname = format!("{ns}/{name}/rule-{i}/match-{j}");
                if groups.len() > 1 {
                    rname = format!("{rname}/{gi}");
                }
                let mut route = blank(rname, hosts.clone(), listeners.clone());
                matcher(&mut route, m, &format!("{field}.matches[{j}]"))?;
                actions.apply(&mut route, &backends)?;
                self.check(&route)
                    .map_err(|e| format!("{field}.matches[{j}]: {e}"))?;
                built.push(route);
            }
        }
        let n = built.len();
        self.out.routes.extend(built);
        Ok(n)
    }

    /// The config validators on this one route (with its clusters): whatever they refuse is
    /// rejected here, alone, rather than failing the whole merge.
    fn check(&self, r: &Route) -> Result<(), String> {
        let mut route = r.clone();
        route.listeners.clear();
        let mut cfg = config::Config::default();
        let used = |c: &&Cluster| {
            route.cluster.as_deref() == Some(&c.name)
                || route.clusters.iter().any(|w| w.name == c.name)
                || route.mirror.as_ref().is_some_and(|m| m.cluster == c.name)
        };
        cfg.clusters = (self.clusters.values().filter(used))
            .map(|c| Arc::new(c.clone()))
            .collect();
        cfg.routes = vec![Arc::new(route)];
        config::check(&cfg).map_err(|e| e.to_string())
    }
}
