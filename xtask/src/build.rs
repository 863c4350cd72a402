//! Builds lb-ebpf with Debian's rustc/cargo (bpfel-unknown-none, bpf-linker) and copies its two
//! objects (XDP: lb-ebpf.o, SK_REUSEPORT: lb-reuseport.o) to <target>/bpf/ for lb-user's build.rs.

use crate::setup::{DEBIAN_CARGO, DEBIAN_RUSTC};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The lb-ebpf bins, each copied to `<target>/bpf/<name>.o`; the first is the XDP object.
pub const OBJECTS: [&str; 2] = ["lb-ebpf", "lb-reuseport"];

/// Variables from the outer (rustup) cargo that must not leak into the Debian build.
const SCRUB: [&str; 8] = [
    "RUSTUP_TOOLCHAIN",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO",
];

/// Builds both objects; returns the XDP object's path (the reuseport one is next to it).
pub fn ebpf(release: bool) -> Result<PathBuf> {
    let root = crate::root();
    let target = crate::target_dir();
    let ebpf_target = target.join("ebpf");
    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.current_dir(root.join("lb-ebpf"))
        .args(["build", "--target-dir"])
        .arg(&ebpf_target)
        .env("RUSTC", DEBIAN_RUSTC)
        // aya-ebpf uses one unstable feature; allow it for that crate only.
        .env("RUSTC_BOOTSTRAP", "aya_ebpf");
    if release {
        cmd.arg("--release");
    }
    for var in SCRUB {
        cmd.env_remove(var);
    }
    // bpf-linker lives in cargo's bin dir, which may not be on PATH in CI.
    if let Some(bin) = cargo_home().map(|h| h.join("bin")) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        if !dirs.contains(&bin) {
            dirs.insert(0, bin);
            cmd.env("PATH", std::env::join_paths(dirs)?);
        }
    }
    crate::run_cmd(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    let built_dir = ebpf_target.join("bpfel-unknown-none").join(profile);
    let dest_dir = target.join("bpf");
    std::fs::create_dir_all(&dest_dir)?;
    let mut paths = Vec::new();
    for name in OBJECTS {
        let built = built_dir.join(name);
        let dest = dest_dir.join(format!("{name}.o"));
        // Copy only on change so lb-user is not rebuilt needlessly.
        let new = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
        if std::fs::read(&dest).ok().as_deref() != Some(new.as_slice()) {
            std::fs::write(&dest, &new).with_context(|| format!("writing {}", dest.display()))?;
        }
        eprintln!("eBPF object: {} ({} bytes)", dest.display(), new.len());
        paths.push(dest);
    }
    Ok(paths.swap_remove(0))
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}
