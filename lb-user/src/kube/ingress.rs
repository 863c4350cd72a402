//! Ingress → routes, clusters and TLS certificates: which Ingresses are ours (class, legacy
//! annotation, default class), rules and paths, defaultBackend, service backends, spec.tls Secrets.
//!
//! Paths: `Exact` → `path.exact`; `Prefix` → `path.prefix` (segment boundaries: `/api` matches
//! `/api`, `/api/` and `/api/x`, never `/apix`); `ImplementationSpecific` → `path.regex`, a Rust
//! regex anchored at the start of the path (`^(?:PATH)`), unanchored at the end, case-sensitive:
//! `/api/v[0-9]+` matches `/api/v2/users` (as ingress-nginx's `use-regex`). A plain path given as
//! ImplementationSpecific therefore acts as a prefix without segment boundaries.
//!
//! defaultBackend: a route for host `"*"` without a path (lowest rank), plus one without a path
//! for the hosts of the Ingress's own rules, since our router never falls back from a host's
//! routes to `"*"`. These routes come after every rule route, so on a tie (a rule with prefix `/`)
//! the rule wins. Two Ingresses with a defaultBackend: the first by namespace/name wins.
//!
//! A bad path (invalid regex, Exact without `/`) or backend (no such Service, no such port,
//! ExternalName, resource backend) rejects that one route; a bad TLS entry rejects that entry only.
//! Annotations (annotations/): a bad one rejects every route of its Ingress (its TLS entries
//! stay); each produced route is checked by the config validators and rejected alone if invalid.

mod backends;

pub(super) use backends::Index;

use super::annotations::{self, canary, spec::Level, On, Parsed};
use super::{Mapped, ObjectError, Objects, Options, TlsCert};
use crate::config::{Cluster, HeaderEdits, PathMatch, Redirect, Route};
use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressClass, IngressTLS};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const LEGACY_CLASS: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

/// The IngressClasses of our controller.
pub(super) struct Classes {
    /// Names for `spec.ingressClassName`: IngressClass objects with our controller.
    names: BTreeSet<String>,
    /// Names for the legacy annotation: the above plus `Options::ingress_class`.
    legacy: BTreeSet<String>,
    /// One of ours is marked default: Ingresses without any class are ours.
    default: bool,
}

impl Classes {
    pub(super) fn new(classes: &[Arc<IngressClass>], opts: &Options) -> Classes {
        let mut c = Classes {
            names: BTreeSet::new(),
            legacy: BTreeSet::new(),
            default: false,
        };
        for ic in classes {
            let Some(name) = ic.metadata.name.clone() else {
                continue;
            };
            let controller = ic.spec.as_ref().and_then(|s| s.controller.as_deref());
            let wanted = opts.ingress_class.as_ref().is_none_or(|n| *n == name);
            if controller != Some(opts.controller.as_str()) || !wanted {
                continue;
            }
            let ann = ic.metadata.annotations.as_ref();
            c.default |= ann.and_then(|a| a.get(DEFAULT_CLASS)).map(String::as_str) == Some("true");
            c.names.insert(name);
        }
        c.legacy = c.names.clone();
        c.legacy.extend(opts.ingress_class.clone());
        c
    }

    /// `spec.ingressClassName` decides when set, else the legacy annotation, else the default class.
    pub(super) fn is_ours(&self, ing: &Ingress) -> bool {
        let spec_class = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_ref());
        let ann = ing.metadata.annotations.as_ref();
        if let Some(c) = spec_class {
            self.names.contains(c)
        } else if let Some(c) = ann.and_then(|a| a.get(LEGACY_CLASS)) {
            self.legacy.contains(c)
        } else {
            self.default
        }
    }
}

/// Accumulates the mapping of every Ingress of ours.
pub(super) struct Mapper<'a> {
    /// Services, Secrets and EndpointSlices by namespace and name.
    index: backends::Index<'a>,
    /// The config file's listeners without TLS: where `ssl-redirect` redirects from.
    plain_listeners: &'a [String],
    routes: Vec<Route>,
    defaults: Vec<Route>,
    clusters: BTreeMap<String, Cluster>,
    /// Clusters that could not be built, with why (asked again by every route using them).
    bad_clusters: BTreeMap<String, String>,
    /// Each Service's parsed annotations (None: invalid, already rejected), by namespace/name.
    services: BTreeMap<(String, String), Option<Parsed>>,
    tls: Vec<TlsCert>,
    rejected: Vec<ObjectError>,
    /// Endpoint sources of every cluster built (or tried).
    sources: super::fastpath::Sources,
}

/// Where an Ingress's route comes from and goes.
struct Origin<'s> {
    ns: &'s str,
    name: &'s str,
    ann: &'s Parsed,
    /// The mirror-target's cluster.
    mirror: Option<&'s str>,
}

