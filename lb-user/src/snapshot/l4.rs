//! The snapshot's L4 view: per service its map key, Maglev size, endpoints with effective weights
//! and its ring (shared, rebuilt only when the (endpoint, weight) list changes), node settings.

use super::view::{ClusterView, EpState};
use crate::config::{Config, L4Target};
use crate::maglev;
use lb_common::{
    L4Config, ServiceKey, CFG_RATE_ALL, CFG_RATE_PROTECTED, CFG_SNAT_V4, CFG_SNAT_V6, FAMILY_V4,
    FAMILY_V6,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// What the L4 dataplane should hold. Equal views mean nothing to apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct L4View {
    /// In config order.
    pub services: Vec<L4ServiceView>,
    /// The `LB_L4_CFG` entry.
    pub settings: L4Config,
    /// SYN-flood mode destinations (`LB_PROTECT`), sorted, no duplicates.
    pub protect: Vec<ServiceKey>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct L4ServiceView {
    pub name: Arc<str>,
    pub key: ServiceKey,
    pub maglev_size: u32,
    /// Every endpoint of the service's cluster, in config order. All of them are live (their
    /// flows stay); only those with `effective > 0` are in the ring.
    pub endpoints: Vec<L4EndpointView>,
    /// The Maglev table: `maglev_size` indices into `endpoints`, or empty when no endpoint
    /// takes new flows. Shared by every view with the same (endpoint, weight) list and size.
    pub ring: Arc<[u32]>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct L4EndpointView {
    pub addr: SocketAddr,
    /// The endpoint's name in metrics (its cluster label: `name`, default the address).
    pub name: Arc<str>,
    pub state: EpState,
    /// The cluster view's effective weight (units of 1/SCALE): health, overrides, backups and
    /// slow start included. 0: out of the ring.
    pub effective: u32,
}

/// Builds the view from a validated config and its cluster views (same order as
/// `cfg.clusters`).
pub fn view(cfg: &Config, clusters: &[Arc<ClusterView>]) -> L4View {
    // Only the L4 services' clusters (thousands of L7 clusters are not indexed for none).
    let wanted: std::collections::HashSet<&str> =
        cfg.l4_services.iter().map(|s| s.cluster.as_str()).collect();
    let by_name: HashMap<&str, usize> = (cfg.clusters.iter().enumerate())
        .filter(|(_, c)| !wanted.is_empty() && wanted.contains(c.name.as_str()))
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let services = cfg
        .l4_services
        .iter()
        .map(|s| {
            let endpoints: Vec<L4EndpointView> = by_name
                .get(s.cluster.as_str())
                .and_then(|&i| Some((cfg.clusters.get(i)?, clusters.get(i)?)))
                .map(|(c, v)| {
                    c.endpoints
                        .iter()
                        .zip(&v.endpoints)
                        .map(|(e, ev)| L4EndpointView {
                            addr: e.address,
                            name: e.label().into(),
                            state: ev.state,
                            effective: ev.effective,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let maglev_size = s.table_size(endpoints.len());
            L4ServiceView {
                name: s.name.as_str().into(),
                key: service_key(&s.target()),
                ring: ring(&s.name, &endpoints, maglev_size),
                maglev_size,
                endpoints,
            }
        })
        .collect();
    L4View {
        services,
        settings: settings(cfg),
        protect: protect(cfg),
    }
}

/// [`view`], or `prev` itself when nothing changed (so consumers can skip by pointer).
pub fn derive(prev: &Arc<L4View>, cfg: &Config, clusters: &[Arc<ClusterView>]) -> Arc<L4View> {
    let next = view(cfg, clusters);
    if **prev == next {
        prev.clone()
    } else {
        Arc::new(next)
    }
}

/// The map key of a destination: address in 16 bytes (IPv4 in the first 4), port in network
/// order, protocol number, family.
pub fn service_key(t: &L4Target) -> ServiceKey {
    let (addr, family) = addr16(t.addr);
    ServiceKey {
        addr,
        port: t.port.to_be(),
        proto: t.protocol.number(),
        family,
    }
}

/// An address as lb_common stores it, and its family.
pub fn addr16(ip: IpAddr) -> ([u8; 16], u8) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (out, FAMILY_V4)
        }
        IpAddr::V6(a) => (a.octets(), FAMILY_V6),
    }
}

/// The endpoint key Maglev hashes: its address as text, identical on every node.
pub fn endpoint_hash(addr: &SocketAddr) -> u64 {
    maglev::hash64(addr.to_string().as_bytes())
}

fn settings(cfg: &Config) -> L4Config {
    let l4 = &cfg.xdp.l4;
    let mut s = L4Config {
        port_min: l4.nat_ports.min,
        port_max: l4.nat_ports.max,
        tcp_timeout_ns: nanos(l4.tcp_timeout.0),
        tcp_closing_ns: nanos(l4.tcp_closing_timeout.0),
        udp_timeout_ns: nanos(l4.udp_timeout.0),
        ..Default::default()
    };
    if let Some(a) = l4.snat_v4 {
        s.snat_v4 = a.octets();
        s.flags |= CFG_SNAT_V4;
    }
    if let Some(a) = l4.snat_v6 {
        s.snat_v6 = a.octets();
        s.flags |= CFG_SNAT_V6;
    }
    if let Some(rl) = &cfg.xdp.rate_limit {
        // GCRA: one new flow per interval, `burst` at once after a quiet period.
        let interval = 1_000_000_000 / u64::from(rl.new_flows_per_second.max(1));
        s.rate_interval_ns = interval.max(1);
        s.rate_tolerance_ns = s.rate_interval_ns * u64::from(rl.burst().max(1) - 1);
        s.flags |= if rl.protect.is_empty() {
            CFG_RATE_ALL
        } else {
            CFG_RATE_PROTECTED
        };
    }
    s
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn protect(cfg: &Config) -> Vec<ServiceKey> {
    let mut keys: Vec<ServiceKey> = cfg
        .xdp
        .rate_limit
        .iter()
        .flat_map(|rl| rl.protect.iter().map(service_key))
        .collect();
    keys.sort_by_key(|k| (k.family, k.addr, k.port, k.proto));
    keys.dedup();
    keys
}

/// What a ring is computed from: the (endpoint hash, weight) list in endpoint order, and size.
type RingKey = (u32, Vec<(u64, u32)>);

/// Rings in use by some snapshot, by what they were computed from: a ring is computed again
/// only when its service's list or size changed (or no snapshot holds it any more).
struct RingCache {
    rings: HashMap<RingKey, Weak<[u32]>>,
    /// Dead entries are swept when the map reaches this size.
    sweep_at: usize,
}

fn cache() -> &'static Mutex<RingCache> {
    static CACHE: OnceLock<Mutex<RingCache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(RingCache {
            rings: HashMap::new(),
            sweep_at: 64,
        })
    })
}

/// The service's Maglev ring, from the cache when an identical one is alive.
fn ring(service: &str, endpoints: &[L4EndpointView], size: u32) -> Arc<[u32]> {
    let list: Vec<(u64, u32)> = endpoints
        .iter()
        .map(|e| (endpoint_hash(&e.addr), e.effective))
        .collect();
    if list.iter().all(|(_, w)| *w == 0) {
        return Arc::from(Vec::new());
    }
    let key = (size, list);
    if let Some(r) = lock().rings.get(&key).and_then(Weak::upgrade) {
        return r;
    }
    let ring: Arc<[u32]> = match maglev::build(&key.1, size as usize) {
        Ok(t) => t.into(),
        Err(e) => {
            // Validation rules this out; never serve a half-built table.
            tracing::error!(service, error = %e, "building the Maglev ring: no new flows");
            Arc::from(Vec::new())
        }
    };
    let mut c = lock();
    c.rings.insert(key, Arc::downgrade(&ring));
    if c.rings.len() >= c.sweep_at {
        c.rings.retain(|_, w| w.strong_count() > 0);
        c.sweep_at = (c.rings.len() * 2).max(64);
    }
    ring
}

fn lock() -> std::sync::MutexGuard<'static, RingCache> {
    // A panic while holding the lock leaves a map of weak pointers: still usable.
    cache().lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[path = "l4_tests.rs"]
mod tests;
