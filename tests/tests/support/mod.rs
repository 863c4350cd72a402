//! Support shared by the L7 end-to-end tests (not by xtask: it needs lb-user, which needs the
//! eBPF object): the hyper origin, the throwaway CA and the admin-API/health helpers. Each test
//! file uses part of it.
#![allow(dead_code)]

pub mod admin;
pub mod certs;
pub mod origin;
pub mod switch;