fn meta_key(ns: Option<&String>, name: Option<&String>) -> (String, String) {
    let ns = ns.map_or("default", String::as_str).to_string();
    (ns, name.cloned().unwrap_or_default())
}

fn route(name: String, hosts: Vec<String>, path: Option<PathMatch>, cluster: String) -> Route {
    Route {
        name: Some(name),
        hosts,
        path,
        listeners: Vec::new(),
        methods: Vec::new(),
        headers: Vec::new(),
        query: Vec::new(),
        cluster: Some(cluster),
        clusters: Vec::new(),
        canary: None,
        redirect: None,
        rewrite: None,
        allow: Vec::new(),
        deny: Vec::new(),
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        hsts: None,
        mirror: None,
        rate_limit: None,
    }
}

/// `spec.rules[i].http.paths[j]` → our path match, or why not.
fn path_match(p: &HTTPIngressPath, field: &str) -> Result<PathMatch, String> {
    let path = p.path.as_deref().filter(|s| !s.is_empty());
    match p.path_type.as_str() {
        "Exact" => match path {
            Some(s) if s.starts_with('/') => Ok(PathMatch::Exact(s.to_string())),
            _ => Err(format!(
                "{field}.path: Exact needs a path starting with '/'"
            )),
        },
        "Prefix" => match path {
            None => Ok(PathMatch::Prefix("/".into())),
            Some(s) if s.starts_with('/') => Ok(PathMatch::Prefix(s.to_string())),
            Some(s) => Err(format!("{field}.path: {s:?} must start with '/'")),
        },
        "ImplementationSpecific" => {
            let re = format!("^(?:{})", path.unwrap_or("/"));
            match regex::Regex::new(&re) {
                Ok(_) => Ok(PathMatch::Regex(re)),
                Err(e) => Err(format!("{field}.path: invalid regex: {e}")),
            }
        }
        other => Err(format!(
            "{field}.pathType: {other:?} is not Exact, Prefix or ImplementationSpecific"
        )),
    }
}

