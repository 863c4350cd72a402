//! Snapshots into the XDP maps: what `lb run` does with each snapshot (deny-list, L4 settings
//! and services, each only when it changed), and the same path from config text for fixtures.

use super::l4::L4Report;
use super::maps::ApplyReport;
use super::{Dataplane, LoadOptions};
use crate::config::{self, Cidr};
use crate::snapshot::{self, l4::L4View, Snapshot};
use anyhow::{anyhow, Result};
use lb_common::FAMILY_V4;
use std::sync::Arc;

/// What the dataplane last applied successfully (skipped when a snapshot shares it).
#[derive(Default)]
pub(super) struct Applied {
    deny: Option<Arc<Vec<(Cidr, u32)>>>,
    l4: Option<Arc<L4View>>,
    /// Map sizes a config asked for that differ from the loaded ones (warned once each).
    warned: Option<(u32, u32)>,
    /// Interfaces attached, and those already set to accept packets from local addresses.
    pub(super) attached: Vec<String>,
    accept_local: Vec<String>,
    /// The applied L4 view has an IPv4 service.
    v4_services: bool,
}

/// What one snapshot changed (`None`: that part was already applied).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XdpReport {
    pub deny: Option<ApplyReport>,
    pub l4: Option<L4Report>,
}

impl Dataplane {
    /// Makes the maps hold what `snap` says. The parts are independent: a failed part is
    /// logged by the caller from the error, the other still applied, and the failed one
    /// retried with the next snapshot. The L4 counters' labels are republished either way.
    pub fn apply(&mut self, snap: &Snapshot) -> Result<XdpReport> {
        let mut report = XdpReport::default();
        let mut errors = Vec::new();
        self.warn_sizes(&snap.config.xdp.l4);
        if !self
            .applied
            .deny
            .as_ref()
            .is_some_and(|d| Arc::ptr_eq(d, &snap.deny))
        {
            match self.deny.apply(&snap.deny) {
                Ok(r) => {
                    report.deny = Some(r);
                    self.applied.deny = Some(snap.deny.clone());
                }
                Err(e) => errors.push(format!("deny-list: {e:#}")),
            }
        }
        if !self
            .applied
            .l4
            .as_ref()
            .is_some_and(|v| Arc::ptr_eq(v, &snap.l4))
        {
            match self.l4.apply(&snap.l4) {
                Ok(r) => {
                    report.l4 = Some(r);
                    self.applied.l4 = Some(snap.l4.clone());
                    self.applied.v4_services =
                        snap.l4.services.iter().any(|s| s.key.family == FAMILY_V4);
                    self.accept_local();
                }
                Err(e) => {
                    self.applied.l4 = None;
                    errors.push(format!("L4 services: {e:#}"));
                }
            }
        }
        let mut labels = self.l4.labels();
        labels.endpoint_labels = snap.config.metrics.endpoint_labels;
        self.l4_reader.publish(labels);
        if errors.is_empty() {
            Ok(report)
        } else {
            Err(anyhow!("{}", errors.join("; ")))
        }
    }

    /// A new IPv4 flow whose endpoint's neighbour is not resolved yet is passed to the stack
    /// translated, with the node's address as source; the kernel drops such packets as martians
    /// unless the interface has `accept_local` (see docs/architecture.md). Set once per attached
    /// interface while IPv4 L4 services exist.
    pub(super) fn accept_local(&mut self) {
        if !self.applied.v4_services {
            return;
        }
        for iface in &self.applied.attached {
            if self.applied.accept_local.contains(iface) {
                continue;
            }
            let path = format!("/proc/sys/net/ipv4/conf/{iface}/accept_local");
            match std::fs::write(&path, "1") {
                Ok(()) => tracing::info!(
                    iface,
                    "accept_local=1 (IPv4 L4 services: neighbour resolution through the stack)"
                ),
                Err(e) => {
                    tracing::warn!(iface, error = %e, "cannot set {path}: new IPv4 L4 flows to unresolved neighbours will wait for ARP by other traffic")
                }
            }
            self.applied.accept_local.push(iface.clone());
        }
    }

    /// `flows` and `ring_slots` size maps at load: a reload cannot change them.
    fn warn_sizes(&mut self, l4: &config::XdpL4) {
        let want = (l4.flows, l4.ring_slots);
        let have = (self.sizes.flows, self.sizes.ring_slots);
        if want == have || self.applied.warned == Some(want) {
            return;
        }
        self.applied.warned = Some(want);
        tracing::warn!(
            flows = want.0,
            ring_slots = want.1,
            loaded_flows = have.0,
            loaded_ring_slots = have.1,
            "xdp.l4.flows / ring_slots changed: the maps keep their sizes until lb restarts"
        );
    }

    /// Parses `yaml` and applies it as a reload of `lb run` would (no runtime overrides, every
    /// endpoint healthy). Errors name the config fields.
    pub fn apply_config_text(&mut self, yaml: &str) -> Result<XdpReport> {
        let cfg = config::parse(yaml).map_err(|e| anyhow!("invalid config:\n{e}"))?;
        self.apply(&snapshot::build(&cfg, Default::default(), 1))
    }
}

/// What `lb run --iface ...` does before attaching, from config text: load the object with the
/// config's map sizes, then apply its first snapshot (deny-list, L4 settings, services). For
/// BPF_PROG_TEST_RUN fixtures; nothing is attached.
pub fn load_config_text(yaml: &str) -> Result<Dataplane> {
    let cfg = config::parse(yaml).map_err(|e| anyhow!("invalid config:\n{e}"))?;
    let mut dp = Dataplane::load(LoadOptions::for_config(&cfg, false))?;
    dp.apply(&snapshot::build(&cfg, Default::default(), 1))?;
    Ok(dp)
}
