//! Sampling passes that cost what the busy sources cost. The program files
//! a source in the unit's hot map (`HOT0`, `HOT1` by the unit's parity)
//! once its packets on one CPU reach the hot mark; a pass advances the
//! unit, empties the closed unit's map and reads only those sources. A
//! source never filed cannot be over any flood limit (see
//! `Flood::hot_at`), so a million quiet sources, or a storm of spoofed
//! ones seen once each, cost a pass nothing.
//!
//! Every tracked source is also read by a *sweep*: from the first pass,
//! then every `FULL_EVERY` or sooner while a sweep is cheap (at most 1%
//! of the time between two), which keeps the tracked-source count fresh.
//! A sweep reads `SWEEP_SLOTS` value slots (sources × CPUs) per pass and
//! goes on from there at the next, so no pass stalls on a table of a
//! million: a small table is swept in one pass. After the hot map
//! overflowed, busy sources went unfiled, so a sweep starts at once (or
//! right after the one under way) instead of waiting: they are read within
//! one sweep, and no pass reads more than the hot map and one part (half a
//! part beside a full hot map). An overflow means tens of thousands of
//! sources over the hot mark at once, which the ban cap could not ban in
//! one unit anyway, and reading them all in one pass made it too long.
//! With flood detection off the program files nothing, and only the
//! sweeps remain.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use sip_xdp_common::{Counter, IpKey};

use super::{batch, Maps, Totals};
use crate::{Error, Result};

/// The longest time between the starts of two sweeps.
pub const FULL_EVERY: Duration = Duration::from_secs(300);

/// A sweep taking 1/FULL_SHARE of the time since the last one is due.
const FULL_SHARE: u32 = 100;

/// Value slots (sources × possible CPUs) a pass sweeps: 131,072 sources on
/// 2 CPUs (its cost: BENCHMARKS.md, "One sampling pass").
pub const SWEEP_SLOTS: usize = 1 << 18;

/// A sweep under way.
struct Sweep {
    /// Where the next pass goes on; `None` before the first part.
    cursor: Option<batch::Cursor>,
    /// Sources read so far.
    read: usize,
    began: Instant,
    /// Time spent reading, over all its passes.
    took: Duration,
}

/// What one pass read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// Sources handed to the detector.
    pub sources: usize,
    /// Whether that was every tracked source.
    pub full: bool,
}

pub struct Sampler {
    every: Duration,
    share: u32,
    /// When the last complete sweep started, and the time its reading
    /// took.
    last_full: Option<(Instant, Duration)>,
    /// `hot_map_full` at the previous pass.
    overflows: Option<u64>,
    /// The hot map overflowed since the last sweep began: the next sweep
    /// is due as soon as none is under way.
    unfiled: bool,
    /// Tracked sources at the last complete sweep.
    tracked: Option<usize>,
    sweep: Option<Sweep>,
    /// Sources per sweep part: `SWEEP_SLOTS` / possible CPUs.
    part: usize,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            every: FULL_EVERY,
            share: FULL_SHARE,
            last_full: None,
            overflows: None,
            unfiled: false,
            tracked: None,
            sweep: None,
            part: SWEEP_SLOTS / aya::util::nr_cpus().map_or(1, |n| n.max(1)),
        }
    }
}

impl Sampler {
    /// Sweeps only every `every` (and after an overflow), however cheap:
    /// what a test or a benchmark of the hot pass wants.
    pub fn full_only_every(every: Duration) -> Self {
        Self {
            every,
            share: 0,
            ..Self::default()
        }
    }

    fn full_due(&self, now: Instant) -> bool {
        if self.unfiled {
            return true;
        }
        match self.last_full {
            None => true,
            Some((at, took)) => {
                let since = now.saturating_duration_since(at);
                since >= self.every || (self.share > 0 && since >= took * self.share)
            }
        }
    }

    /// Sweeps of at most `sources` per pass (tests: several passes on a
    /// small table).
    pub fn sweeping_at_most(mut self, sources: usize) -> Self {
        self.part = sources.max(1);
        self
    }

    /// The sweep's part in a pass that also reads `filed` hot sources: one
    /// source less per hot one, down to half a part. A hot source is read
    /// by a lookup of its own, dearer than a swept source, and a full hot
    /// map beside a whole part made a pass too long at a million tracked
    /// sources; a sweep still ends while the hot map stays full.
    pub fn part_beside(&self, filed: usize) -> usize {
        self.part.saturating_sub(filed).max(self.part.div_ceil(2))
    }

    /// Tracked sources as the last complete sweep counted them.
    pub fn tracked(&self) -> Option<usize> {
        self.tracked
    }

    /// Whether a sweep is under way (it goes on at the next pass).
    pub fn sweeping(&self) -> bool {
        self.sweep.is_some()
    }

    /// Closes the kernel's current unit and hands `f` each source to judge
    /// with its totals and whether the kernel filed it.
    pub fn pass(
        &mut self,
        maps: &mut Maps,
        mut f: impl FnMut(IpKey, Totals, bool),
    ) -> Result<Read> {
        let (closed, hot) = maps.close_unit()?;
        let filed =
            batch::take_keys::<IpKey, u32>(hot).map_err(Error::io("reading the hot sources"))?;
        let overflows = maps.counter(Counter::HotFull)?;
        let overflowed = self.overflows.is_some_and(|o| o != overflows);
        if overflowed {
            tracing::warn!(
                capacity = sip_xdp_common::maps::MAX_HOT,
                sweeping = self.sweep.is_some(),
                "more hot sources than the hot map holds: sweeping every source"
            );
            self.unfiled = true;
        }
        self.overflows = Some(overflows);
        let started = Instant::now();
        let mut read = Read::default();
        if self.sweep.is_none() && self.full_due(started) {
            self.unfiled = false;
            self.sweep = Some(Sweep {
                cursor: None,
                read: 0,
                began: started,
                took: Duration::ZERO,
            });
        }
        // The sweep's part first: a filed source it holds is judged from
        // that reading, as filed, and is not looked up again below.
        let mut filed: HashSet<IpKey> = filed.into_iter().collect();
        let part = self.part_beside(filed.len());
        if let Some(sweep) = &mut self.sweep {
            let part_started = Instant::now();
            let (n, next) = maps.some_sources(closed, sweep.cursor, part, |k, t| {
                f(k, t, filed.remove(&k));
            })?;
            read.sources += n;
            sweep.read += n;
            sweep.took += part_started.elapsed();
            sweep.cursor = next;
            if next.is_none() {
                self.tracked = Some(sweep.read);
                self.last_full = Some((sweep.began, sweep.took));
                read.full = sweep.began == started;
                self.sweep = None;
            }
        }
        for k in filed {
            // Evicted since it was filed: nothing left to judge.
            if let Some(t) = maps.source(&k, closed)? {
                f(k, t, true);
                read.sources += 1;
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_sources_take_the_place_of_swept_ones_down_to_half_a_part() {
        let part = SWEEP_SLOTS / 2;
        let s = Sampler::default().sweeping_at_most(part);
        assert_eq!(s.part_beside(0), part);
        assert_eq!(s.part_beside(1000), part - 1000);
        assert_eq!(
            s.part_beside(sip_xdp_common::maps::MAX_HOT as usize),
            part / 2
        );
        assert_eq!(s.part_beside(usize::MAX), part / 2);
        // Tests' parts of a few sources still move.
        let few = |n| Sampler::default().sweeping_at_most(n).part_beside(65_536);
        assert_eq!((few(1), few(3)), (1, 2));
    }
}
