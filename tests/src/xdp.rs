//! Loads an XDP program from an object (lb-ebpf's, e.g. `lb_xdp_pass` for veth peers) and
//! attaches it to an interface inside a network namespace; detached on drop.

use crate::netns::Netns;
use anyhow::{Context, Result};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use std::fs::File;
use std::thread;
use std::time::{Duration, Instant};

/// An XDP program attached inside a namespace; owns the `aya::Ebpf`.
/// Drop detaches from a thread inside the namespace (the netlink fallback needs that).
#[derive(Debug)]
pub struct XdpAttachment {
    ebpf: Option<Ebpf>,
    ns: Option<File>,
    pub iface: String,
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        let (ebpf, ns) = (self.ebpf.take(), self.ns.take());
        let detach = move || {
            if let Some(fd) = ns {
                let _ = nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET);
            }
            drop(ebpf);
        };
        if let Ok(h) = thread::Builder::new()
            .name("xdp-detach".into())
            .spawn(detach)
        {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            let _ = h.is_finished() && h.join().is_ok();
        }
    }
}

/// Loads `object` (global `AYA_LOG_LEVEL` overridden to 0 if present), loads program
/// `program` and attaches it to `iface` inside `ns` with `mode`, on a setns'd thread.
pub fn attach_xdp(
    ns: &Netns,
    iface: &str,
    object: &[u8],
    program: &str,
    mode: XdpMode,
) -> Result<XdpAttachment> {
    let path = format!("/run/netns/{}", ns.name());
    let fd = File::open(&path).with_context(|| format!("opening {path}"))?;
    let thread_fd = fd.try_clone()?;
    let ebpf = thread::scope(|s| {
        let h = s.spawn(move || -> Result<Ebpf> {
            nix::sched::setns(thread_fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let mut loader = EbpfLoader::new();
            loader.override_global("AYA_LOG_LEVEL", &0u8, false);
            let mut ebpf = loader.load(object).context("loading eBPF object")?;
            let prog = ebpf.program_mut(program);
            let prog = prog.with_context(|| format!("no program {program:?}"))?;
            let prog: &mut Xdp = prog.try_into()?;
            prog.load().with_context(|| format!("loading {program}"))?;
            let ctx = || format!("attaching {program} to {iface} ({mode:?})");
            prog.attach(iface, mode).with_context(ctx)?;
            Ok(ebpf)
        });
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    let (ebpf, ns, iface) = (Some(ebpf), Some(fd), iface.to_string());
    Ok(XdpAttachment { ebpf, ns, iface })
}
