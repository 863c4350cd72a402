//! The `lb` daemon as a library: config model, snapshot, XDP dataplane control, L7 proxy and
//! admin endpoint. The binary (main.rs) is only the command line around [`daemon::run`].

pub mod admin;
pub mod bpf;
pub mod config;
pub mod daemon;
pub mod error;
pub mod proxy;
pub mod snapshot;
