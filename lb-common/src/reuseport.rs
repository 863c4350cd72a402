//! The SK_REUSEPORT steering program's maps and policy values, shared by the program
//! (lb-ebpf, object `lb-reuseport`) and the daemon.

/// The SK_REUSEPORT program: picks the worker socket for each new connection.
pub const PROG_REUSEPORT: &str = "lb_reuseport";

/// REUSEPORT_SOCKARRAY: index k holds worker k's listening socket.
pub const MAP_RP_SOCKS: &str = "LB_RP_SOCKS";
/// Array with one [`SteerPolicy`] (index 0), written by user space.
pub const MAP_RP_POLICY: &str = "LB_RP_POLICY";
/// Array of u32, index k: worker k's open connections (written by user space, `least_loaded`).
pub const MAP_RP_LOAD: &str = "LB_RP_LOAD";

/// Most workers one listener can have: the drained set is a 64-bit mask.
pub const MAX_WORKERS: u32 = 64;

/// `hash(4-tuple) mod` the number of selectable workers.
pub const STEER_FLOW_HASH: u8 = 0;
/// The selectable worker with the fewest open connections (ties broken by the flow hash).
pub const STEER_LEAST_LOADED: u8 = 1;

/// How the program chooses, written by user space whenever the mode or a drained flag changes.
/// The selectable workers (not drained) are listed in `live`, so the program indexes instead of
/// scanning bits. With none selectable the program selects nothing and the kernel falls back
/// to its own hash over every socket of the group.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SteerPolicy {
    /// [`STEER_FLOW_HASH`] or [`STEER_LEAST_LOADED`].
    pub mode: u8,
    /// Explicit padding so `live_count` sits at offset 4 on both sides.
    pub _pad: [u8; 3],
    /// Entries of `live` in use (0..=64).
    pub live_count: u32,
    /// `live[..live_count]`: indices (into [`MAP_RP_SOCKS`]) of the selectable workers.
    pub live: [u8; MAX_WORKERS as usize],
}

impl Default for SteerPolicy {
    fn default() -> Self {
        SteerPolicy {
            mode: STEER_FLOW_HASH,
            _pad: [0; 3],
            live_count: 0,
            live: [0; MAX_WORKERS as usize],
        }
    }
}

impl SteerPolicy {
    /// The policy for `workers` workers, bit k of `drained` set when worker k is drained.
    pub fn new(mode: u8, workers: u32, drained: u64) -> SteerPolicy {
        let mut p = SteerPolicy {
            mode,
            ..Default::default()
        };
        let mut k = 0;
        while k < workers && k < MAX_WORKERS {
            if drained & (1u64 << k) == 0 {
                p.live[p.live_count as usize] = k as u8;
                p.live_count += 1;
            }
            k += 1;
        }
        p
    }

    /// The selectable workers.
    pub fn live(&self) -> &[u8] {
        &self.live[..(self.live_count.min(MAX_WORKERS)) as usize]
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SteerPolicy {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_live_list() {
        assert_eq!(core::mem::size_of::<SteerPolicy>(), 72);
        assert_eq!(core::mem::align_of::<SteerPolicy>(), 4);
        let p = SteerPolicy::new(STEER_LEAST_LOADED, 4, 0b0100);
        assert_eq!((p.mode, p.live()), (STEER_LEAST_LOADED, &[0u8, 1, 3][..]));
        assert_eq!(SteerPolicy::new(STEER_FLOW_HASH, 64, 0).live().len(), 64);
        assert_eq!(SteerPolicy::new(STEER_FLOW_HASH, 65, 0).live().len(), 64);
        assert!(SteerPolicy::new(STEER_FLOW_HASH, 2, 0b11).live().is_empty());
        assert!(SteerPolicy::default().live().is_empty());
    }
}
