//! The XDP dataplane: load the embedded object, attach it to interfaces (detached on drop),
//! and hand out the typed maps that snapshots are diff-applied to.

pub mod maps;
pub mod reuseport;

use anyhow::{bail, Context, Result};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use lb_common::{GLOBAL_LOG_LEVEL, MAP_DENY_V4, MAP_DENY_V6, MAP_STATS, PROG_XDP, PROG_XDP_PASS};
use maps::{DenyMaps, StatsReader};
use std::sync::Arc;

/// The object `cargo xtask build-ebpf` produced, embedded at build time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Enable aya-log debug lines in the XDP program (off by default: the verifier prunes them).
    pub debug_log: bool,
}

/// The loaded XDP programs and their maps; attachments last as long as this value.
pub struct Dataplane {
    ebpf: Ebpf,
    pub deny: DenyMaps,
    stats: Arc<StatsReader>,
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
        Ok(Dataplane { ebpf, deny, stats })
    }

    /// Attaches the main program to `iface`; it stays attached until the dataplane is dropped.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<()> {
        self.xdp_mut(PROG_XDP)?
            .attach(iface, mode)
            .with_context(|| {
                format!("attaching XDP to {iface} in {mode:?} mode (try --xdp-mode skb if the driver lacks native XDP)")
            })?;
        Ok(())
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
