//! Types shared by the XDP program (lb-ebpf) and the daemon (lb-user): map names, capacities,
//! `#[repr(C)]` keys and values with explicit padding, and the table of per-packet stat reasons.
#![cfg_attr(not(test), no_std)]

pub mod l4;
pub mod maps;
pub mod reuseport;
pub mod stats;

pub use l4::*;
pub use maps::*;
pub use stats::{Reason, StatValue, Verdict, REASON_COUNT};
