//! Allocators behind the L4 maps: first-fit regions of the ring array, and slot ids (services,
//! endpoints) with a generation that changes whenever a slot is given to someone else.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// No free run of `need` slots; `free` slots are free in `fragments` runs, `largest` at most.
    NoRegion {
        need: u32,
        free: u32,
        fragments: usize,
        largest: u32,
    },
    /// Every one of the `capacity` ids is taken.
    NoId { what: &'static str, capacity: u32 },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::NoRegion {
                need,
                free,
                fragments,
                largest,
            } => write!(
                f,
                "the ring array has no run of {need} free slots ({free} free in {fragments} runs, the largest {largest}): raise xdp.l4.ring_slots (takes effect at restart)"
            ),
            AllocError::NoId { what, capacity } => {
                write!(f, "all {capacity} {what} slots are in use")
            }
        }
    }
}

impl std::error::Error for AllocError {}

/// First-fit allocator of slot runs in `0..size` (the ring array).
#[derive(Debug, Clone)]
pub struct RegionAlloc {
    size: u32,
    /// Free runs: offset -> length, never adjacent (merged on free).
    free: BTreeMap<u32, u32>,
}

impl RegionAlloc {
    pub fn new(size: u32) -> Self {
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(0, size);
        }
        RegionAlloc { size, free }
    }

    /// The lowest offset of a free run of `len` slots (`len` > 0).
    pub fn alloc(&mut self, len: u32) -> Result<u32, AllocError> {
        let found = self
            .free
            .iter()
            .find(|(_, l)| **l >= len.max(1))
            .map(|(o, l)| (*o, *l));
        let Some((off, run)) = found else {
            return Err(AllocError::NoRegion {
                need: len,
                free: self.free_slots(),
                fragments: self.free.len(),
                largest: self.free.values().copied().max().unwrap_or(0),
            });
        };
        self.free.remove(&off);
        if run > len {
            self.free.insert(off + len, run - len);
        }
        Ok(off)
    }

    /// Returns a region given by [`alloc`](Self::alloc).
    pub fn free(&mut self, off: u32, len: u32) {
        let (mut off, mut len) = (off, len);
        if let Some((&prev, &plen)) = self.free.range(..off).next_back() {
            if prev + plen == off {
                self.free.remove(&prev);
                off = prev;
                len += plen;
            }
        }
        if let Some(&nlen) = self.free.get(&(off + len)) {
            self.free.remove(&(off + len));
            len += nlen;
        }
        self.free.insert(off, len);
    }

    pub fn used(&self) -> u32 {
        self.size - self.free_slots()
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    fn free_slots(&self) -> u32 {
        self.free.values().sum()
    }
}

/// Ids `0..capacity`, each with a generation bumped every time it is handed out. Never-used ids
/// go first, then freed ones oldest first, so an id is reused as late as possible.
#[derive(Debug, Clone)]
pub struct IdAlloc {
    what: &'static str,
    capacity: u32,
    next_fresh: u32,
    freed: VecDeque<u32>,
    gens: Vec<u32>,
}

impl IdAlloc {
    /// `what` names the ids in errors ("L4 endpoint").
    pub fn new(what: &'static str, capacity: u32) -> Self {
        IdAlloc {
            what,
            capacity,
            next_fresh: 0,
            freed: VecDeque::new(),
            gens: Vec::new(),
        }
    }

    /// An unused id and its new generation (never 0: a zeroed slot matches no flow).
    pub fn alloc(&mut self) -> Result<(u32, u32), AllocError> {
        let id = if self.next_fresh < self.capacity {
            self.next_fresh += 1;
            self.gens.push(0);
            self.next_fresh - 1
        } else if let Some(id) = self.freed.pop_front() {
            id
        } else {
            return Err(AllocError::NoId {
                what: self.what,
                capacity: self.capacity,
            });
        };
        let gen = &mut self.gens[id as usize];
        *gen = gen.wrapping_add(1).max(1);
        Ok((id, *gen))
    }

    /// Returns an id given by [`alloc`](Self::alloc).
    pub fn free(&mut self, id: u32) {
        self.freed.push_back(id);
    }

