//! Keeps the program's IPv4 ban index (`BAN_INDEX`, see
//! `sip_xdp_common::banindex`) in step with BANS. Every writer of BANS goes
//! through `Maps`, which calls this after adding to BANS and before
//! removing from it, so the index never holds an address BANS does not.
//!
//! A bucket is rewritten whole (read, change a slot, write back). Two
//! processes (the controller and a CLI command) doing that to one bucket at
//! once could lose each other's change, and a lost removal would keep an
//! unbanned address dropped. They take an exclusive `flock` on the pin
//! directory's `maps/` first. A kernel hit counted between the read and
//! the write of a bucket is lost: microseconds, as with BANS' own counter
//! when `Maps::put` rewrites a ban.

use std::{collections::HashMap, fs::File, net::Ipv4Addr, os::fd::AsRawFd};

use aya::maps::{Array, Map, MapData};
use sip_xdp_common::{
    banindex::{addr_word, bucket_of, Bucket, Slot, BUCKETS},
    maps::MAP_BAN_INDEX,
};

use super::pins::Pins;
use crate::{Error, Result};

/// Past this many buckets to change, the whole index is read and written
/// in one pass instead of bucket by bucket (a list load of 100,000 bans
/// touches all 32,768).
const WHOLE_PASS: usize = 2_048;

pub struct BanIndex {
    map: Array<MapData, Bucket>,
    lock_dir: File,
}

/// Holds the writers' lock until dropped (a duplicate of the locked
/// descriptor: same open file, so the same lock).
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl BanIndex {
    /// The index of the program pinned at `pins`; `None` when the pinned
    /// program predates it (bans then all go through BANS, as they did).
    pub fn open(pins: &Pins) -> Option<Self> {
        let data = MapData::from_pin(pins.map(MAP_BAN_INDEX)).ok()?;
        let map = Array::try_from(Map::Array(data)).ok()?;
        let lock_dir = File::open(pins.maps_dir()).ok()?;
        Some(Self { map, lock_dir })
    }

    fn lock(&self) -> Result<Locked> {
        let io = |source| Error::Io {
            context: "locking the ban index".into(),
            source,
        };
        let held = self.lock_dir.try_clone().map_err(io)?;
        if unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        Ok(Locked(held))
    }

    fn get(&self, b: u32) -> Result<Bucket> {
        self.map
            .get(&b, 0)
            .map_err(Error::map("reading the ban index"))
    }

    fn set(&mut self, b: u32, bucket: &Bucket) -> Result<()> {
        self.map
            .set(b, bucket, 0)
            .map_err(Error::map("writing the ban index"))
    }

    /// Indexes bans (address, `expires_ns`, 0 = permanent), keeping the hit
    /// count of an address indexed already. Returns how many found their
    /// bucket full: BANS alone enforces those.
    pub fn put(&mut self, bans: &[(Ipv4Addr, u64)]) -> Result<usize> {
        self.change(bans.iter().map(|(a, e)| (*a, Some(*e))))
    }

    /// Takes addresses out of the index.
    pub fn remove(&mut self, addrs: &[Ipv4Addr]) -> Result<()> {
        self.change(addrs.iter().map(|a| (*a, None))).map(|_| ())
    }

    /// Writes `Some(expiry)` or removes (`None`) each address; returns the
    /// writes that found no room.
    fn change(&mut self, edits: impl Iterator<Item = (Ipv4Addr, Option<u64>)>) -> Result<usize> {
        let mut by_bucket: HashMap<u32, Vec<(u32, Option<u64>)>> = HashMap::new();
        for (a, e) in edits {
            let w = addr_word(a.octets());
            by_bucket.entry(bucket_of(w)).or_default().push((w, e));
        }
        if by_bucket.is_empty() {
            return Ok(0);
        }
        let _held = self.lock()?;
        let mut full = 0;
        if by_bucket.len() > WHOLE_PASS {
            let mut all = self.read_all()?;
            for (b, edits) in &by_bucket {
                full += apply(&mut all[*b as usize], edits);
            }
            for b in by_bucket.keys() {
                self.set(*b, &all[*b as usize])?;
            }
        } else {
            for (b, edits) in &by_bucket {
                let mut bucket = self.get(*b)?;
                let before = bucket;
                full += apply(&mut bucket, edits);
                if bucket != before {
                    self.set(*b, &bucket)?;
                }
            }
        }
        Ok(full)
    }

    fn read_all(&self) -> Result<Vec<Bucket>> {
        (0..BUCKETS).map(|b| self.get(b)).collect()
    }

    /// Replaces the index with exactly `bans`: after an upgrade from a
    /// program without it, and at every start of the controller, so an
    /// index left behind by a crash between two writes is made right.
    /// Returns the bans that found their bucket full.
    pub fn rebuild(&mut self, bans: &[(Ipv4Addr, u64)]) -> Result<usize> {
        let _held = self.lock()?;
        let old = self.read_all()?;
        let hits: HashMap<u32, u32> = old
            .iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .map(|s| (s.addr, s.hits))
            .collect();
        let mut all = vec![Bucket::default(); BUCKETS as usize];
        let mut full = 0;
        for (a, e) in bans {
            let w = addr_word(a.octets());
            let bucket = &mut all[bucket_of(w) as usize];
            match (bucket.iter_mut().find(|s| s.is_empty()), Slot::new(w, *e)) {
                (Some(s), Some(new)) => {
                    *s = new;
                    s.hits = hits.get(&w).copied().unwrap_or(0);
                }
                _ => full += 1,
            }
        }
        for (b, (new, old)) in all.iter().zip(&old).enumerate() {
            if new != old {
                self.set(b as u32, new)?;
            }
        }
        Ok(full)
    }

    /// The packets each indexed address dropped through the index (BANS
    /// counts the rest).
    pub fn hits(&self) -> Result<HashMap<Ipv4Addr, u64>> {
        Ok(self
            .read_all()?
            .iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .map(|s| (Ipv4Addr::from(s.addr.to_ne_bytes()), u64::from(s.hits)))
            .collect())
    }

    /// The slots in use (`status`).
    pub fn used(&self) -> Result<usize> {
        Ok(self
            .read_all()?
            .iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .count())
    }
}

