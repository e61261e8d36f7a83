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
/// The whole memory is read again this often: a node's proofs written
/// after an outage longer than the overlap come back with it.
const FULL_READ_EVERY: Duration = Duration::from_secs(3600);
/// Rows are deleted once older than the memory and this: one node
/// configured with a short memory does not empty the others'.
const KEEP_AT_LEAST: Duration = Duration::from_secs(30 * 86_400);
/// Addresses recorded per prefix (an IPv4 /24, an IPv6 /48) per
/// `RECORD_EVERY`: a customer proving a new address for every
/// registration from a large prefix cannot fill the memory, and push the
/// others' phones out of it.
const PER_PREFIX: usize = 64;

/// The proof hint is rebuilt this often, clearing the bits of addresses
/// no longer verified or remembered: between rebuilds it only fills.
pub(super) const REBUILD_PROOF_HINT: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub(super) struct Memory {
    /// When the proof hint was last rebuilt.
    pub(super) hinted_at: Option<Instant>,
    /// Per address: the end of its trust as last read, and when its proof
    /// was last recorded.
    recorded: HashMap<IpAddr, (u64, Instant)>,
    pub(super) harvested_at: Option<Instant>,
    /// Per prefix, the addresses recorded since `counted_at`.
    per_prefix: HashMap<ipnet::IpNet, usize>,
    counted_at: Option<Instant>,
    /// The cap was logged in this hour.
    warned: bool,
    /// Where the next read of the database starts, and when the whole
    /// memory was last read; `None`: read it whole.
    cursor: Option<(NaiveDateTime, Instant)>,
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
        if self
            .counted_at
            .is_none_or(|at| now.saturating_duration_since(at) >= RECORD_EVERY)
        {
            self.per_prefix.clear();
            self.counted_at = Some(now);
            self.warned = false;
        }
        let mut out = Vec::new();
        let mut capped = 0usize;
        for (ip, how, until) in verified {
            let record = match self.recorded.get(&ip) {
                None => true,
                Some(&(seen, at)) => {
                    until > seen && now.saturating_duration_since(at) >= RECORD_EVERY
                }
            };
            if !record {
                if let Some(r) = self.recorded.get_mut(&ip) {
                    r.0 = r.0.max(until);
                }
                continue;
            }
            // Only addresses new to this node count: a known phone
            // proving itself again is never held back by newcomers.
            if !self.recorded.contains_key(&ip) {
                let n = self.per_prefix.entry(prefix_of(ip)).or_default();
                if *n >= PER_PREFIX {
                    capped += 1;
                    continue;
                }
                *n += 1;
            }
            self.recorded.insert(ip, (until, now));
            out.push(Proven {
                ip,
                how: how.as_str().to_string(),
                at: wall,
            });
        }
        if capped > 0 && !self.warned {
            self.warned = true;
            tracing::warn!(
                addresses = capped,
                per_prefix = PER_PREFIX,
                "proofs of address not remembered: their prefix has proved enough new addresses this hour"
            );
        }
        // What is no longer verified is remembered by the database and the
        // kernel; this table only throttles.
        self.recorded
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < RECORD_EVERY * 2);
        out
    }

    /// What the next round reads, for a memory of `remember`.
    pub(super) fn read(&self, remember: Duration, wall: NaiveDateTime, now: Instant) -> MemoryRead {
        let memory = chrono::Duration::from_std(remember).unwrap_or(chrono::Duration::MAX);
        let oldest = wall - memory;
        let kept = chrono::Duration::from_std(remember.max(KEEP_AT_LEAST)).unwrap_or(memory);
        let since = match self.cursor {
            Some((c, full)) if now.saturating_duration_since(full) < FULL_READ_EVERY => {
                c.max(oldest)
            }
            _ => oldest,
        };
        MemoryRead {
            since,
            forget_before: wall - kept,
            limit: i64::from(sip_xdp_common::maps::MAX_REMEMBERED),
        }
    }

    /// The rows a round read (from `read`, whose `since` says whether it
    /// was the whole memory), as `(address, monotonic end of its memory)`
    /// for the kernel: each is remembered for `remember` from its latest
    /// proof, a proof dated in the future counting as now. Moves the
    /// cursor.
    pub(super) fn apply(
        &mut self,
        read: &MemoryRead,
        rows: &[Proven],
        remember: Duration,
        (wall, mono_ns): (NaiveDateTime, u64),
        now: Instant,
    ) -> Vec<(IpAddr, u64)> {
        let memory = chrono::Duration::from_std(remember).unwrap_or(chrono::Duration::MAX);
        let whole = read.since <= wall - memory;
        let newest = rows
            .iter()
            .map(|r| r.at.min(wall))
            .max()
            .unwrap_or(read.since);
        let full_at = match self.cursor {
            Some((_, at)) if !whole => at,
            _ => now,
        };
        let next = (newest - OVERLAP).max(read.since);
        self.cursor = Some((next, full_at));
        rows.iter()
            .filter_map(|r| {
                let left = (r.at.min(wall) + memory - wall).to_std().ok()?;
                let left = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
                Some((r.ip, mono_ns.saturating_add(left)))
            })
            .collect()
    }
}