    pub fn in_use(&self) -> u32 {
        self.next_fresh - self.freed.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_first_fit_merge_and_fragmentation() {
        let mut r = RegionAlloc::new(100);
        let a = r.alloc(30).unwrap();
        let b = r.alloc(30).unwrap();
        let c = r.alloc(30).unwrap();
        assert_eq!((a, b, c, r.used()), (0, 30, 60, 90));
        // Free the middle: 40 free in two runs (30 at 30, 10 at 90); 35 does not fit anywhere.
        r.free(b, 30);
        let err = r.alloc(35).unwrap_err();
        assert_eq!(
            err,
            AllocError::NoRegion {
                need: 35,
                free: 40,
                fragments: 2,
                largest: 30
            }
        );
        assert!(err.to_string().contains("raise xdp.l4.ring_slots"), "{err}");
        // First fit: the lowest run that is large enough.
        assert_eq!(r.alloc(5).unwrap(), 30);
        assert_eq!(r.alloc(10).unwrap(), 35);
        assert_eq!(r.alloc(12).unwrap(), 45, "first fit: the lower run of 15");
        assert_eq!(r.alloc(10).unwrap(), 90, "the 3 left at 57 are too few");
    }

    #[test]
    fn regions_merge_with_both_neighbours() {
        let mut r = RegionAlloc::new(90);
        let offs: Vec<u32> = (0..3).map(|_| r.alloc(30).unwrap()).collect();
        assert!(r.alloc(1).is_err(), "full");
        r.free(offs[0], 30);
        r.free(offs[2], 30);
        r.free(offs[1], 30);
        assert_eq!(r.used(), 0);
        assert_eq!(r.alloc(90).unwrap(), 0, "one run again");
    }

    #[test]
    fn regions_survive_churn_without_leaking() {
        let mut r = RegionAlloc::new(1000);
        let mut live: Vec<(u32, u32)> = Vec::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5000 {
            if live.len() < 8 && rng.bool() {
                let len = rng.u32(1..100);
                if let Ok(off) = r.alloc(len) {
                    assert!(
                        live.iter().all(|&(o, l)| off + len <= o || o + l <= off),
                        "overlap"
                    );
                    assert!(off + len <= 1000);
                    live.push((off, len));
                }
            } else if !live.is_empty() {
                let (o, l) = live.swap_remove(rng.usize(..live.len()));
                r.free(o, l);
            }
            assert_eq!(r.used(), live.iter().map(|(_, l)| l).sum::<u32>());
        }
        for (o, l) in live.drain(..) {
            r.free(o, l);
        }
        assert_eq!(r.alloc(1000).unwrap(), 0);
    }

    #[test]
    fn ids_exhaust_with_a_clear_error_and_reuse_bumps_gen() {
        let mut ids = IdAlloc::new("L4 endpoint", 3);
        assert_eq!(ids.alloc().unwrap(), (0, 1));
        assert_eq!(ids.alloc().unwrap(), (1, 1));
        assert_eq!(ids.alloc().unwrap(), (2, 1));
        let err = ids.alloc().unwrap_err();
        assert_eq!(err.to_string(), "all 3 L4 endpoint slots are in use");
        ids.free(1);
        ids.free(0);
        assert_eq!(ids.in_use(), 1);
        // Oldest freed first, each with a new generation.
        assert_eq!(ids.alloc().unwrap(), (1, 2));
        assert_eq!(ids.alloc().unwrap(), (0, 2));
        ids.free(0);
        assert_eq!(ids.alloc().unwrap(), (0, 3));
    }

    #[test]
    fn fresh_ids_before_freed_ones_and_gen_never_zero() {
        let mut ids = IdAlloc::new("x", 4);
        let (a, _) = ids.alloc().unwrap();
        ids.free(a);
        assert_eq!(
            ids.alloc().unwrap(),
            (1, 1),
            "a fresh id while there is one"
        );
        let mut ids = IdAlloc::new("x", 1);
        ids.gens.push(0);
        ids.next_fresh = 1;
        ids.gens[0] = u32::MAX;
        ids.free(0);
        assert_eq!(ids.alloc().unwrap(), (0, 1), "wraps past 0");
    }
}
