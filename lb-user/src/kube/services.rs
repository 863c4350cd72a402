//! Services of type LoadBalancer (or annotated `lb.example.com/l4: "true"`) → XDP L4 services:
//! one per (VIP, port, protocol), each with a cluster built from the Service's EndpointSlices.
//!
//! VIPs: `status.loadBalancer.ingress[].ip`, `spec.externalIPs` and `spec.loadBalancerIP`; an
//! annotated Service without any of those uses its `spec.clusterIPs`. `lb.example.com/l4: "false"`
//! keeps a LoadBalancer Service out. Names: service `NS/SVC:PORT/PROTO@VIP`, cluster
//! `NS/SVC:PORT/PROTO/v4` (or `/v6`: a VIP's endpoints are of its family).
//!
//! What cannot be served is rejected alone (the rest of the Service still is), named and with
//! why: SCTP and other protocols, a family without `xdp.l4.snat_v4`/`snat_v6` in the node config,
//! a destination already served (by the file or an earlier Service by namespace/name) or taken by
//! a listener, and what would not fit the dataplane's capacities (services, endpoints, ring slots).

use super::endpoints;
use super::{ObjectError, Objects, Options};
use crate::config::{self, Cluster, Config, Endpoint, L4Protocol, L4Service, L4Target};
use k8s_openapi::api::core::v1::Service;
use lb_common::{L4_ENDPOINT_CAPACITY, L4_SERVICE_CAPACITY};
use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

/// The annotation that asks for (`"true"`) or refuses (`"false"`) L4 mode on any Service.
pub const L4_ANNOTATION: &str = "lb.example.com/l4";

/// The L4 part of the mapping: services and their clusters, plus what was left out and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct L4Mapped {
    pub services: Vec<L4Service>,
    pub clusters: Vec<Cluster>,
    pub rejected: Vec<ObjectError>,
    /// (namespace, name) of every Service that asked for L4 mode: a change to its endpoints
    /// needs this mapping again (capacities), not the endpoint fast path.
    pub services_read: BTreeSet<(String, String)>,
}

/// Maps every Service that asks for L4 mode (sorted by namespace/name) against `base`: its
/// `xdp.l4` SNAT addresses, its own `l4_services`, listeners and clusters, and the capacities
/// they leave. Never fails as a whole.
pub fn to_l4(objs: &Objects, opts: &Options, base: &Config) -> L4Mapped {
    let mut svcs: Vec<&Service> = (objs.services.items())
        .filter(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            opts.namespaces.is_empty() || opts.namespaces.iter().any(|n| n == ns)
        })
        .collect();
    svcs.sort_by(|a, b| {
        let key = |s: &Service| (s.metadata.namespace.clone(), s.metadata.name.clone());
        key(a).cmp(&key(b))
    });
    let index = super::ingress::Index::new(objs);
    let mut m = Mapper::new(base);
    for s in svcs {
        m.service(s, &index);
    }
    m.out
}

/// What the base config already uses, and what is left of the dataplane's capacities.
struct Mapper<'a> {
    base: &'a Config,
    taken: HashSet<L4Target>,
    clusters: HashSet<&'a str>,
    services_left: usize,
    endpoints_left: usize,
    ring_left: u64,
    out: L4Mapped,
}

