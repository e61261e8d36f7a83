//! Keeps the program's IPv4 ban index (`BAN_INDEX`, see
//! `sip_xdp_common::banindex`) in step with BANS. Every writer of BANS goes
//! through `Maps`, which calls this after adding to BANS and before
//! removing from it, so the index never holds an address BANS does not.
//! The program trusts the index for IPv4 (a miss in a bucket without its
//! spill mark skips BANS), so a ban that does not fit in its bucket marks
//! the bucket before anything else, and a bucket is rewritten in an order
//! that never shows the program a ban missing from an unmarked bucket.
//!
//! A bucket is rewritten whole (read, change a slot, write back). Two
//! processes (the controller and a CLI command) doing that to one bucket at
//! once could lose each other's change, and a lost removal would keep an
//! unbanned address dropped. They take an exclusive `flock` on the pin
//! directory's `maps/` first. A kernel hit counted between the read and
//! the write of a bucket is lost: microseconds, as with BANS' own counter
//! when `Maps::put` rewrites a ban.

use std::{
    collections::HashMap,
    fs::File,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
};

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

/// Bucket size of the index before it answered for BANS (no spill mark).
const OLD_LAYOUT: u32 = 60;

pub struct BanIndex {
    map: Array<MapData, Bucket>,
    /// The same map for batch reads (aya has no batch calls).
    data: MapData,
    /// Shared, not duplicated, by each holder: taking the lock opens no
    /// descriptor, so a process out of them still bans.
    lock_dir: Arc<File>,
    depth: Arc<AtomicU32>,
}

