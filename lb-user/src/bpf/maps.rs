//! Typed handles on the XDP maps: the deny-list tries (diff-applied from a snapshot: new
//! entries first, stale ones last) and the per-CPU stats (summed at scrape time).

use crate::config::Cidr;
use anyhow::{Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Map, MapData, PerCpuArray};
use ipnet::IpNet;
use lb_common::{DenyKeyV4, DenyKeyV6, DenyValue, Reason, StatValue, REASON_COUNT};
use std::collections::HashMap;

/// What one apply changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
}

pub struct DenyMaps {
    v4: LpmTrie<MapData, DenyKeyV4, DenyValue>,
    v6: LpmTrie<MapData, DenyKeyV6, DenyValue>,
    /// What the maps hold now (prefix -> rule), so applies are diffs.
    current: HashMap<IpNet, u32>,
}

impl DenyMaps {
    pub fn new(v4: Map, v6: Map) -> Result<Self> {
        Ok(DenyMaps {
            v4: LpmTrie::try_from(v4).context("LB_DENY_V4 is not an LPM trie")?,
            v6: LpmTrie::try_from(v6).context("LB_DENY_V6 is not an LPM trie")?,
            current: HashMap::new(),
        })
    }

    /// Makes the maps hold exactly `next` (prefix, rule index).
    pub fn apply(&mut self, next: &[(Cidr, u32)]) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        let wanted: HashMap<IpNet, u32> = next.iter().map(|(c, r)| (c.0, *r)).collect();
        for (net, rule) in &wanted {
            match self.current.get(net) {
                Some(old) if old == rule => continue,
                Some(_) => report.updated += 1,
                None => report.added += 1,
            }
            self.insert(net, *rule)?;
            self.current.insert(*net, *rule);
        }
        let stale: Vec<IpNet> = self
            .current
            .keys()
            .filter(|n| !wanted.contains_key(n))
            .copied()
            .collect();
        for net in stale {
            self.remove(&net)?;
            self.current.remove(&net);
            report.removed += 1;
        }
        Ok(report)
    }

    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    fn insert(&mut self, net: &IpNet, rule: u32) -> Result<()> {
        let value = DenyValue { rule, _pad: 0 };
        let len = u32::from(net.prefix_len());
        match net {
            IpNet::V4(n) => self.v4.insert(&Key::new(len, n.addr().octets()), value, 0),
            IpNet::V6(n) => self.v6.insert(&Key::new(len, n.addr().octets()), value, 0),
        }
        .with_context(|| format!("inserting deny prefix {net}"))
    }

    fn remove(&mut self, net: &IpNet) -> Result<()> {
        let len = u32::from(net.prefix_len());
        match net {
            IpNet::V4(n) => self.v4.remove(&Key::new(len, n.addr().octets())),
            IpNet::V6(n) => self.v6.remove(&Key::new(len, n.addr().octets())),
        }
        .with_context(|| format!("removing deny prefix {net}"))
    }
}

/// Reads the per-CPU stats array and sums it over CPUs.
pub struct StatsReader {
    map: PerCpuArray<MapData, StatValue>,
}

impl StatsReader {
    pub fn new(map: Map) -> Result<Self> {
        Ok(StatsReader {
            map: PerCpuArray::try_from(map).context("LB_STATS is not a per-CPU array")?,
        })
    }

    /// One summed value per reason, in index order.
    pub fn read(&self) -> Result<Vec<(Reason, StatValue)>> {
        let mut out = Vec::with_capacity(REASON_COUNT as usize);
        for reason in Reason::ALL {
            let per_cpu = self
                .map
                .get(&reason.index(), 0)
                .with_context(|| format!("reading stats slot {}", reason.name()))?;
            let sum = per_cpu
                .iter()
                .fold(StatValue::default(), |acc, v| StatValue {
                    packets: acc.packets + v.packets,
                    bytes: acc.bytes + v.bytes,
                });
            out.push((*reason, sum));
        }
        Ok(out)
    }
}
