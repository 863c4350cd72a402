//! The XDP dataplane: load the embedded object, attach it to interfaces (detached on drop),
//! and hand out the typed maps that snapshots are diff-applied to.

mod batch;
pub mod l4;
pub mod l4_alloc;
pub mod l4_aya;
pub mod maps;
pub mod reuseport;
mod seed;

use anyhow::{bail, Context, Result};
use aya::maps::{DevMapHash, MapData};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use l4::L4Maps;
use l4_aya::{AyaL4Ops, L4MapSet, L4Reader};
use lb_common::{
    GLOBAL_LOG_LEVEL, L4_FLOW_CAPACITY, L4_RING_SLOTS, MAP_DENY_V4, MAP_DENY_V6, MAP_L4_CONFIG,
    MAP_L4_ENDPOINTS, MAP_L4_ENDPOINT_STATS, MAP_L4_FLOWS, MAP_L4_NAT, MAP_L4_RING,
    MAP_L4_SERVICES, MAP_L4_SERVICE_STATS, MAP_PROTECT, MAP_STATS, MAP_TX_PORTS, PROG_XDP,
    PROG_XDP_PASS,
};
use maps::{DenyMaps, StatsReader};
use std::sync::Arc;

pub use seed::{load_config_text, XdpReport};

/// The object `cargo xtask build-ebpf` produced, embedded at build time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Enable aya-log debug lines in the XDP program (off by default: the verifier prunes them).
    pub debug_log: bool,
    /// Connection-table entries, and NAT-index entries (`xdp.l4.flows`).
    pub flows: u32,
    /// Slots of the ring array (`xdp.l4.ring_slots`).
    pub ring_slots: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            debug_log: false,
            flows: L4_FLOW_CAPACITY,
            ring_slots: L4_RING_SLOTS,
        }
    }
}

impl LoadOptions {
    /// The map sizes `cfg` asks for.
    pub fn for_config(cfg: &crate::config::Config, debug_log: bool) -> Self {
        LoadOptions {
            debug_log,
            flows: cfg.xdp.l4.flows,
            ring_slots: cfg.xdp.l4.ring_slots,
        }
    }
}

/// The loaded XDP programs and their maps; attachments last as long as this value.
pub struct Dataplane {
    ebpf: Ebpf,
    pub deny: DenyMaps,
    /// The L4 services, rings and endpoints (diff-applied from snapshots).
    pub l4: L4Maps<AyaL4Ops>,
    stats: Arc<StatsReader>,
    l4_reader: Arc<L4Reader>,
    tx_ports: DevMapHash<MapData>,
    /// The sizes the maps were created with.
    sizes: LoadOptions,
    applied: seed::Applied,
}

