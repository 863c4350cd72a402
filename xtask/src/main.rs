//! Project tasks: `cargo xtask setup | build-ebpf | build-release | test | demo | bench |
//! netns-clean`.
//! Every task first makes sure the toolchain is installed (see setup.rs).

mod bench;
mod build;
mod demo;
mod demo_l4;
mod demo_migration;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build needs (Debian rustc for BPF, LLVM, bpf-linker); quick when present.
    Setup,
    /// Build the XDP object (lb-ebpf, release profile: the only one the kernel verifier loads)
    /// and place it where lb-user embeds it.
    BuildEbpf {
        /// Build the debug profile instead (for reading its code; the verifier rejects it).
        #[arg(long)]
        debug: bool,
    },
    /// fmt + clippy, then unit, fixture and network-namespace tests (needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Build everything, run the balancer in network namespaces with real traffic, print a report.
    Demo,
    /// The release `lb` (target/release/lb) with profile-guided optimisation: an instrumented
    /// build serves a training load (nginx origin, wrk; root, 2 CPUs), then the optimised build,
    /// whose code layout BOLT then rewrites from a second training run.
    BuildRelease,
    /// Benchmarks against HAProxy and nginx in the same run; writes BENCHMARKS.md and plots.
    Bench {
        /// Suites to run (default: all that exist: l7, routes, reload, xdp, control).
        suites: Vec<String>,
        /// A short run (about a minute) that proves the harness works; results go to target-bench/quick.
        #[arg(long)]
        quick: bool,
    },
    /// Delete network namespaces left by killed test runs.
    NetnsClean,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::run(true),
        Cmd::BuildEbpf { debug } => {
            setup::run(false)?;
            build::ebpf(!debug).map(|_| ())
        }
        Cmd::Test { args } => test::run(&args),
        Cmd::Demo => demo::run(),
        Cmd::BuildRelease => bench::release().map(|lb| eprintln!("built {}", lb.display())),
        Cmd::Bench { suites, quick } => bench::run(&suites, quick),
        Cmd::NetnsClean => {
            let n = lb_tests::netns::cleanup_stale("lbt-");
            eprintln!("removed {n} namespace(s)");
            Ok(())
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The main target dir, as cargo and lb-user's build.rs resolve it.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => root().join(t),
        None => root().join("target"),
    }
}

/// Runs a command, echoing it; fails on a non-zero exit.
pub fn run_cmd(cmd: &mut std::process::Command) -> Result<()> {
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("+ {shown}");
    let status = cmd.status().map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    anyhow::ensure!(status.success(), "{shown}: {status}");
    Ok(())
}
