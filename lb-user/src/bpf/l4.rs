//! Diff-applies a snapshot's L4 view to the XDP maps in the order that keeps every packet served:
//! new endpoint slots, new rings, service flips, removed services, freed rings, dead endpoints.

use super::l4_alloc::{IdAlloc, RegionAlloc};
use crate::snapshot::l4::{addr16, L4View};
use anyhow::Result;
use lb_common::{
    EndpointValue, L4Config, ServiceKey, ServiceValue, L4_ENDPOINT_CAPACITY, L4_SERVICE_CAPACITY,
};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

/// The map writes an apply needs, so the order can be checked against a recording fake.
pub trait L4Ops {
    fn set_endpoint(&mut self, id: u32, v: &EndpointValue) -> Result<()>;
    /// Writes `ids` to ring slots `off..off + ids.len()`.
    fn write_ring(&mut self, off: u32, ids: &[u32]) -> Result<()>;
    fn set_service(&mut self, key: &ServiceKey, v: &ServiceValue) -> Result<()>;
    fn remove_service(&mut self, key: &ServiceKey) -> Result<()>;
    /// Zeroes a service's per-CPU counters (before its id is given to a new service).
    fn reset_service_stats(&mut self, id: u32) -> Result<()>;
    fn reset_endpoint_stats(&mut self, id: u32) -> Result<()>;
    fn set_config(&mut self, c: &L4Config) -> Result<()>;
    fn set_protect(&mut self, key: &ServiceKey) -> Result<()>;
    fn remove_protect(&mut self, key: &ServiceKey) -> Result<()>;
}

/// What one apply changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct L4Report {
    pub services_added: usize,
    /// Services flipped to a new ring (or to none).
    pub services_updated: usize,
    pub services_removed: usize,
    pub endpoints_added: usize,
    pub endpoints_removed: usize,
    pub rings_written: usize,
    pub settings_changed: bool,
    pub protect_added: usize,
    pub protect_removed: usize,
}

/// A service as the maps hold it.
#[derive(Debug, Clone)]
struct Svc {
    name: Arc<str>,
    value: ServiceValue,
    /// The ring written at `value.ring_off` (indices into the endpoint list of its view) and
    /// the endpoint id of each index then: together, the slot contents.
    ring: Arc<[u32]>,
    ring_ids: Vec<u32>,
}

/// An endpoint slot with `live = 1`.
#[derive(Debug, Clone)]
struct Ep {
    id: u32,
    value: EndpointValue,
    name: Arc<str>,
    /// Last applied effective weight (units of 1/SCALE), for metrics.
    effective: u32,
}

/// The L4 maps and what they hold; ids are stable per service key and per (service, endpoint).
pub struct L4Maps<O: L4Ops> {
    ops: O,
    services: HashMap<ServiceKey, Svc>,
    endpoints: HashMap<(ServiceKey, SocketAddr), Ep>,
    regions: RegionAlloc,
    svc_ids: IdAlloc,
    ep_ids: IdAlloc,
    settings: Option<L4Config>,
    protect: BTreeSet<ProtectKey>,
}

/// ServiceKey ordered (for a deterministic write order).
type ProtectKey = ([u8; 16], u16, u8, u8);

fn pk(k: &ServiceKey) -> ProtectKey {
    (k.addr, k.port, k.proto, k.family)
}

fn from_pk(p: &ProtectKey) -> ServiceKey {
    ServiceKey {
        addr: p.0,
        port: p.1,
        proto: p.2,
        family: p.3,
    }
}

/// A ring written to a new region, waiting for its service's flip.
struct Pending {
    key: ServiceKey,
    name: Arc<str>,
    value: ServiceValue,
    region: Option<(u32, u32)>,
    ring: Arc<[u32]>,
    ring_ids: Vec<u32>,
}

impl<O: L4Ops> L4Maps<O> {
    /// `ring_slots`: the size the ring array was loaded with.
    pub fn new(ops: O, ring_slots: u32) -> Self {
        Self::with_capacities(ops, ring_slots, L4_SERVICE_CAPACITY, L4_ENDPOINT_CAPACITY)
    }

    /// [`new`](Self::new) with other id capacities than the maps' (tests).
    pub fn with_capacities(ops: O, ring_slots: u32, services: u32, endpoints: u32) -> Self {
        L4Maps {
            ops,
            services: HashMap::new(),
            endpoints: HashMap::new(),
            regions: RegionAlloc::new(ring_slots),
            svc_ids: IdAlloc::new("L4 service", services),
            ep_ids: IdAlloc::new("L4 endpoint", endpoints),
            settings: None,
            protect: BTreeSet::new(),
        }
    }

    pub fn ops(&self) -> &O {
        &self.ops
    }