impl<'a> Mapper<'a> {
    fn new(base: &'a Config) -> Mapper<'a> {
        let clusters: HashSet<&str> = base.clusters.iter().map(|c| c.name.as_str()).collect();
        let (mut endpoints, mut ring) = (0usize, 0u64);
        for s in &base.l4_services {
            let n = base
                .clusters
                .iter()
                .find(|c| c.name == s.cluster)
                .map_or(0, |c| c.endpoints.len());
            endpoints += n;
            ring += 2 * u64::from(s.table_size(n));
        }
        Mapper {
            base,
            taken: base.l4_services.iter().map(L4Service::target).collect(),
            clusters,
            services_left: (L4_SERVICE_CAPACITY as usize).saturating_sub(base.l4_services.len()),
            endpoints_left: (L4_ENDPOINT_CAPACITY as usize).saturating_sub(endpoints),
            ring_left: u64::from(base.xdp.l4.ring_slots).saturating_sub(ring),
            out: L4Mapped::default(),
        }
    }

    fn service(&mut self, svc: &Service, index: &super::ingress::Index) {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let reject = |out: &mut L4Mapped, message: String| {
            out.rejected.push(ObjectError {
                kind: "Service".into(),
                namespace: ns.into(),
                name: name.into(),
                message,
            })
        };
        let Some(spec) = svc.spec.as_ref() else {
            return;
        };
        let ann = svc.metadata.annotations.as_ref();
        let is_lb = spec.type_.as_deref() == Some("LoadBalancer");
        let annotated = match ann.and_then(|a| a.get(L4_ANNOTATION)).map(String::as_str) {
            None => false,
            Some("true") => true,
            Some("false") => return,
            Some(v) => {
                let msg = format!("annotation {L4_ANNOTATION}: {v:?} is not \"true\" or \"false\"");
                return reject(&mut self.out, msg);
            }
        };
        if !is_lb && !annotated {
            return;
        }
        self.out.services_read.insert((ns.into(), name.into()));
        let (mut vips, bad) = addresses(svc, annotated);
        for b in bad {
            reject(&mut self.out, b);
        }
        if vips.is_empty() {
            let msg = if annotated {
                "no VIP: no load balancer or external IP, and no cluster IP (headless)"
            } else {
                "no VIP yet: status.loadBalancer.ingress, spec.externalIPs and spec.loadBalancerIP are empty"
            };
            return reject(&mut self.out, msg.into());
        }
        vips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        for (i, sp) in spec.ports.as_deref().unwrap_or_default().iter().enumerate() {
            let at = format!("spec.ports[{i}]");
            let protocol = match sp.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => L4Protocol::Tcp,
                "UDP" => L4Protocol::Udp,
                other => {
                    let msg = format!(
                        "{at}.protocol: {other} is not supported by the XDP L4 path (TCP and UDP only)"
                    );
                    reject(&mut self.out, msg);
                    continue;
                }
            };
            let Some(port) = u16::try_from(sp.port).ok().filter(|p| *p != 0) else {
                reject(
                    &mut self.out,
                    format!("{at}.port: {} is not a port", sp.port),
                );
                continue;
            };
            let found = index.slices(ns, name).iter().copied();
            let eps = endpoints::endpoints(ns, name, sp, found);
            for v4 in [true, false] {
                let family: Vec<IpAddr> =
                    vips.iter().copied().filter(|v| v.is_ipv4() == v4).collect();
                if family.is_empty() {
                    continue;
                }
                let msgs = self.port(ns, name, (port, protocol), &family, &eps);
                for msg in msgs {
                    reject(&mut self.out, format!("{at}: {msg}"));
                }
            }
        }
    }

