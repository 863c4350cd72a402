//! The PGO release `lb` rewritten by BOLT: an instrumented copy serves the same training load,
//! then llvm-bolt lays out its hot code from that profile (blocks, functions, cold splitting).
//!
//! Why: after PGO, lb still misses the instruction cache more per request than HAProxy
//! (callgrind's model, BENCHMARKS.md). PGO orders blocks inside a function; BOLT also orders
//! the functions across the whole binary (hyper, tokio, std, ours) and moves cold blocks out.

use super::Env;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Rewrites `lb` in place (it must be linked with `--emit-relocs`): instrument, train, optimise.
pub fn optimise(env: &Env, lb: &Path, major: &str) -> Result<()> {
    let bolt = llvm_tool(major, "llvm-bolt", "bolt")?;
    let merge = llvm_tool(major, "merge-fdata", "bolt")?;
    let dir = env.scratch.join("bolt");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let instrumented = dir.join("lb-instrumented");
    let prefix = dir.join("lb.fdata");
    eprintln!("bench: BOLT 1/3: instrumented copy");
    crate::run_cmd(
        Command::new(&bolt)
            .arg(lb)
            .arg("-o")
            .arg(&instrumented)
            .arg("-instrument")
            .arg(format!("-instrumentation-file={}", prefix.display()))
            // One file per training process (two configs): merged below.
            .arg("-instrumentation-file-append-pid")
            .stdout(std::process::Stdio::null()),
    )?;
    eprintln!("bench: BOLT 2/3: training load");
    super::pgo::train(env, &instrumented)?;
    let profiles: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("lb.fdata"))
        })
        .collect();
    if profiles.is_empty() {
        bail!(
            "the BOLT-instrumented lb wrote no profile to {}",
            dir.display()
        );
    }
    let merged = dir.join("merged.fdata");
    let out = std::fs::File::create(&merged)?;
    let status = Command::new(&merge)
        .args(&profiles)
        .stdout(out)
        .status()
        .with_context(|| format!("{}", merge.display()))?;
    if !status.success() {
        bail!("{} failed: {status}", merge.display());
    }
    eprintln!("bench: BOLT 3/3: optimised layout");
    let optimised = dir.join("lb-bolt");
    crate::run_cmd(
        Command::new(&bolt)
            .arg(lb)
            .arg("-o")
            .arg(&optimised)
            .arg(format!("-data={}", merged.display()))
            .args([
                "-reorder-blocks=ext-tsp",
                "-reorder-functions=cdsort",
                "-split-functions",
                "-split-all-cold",
                "-split-eh",
                "-icf=all",
                "-use-gnu-stack",
            ])
            .stdout(std::process::Stdio::null()),
    )?;
    // Replace, not overwrite: a running copy of the old binary keeps its inode.
    std::fs::rename(&optimised, lb)
        .with_context(|| format!("moving the BOLT output to {}", lb.display()))?;
    Ok(())
}

/// An LLVM tool of rustc's LLVM major, installed from Debian (`llvm-22`, `bolt-22`) if missing.
pub fn llvm_tool(major: &str, tool: &str, package: &str) -> Result<PathBuf> {
    let path = PathBuf::from(format!("/usr/lib/llvm-{major}/bin/{tool}"));
    if !path.is_file() {
        crate::run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .arg(format!("{package}-{major}"))
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if !path.is_file() {
        bail!(
            "{} is missing after installing {package}-{major}",
            path.display()
        );
    }
    Ok(path)
}

/// The LLVM major version rustc was built with (its profiles and relocations match it).
pub fn llvm_major() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .map(str::to_string)
        .context("rustc -vV names no LLVM version")
}
