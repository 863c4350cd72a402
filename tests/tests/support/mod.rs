//! Support shared by the L7 end-to-end tests (not by xtask: it needs lb-user, which needs the
//! eBPF object): the hyper origin and the throwaway CA. Each test file uses part of it.
#![allow(dead_code)]

pub mod certs;
pub mod origin;
