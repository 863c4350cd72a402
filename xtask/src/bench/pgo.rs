//! The release `lb` built with profile-guided optimisation: an instrumented build serves a
//! training load (nginx origin, wrk), then the release build is optimised with its profile.
//!
//! Why: lb runs fewer instructions per request than HAProxy but more of them miss the
//! instruction cache (callgrind's cache model, BENCHMARKS.md); the profile lets LLVM lay the hot
//! request path out together and keep error paths out of it. rustc's `-Cprofile-generate`
//! and `-Cprofile-use`, merged with the `llvm-profdata` of rustc's own LLVM major; then BOLT
//! (bolt.rs) reorders the optimised binary's code across functions.

use super::l7::{HOST, ORIGIN};
use super::origin::start_origin;
use super::proc::{spawn_pinned, wait_http};
use super::wrk::{self, Load};
use super::Env;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the training lb listens (the l7 suite's ports are not in use yet).
const TRAIN_ADDR: &str = "127.0.0.1:19051";
const TRAIN_ADMIN: &str = "127.0.0.1:19951";
/// Length of each training load.
const TRAIN_RUN: Duration = Duration::from_secs(3);

/// What the training covers: the bench's like-for-like listener, and one with every default
/// (X-Forwarded-*, Forwarded, request id, traceparent), host and path routes (exact, prefix,
/// regex) and a JSON access log (to the lb's log file), so the profile is not only the
/// benchmark's path.
fn configs() -> [String; 2] {
    let cluster =
        format!("clusters:\n  - name: origin\n    endpoints: [{{address: \"{ORIGIN}\"}}]\n");
    [
        format!(
            "access_log: {{format: off}}\ntracing: {{propagate: false}}\nlisteners: [{{name: http, address: \"{TRAIN_ADDR}\", forwarded: {{headers: [x-forwarded-for]}}, generate_request_id: false}}]\nroutes: [{{hosts: [\"*\"], cluster: origin}}]\n{cluster}"
        ),
        format!(
            "access_log: {{format: json}}\nlisteners: [{{name: http, address: \"{TRAIN_ADDR}\"}}]\nroutes:\n  - {{hosts: [\"other.test\"], cluster: origin}}\n  - {{hosts: [\"{HOST}\"], path: {{regex: \"^/v[0-9]+/\"}}, cluster: origin}}\n  - {{hosts: [\"{HOST}\"], path: {{exact: \"/1k\"}}, cluster: origin}}\n  - {{hosts: [\"*.{HOST}\", \"{HOST}\"], path: {{prefix: \"/\"}}, cluster: origin}}\n{cluster}"
        ),
    ]
}

/// Builds the PGO + BOLT release binary and returns its path (the normal `target/release/lb`).
pub fn build(env: &Env, cargo: &str) -> Result<PathBuf> {
    if nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)?.unwrap_or(1) < 2 {
        bail!("the PGO training pins lb to CPU 0 and its origin and load to CPU 1: it needs 2 CPUs (`cargo build --release -p lb-user` builds without PGO)");
    }
    let root = crate::root();
    let gen_dir = crate::target_dir().join("pgo-generate");
    let raw = env.scratch.join("pgo-raw");
    let _ = std::fs::remove_dir_all(&raw);
    std::fs::create_dir_all(&raw)?;
    eprintln!("bench: PGO 1/3: instrumented release build");
    cargo_build(
        cargo,
        &root,
        &gen_dir,
        &format!("-Cprofile-generate={}", raw.display()),
        &env.object,
    )?;
    eprintln!("bench: PGO 2/3: training load");
    train(env, &gen_dir.join("release").join("lb"))?;
    let major = super::bolt::llvm_major()?;
    let profdata = merge(env, &raw, &major)?;
    eprintln!("bench: PGO 3/3: release build with the profile");
    // Relocations kept in the binary let BOLT move whole functions (bolt.rs).
    cargo_build(
        cargo,
        &root,
        &crate::target_dir(),
        &format!(
            "-Cprofile-use={} -Clink-arg=-Wl,--emit-relocs",
            profdata.display()
        ),
        &env.object,
    )?;
    let lb = crate::target_dir().join("release").join("lb");
    super::bolt::optimise(env, &lb, &major)?;
    Ok(lb)
}

fn cargo_build(cargo: &str, root: &Path, target: &Path, flags: &str, object: &Path) -> Result<()> {
    let reuseport = object.with_file_name("lb-reuseport.o");
    crate::run_cmd(
        Command::new(cargo)
            .current_dir(root)
            .args(["build", "-q", "--release", "-p", "lb-user", "--bin", "lb"])
            .env("CARGO_TARGET_DIR", target)
            .env("RUSTFLAGS", flags)
            .env("LB_EBPF_OBJECT", object)
            .env("LB_REUSEPORT_OBJECT", reuseport),
    )
}

/// Runs the instrumented lb under each training config and load; it writes its profile when
/// it exits on SIGTERM.
pub(super) fn train(env: &Env, lb: &Path) -> Result<()> {
    let _origin = start_origin(env)?;
    let addr = TRAIN_ADDR.parse()?;
    for (i, conf) in configs().iter().enumerate() {
        let file = env.scratch.join(format!("pgo-{i}.yaml"));
        std::fs::write(&file, conf)?;
        let file_s = file.display().to_string();
        let mut lb = spawn_pinned(
            0,
            lb,
            &[
                "run",
                "--config",
                &file_s,
                "--workers",
                "1",
                "--admin",
                TRAIN_ADMIN,
            ],
            &env.scratch.join(format!("pgo-lb-{i}.log")),
        )?;
        wait_http(addr, HOST, "/small", Duration::from_secs(10)).context("training lb")?;
        for (path, new_connection) in [
            ("/small", false),
            ("/small", true),
            ("/v1/small", false),
            ("/1k", false),
            ("/100k", false),
        ] {
            let load = Load {
                addr,
                host: HOST,
                path,
                connections: super::l7::CONNECTIONS,
                new_connection,
                script: None,
            };
            // Failed requests (a 404 from the origin for /v1/small) train the path too.
            wrk::run(&load, TRAIN_RUN)?;
        }
        match lb.stop() {
            Some(s) if s.success() => {}
            other => bail!("the training lb did not exit cleanly ({other:?}): no profile"),
        }
    }
    Ok(())
}

/// Merges the raw profiles with the llvm-profdata of rustc's LLVM major.
fn merge(env: &Env, raw: &Path, major: &str) -> Result<PathBuf> {
    let tool = super::bolt::llvm_tool(major, "llvm-profdata", "llvm")?;
    // Named by content, so a new profile changes RUSTFLAGS and cargo rebuilds with it.
    let merged = env.scratch.join("pgo-merged.profdata");
    crate::run_cmd(
        Command::new(&tool)
            .arg("merge")
            .arg("-o")
            .arg(&merged)
            .arg(raw),
    )?;
    let bytes = std::fs::read(&merged)?;
    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    let named = env.scratch.join(format!("lb-{hash:016x}.profdata"));
    std::fs::rename(&merged, &named)?;
    Ok(named)
}
