//! The memory of good clients, the controller's part: proofs of address
//! read from the kernel's verified sources go to the journal (and from it
//! to `remembered_clients`, shared by every node); what the database
//! remembers, this node's proofs and other nodes' alike, goes to the
//! kernel's `REMEMBERED`, which overload admits first. Loaded in full at
//! start, then read from where the last read ended.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use chrono::NaiveDateTime;
use sip_xdp_common::maps::Trust;

use crate::{db::store::Proven, round::MemoryRead};

/// The verified sources are read for new proofs once per sync interval,
/// at most this often: one batch read of the map.
pub(super) const HARVEST_AT_MOST: Duration = Duration::from_secs(1);
/// A phone proving itself again (every re-REGISTER) is recorded once per
/// this long: the memory is counted in days.
const RECORD_EVERY: Duration = Duration::from_secs(3600);
/// Rows read again from before the last read's newest: a node whose
/// write landed late is not missed.
const OVERLAP: chrono::Duration = chrono::Duration::minutes(10);

#[derive(Debug, Default)]
pub(super) struct Memory {
    /// Per address: the end of its trust as last read, and when its proof
    /// was last recorded.
    recorded: HashMap<IpAddr, (u64, Instant)>,
    pub(super) harvested_at: Option<Instant>,
    /// Where the next read of the database starts; `None`: the whole
    /// memory.
    cursor: Option<NaiveDateTime>,
}

impl Memory {
    /// The proofs among the verified sources as read now (`(address, how,
    /// end of trust)`): an address new to this node, or proven again (its
    /// trust ends later than last read) and last recorded long enough ago.
    pub(super) fn harvest(
        &mut self,
        verified: Vec<(IpAddr, Trust, u64)>,
        now: Instant,
        wall: NaiveDateTime,
    ) -> Vec<Proven> {
        self.harvested_at = Some(now);
        let mut out = Vec::new();
        for (ip, how, until) in verified {
            let record = match self.recorded.get(&ip) {
                None => true,
                Some(&(seen, at)) => {
                    until > seen && now.saturating_duration_since(at) >= RECORD_EVERY
                }
            };
            if record {
                self.recorded.insert(ip, (until, now));
                out.push(Proven {
                    ip,
                    how: how.as_str().to_string(),
                    at: wall,
                });
            } else if let Some(r) = self.recorded.get_mut(&ip) {
                r.0 = r.0.max(until);
            }
        }
        // What is no longer verified is remembered by the database and the
        // kernel; this table only throttles.
        self.recorded
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < RECORD_EVERY * 2);
        out
    }

    /// What the next round reads, for a memory of `remember`.
    pub(super) fn read(&self, remember: Duration, wall: NaiveDateTime) -> MemoryRead {
        let forget_before =
            wall - chrono::Duration::from_std(remember).unwrap_or(chrono::Duration::MAX);
        MemoryRead {
            since: self.cursor.unwrap_or(forget_before).max(forget_before),
            forget_before,
        }
    }

    /// The rows a round read, as `(address, monotonic end of its memory)`
    /// for the kernel: each is remembered for `remember` from its latest
    /// proof. Moves the cursor.
    pub(super) fn apply(
        &mut self,
        rows: &[Proven],
        remember: Duration,
        wall: NaiveDateTime,
        mono_ns: u64,
    ) -> Vec<(IpAddr, u64)> {
        if let Some(newest) = rows.iter().map(|r| r.at).max() {
            let next = newest - OVERLAP;
            self.cursor = Some(self.cursor.map_or(next, |c| c.max(next)));
        } else if self.cursor.is_none() {
            self.cursor = Some(wall - OVERLAP);
        }
        let remember = chrono::Duration::from_std(remember).unwrap_or(chrono::Duration::MAX);
        rows.iter()
            .filter_map(|r| {
                let left = (r.at + remember - wall).to_std().ok()?;
                let left = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
                Some((r.ip, mono_ns.saturating_add(left)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn wall() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc()
    }

    #[test]
    fn a_proof_is_recorded_when_new_and_again_only_hours_later() {
        let mut m = Memory::default();
        let t0 = Instant::now();
        let phone: IpAddr = "203.0.113.60".parse().unwrap();
        let v = |until: u64| vec![(phone, Trust::Registered, until)];
        assert_eq!(m.harvest(v(100), t0, wall()).len(), 1);
        // Its re-REGISTER a minute later: not written again.
        assert!(m
            .harvest(v(200), t0 + Duration::from_secs(60), wall())
            .is_empty());
        // Trust unchanged an hour on: not proven again.
        let later = t0 + RECORD_EVERY + Duration::from_secs(61);
        assert!(m.harvest(v(200), later, wall()).is_empty());
        // Proven again past the hour: recorded, as registered.
        let p = m.harvest(v(300), later, wall());
        assert_eq!((p.len(), p[0].how.as_str()), (1, "registered"));
    }

    #[test]
    fn rows_become_kernel_entries_for_what_is_left_of_their_memory() {
        let mut m = Memory::default();
        let read = m.read(7 * DAY, wall());
        assert_eq!(read.since, read.forget_before, "the whole memory at start");
        let rows = [
            Proven {
                ip: "203.0.113.60".parse().unwrap(),
                how: "registered".into(),
                at: wall() - chrono::Duration::days(2),
            },
            Proven {
                ip: "203.0.113.61".parse().unwrap(),
                how: "registered".into(),
                at: wall() - chrono::Duration::days(8),
            },
        ];
        let mono = 1_000_000_000_000u64;
        let k = m.apply(&rows, 7 * DAY, wall(), mono);
        assert_eq!(k.len(), 1, "a proof past the memory is not loaded");
        assert_eq!(k[0].1, mono + 5 * 86_400 * 1_000_000_000);
        // The next read starts a little before the newest row read.
        let next = m.read(7 * DAY, wall());
        assert_eq!(next.since, rows[0].at - OVERLAP);
        // Nothing new: the cursor stays.
        m.apply(&[], 7 * DAY, wall(), mono);
        assert_eq!(m.read(7 * DAY, wall()).since, next.since);
    }
}
