//! The `lb` daemon as a library: config model, snapshot, XDP dataplane control, L7 proxy and
//! admin endpoint. The binary (main.rs) is only the command line around [`daemon::run`].

pub mod accesslog;
pub mod admin;
pub mod alloc;
pub mod bpf;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod error;
pub mod health;
pub mod kube;
pub mod maglev;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod publisher;
pub mod ratelimit;
pub mod runtime;
pub mod snapshot;
pub mod source;
pub mod tls;
pub mod trace;
