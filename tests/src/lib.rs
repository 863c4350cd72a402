//! Test support for the load balancer: packet fixtures and checksums, network-namespace
//! topologies, XDP attachment and a tiny HTTP/1.1 backend and client (tests and demos).

pub mod checksum;
pub mod helm;
pub mod http;
pub mod kubeapi;
pub mod kubectl;
pub mod kubetest;
pub mod l4world;
pub mod lb;
pub mod manifests;
pub mod netns;
pub mod packet;
pub mod process;
pub mod topology;
pub mod xdp;

use std::path::PathBuf;

/// The `lb` binary the end-to-end tests run: `$LB_BIN`, else `lb` next to the test binary's
/// `deps/` directory (`cargo xtask test` builds it first).
pub fn lb_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LB_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("test binary lives in target/<profile>/deps");
    let bin = dir.join("lb");
    assert!(
        bin.is_file(),
        "{} not built: run `cargo build -p lb-user --bin lb` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Panics unless running as root: the XDP and namespace tests must fail, not pass vacuously,
/// where they cannot run.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, BPF); run it as root, e.g. via `cargo xtask test`"
    );
}