/// Applies one bucket's edits; returns the writes left to BANS (bucket
/// full, or an expiry past what a slot holds).
fn apply(bucket: &mut Bucket, edits: &[(u32, Option<u64>)]) -> usize {
    let mut full = 0;
    for &(w, e) in edits {
        let at = bucket.iter().position(|s| !s.is_empty() && s.addr == w);
        let new = e.map(|e| Slot::new(w, e));
        match (at, new) {
            (Some(i), Some(Some(new))) => {
                bucket[i] = Slot {
                    hits: bucket[i].hits,
                    ..new
                }
            }
            (Some(i), _) => {
                bucket[i] = Slot::default();
                full += usize::from(new.is_some());
            }
            (None, Some(Some(new))) => match bucket.iter_mut().find(|s| s.is_empty()) {
                Some(s) => *s = new,
                None => full += 1,
            },
            (None, Some(None)) => full += 1,
            (None, None) => {}
        }
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_hits_free_slots_and_count_what_does_not_fit() {
        let mut b = Bucket::default();
        let edits: Vec<_> = (1..=6).map(|w| (w, Some(0))).collect();
        assert_eq!(apply(&mut b, &edits), 1, "five slots, six bans");
        b[2].hits = 7;
        // A new expiry keeps the count; a removal frees the slot for the
        // ban that did not fit.
        let shift = sip_xdp_common::banindex::UNIT_SHIFT;
        assert_eq!(
            apply(&mut b, &[(3, Some(5 << shift)), (1, None), (6, Some(0))]),
            0
        );
        assert_eq!((b[2].addr, b[2].hits, b[2].until), (3, 7, 5));
        assert_eq!(b[0].addr, 6);
        assert!(b.iter().all(|s| !s.is_empty()));
        // Removing what is not there changes nothing.
        let before = b;
        apply(&mut b, &[(99, None)]);
        assert_eq!(b, before);
        // An expiry no slot can hold takes the address out: BANS has it.
        assert_eq!(apply(&mut b, &[(3, Some(u64::MAX))]), 1);
        assert!(b[2].is_empty());
    }
}
