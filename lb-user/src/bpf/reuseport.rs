//! Loads the SK_REUSEPORT steering object and keeps its worker socket array and policy maps
//! in step with the listeners' workers.

use anyhow::{bail, Context, Result};
use aya::maps::{Array, Map, MapData, ReusePortSockArray};
use aya::programs::SkReuseport;
use aya::{Ebpf, EbpfLoader};
use lb_common::reuseport::{
    SteerPolicy, MAP_RP_LOAD, MAP_RP_POLICY, MAP_RP_SOCKS, MAX_WORKERS, PROG_REUSEPORT,
};
use std::os::fd::{AsFd, AsRawFd};

/// The steering object `cargo xtask build-ebpf` produced, embedded at build time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-reuseport.o"));

/// One loaded copy of the program with its own maps: one per SO_REUSEPORT group (listener).
/// Dropping it leaves the program attached to the group until the group's sockets close.
pub struct Steering {
    /// Owns the program.
    ebpf: Ebpf,
    socks: ReusePortSockArray<MapData>,
    policy: Array<MapData, SteerPolicy>,
    load: MapData,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Steering")
    }
}

/// Writes one worker's open-connection count into the load map (its own map fd).
pub struct LoadWriter {
    map: Array<MapData, u32>,
    index: u32,
}

impl LoadWriter {
    pub fn set(&mut self, open: u32) {
        if let Err(e) = self.map.set(self.index, open, 0) {
            tracing::debug!(worker = self.index, error = %e, "writing the worker load map");
        }
    }
}

impl Steering {
    /// Loads and verifies the program; attaches nothing. Needs root (or CAP_BPF + CAP_NET_ADMIN).
    pub fn load() -> Result<Self> {
        if OBJECT.is_empty() {
            bail!("this lb was built without the steering object: run `cargo xtask build-ebpf`");
        }
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .context("loading the SK_REUSEPORT object (needs root or CAP_BPF + CAP_NET_ADMIN)")?;
        let prog: &mut SkReuseport = ebpf
            .program_mut(PROG_REUSEPORT)
            .with_context(|| format!("program {PROG_REUSEPORT} missing from the object"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("verifier rejected {PROG_REUSEPORT}"))?;
        let socks = ReusePortSockArray::try_from(take(&mut ebpf, MAP_RP_SOCKS)?)?;
        let policy = Array::try_from(take(&mut ebpf, MAP_RP_POLICY)?)?;
        let load = match take(&mut ebpf, MAP_RP_LOAD)? {
            Map::Array(data) => data,
            _ => bail!("map {MAP_RP_LOAD} is not an array"),
        };
        Ok(Steering {
            ebpf,
            socks,
            policy,
            load,
        })
    }

    /// Puts worker `k`'s listening socket (bound with SO_REUSEPORT, listening) at index `k`.
    pub fn set_socket(&mut self, k: u32, sock: &impl AsRawFd) -> Result<()> {
        if k >= MAX_WORKERS {
            bail!("worker {k} is beyond the {MAX_WORKERS} the steering program supports");
        }
        self.socks
            .set(k, sock, 0)
            .with_context(|| format!("putting worker {k}'s socket into {MAP_RP_SOCKS}"))
    }

    /// Attaches the program to the SO_REUSEPORT group `sock` belongs to.
    pub fn attach(&self, sock: impl AsFd) -> Result<()> {
        self.program()?
            .attach(sock)
            .context("attaching the SK_REUSEPORT program (SO_ATTACH_REUSEPORT_EBPF)")?;
        Ok(())
    }

    pub fn set_policy(&mut self, policy: SteerPolicy) -> Result<()> {
        self.policy
            .set(0, policy, 0)
            .with_context(|| format!("writing {MAP_RP_POLICY}"))
    }

    /// A writer for worker `k`'s load slot with a map fd of its own (no lock shared with others).
    pub fn load_writer(&self, k: u32) -> Result<LoadWriter> {
        let fd = self
            .load
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the load map fd")?;
        let map = Array::try_from(Map::Array(MapData::from_fd(fd)?))?;
        Ok(LoadWriter { map, index: k })
    }

    fn program(&self) -> Result<&SkReuseport> {
        Ok(self
            .ebpf
            .program(PROG_REUSEPORT)
            .with_context(|| format!("program {PROG_REUSEPORT} missing"))?
            .try_into()?)
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the object"))
}
