//! Annotation values judged by the config's own Deserialize and validators (config::check), and
//! their errors traced back to the annotations that set the field at fault.

use super::spec::{Level, Spec};
use super::{field, Parsed};
use crate::config::{self, Cluster, Config, ConfigError, Endpoint, Route};
use crate::tls;
use serde_yaml::{Mapping, Value};
use std::sync::{Arc, LazyLock};

/// Stands in for a cluster name that is only known per route (the mirror target).
pub(super) const PLACEHOLDER: &str = "annotations";

/// A cluster with our defaults, to stand in for a route's clusters while checking the route.
static STUB: LazyLock<Option<Cluster>> = LazyLock::new(|| serde_yaml::from_str("name: stub").ok());

/// The annotations of `present` at `level` that set config field `path`
/// (`clusters[0].retries.attempts`), a field inside it or a field it is inside.
pub(super) fn hits<'a>(
    present: impl Iterator<Item = &'a (&'static Spec, String)>,
    level: Level,
    path: &str,
) -> Vec<&'a (&'static Spec, String)> {
    let rel = relative(path);
    present
        .filter(|(s, _)| s.level == level && s.paths.iter().any(|p| related(p, &rel)))
        .collect()
}

/// An error about config field `path` naming the annotations that set it ([`hits`]).
pub(crate) fn blame<'a>(
    present: impl Iterator<Item = &'a (&'static Spec, String)>,
    level: Level,
    path: &str,
    msg: &str,
) -> String {
    let what = match path.split_once('.') {
        Some((_, r)) => format!("{r}: "),
        None => String::new(),
    };
    match hits(present, level, path).as_slice() {
        [] => format!("metadata.annotations: {what}{msg}"),
        [(s, raw)] => format!("{} = {raw:?}: {what}{msg}", field(s.name)),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|(s, _)| format!("{}{}", super::ANNOTATION_PREFIX, s.name))
                .collect();
            format!("metadata.annotations[{}]: {what}{msg}", names.join(", "))
        }
    }
}

/// `routes[0].request_headers.set.X-A` → `request_headers.set.X-A`; sequence indexes dropped.
fn relative(path: &str) -> String {
    let rest = match path.split_once('.') {
        Some((head, rest)) if head.ends_with(']') => rest,
        None if path.ends_with(']') => "",
        _ => path,
    };
    let mut out = String::with_capacity(rest.len());
    let mut depth = 0u32;
    for c in rest.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn related(spec_path: &str, path: &str) -> bool {
    let under =
        |a: &str, b: &str| a.len() > b.len() && a.starts_with(b) && a.as_bytes()[b.len()] == b'.';
    !path.is_empty() && (spec_path == path || under(spec_path, path) || under(path, spec_path))
}

/// Deserializes `T` from `v` as a config file would be; the error with its field path under
/// `at` (`routes[0]`, `clusters[0]`), as config::check names fields.
fn typed<T: serde::de::DeserializeOwned>(v: Mapping, at: &str) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize::<_, T>(Value::Mapping(v)).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => at.to_string(),
            p => format!("{at}.{p}"),
        };
        (path, e.into_inner().to_string())
    })
}

/// An object's route and cluster settings on their own: a route standing for every route of
/// the Ingress (prefix `/`, the mirror to a stand-in cluster) and a cluster without endpoints.
pub(super) fn alone(p: &mut Parsed, errs: &mut Vec<String>) {
    if !p.route.is_empty() {
        let mut m: Mapping =
            serde_yaml::from_str("{hosts: ['*'], path: {prefix: /}, cluster: annotations}")
                .unwrap_or_default();
        super::values::merge(&mut m, &p.route);
        match typed::<Route>(m, "routes[0]") {
            Ok(r) => match check_route(&r) {
                Ok(()) => p.route_tpl = Some(r),
                Err(es) => errs.extend(
                    es.iter()
                        .map(|e| p.blame(Level::Route, &e.path, &e.message)),
                ),
            },
            Err((path, msg)) => errs.push(p.blame(Level::Route, &path, &msg)),
        }
    }
    if !p.cluster.is_empty() {
        let present = p.present.iter();
        if let Err(e) = cluster(PLACEHOLDER.into(), p.cluster.clone(), Vec::new(), present) {
            errs.push(e);
        }
    }
}

