//! The L4 maps in the loaded object: the writes an apply makes ([`AyaL4Ops`]), and the reads a
//! scrape makes ([`L4Reader`]: per-CPU counters summed, the connection-table count).

use super::l4::{L4Labels, L4Ops};
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use lb_common::{
    EndpointValue, FlowKey, FlowValue, L4Config, L4Stat, ServiceKey, ServiceValue, MAP_L4_CONFIG,
    MAP_L4_ENDPOINTS, MAP_L4_ENDPOINT_STATS, MAP_L4_FLOWS, MAP_L4_RING, MAP_L4_SERVICES,
    MAP_L4_SERVICE_STATS, MAP_PROTECT,
};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Typed handles on the maps an apply writes.
pub struct AyaL4Ops {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    ring: Array<MapData, u32>,
    endpoints: Array<MapData, EndpointValue>,
    config: Array<MapData, L4Config>,
    protect: HashMap<MapData, ServiceKey, u32>,
    service_stats: PerCpuArray<MapData, L4Stat>,
    endpoint_stats: PerCpuArray<MapData, L4Stat>,
    nr_cpus: usize,
    /// A second fd on the ring array, for batch updates.
    ring_fd: OwnedFd,
    /// Batch updates work here (cleared the first time the kernel refuses them).
    batch: bool,
}

/// The maps an [`AyaL4Ops`] and an [`L4Reader`] are made of, taken from the object.
pub struct L4MapSet {
    pub services: Map,
    pub ring: Map,
    pub endpoints: Map,
    pub config: Map,
    pub protect: Map,
    pub service_stats: Map,
    pub endpoint_stats: Map,
    pub flows: Map,
}

/// Builds both sides; the counter maps are opened twice (one handle writes zeroes, the other
/// is read by scrapes).
pub fn split(m: L4MapSet, flow_limit: u32) -> Result<(AyaL4Ops, L4Reader)> {
    fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(map: Map, name: &str) -> Result<T> {
        T::try_from(map).with_context(|| format!("{name} has the wrong map type"))
    }
    let svc_stats2 = reopen(&m.service_stats, MAP_L4_SERVICE_STATS)?;
    let ep_stats2 = reopen(&m.endpoint_stats, MAP_L4_ENDPOINT_STATS)?;
    let ring_fd = dup(&m.ring, MAP_L4_RING)?;
    let nr_cpus = aya::util::nr_cpus()
        .map_err(|(_, e)| e)
        .context("counting possible CPUs")?;
    let ops = AyaL4Ops {
        services: typed(m.services, MAP_L4_SERVICES)?,
        ring: typed(m.ring, MAP_L4_RING)?,
        endpoints: typed(m.endpoints, MAP_L4_ENDPOINTS)?,
        config: typed(m.config, MAP_L4_CONFIG)?,
        protect: typed(m.protect, MAP_PROTECT)?,
        service_stats: typed(m.service_stats, MAP_L4_SERVICE_STATS)?,
        endpoint_stats: typed(m.endpoint_stats, MAP_L4_ENDPOINT_STATS)?,
        nr_cpus,
        ring_fd,
        batch: true,
    };
    let reader = L4Reader {
        service_stats: typed(svc_stats2, MAP_L4_SERVICE_STATS)?,
        endpoint_stats: typed(ep_stats2, MAP_L4_ENDPOINT_STATS)?,
        flows: typed(m.flows, MAP_L4_FLOWS)?,
        flow_limit,
        labels: ArcSwap::default(),
        flow_count: AtomicU64::new(0),
    };
    Ok((ops, reader))
}

/// A second handle on the same kernel map.
fn reopen(map: &Map, name: &str) -> Result<Map> {
    let data = MapData::from_fd(dup(map, name)?).with_context(|| format!("reopening {name}"))?;
    Map::from_map_data(data).with_context(|| format!("reopening {name}"))
}

/// A second fd on an array or per-CPU array map.
fn dup(map: &Map, name: &str) -> Result<OwnedFd> {
    let data = match map {
        Map::PerCpuArray(d) | Map::Array(d) => d,
        _ => anyhow::bail!("{name} is not an array"),
    };
    data.fd()
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("duplicating the fd of {name}"))
}

/// Reads of what an apply wrote (tests and fixtures check the maps through these).
impl AyaL4Ops {
    pub fn service(&self, key: &ServiceKey) -> Result<Option<ServiceValue>> {
        match self.services.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading an L4 service"),
        }
    }

    pub fn endpoint(&self, id: u32) -> Result<EndpointValue> {
        self.endpoints
            .get(&id, 0)
            .with_context(|| format!("reading L4 endpoint slot {id}"))
    }

    /// Ring slots `off..off + len`.
    pub fn ring(&self, off: u32, len: u32) -> Result<Vec<u32>> {
        (off..off + len)
            .map(|i| {
                self.ring
                    .get(&i, 0)
                    .with_context(|| format!("reading ring slot {i}"))
            })
            .collect()
    }

    pub fn ring_slots(&self) -> u32 {
        self.ring.len()
    }

    pub fn config(&self) -> Result<L4Config> {
        self.config.get(&0, 0).context("reading the L4 config")
    }

    pub fn protected(&self) -> Vec<ServiceKey> {
        self.protect.keys().filter_map(Result::ok).collect()
    }
}

impl L4Ops for AyaL4Ops {
    fn set_endpoint(&mut self, id: u32, v: &EndpointValue) -> Result<()> {
        self.endpoints
            .set(id, v, 0)
            .with_context(|| format!("writing L4 endpoint slot {id}"))
    }

