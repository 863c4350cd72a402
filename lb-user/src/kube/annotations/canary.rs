//! ingress-nginx style canaries: an Ingress with `canary: "true"` serves nothing by itself; each
//! of its routes splits the route of a main Ingress with the same hosts and path (weight, header,
//! cookie) towards the canary's backend.

use super::spec::Level;
use super::{check_route, Parsed};
use crate::config::{Canary, PathMatch, Route, WeightedCluster};

/// Splits the first route in `main` with exactly `hosts` and `path` that proxies to one cluster:
/// `canary-weight` % of its requests (and every request the header or cookie selects) go to
/// `cluster`. Err says why not (no such route, already split, invalid result).
pub(crate) fn split<'a>(
    main: impl Iterator<Item = &'a mut Route>,
    hosts: &[String],
    path: Option<&PathMatch>,
    cluster: &str,
    ann: &Parsed,
) -> Result<(), String> {
    let Some(ca) = &ann.canary else {
        return Ok(());
    };
    let mut main =
        main.filter(|r| r.hosts == hosts && r.path.as_ref() == path && r.redirect.is_none());
    let Some(r) = main.next() else {
        return Err(format!(
            "canary: no route of a main (non-canary) Ingress has hosts {hosts:?} and {} to split",
            describe(path)
        ));
    };
    let name = r.name.clone().unwrap_or_default();
    let Some(primary) = r.cluster.clone().filter(|_| r.canary.is_none()) else {
        return Err(format!(
            "canary: route {name} is already split by another canary Ingress"
        ));
    };
    let mut split = r.clone();
    if let Some(w) = ca.weight {
        split.cluster = None;
        split.clusters = vec![
            WeightedCluster {
                name: primary,
                weight: 100 - w,
            },
            WeightedCluster {
                name: cluster.to_string(),
                weight: w,
            },
        ];
    }
    if ca.header.is_some() || ca.cookie.is_some() {
        split.canary = Some(Canary {
            cluster: cluster.to_string(),
            header: ca.header.clone(),
            cookie: ca.cookie.clone(),
        });
    }
    if let Err(es) = check_route(&split) {
        let msgs: Vec<String> = es
            .iter()
            .map(|e| ann.blame(Level::Route, &e.path, &e.message))
            .collect();
        return Err(format!("canary onto route {name}: {}", msgs.join("; ")));
    }
    *r = split;
    Ok(())
}

fn describe(path: Option<&PathMatch>) -> String {
    match path {
        None => "no path".into(),
        Some(PathMatch::Exact(p)) => format!("path exact {p}"),
        Some(PathMatch::Prefix(p)) => format!("path prefix {p}"),
        Some(PathMatch::Regex(p)) => format!("path regex {p}"),
    }
}