impl Dataplane {
    /// Loads and verifies the program; attaches nothing.
    pub fn load(opts: LoadOptions) -> Result<Self> {
        if OBJECT.is_empty() {
            bail!("this lb was built without the eBPF object: run `cargo xtask build-ebpf`");
        }
        let level: u8 = if opts.debug_log { 0xff } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_LOG_LEVEL, &level, false)
            .map_max_entries(MAP_L4_RING, opts.ring_slots)
            .map_max_entries(MAP_L4_FLOWS, opts.flows)
            .map_max_entries(MAP_L4_NAT, opts.flows)
            .load(OBJECT)
            .context("loading the eBPF object (needs root or CAP_BPF + CAP_NET_ADMIN)")?;
        if opts.debug_log {
            spawn_logger(&mut ebpf)?;
        }
        for name in [PROG_XDP, PROG_XDP_PASS] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verifier rejected {name}"))?;
        }
        let deny = DenyMaps::new(take(&mut ebpf, MAP_DENY_V4)?, take(&mut ebpf, MAP_DENY_V6)?)?;
        let stats = Arc::new(StatsReader::new(take(&mut ebpf, MAP_STATS)?)?);
        let set = L4MapSet {
            services: take_l4(&mut ebpf, MAP_L4_SERVICES)?,
            ring: take_l4(&mut ebpf, MAP_L4_RING)?,
            endpoints: take_l4(&mut ebpf, MAP_L4_ENDPOINTS)?,
            config: take_l4(&mut ebpf, MAP_L4_CONFIG)?,
            protect: take_l4(&mut ebpf, MAP_PROTECT)?,
            service_stats: take_l4(&mut ebpf, MAP_L4_SERVICE_STATS)?,
            endpoint_stats: take_l4(&mut ebpf, MAP_L4_ENDPOINT_STATS)?,
            flows: take_l4(&mut ebpf, MAP_L4_FLOWS)?,
        };
        let (ops, reader) = l4_aya::split(set, opts.flows)?;
        let tx_ports = DevMapHash::try_from(take_l4(&mut ebpf, MAP_TX_PORTS)?)
            .with_context(|| format!("{MAP_TX_PORTS} is not a devmap hash"))?;
        Ok(Dataplane {
            ebpf,
            deny,
            l4: L4Maps::new(ops, opts.ring_slots),
            stats,
            l4_reader: Arc::new(reader),
            tx_ports,
            sizes: opts,
            applied: Default::default(),
        })
    }

    /// Attaches the main program to `iface` (it stays attached until the dataplane is
    /// dropped) and lets L4 packets be redirected out of it.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<()> {
        self.xdp_mut(PROG_XDP)?
            .attach(iface, mode)
            .with_context(|| {
                format!("attaching XDP to {iface} in {mode:?} mode (try --xdp-mode skb if the driver lacks native XDP)")
            })?;
        let index = ifindex(iface)?;
        self.tx_ports
            .insert(index, index, None, 0)
            .with_context(|| format!("adding {iface} (ifindex {index}) to {MAP_TX_PORTS}"))?;
        self.applied.attached.push(iface.to_string());
        self.accept_local();
        Ok(())
    }

    /// Interfaces L4 packets may be redirected out of (ifindexes).
    pub fn tx_ports(&self) -> Vec<u32> {
        self.tx_ports.keys().filter_map(Result::ok).collect()
    }

    /// The L4 counters and their labels, for metrics (and tests).
    pub fn l4_reader(&self) -> Arc<L4Reader> {
        self.l4_reader.clone()
    }

    /// The main program, for BPF_PROG_TEST_RUN.
    pub fn program(&self) -> Result<&Xdp> {
        self.xdp(PROG_XDP)
    }

    pub fn stats(&self) -> Arc<StatsReader> {
        self.stats.clone()
    }

    fn xdp(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?)
    }

    fn xdp_mut(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?)
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the object"))
}

fn take_l4(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).with_context(|| {
        format!("map {name} missing from the eBPF object: it predates the L4 dataplane; rebuild it with `cargo xtask build-ebpf`")
    })
}

fn ifindex(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface)
        .with_context(|| format!("interface name {iface:?} contains a NUL byte"))?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!(
            "no interface named {iface:?}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(index)
}

/// Forwards aya-log records to `tracing` (via the log bridge) from a tokio task.
fn spawn_logger(ebpf: &mut Ebpf) -> Result<()> {
    let logger = aya_log::EbpfLogger::init(ebpf).context("initialising aya-log")?;
    let handle = tokio::runtime::Handle::try_current()
        .context("XDP debug logging needs the tokio runtime")?;
    handle.spawn(async move {
        // SAFETY: the logger owns its ring-buffer fd for its whole life and always returns it.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let Ok(mut fd) = registered else {
            tracing::warn!("aya-log: cannot poll the log ring");
            return;
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}

/// Parses `native` / `skb` (the CLI's `--xdp-mode`).
pub fn parse_mode(s: &str) -> Result<XdpMode, String> {
    match s {
        "native" | "driver" => Ok(XdpMode::Driver),
        "skb" | "generic" => Ok(XdpMode::Skb),
        other => Err(format!(
            "unknown XDP mode {other:?}: expected native or skb"
        )),
    }
}
