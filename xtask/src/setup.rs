//! Installs the build's toolchain on a fresh Debian 12 machine, idempotently: Debian's rustc
//! (it has a prebuilt core for bpfel-unknown-none), the matching LLVM, and bpf-linker 0.13.0.

use anyhow::{bail, Context, Result};
use std::process::Command;

const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM majors bpf-linker 0.13 can be built against.
const SUPPORTED_LLVM: [u32; 3] = [21, 22, 23];
const RUST_PACKAGES: [&str; 3] = ["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];
/// Used by tests and the demo: ip/netns, ping; headless Chromium checks the /stats page;
/// ethtool turns off veth checksum offload where native XDP forwards between veths.
const TOOL_PACKAGES: [&str; 4] = ["iproute2", "iputils-ping", "chromium", "ethtool"];
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";

/// `verbose`: one line per step even when nothing is to do (`cargo xtask setup`); otherwise
/// silent unless something gets installed.
pub fn run(verbose: bool) -> Result<()> {
    let say = |msg: String| {
        if verbose {
            eprintln!("setup: {msg}");
        }
    };

    let mut wanted: Vec<String> = RUST_PACKAGES
        .iter()
        .chain(&TOOL_PACKAGES)
        .map(|s| s.to_string())
        .collect();
    let missing = missing_packages(&wanted);
    if missing.is_empty() {
        say(format!("Debian packages present: {}", wanted.join(" ")));
    } else {
        apt_install(&missing)?;
    }

    let llvm = llvm_major()?;
    wanted = vec![format!("llvm-{llvm}-dev")];
    let missing = missing_packages(&wanted);
    if missing.is_empty() {
        say(format!(
            "LLVM {llvm} (from {DEBIAN_RUSTC} -vV) present: llvm-{llvm}-dev"
        ));
    } else {
        apt_install(&missing)?;
    }

    match bpf_linker_version() {
        Some(v) if v == BPF_LINKER_VERSION => say(format!("bpf-linker {v} present")),
        found => {
            eprintln!(
                "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm} (was: {}; about 3 minutes)",
                found.as_deref().unwrap_or("not installed")
            );
            let prefix = format!("/usr/lib/llvm-{llvm}");
            crate::run_cmd(
                Command::new("cargo")
                    .args([
                        "install",
                        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                        "--locked",
                        "--force",
                    ])
                    .args([
                        "--no-default-features",
                        "--features",
                        &format!("llvm-{llvm}"),
                    ])
                    .env("LLVM_PREFIX", &prefix)
                    .env_remove("CARGO_TARGET_DIR"),
            )?;
        }
    }
    Ok(())
}

fn missing_packages(pkgs: &[String]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p.as_str()])
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .cloned()
        .collect()
}

fn apt_install(pkgs: &[String]) -> Result<()> {
    eprintln!("setup: installing Debian packages: {}", pkgs.join(" "));
    let apt = |args: &[&str]| {
        crate::run_cmd(
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(pkgs.iter().map(String::as_str));
    apt(&args).context(
        "apt-get install failed (setup needs root and Debian's bookworm-security repository)",
    )
}

/// The LLVM major Debian's rustc was built with ("LLVM version: 22.1.8").
pub fn llvm_major() -> Result<u32> {
    let out = Command::new(DEBIAN_RUSTC)
        .arg("-vV")
        .output()
        .with_context(|| format!("running {DEBIAN_RUSTC} -vV"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse::<u32>().ok())
        .with_context(|| format!("no LLVM version in `{DEBIAN_RUSTC} -vV`:\n{text}"))?;
    if !SUPPORTED_LLVM.contains(&major) {
        bail!(
            "Debian's rustc uses LLVM {major}; bpf-linker {BPF_LINKER_VERSION} supports {SUPPORTED_LLVM:?}. \
             Update BPF_LINKER_VERSION in xtask/src/setup.rs to a release that supports LLVM {major}."
        );
    }
    Ok(major)
}

fn bpf_linker_version() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).map(str::to_string)
}
