//! Incremental Internet checksum updates (RFC 1624) in native byte order: the one's-complement
//! sum is byte-order independent, so words are summed as loaded and the result stored as is.

/// Folds a 64-bit one's-complement accumulator to 16 bits.
#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// An open update of one checksum field.
pub struct Delta(u64);

impl Delta {
    /// `stored` is the checksum field as loaded (native order).
    #[inline(always)]
    pub fn new(stored: u16) -> Delta {
        Delta(!stored as u64)
    }

    /// Adds a partial sum from bpf_csum_diff (sum of new words minus old words).
    #[inline(always)]
    pub fn diff(&mut self, partial: u32) {
        self.0 += partial as u64;
    }

    /// One 16-bit word changes from `old` to `new` (both as loaded).
    #[inline(always)]
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += !old as u64 + new as u64;
    }

    /// The new checksum field value (native order).
    #[inline(always)]
    pub fn finish(self) -> u16 {
        !fold(self.0)
    }
}