impl<'a> Mapper<'a> {
    pub(super) fn new(objs: &'a Objects, plain_listeners: &'a [String]) -> Mapper<'a> {
        Mapper {
            index: backends::Index::new(objs),
            plain_listeners,
            routes: Vec::new(),
            defaults: Vec::new(),
            clusters: BTreeMap::new(),
            bad_clusters: BTreeMap::new(),
            services: BTreeMap::new(),
            tls: Vec::new(),
            rejected: Vec::new(),
            sources: Default::default(),
        }
    }

    /// The routes (defaults last) and the clusters some route uses.
    pub(super) fn finish(mut self) -> Mapped {
        self.routes.append(&mut self.defaults);
        let mut used = BTreeSet::new();
        for r in &self.routes {
            used.extend(r.cluster.iter());
            used.extend(r.clusters.iter().map(|c| &c.name));
            used.extend(r.canary.iter().map(|c| &c.cluster));
            used.extend(r.mirror.iter().map(|m| &m.cluster));
        }
        let clusters = self.clusters.into_iter().filter(|(n, _)| used.contains(n));
        Mapped {
            clusters: clusters.map(|(_, c)| c).collect(),
            routes: self.routes,
            tls: self.tls,
            rejected: self.rejected,
            sources: self.sources,
        }
    }

    fn reject(&mut self, ns: &str, name: &str, message: String) {
        self.reject_kind("Ingress", ns, name, message);
    }

    fn reject_kind(&mut self, kind: &str, ns: &str, name: &str, message: String) {
        self.rejected.push(ObjectError {
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            message,
        });
    }

    pub(super) fn ingress(&mut self, ing: &Ingress) {
        let (ns, name) = meta_key(ing.metadata.namespace.as_ref(), ing.metadata.name.as_ref());
        let Some(spec) = &ing.spec else {
            return;
        };
        for (k, t) in spec.tls.iter().flatten().enumerate() {
            match self.tls_entry(&ns, t, &format!("spec.tls[{k}]")) {
                Ok(cert) => self.tls.push(cert),
                Err(m) => self.reject(&ns, &name, m),
            }
        }
        let ann = match annotations::parse(ing.metadata.annotations.as_ref(), On::Ingress) {
            Ok(a) => a,
            Err(msgs) => {
                for m in msgs {
                    self.reject(
                        &ns,
                        &name,
                        format!("{m}; none of this Ingress's routes are served"),
                    );
                }
                return;
            }
        };
        let mirror = match &ann.mirror {
            Some(r) => {
                match self.cluster_for(&ns, r, &|_| annotations::field("mirror-target"), None) {
                    Ok(c) => Some(c),
                    Err(m) => {
                        self.reject(
                            &ns,
                            &name,
                            format!("{m}; none of this Ingress's routes are served"),
                        );
                        return;
                    }
                }
            }
            None => None,
        };
        let o = Origin {
            ns: &ns,
            name: &name,
            ann: &ann,
            mirror: mirror.as_deref(),
        };
        let mut rule_hosts = BTreeSet::new();
        for (i, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.clone().filter(|h| !h.is_empty());
            let host = host.unwrap_or_else(|| "*".into());
            if host != "*" {
                rule_hosts.insert(host.clone());
            }
            for (j, p) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
                let field = format!("spec.rules[{i}].http.paths[{j}]");
                let res = path_match(p, &field).and_then(|pm| {
                    let c = self.backend(&o, &p.backend, &format!("{field}.backend"))?;
                    Ok((pm, c))
                });
                match res {
                    Ok((pm, c)) => {
                        let rname = format!("rule-{i}/path-{j}");
                        let r = route(rname, vec![host.clone()], Some(pm), c);
                        self.emit(&o, r, &field, false);
                    }
                    Err(m) => self.reject(&ns, &name, m),
                }
            }
        }
        if let Some(db) = &spec.default_backend {
            let field = "spec.defaultBackend";
            match self.backend(&o, db, field) {
                Ok(c) => {
                    let all = vec!["*".to_string()];
                    self.emit(
                        &o,
                        route("default".into(), all, None, c.clone()),
                        field,
                        true,
                    );
                    if !rule_hosts.is_empty() {
                        let hosts = rule_hosts.into_iter().collect();
                        let r = route("default-hosts".into(), hosts, None, c);
                        self.emit(&o, r, field, true);
                    }
                }
                Err(m) => self.reject(&ns, &name, m),
            }
        }
    }

    /// Adds route `r` (named relative to its Ingress) with the Ingress's route settings, after
    /// the config validators accept it, plus its HTTPS redirect twin; a canary Ingress's route
    /// splits a main route instead.
    fn emit(&mut self, o: &Origin, mut r: Route, field: &str, default: bool) {
        r.name = Some(format!(
            "{}/{}/{}",
            o.ns,
            o.name,
            r.name.unwrap_or_default()
        ));
        if o.ann.canary.is_some() {
            let cluster = r.cluster.clone().unwrap_or_default();
            let main = self.routes.iter_mut().chain(self.defaults.iter_mut());
            if let Err(m) = canary::split(main, &r.hosts, r.path.as_ref(), &cluster, o.ann) {
                self.reject(o.ns, o.name, format!("{field}: {m}"));
            }
            return;
        }
        o.ann.apply_route(&mut r, o.mirror);
        if let Err(es) = annotations::check_route(&r) {
            for e in es {
                let m = if o.ann.sets(Level::Route, &e.path) {
                    o.ann.blame(Level::Route, &e.path, &e.message)
                } else {
                    let at = e.path.strip_prefix("routes[0]").unwrap_or(&e.path);
                    format!("route{}: {}", at.replacen('.', " ", 1), e.message)
                };
                self.reject(o.ns, o.name, format!("{field}: {m}"));
            }
            return;
        }
        let twin = (o.ann.ssl_redirect && !self.plain_listeners.is_empty()).then(|| Route {
            name: r.name.as_ref().map(|n| format!("{n}/ssl-redirect")),
            listeners: self.plain_listeners.to_vec(),
            cluster: None,
            redirect: Some(Redirect {
                scheme: Some("https".into()),
                host: None,
                port: None,
                path_prefix: None,
                status: 308,
            }),
            allow: r.allow.clone(),
            deny: r.deny.clone(),
            ..route(
                String::new(),
                r.hosts.clone(),
                r.path.clone(),
                String::new(),
            )
        });
        let list = if default {
            &mut self.defaults
        } else {
            &mut self.routes
        };
        list.extend(twin);
        list.push(r);
    }

    /// One `spec.tls` entry → a certificate from a `kubernetes.io/tls` Secret in `ns`.
    fn tls_entry(&self, ns: &str, t: &IngressTLS, field: &str) -> Result<TlsCert, String> {
        let Some(sname) = t.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            return Err(format!(
                "{field}.secretName: missing (a default certificate is not supported)"
            ));
        };
        let Some(secret) = self.secret(ns, sname) else {
            return Err(format!("{field}.secretName: Secret {ns}/{sname} not found"));
        };
        if secret.type_.as_deref() != Some("kubernetes.io/tls") {
            return Err(format!(
                "{field}.secretName: Secret {ns}/{sname} is not of type kubernetes.io/tls"
            ));
        }
        let data = secret.data.as_ref();
        let get = |k: &str| {
            data.and_then(|d| d.get(k))
                .map(|b| b.0.clone())
                .filter(|b| !b.is_empty())
                .ok_or_else(|| format!("{field}.secretName: Secret {ns}/{sname} has no {k}"))
        };
        Ok(TlsCert {
            hosts: t.hosts.clone().unwrap_or_default(),
            secret: format!("{ns}/{sname}"),
            cert_pem: get("tls.crt")?,
            key_pem: get("tls.key")?,
        })
    }
}