/// Holds the writers' lock until the last holder in this process drops it
/// (the locked descriptor itself, so the same lock). Re-entrant: `Maps` holds it across a ban's two maps while the
/// index's own calls take it again.
pub struct Held {
    file: Arc<File>,
    depth: Arc<AtomicU32>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.depth.fetch_sub(1, Ordering::AcqRel) == 1 {
            unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

impl BanIndex {
    /// The index of the program pinned at `pins`; `None` when the pinned
    /// program predates it (bans then all go through BANS, as they did).
    /// An index that is pinned but cannot be opened is an error: the
    /// program trusts it, so BANS alone would not enforce a new ban.
    pub fn open(pins: &Pins) -> Result<Option<Self>> {
        let path = pins.map(MAP_BAN_INDEX);
        if !path.exists() {
            return Ok(None);
        }
        let context = || format!("opening the ban index {}", path.display());
        let data = MapData::from_pin(&path).map_err(|e| Error::Io {
            context: context(),
            source: std::io::Error::other(e.to_string()),
        })?;
        // The layout before the spill mark: its program asks BANS for
        // every ban, so BANS alone is right until the controller of this
        // build replaces it (a CLI command of a new package while the old
        // controller still runs).
        if data.info().is_ok_and(|i| i.value_size() == OLD_LAYOUT) {
            return Ok(None);
        }
        let batch = MapData::from_pin(&path).map_err(|e| Error::Io {
            context: context(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let map = Array::try_from(Map::Array(data)).map_err(|e| Error::Io {
            context: format!("{}: another build's layout", context()),
            source: std::io::Error::other(e.to_string()),
        })?;
        let lock_dir = File::open(pins.maps_dir()).map_err(|source| Error::Io {
            context: context(),
            source,
        })?;
        Ok(Some(Self {
            map,
            data: batch,
            lock_dir: Arc::new(lock_dir),
            depth: Arc::new(AtomicU32::new(0)),
        }))
    }

    /// The writers' lock (see the module's notes).
    pub fn lock(&self) -> Result<Held> {
        let io = |source| Error::Io {
            context: "locking the ban index".into(),
            source,
        };
        let file = self.lock_dir.clone();
        if self.depth.load(Ordering::Acquire) == 0
            && unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0
        {
            return Err(io(std::io::Error::last_os_error()));
        }
        self.depth.fetch_add(1, Ordering::AcqRel);
        Ok(Held {
            file,
            depth: self.depth.clone(),
        })
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

    /// Rewrites bucket `b` from `old` to `new` in the order `ordered`
    /// gives.
    fn write(&mut self, b: u32, old: &Bucket, new: &Bucket) -> Result<()> {
        for step in ordered(old, new) {
            self.set(b, &step)?;
        }
        Ok(())
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
        let all = if by_bucket.len() > WHOLE_PASS {
            Some(self.read_all()?)
        } else {
            None
        };
        for (b, edits) in &by_bucket {
            let old = match &all {
                Some(all) => all[*b as usize],
                None => self.get(*b)?,
            };
            let mut new = old;
            full += apply(&mut new, edits);
            self.write(*b, &old, &new)?;
        }
        Ok(full)
    }

    /// Every bucket: a few batch reads (2 MiB), one read per bucket where
    /// the kernel has no batch calls for arrays.
    fn read_all(&self) -> Result<Vec<Bucket>> {
        let mut all = vec![Bucket::default(); BUCKETS as usize];
        let read = super::batch::for_each::<u32, Bucket>(&self.data, |b, v| {
            if let Some(at) = all.get_mut(*b as usize) {
                *at = *v;
            }
        });
        match read {
            Ok(n) if n == BUCKETS as usize => Ok(all),
            _ => (0..BUCKETS).map(|b| self.get(b)).collect(),
        }
    }

    /// The IPv4 bans among `bans` that the program cannot see: in no slot
    /// of a bucket without its spill mark. None unless something wrote
    /// BANS behind the index (a command killed between the two writes, a
    /// binary of another build).
    pub fn unseen(&self, bans: &[(Ipv4Addr, u64)]) -> Result<Vec<(Ipv4Addr, u64)>> {
        let all = self.read_all()?;
        Ok(bans
            .iter()
            .filter(|(a, _)| {
                let w = addr_word(a.octets());
                let b = &all[bucket_of(w) as usize];
                b.spill == 0 && !b.slots.iter().any(|s| !s.is_empty() && s.addr == w)
            })
            .copied()
            .collect())
    }

    /// Makes the index hold exactly `bans`, with exact spill marks: at
    /// every load of the program (a fresh index on kept maps, an upgrade)
    /// and every start of the controller, so an index left behind by a
    /// crash between two writes is made right. Slots keep their place and
    /// their hit counts. Returns the bans that found their bucket full.
    pub fn rebuild(&mut self, bans: &[(Ipv4Addr, u64)]) -> Result<usize> {
        let mut wanted: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
        for (a, e) in bans {
            let w = addr_word(a.octets());
            wanted.entry(bucket_of(w)).or_default().push((w, *e));
        }
        let _held = self.lock()?;
        let old = self.read_all()?;
        let mut full = 0;
        for (b, old) in old.iter().enumerate() {
            let want = wanted.get(&(b as u32)).map_or(&[][..], Vec::as_slice);
            let (new, left) = rebuilt(old, want);
            full += left;
            self.write(b as u32, old, &new)?;
        }
        Ok(full)
    }

    /// The packets each indexed address dropped through the index (BANS
    /// counts the rest).
    pub fn hits(&self) -> Result<HashMap<Ipv4Addr, u64>> {
        Ok(self
            .read_all()?
            .iter()
            .flat_map(|b| b.slots)
            .filter(|s| !s.is_empty())
            .map(|s| (Ipv4Addr::from(s.addr.to_ne_bytes()), u64::from(s.hits)))
            .collect())
    }

    /// The slots in use (`status`).
    pub fn used(&self) -> Result<usize> {
        Ok(self
            .read_all()?
            .iter()
            .flat_map(|b| b.slots)
            .filter(|s| !s.is_empty())
            .count())
    }
}

/// Applies one bucket's edits; returns the writes left to BANS (bucket
/// full, or an expiry past what a slot holds), and marks the bucket spilled
/// if there are any.
fn apply(bucket: &mut Bucket, edits: &[(u32, Option<u64>)]) -> usize {
    let mut full = 0;
    let slots = &mut bucket.slots;
    for &(w, e) in edits {
        let at = slots.iter().position(|s| !s.is_empty() && s.addr == w);
        let new = e.map(|e| Slot::new(w, e));
        match (at, new) {
            (Some(i), Some(Some(new))) => {
                slots[i] = Slot {
                    hits: slots[i].hits,
                    ..new
                }
            }
            (Some(i), _) => {
                slots[i] = Slot::default();
                full += usize::from(new.is_some());
            }
            (None, Some(Some(new))) => match slots.iter_mut().find(|s| s.is_empty()) {
                Some(s) => *s = new,
                None => full += 1,
            },
            (None, Some(None)) => full += 1,
            (None, None) => {}
        }
    }
    if full > 0 {
        bucket.spill = 1;
    }
    full
}

/// `old` made to hold exactly `want` (address word, `expires_ns`): kept
/// addresses stay in their slot with their hits, gone ones are cleared,
/// new ones take free slots; the spill mark is set exactly when some of
/// `want` did not fit. Returns the bucket and that count.
fn rebuilt(old: &Bucket, want: &[(u32, u64)]) -> (Bucket, usize) {
    let mut new = *old;
    for s in new.slots.iter_mut().filter(|s| !s.is_empty()) {
        match want.iter().find(|(w, _)| *w == s.addr) {
            Some((w, e)) => match Slot::new(*w, *e) {
                Some(fresh) => s.until = fresh.until,
                None => *s = Slot::default(),
            },
            None => *s = Slot::default(),
        }
    }
    let mut full = 0;
    for (w, e) in want {
        if new.slots.iter().any(|s| !s.is_empty() && s.addr == *w) {
            continue;
        }
        match (
            new.slots.iter_mut().find(|s| s.is_empty()),
            Slot::new(*w, *e),
        ) {
            (Some(s), Some(fresh)) => *s = fresh,
            _ => full += 1,
        }
    }
    new.spill = u32::from(full > 0);
    (new, full)
}

/// The writes that take a bucket from `old` to `new` without the program
/// ever reading a ban as missing from an unmarked bucket, even from a
/// bucket half written: a mark being set goes in first, with the old
/// slots; a mark being cleared goes last, after the new slots.
fn ordered(old: &Bucket, new: &Bucket) -> Vec<Bucket> {
    let mut steps = Vec::with_capacity(3);
    let mut at = *old;
    if new.spill != 0 && old.spill == 0 && new.slots != old.slots {
        at.spill = new.spill;
        steps.push(at);
    }
    let marked = Bucket {
        slots: new.slots,
        spill: at.spill | new.spill,
    };
    if marked != at {
        steps.push(marked);
        at = marked;
    }
    if at != *new {
        steps.push(*new);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_xdp_common::banindex::{SLOTS, UNIT_SHIFT};

    #[test]
    fn edits_keep_hits_free_slots_and_mark_what_does_not_fit() {
        let mut b = Bucket::default();
        let edits: Vec<_> = (1..=5).map(|w| (w, Some(0))).collect();
        assert_eq!(apply(&mut b, &edits), 0);
        assert_eq!(b.spill, 0, "five bans fit");
        assert_eq!(apply(&mut b, &[(6, Some(0))]), 1, "five slots, six bans");
        assert_eq!(b.spill, 1, "the sixth lives in BANS: a miss must ask it");
        b.slots[2].hits = 7;
        // A new expiry keeps the count; a removal frees the slot for the
        // ban that did not fit. The mark stays until a rebuild.
        assert_eq!(
            apply(
                &mut b,
                &[(3, Some(5 << UNIT_SHIFT)), (1, None), (6, Some(0))]
            ),
            0
        );
        let s = b.slots[2];
        assert_eq!((s.addr, s.hits, s.until), (3, 7, 5));
        assert_eq!(b.slots[0].addr, 6);
        assert!(b.slots.iter().all(|s| !s.is_empty()));
        assert_eq!(b.spill, 1);
        // Removing what is not there changes nothing.
        let before = b;
        apply(&mut b, &[(99, None)]);
        assert_eq!(b, before);
        // An expiry no slot can hold takes the address out and marks the
        // bucket: BANS has it.
        let mut c = Bucket::default();
        apply(&mut c, &[(3, Some(0))]);
        assert_eq!(apply(&mut c, &[(3, Some(u64::MAX))]), 1);
        assert!(c.slots[0].is_empty());
        assert_eq!(c.spill, 1);
    }

    #[test]
    fn a_rebuild_keeps_places_and_hits_and_marks_exactly() {
        let mut old = Bucket::default();
        apply(&mut old, &(1..=6).map(|w| (w, Some(0))).collect::<Vec<_>>());
        old.slots[1].hits = 9;
        assert_eq!(old.spill, 1);
        // 1 is gone, 2 stays with a new expiry, 6 (in BANS only) moves in.
        let want = [(6, 0), (2, 3 << UNIT_SHIFT), (3, 0), (4, 0), (5, 0)];
        let (new, full) = rebuilt(&old, &want);
        assert_eq!(full, 0);
        assert_eq!(new.spill, 0, "everything fits again: the mark goes");
        assert_eq!(new.slots[0].addr, 6);
        let s = new.slots[1];
        assert_eq!((s.addr, s.until, s.hits), (2, 3, 9));
        assert_eq!(new.slots[2..], old.slots[2..]);
        // Seven wanted: two left to BANS, marked.
        let more: Vec<(u32, u64)> = (10..17).map(|w| (w, 0)).collect();
        let (new, full) = rebuilt(&Bucket::default(), &more);
        assert_eq!((full, new.spill), (2, 1));
        // Nothing wanted: an empty, unmarked bucket.
        assert_eq!(rebuilt(&old, &[]), (Bucket::default(), 0));
    }

    /// Every state the program can read while a bucket is rewritten, a
    /// half-written one included (each slot and the mark from either side),
    /// must show every ban that both sides hold, or be marked.
    fn never_hides(old: &Bucket, new: &Bucket) {
        let steps = ordered(old, new);
        assert_eq!(steps.last().unwrap_or(old), new);
        let mut prev = *old;
        for step in steps {
            for torn in 0u32..(1 << (SLOTS + 1)) {
                let mut seen = prev;
                for i in 0..SLOTS {
                    if torn & (1 << i) != 0 {
                        seen.slots[i] = step.slots[i];
                    }
                }
                if torn & (1 << SLOTS) != 0 {
                    seen.spill = step.spill;
                }
                if seen.spill != 0 {
                    continue;
                }
                let holds =
                    |b: &Bucket, a: u32| b.slots.iter().any(|t| t.addr == a && !t.is_empty());
                // Enforced before and after this write: in a slot on both
                // sides, or in a slot on one side and in BANS (marked) on
                // the other.
                let enforced = prev
                    .slots
                    .iter()
                    .chain(&step.slots)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.addr)
                    .filter(|&a| {
                        (holds(&prev, a) || prev.spill != 0) && (holds(&step, a) || step.spill != 0)
                    });
                for a in enforced {
                    assert!(holds(&seen, a), "{a} hidden between {prev:?} and {step:?}");
                }
            }
            prev = step;
        }
    }

    #[test]
    fn marks_go_in_first_and_come_off_last() {
        let mut full = Bucket::default();
        apply(
            &mut full,
            &(1..=5).map(|w| (w, Some(0))).collect::<Vec<_>>(),
        );
        // A ban leaves its slot for BANS alone (expiry too far): the mark
        // is written with the old slots first.
        let mut moved = full;
        apply(&mut moved, &[(3, Some(u64::MAX))]);
        let steps = ordered(&full, &moved);
        assert_eq!(steps.len(), 2);
        assert_eq!((steps[0].slots, steps[0].spill), (full.slots, 1));
        never_hides(&full, &moved);
        // A rebuild that clears the mark writes the slots first.
        let (clean, _) = rebuilt(&moved, &[(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]);
        let steps = ordered(&moved, &clean);
        assert_eq!(steps.len(), 2);
        assert_eq!((steps[0].slots, steps[0].spill), (clean.slots, 1));
        never_hides(&moved, &clean);
        // A plain edit is one write; no change, none.
        let mut one = full;
        apply(&mut one, &[(2, None)]);
        assert_eq!(ordered(&full, &one), vec![one]);
        assert!(ordered(&full, &full).is_empty());
    }
}