    pub fn ops_mut(&mut self) -> &mut O {
        &mut self.ops
    }

    pub fn ring_slots_used(&self) -> u32 {
        self.regions.used()
    }

    /// Makes the maps hold `desired`. On an error the maps hold a consistent mix of the old and
    /// the new state (every service points at a fully written ring of live endpoints), which
    /// this value tracks: the next apply continues from there.
    pub fn apply(&mut self, desired: &L4View) -> Result<L4Report> {
        let mut report = L4Report::default();
        self.apply_settings(desired, &mut report)?;
        self.add_endpoints(desired, &mut report)?;
        let pending = self.write_rings(desired, &mut report)?;
        let mut freed = Vec::new();
        let result = self
            .flip(pending, &mut freed, &mut report)
            .and_then(|()| self.remove_services(desired, &mut freed, &mut report));
        // Regions no service points at any more; packets that read the old offset just
        // before a flip find the old ids there until the region is written again.
        for (off, len) in freed {
            self.regions.free(off, len);
        }
        result?;
        self.remove_endpoints(desired, &mut report)?;
        Ok(report)
    }

    /// Protected destinations added first, then the config, then stale destinations removed:
    /// a switch between "limit all" and "limit protected" never limits less in between.
    fn apply_settings(&mut self, d: &L4View, report: &mut L4Report) -> Result<()> {
        let want: BTreeSet<ProtectKey> = d.protect.iter().map(pk).collect();
        for k in want.difference(&self.protect.clone()) {
            self.ops.set_protect(&from_pk(k))?;
            self.protect.insert(*k);
            report.protect_added += 1;
        }
        if self.settings != Some(d.settings) {
            self.ops.set_config(&d.settings)?;
            self.settings = Some(d.settings);
            report.settings_changed = true;
        }
        for k in self.protect.clone().difference(&want) {
            self.ops.remove_protect(&from_pk(k))?;
            self.protect.remove(k);
            report.protect_removed += 1;
        }
        Ok(())
    }

    /// Step 1: a live slot for every endpoint not in the maps yet (counters zeroed first).
    fn add_endpoints(&mut self, d: &L4View, report: &mut L4Report) -> Result<()> {
        for s in &d.services {
            for e in &s.endpoints {
                if let Some(ep) = self.endpoints.get_mut(&(s.key, e.addr)) {
                    ep.name = e.name.clone();
                    ep.effective = e.effective;
                    continue;
                }
                let (id, gen) = self.ep_ids.alloc()?;
                let (addr, family) = addr16(e.addr.ip());
                let value = EndpointValue {
                    addr,
                    port: e.addr.port().to_be(),
                    family,
                    live: 1,
                    gen,
                };
                let written = self
                    .ops
                    .reset_endpoint_stats(id)
                    .and_then(|()| self.ops.set_endpoint(id, &value));
                if let Err(err) = written {
                    self.ep_ids.free(id);
                    return Err(err);
                }
                let ep = Ep {
                    id,
                    value,
                    name: e.name.clone(),
                    effective: e.effective,
                };
                self.endpoints.insert((s.key, e.addr), ep);
                report.endpoints_added += 1;
            }
        }
        Ok(())
    }

    /// Step 2: every new or changed ring written to a fresh region. On an error the regions
    /// written so far are freed (no service points at them).
    fn write_rings(&mut self, d: &L4View, report: &mut L4Report) -> Result<Vec<Pending>> {
        let mut pending: Vec<Pending> = Vec::new();
        for s in &d.services {
            let ids: Vec<u32> = s
                .endpoints
                .iter()
                .map(|e| self.endpoints.get(&(s.key, e.addr)).map_or(0, |ep| ep.id))
                .collect();
            let size = if s.ring.is_empty() {
                0
            } else {
                s.ring.len() as u32
            };
            if let Some(c) = self.services.get_mut(&s.key) {
                c.name = s.name.clone();
            }
            let cur = self.services.get(&s.key);
            if let Some(c) = cur {
                let same = c.value.ring_size == size
                    && ((Arc::ptr_eq(&c.ring, &s.ring) && c.ring_ids == ids)
                        || translate(&c.ring, &c.ring_ids) == translate(&s.ring, &ids));
                if same {
                    continue;
                }
            }
            let value = ServiceValue {
                id: cur.map_or(0, |c| c.value.id),
                ring_off: 0,
                ring_size: size,
                _pad: 0,
            };
            let mut p = Pending {
                key: s.key,
                name: s.name.clone(),
                value,
                region: None,
                ring: s.ring.clone(),
                ring_ids: ids,
            };
            if size > 0 {
                let written = self
                    .regions
                    .alloc(size)
                    .map_err(anyhow::Error::from)
                    .and_then(|off| {
                        p.region = Some((off, size));
                        p.value.ring_off = off;
                        self.ops.write_ring(off, &translate(&p.ring, &p.ring_ids))
                    });
                if let Err(err) = written {
                    pending.push(p);
                    self.drop_pending(pending);
                    return Err(err);
                }
                report.rings_written += 1;
            }
            pending.push(p);
        }
        Ok(pending)
    }

