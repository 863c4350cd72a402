//! Support shared by the L7 end-to-end tests (not by xtask: it needs lb-user, which needs the
//! eBPF object): the hyper origin, the throwaway CA and the admin-API/health helpers. Each test
//! file uses part of it.
#![allow(dead_code)]

pub mod admin;
pub mod certs;
pub mod origin;
pub mod switch;

/// `lb run` with `yaml` and `args` (e.g. `--watch-secs 0`: reloads only by SIGHUP), admin on a
/// free loopback port.
pub fn start_lb(yaml: &str, args: &[&str]) -> lb_tests::lb::Lb<'static> {
    let admin = lb_tests::lb::free_local_addr();
    lb_tests::lb::Lb::start(&lb_tests::lb_bin(), None, yaml, admin, args).unwrap()
}