    fn write_ring(&mut self, off: u32, ids: &[u32]) -> Result<()> {
        let end = off as usize + ids.len();
        if self.batch {
            match super::batch::update_u32_array(self.ring_fd.as_fd(), off, ids) {
                Ok(()) => return Ok(()),
                // EINVAL, EOPNOTSUPP, ENOTSUPP (524): no batch updates for arrays here.
                Err((e, 0)) if matches!(e.raw_os_error(), Some(22 | 95 | 524)) => {
                    tracing::info!(error = %e, "batch map updates refused: ring slots written one by one");
                    self.batch = false;
                }
                Err((e, done)) => {
                    return Err(e).with_context(|| {
                        format!("writing ring slots {off}..{end} ({done} written)")
                    })
                }
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let slot = off + i as u32;
            self.ring
                .set(slot, id, 0)
                .with_context(|| format!("writing ring slot {slot}"))?;
        }
        Ok(())
    }

    fn set_service(&mut self, key: &ServiceKey, v: &ServiceValue) -> Result<()> {
        self.services
            .insert(key, v, 0)
            .with_context(|| format!("writing L4 service {}", v.id))
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<()> {
        self.services.remove(key).context("deleting an L4 service")
    }

    fn reset_service_stats(&mut self, id: u32) -> Result<()> {
        self.service_stats
            .set(id, zeroes(self.nr_cpus)?, 0)
            .with_context(|| format!("zeroing counters of L4 service {id}"))
    }

    fn reset_endpoint_stats(&mut self, id: u32) -> Result<()> {
        self.endpoint_stats
            .set(id, zeroes(self.nr_cpus)?, 0)
            .with_context(|| format!("zeroing counters of L4 endpoint {id}"))
    }

    fn set_config(&mut self, c: &L4Config) -> Result<()> {
        self.config.set(0, c, 0).context("writing the L4 config")
    }

    fn set_protect(&mut self, key: &ServiceKey) -> Result<()> {
        self.protect
            .insert(key, 1, 0)
            .context("adding a protected destination")
    }

    fn remove_protect(&mut self, key: &ServiceKey) -> Result<()> {
        self.protect
            .remove(key)
            .context("removing a protected destination")
    }
}

/// What scrapes read: the L4 counters, who they belong to, and the connection-table count.
pub struct L4Reader {
    service_stats: PerCpuArray<MapData, L4Stat>,
    endpoint_stats: PerCpuArray<MapData, L4Stat>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    /// The connection table's size.
    flow_limit: u32,
    labels: ArcSwap<L4Labels>,
    flow_count: AtomicU64,
}

impl L4Reader {
    /// Called after each apply.
    pub fn publish(&self, labels: L4Labels) {
        self.labels.store(Arc::new(labels));
    }

    pub fn labels(&self) -> Arc<L4Labels> {
        self.labels.load_full()
    }

    /// Counters of a service id, summed over CPUs.
    pub fn service(&self, id: u32) -> Result<L4Stat> {
        sum(&self.service_stats, id)
    }

    pub fn endpoint(&self, id: u32) -> Result<L4Stat> {
        sum(&self.endpoint_stats, id)
    }

    /// The connection table's size as the kernel created it.
    pub fn flow_capacity(&self) -> Result<u32> {
        use aya::maps::IterableMap;
        let info = self
            .flows
            .map()
            .info()
            .context("reading the flow table's info")?;
        Ok(info.max_entries())
    }

    /// Connection-table entries at the last count.
    pub fn flows(&self) -> u64 {
        self.flow_count.load(Ordering::Relaxed)
    }

    /// Walks the connection table's keys (at most its size: an entry evicted mid-walk makes
    /// the kernel restart from the first key) and stores the count.
    pub fn count_flows(&self) -> u64 {
        let limit = self.flow_limit as usize;
        let n = self.flows.keys().take(limit).filter(Result::is_ok).count() as u64;
        self.flow_count.store(n, Ordering::Relaxed);
        n
    }
}

/// Counts the connection table every `every` on its own thread, until the reader is dropped.
pub fn spawn_flow_counter(reader: &Arc<L4Reader>, every: Duration) -> Result<()> {
    let weak: Weak<L4Reader> = Arc::downgrade(reader);
    std::thread::Builder::new()
        .name("lb-l4-flows".into())
        .spawn(move || loop {
            match weak.upgrade() {
                Some(r) => {
                    r.count_flows();
                }
                None => return,
            }
            std::thread::sleep(every);
        })
        .context("starting the connection-table counter")?;
    Ok(())
}

fn zeroes(nr_cpus: usize) -> Result<PerCpuValues<L4Stat>> {
    PerCpuValues::try_from(vec![L4Stat::default(); nr_cpus]).context("per-CPU zero value")
}

fn sum(map: &PerCpuArray<MapData, L4Stat>, id: u32) -> Result<L4Stat> {
    let per_cpu = map
        .get(&id, 0)
        .with_context(|| format!("reading L4 counters {id}"))?;
    Ok(per_cpu.iter().fold(L4Stat::default(), |a, v| L4Stat {
        packets: a.packets + v.packets,
        bytes: a.bytes + v.bytes,
        reply_packets: a.reply_packets + v.reply_packets,
        reply_bytes: a.reply_bytes + v.reply_bytes,
        flows: a.flows + v.flows,
    }))
}