    /// The services of one Service port on the VIPs of one family, and their cluster; returns
    /// why the ones left out were.
    fn port(
        &mut self,
        ns: &str,
        name: &str,
        (port, protocol): (u16, L4Protocol),
        vips: &[IpAddr],
        all: &[Endpoint],
    ) -> Vec<String> {
        let v4 = vips[0].is_ipv4();
        let (fam, family) = if v4 { ("v4", "IPv4") } else { ("v6", "IPv6") };
        let proto = protocol.as_str();
        let targets = || {
            vips.iter()
                .map(|v| {
                    L4Target {
                        addr: *v,
                        port,
                        protocol,
                    }
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let snat = if v4 {
            self.base.xdp.l4.snat_v4.is_some()
        } else {
            self.base.xdp.l4.snat_v6.is_some()
        };
        if !snat {
            return vec![format!(
                "no snat address for {family} (xdp.l4.snat_{fam} is not set in the node config): {} not served",
                targets()
            )];
        }
        let cluster = format!("{ns}/{name}:{port}/{proto}/{fam}");
        if self.clusters.contains(cluster.as_str()) {
            return vec![format!(
                "cluster {cluster:?} already exists in the config file"
            )];
        }
        let eps: Vec<Endpoint> = all
            .iter()
            .filter(|e| e.address.is_ipv4() == v4)
            .cloned()
            .collect();
        let mut why = Vec::new();
        let mut served = 0;
        for vip in vips {
            let target = L4Target {
                addr: *vip,
                port,
                protocol,
            };
            let taken_by_listener = protocol == L4Protocol::Tcp
                && self
                    .base
                    .listeners
                    .iter()
                    .any(|l| l.address.ip() == *vip && l.address.port() == port);
            let ring = 2 * u64::from(config::default_table_size(eps.len()));
            let problem = if taken_by_listener {
                Some(format!(
                    "{target} is a listener's address in the config file"
                ))
            } else if self.taken.contains(&target) {
                Some(format!(
                    "{target} is already served (config file or an earlier Service)"
                ))
            } else if self.services_left == 0 {
                Some(format!(
                    "{target}: no room, l4 services are at their capacity of {L4_SERVICE_CAPACITY}"
                ))
            } else if self.endpoints_left < eps.len() {
                Some(format!(
                    "{target}: no room for {} endpoints (capacity {L4_ENDPOINT_CAPACITY} in all)",
                    eps.len()
                ))
            } else if self.ring_left < ring {
                Some(format!("{target}: no room in xdp.l4.ring_slots for its Maglev ring ({ring} slots, {} left)", self.ring_left))
            } else {
                None
            };
            if let Some(p) = problem {
                why.push(p);
                continue;
            }
            self.taken.insert(target);
            self.services_left -= 1;
            self.endpoints_left -= eps.len();
            self.ring_left -= ring;
            served += 1;
            self.out.services.push(L4Service {
                name: format!("{ns}/{name}:{port}/{proto}@{vip}"),
                vip: *vip,
                port,
                protocol,
                cluster: cluster.clone(),
                maglev_size: None,
            });
        }
        if served > 0 {
            self.out.clusters.push(endpoints::cluster(cluster, eps));
        }
        why
    }
}

/// The Service's VIPs (load balancer ingress IPs, external IPs, loadBalancerIP; cluster IPs if
/// `cluster_ip_fallback` and none of those), deduplicated, and a message per address that is not
/// an IP (a hostname-only load balancer ingress is skipped, it has no IP to serve).
fn addresses(svc: &Service, cluster_ip_fallback: bool) -> (Vec<IpAddr>, Vec<String>) {
    let mut given: Vec<(String, String)> = Vec::new();
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_deref())
        .unwrap_or_default();
    for (i, ing) in ingress.iter().enumerate() {
        if let Some(ip) = ing.ip.clone() {
            given.push((format!("status.loadBalancer.ingress[{i}].ip"), ip));
        }
    }
    let spec = svc.spec.as_ref();
    let external = spec.and_then(|s| s.external_ips.as_deref());
    for (i, ip) in external.unwrap_or_default().iter().enumerate() {
        given.push((format!("spec.externalIPs[{i}]"), ip.clone()));
    }
    if let Some(ip) = spec.and_then(|s| s.load_balancer_ip.clone()) {
        given.push(("spec.loadBalancerIP".into(), ip));
    }
    given.retain(|(_, ip)| !ip.is_empty());
    if given.is_empty() && cluster_ip_fallback {
        let ips = spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
        let (field, ips) = match spec.and_then(|s| s.cluster_ip.clone()) {
            Some(ip) if ips.is_empty() => ("spec.clusterIP", vec![ip]),
            _ => ("spec.clusterIPs", ips),
        };
        for (i, c) in ips.into_iter().enumerate() {
            if c != "None" && !c.is_empty() {
                given.push((format!("{field}[{i}]"), c));
            }
        }
    }
    let mut found = BTreeSet::new();
    let mut bad = Vec::new();
    for (field, s) in given {
        match s.parse::<IpAddr>() {
            Ok(ip) => {
                found.insert(ip);
            }
            Err(_) => bad.push(format!("{field}: {s:?} is not an IP address")),
        }
    }
    (found.into_iter().collect(), bad)
}