/// The prefix proofs are counted by: an IPv4 /24, an IPv6 /48.
fn prefix_of(ip: IpAddr) -> ipnet::IpNet {
    let len = if ip.is_ipv4() { 24 } else { 48 };
    ipnet::IpNet::new(ip, len)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| ip.into())
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
        let t0 = Instant::now();
        let read = m.read(7 * DAY, wall(), t0);
        assert_eq!(
            read.since,
            wall() - chrono::Duration::days(7),
            "the whole memory at start"
        );
        assert_eq!(read.forget_before, wall() - chrono::Duration::days(30));
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
            // Dated in the future (a clock, a hand-written row): as now,
            // and it does not carry the cursor away.
            Proven {
                ip: "203.0.113.62".parse().unwrap(),
                how: "peer".into(),
                at: wall() + chrono::Duration::days(3000),
            },
        ];
        let mono = 1_000_000_000_000u64;
        let k = m.apply(&read, &rows, 7 * DAY, (wall(), mono), t0);
        assert_eq!(k.len(), 2, "a proof past the memory is not loaded");
        assert_eq!(k[0].1, mono + 5 * 86_400 * 1_000_000_000);
        assert_eq!(k[1].1, mono + 7 * 86_400 * 1_000_000_000);
        // The next read starts a little before the newest row read.
        let later = t0 + Duration::from_secs(60);
        let next = m.read(7 * DAY, wall(), later);
        assert_eq!(next.since, wall() - OVERLAP);
        // Nothing new: the cursor stays; an hour on, the whole memory again.
        m.apply(&next, &[], 7 * DAY, (wall(), mono), later);
        assert_eq!(m.read(7 * DAY, wall(), later).since, next.since);
        let hour = t0 + FULL_READ_EVERY;
        assert_eq!(m.read(7 * DAY, wall(), hour).since, read.since);
    }

    #[test]
    fn a_prefix_proves_a_bounded_number_of_addresses_per_hour() {
        let mut m = Memory::default();
        let t0 = Instant::now();
        let many: Vec<(IpAddr, Trust, u64)> = (0..200u32)
            .map(|i| {
                let ip: IpAddr = format!("2001:db8:5:{:x}::1", i).parse().unwrap();
                (ip, Trust::Registered, 100)
            })
            .chain(std::iter::once((
                "198.51.100.9".parse().unwrap(),
                Trust::Registered,
                100,
            )))
            .collect();
        let p = m.harvest(many.clone(), t0, wall());
        assert_eq!(
            p.len(),
            PER_PREFIX + 1,
            "the /48's share, and the other phone"
        );
        assert!(p.iter().any(|p| p.ip.to_string() == "198.51.100.9"));
        // An hour on, the prefix may prove more.
        let p = m.harvest(many, t0 + RECORD_EVERY, wall());
        assert_eq!(p.len(), PER_PREFIX);
    }
}