    fn drop_pending(&mut self, pending: impl IntoIterator<Item = Pending>) {
        for p in pending {
            if let Some((off, len)) = p.region {
                self.regions.free(off, len);
            }
        }
    }

    /// Step 3: service entries inserted or pointed at their new ring. The old regions go to
    /// `freed`; on an error the rings not flipped to are freed too.
    fn flip(
        &mut self,
        pending: Vec<Pending>,
        freed: &mut Vec<(u32, u32)>,
        report: &mut L4Report,
    ) -> Result<()> {
        let mut rest = pending.into_iter();
        while let Some(mut p) = rest.next() {
            let old = self.services.get(&p.key).map(|c| c.value);
            let mut new_id = None;
            let result = match old {
                Some(_) => Ok(()),
                None => self
                    .svc_ids
                    .alloc()
                    .map_err(anyhow::Error::from)
                    .and_then(|(id, _)| {
                        new_id = Some(id);
                        p.value.id = id;
                        self.ops.reset_service_stats(id)
                    }),
            }
            .and_then(|()| self.ops.set_service(&p.key, &p.value));
            if let Err(err) = result {
                if let Some(id) = new_id {
                    self.svc_ids.free(id);
                }
                self.drop_pending(std::iter::once(p).chain(rest));
                return Err(err);
            }
            match old {
                Some(o) => {
                    report.services_updated += 1;
                    if o.ring_size > 0 {
                        freed.push((o.ring_off, o.ring_size));
                    }
                }
                None => report.services_added += 1,
            }
            self.services.insert(
                p.key,
                Svc {
                    name: p.name,
                    value: p.value,
                    ring: p.ring,
                    ring_ids: p.ring_ids,
                },
            );
        }
        Ok(())
    }

    /// Step 4: services gone from the config deleted (their regions go to `freed`).
    fn remove_services(
        &mut self,
        d: &L4View,
        freed: &mut Vec<(u32, u32)>,
        report: &mut L4Report,
    ) -> Result<()> {
        let want: BTreeSet<ProtectKey> = d.services.iter().map(|s| pk(&s.key)).collect();
        let mut gone: Vec<ProtectKey> = self
            .services
            .keys()
            .map(pk)
            .filter(|k| !want.contains(k))
            .collect();
        gone.sort();
        for k in gone {
            let key = from_pk(&k);
            self.ops.remove_service(&key)?;
            if let Some(c) = self.services.remove(&key) {
                self.svc_ids.free(c.value.id);
                if c.value.ring_size > 0 {
                    freed.push((c.value.ring_off, c.value.ring_size));
                }
            }
            report.services_removed += 1;
        }
        Ok(())
    }

    /// Step 6: slots of endpoints gone from the config marked dead (flows re-pick), then freed.
    fn remove_endpoints(&mut self, d: &L4View, report: &mut L4Report) -> Result<()> {
        let want: std::collections::HashSet<(ServiceKey, SocketAddr)> = d
            .services
            .iter()
            .flat_map(|s| s.endpoints.iter().map(move |e| (s.key, e.addr)))
            .collect();
        let mut gone: Vec<(ServiceKey, SocketAddr, u32)> = self
            .endpoints
            .iter()
            .filter(|(k, _)| !want.contains(k))
            .map(|(k, e)| (k.0, k.1, e.id))
            .collect();
        gone.sort_by_key(|g| g.2);
        for (key, addr, id) in gone {
            if let Some(ep) = self.endpoints.get(&(key, addr)) {
                let dead = EndpointValue {
                    live: 0,
                    ..ep.value
                };
                self.ops.set_endpoint(id, &dead)?;
            }
            self.endpoints.remove(&(key, addr));
            self.ep_ids.free(id);
            report.endpoints_removed += 1;
        }
        Ok(())
    }
}

/// Ring slot contents: each index replaced by its endpoint's id.
fn translate(ring: &[u32], ids: &[u32]) -> Vec<u32> {
    ring.iter()
        .map(|&i| ids.get(i as usize).copied().unwrap_or(0))
        .collect()
}

#[path = "l4_labels.rs"]
mod labels;
pub use labels::{EndpointLabel, L4Labels};

#[cfg(test)]
#[path = "l4_tests.rs"]
mod tests;