/// A cluster with our defaults (as if written `{name: ...}` in a config file) and `endpoints`,
/// from a template parsed once.
pub(super) fn plain(name: String, endpoints: Vec<Endpoint>) -> Cluster {
    match STUB.as_ref() {
        Some(stub) => Cluster {
            name,
            endpoints,
            ..stub.clone()
        },
        None => crate::kube::endpoints::cluster(name, endpoints),
    }
}

/// Checks one produced route with the config validators; the clusters it names stand in by
/// name (they are checked when built).
pub(crate) fn check_route(r: &Route) -> Result<(), Vec<ConfigError>> {
    let Some(stub) = STUB.as_ref() else {
        return Ok(());
    };
    let mut names: Vec<&str> = r.cluster.iter().map(String::as_str).collect();
    names.extend(r.clusters.iter().map(|c| c.name.as_str()));
    names.extend(r.canary.iter().map(|c| c.cluster.as_str()));
    names.extend(r.mirror.iter().map(|m| m.cluster.as_str()));
    names.sort_unstable();
    names.dedup();
    let cfg = Config {
        routes: vec![Arc::new(Route {
            listeners: Vec::new(), // the config file's listeners: known to be there
            ..r.clone()
        })],
        clusters: names
            .into_iter()
            .map(|n| {
                Arc::new(Cluster {
                    name: n.to_string(),
                    ..stub.clone()
                })
            })
            .collect(),
        ..Config::default()
    };
    config::check(&cfg).map_err(|e| e.0)
}

/// Builds and checks cluster `name` from settings `fields` (a config cluster's shape) and
/// `endpoints`; errors name the annotations in `present` that set the field at fault.
pub(super) fn cluster<'a>(
    name: String,
    mut fields: Mapping,
    endpoints: Vec<Endpoint>,
    present: impl Iterator<Item = &'a (&'static Spec, String)> + Clone,
) -> Result<Cluster, String> {
    fields.insert("name".into(), Value::String(name));
    let mut c: Cluster = typed(fields, "clusters[0]")
        .map_err(|(p, m)| blame(present.clone(), Level::Cluster, &p, &m))?;
    c.endpoints = endpoints;
    let cfg = Config {
        clusters: vec![Arc::new(c)],
        ..Config::default()
    };
    if let Err(e) = config::check(&cfg) {
        let msgs: Vec<String> =
            e.0.iter()
                .map(|e| blame(present.clone(), Level::Cluster, &e.path, &e.message))
                .collect();
        return Err(msgs.join("; "));
    }
    let c = cfg.clusters.into_iter().next().ok_or("no cluster")?;
    let c = Arc::unwrap_or_clone(c);
    if let Err(m) = backend_tls(&c) {
        return Err(blame(present, Level::Cluster, "clusters[0].tls", &m));
    }
    Ok(c)
}

/// The backend TLS settings load as the file source would load them (CA file read, name
/// valid); a CA path must be absolute (there is no config file to be relative to).
fn backend_tls(c: &Cluster) -> Result<(), String> {
    let Some(t) = &c.tls else { return Ok(()) };
    if let Some(n) = &t.server_name {
        tls::server_name(n).map_err(|e| e.to_string())?;
    }
    let Some(ca) = t.ca.as_ref().filter(|_| !t.insecure_skip_verify) else {
        return Ok(());
    };
    if !ca.is_absolute() {
        return Err(format!(
            "ca: {} must be an absolute path (a file in lb's pod)",
            ca.display()
        ));
    }
    let backend = tls::BackendTls {
        ca: Some(ca.clone()),
        client_cert: None,
        server_name: t.server_name.clone(),
        insecure_skip_verify: false,
    };
    tls::client_config(&backend, &[b"http/1.1"])
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_relate_by_whole_segments() {
        assert_eq!(relative("clusters[0].retries.attempts"), "retries.attempts");
        assert_eq!(relative("routes[3]"), "");
        assert_eq!(
            relative("clusters[0].health.active.expect_status[1]"),
            "health.active.expect_status"
        );
        assert!(related("health.active.interval", "health.active"));
        assert!(related("tls", "tls.ca"));
        assert!(!related("retries.attempts", "retries.attempts_x"));
        assert!(!related("hsts", ""));
    }

    #[test]
    fn the_template_cluster_has_the_config_defaults() {
        let eps = vec![Endpoint {
            address: "10.0.0.1:80".parse().unwrap(),
            weight: Default::default(),
            name: None,
            backup: false,
        }];
        let want = crate::kube::endpoints::cluster("a".into(), eps.clone());
        assert_eq!(plain("a".into(), eps), want);
    }
}
