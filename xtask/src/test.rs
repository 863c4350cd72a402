//! `cargo xtask test`: the README's test command and what CI runs. Builds once (one target dir,
//! dev profile), then: fmt, clippy, unit tests, XDP fixtures, proxy and netns end-to-end tests.

use anyhow::{Context, Result};
use std::process::Command;

pub fn run(extra: &[String]) -> Result<()> {
    crate::setup::run(false)?;
    crate::build::ebpf(true)?;
    let root = crate::root();
    let cargo = || {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(&root);
        c
    };
    crate::run_cmd(cargo().args(["fmt", "--all", "--check"])).context("run `cargo fmt --all`")?;
    crate::run_cmd(cargo().args(["fmt", "--check", "--manifest-path", "lb-ebpf/Cargo.toml"]))
        .context("run `cargo fmt --manifest-path lb-ebpf/Cargo.toml`")?;
    crate::run_cmd(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    missing_object_guard(&cargo)?;
    // The end-to-end tests run the real `lb` binary.
    crate::run_cmd(cargo().args(["build", "-p", "lb-user", "--bin", "lb"]))?;
    if !is_root() {
        eprintln!("warning: not root: XDP fixture and network-namespace tests will fail (they need root + BPF)");
    }
    let result = crate::run_cmd(cargo().args(["test", "--workspace"]).args(extra));
    lb_tests::netns::cleanup_stale("lbt-");
    result
}

/// Without the eBPF object, `cargo check` must still work and `cargo build` must fail saying
/// to run `cargo xtask build-ebpf` (lb-user/build.rs).
fn missing_object_guard(cargo: &dyn Fn() -> Command) -> Result<()> {
    eprintln!("+ checking the missing-eBPF-object guard (LB_EBPF_OBJECT=/nonexistent)");
    let run = |sub: &str| {
        cargo()
            .args([sub, "-p", "lb-user", "--bin", "lb"])
            .env("LB_EBPF_OBJECT", "/nonexistent/lb-ebpf.o")
            .output()
    };
    let check = run("check")?;
    anyhow::ensure!(
        check.status.success(),
        "cargo check must work without the eBPF object:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let build = run("build")?;
    let stderr = String::from_utf8_lossy(&build.stderr);
    anyhow::ensure!(
        !build.status.success() && stderr.contains("run `cargo xtask build-ebpf`"),
        "cargo build without the eBPF object must fail and say to run cargo xtask build-ebpf:\n{stderr}"
    );
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
