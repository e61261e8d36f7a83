//! What the program counts per source: the source table, the SBC's
//! replies, and the sources that earned trust.

use super::*;

/// One source's counters, summed over CPUs: what the flood detector reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub class: [u64; SIP_CLASSES],
    /// When the kernel first counted the source (its earliest CPU): a
    /// source evicted and seen again starts anew.
    pub first_seen_ns: u64,
    /// Packets counted in the unit the pass closes or the one it opened:
    /// a lower bound of the source's packets since the previous pass.
    pub recent: u64,
}

impl Totals {
    /// Sums one source's per-CPU counters; `unit` is the unit the pass
    /// closes.
    pub fn of(per_cpu: &[SourceStats], unit: u32) -> Self {
        let mut t = Totals::default();
        for s in per_cpu {
            t.packets += s.packets;
            for (acc, c) in t.class.iter_mut().zip(s.class) {
                *acc += u64::from(c);
            }
            // A CPU that never counted the source has no first packet.
            if s.first_seen_ns != 0 && (t.first_seen_ns == 0 || s.first_seen_ns < t.first_seen_ns) {
                t.first_seen_ns = s.first_seen_ns;
            }
            if s.unit == unit || s.unit == unit.wrapping_add(1) {
                t.recent += u64::from(s.unit_packets);
            }
        }
        t
    }
}

/// Final responses the SBC sent to one client, summed over CPUs, indexed
/// by `Reply`.
pub type Replies = [u64; REPLY_KINDS];

/// One verified source as `list verified` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifiedEntry {
    pub src_ip: IpAddr,
    /// `registered`, `invited` or `peer`.
    pub how: &'static str,
    pub expires_in_s: u64,
}

/// One tracked source as `top` shows it, summed over CPUs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceRow {
    /// The address, or the network address of the prefix sources are
    /// counted by (see `prefix_len`).
    pub src_ip: IpAddr,
    pub prefix_len: u8,
    /// How the source (or one inside the prefix) earned trust, if it did.
    pub verified: Option<&'static str>,
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub first_seen_s_ago: u64,
    pub last_seen_s_ago: u64,
    pub classes: std::collections::BTreeMap<&'static str, u64>,
}

impl Maps {
    /// Every tracked source with its counters summed over CPUs, read in
    /// batches (a sampling pass over a million sources is a few hundred
    /// system calls, not two million). `unit` as in `Totals::of`.
    pub fn source_totals(&self, unit: u32) -> Result<Vec<(IpKey, Totals)>> {
        let mut out = Vec::with_capacity(1024);
        self.for_each_source(unit, |k, t| out.push((k, t)))?;
        Ok(out)
    }

    /// Like `source_totals`, handing each source to `f` as it is read, with
    /// no table in between. Returns how many were read.
    pub fn for_each_source(&self, unit: u32, mut f: impl FnMut(IpKey, Totals)) -> Result<usize> {
        batch::for_each_per_cpu::<IpKey, SourceStats>(data_of(&self.sources), |k, per_cpu| {
            f(*k, Totals::of(per_cpu, unit));
        })
        .map_err(Error::io("reading per-source counters"))
    }

    /// Part of a walk of every tracked source (`batch::per_cpu_part`):
    /// about `at_most` sources from `from` on, and where to go on.
    pub fn some_sources(
        &self,
        unit: u32,
        from: Option<batch::Cursor>,
        at_most: usize,
        mut f: impl FnMut(IpKey, Totals),
    ) -> Result<(usize, Option<batch::Cursor>)> {
        let data = data_of(&self.sources);
        batch::per_cpu_part::<IpKey, SourceStats>(data, from, at_most, |k, per_cpu| {
            f(*k, Totals::of(per_cpu, unit));
        })
        .map_err(Error::io("reading per-source counters"))
    }

    /// One source's counters; `None` once the kernel evicted it.
    pub fn source(&self, key: &IpKey, unit: u32) -> Result<Option<Totals>> {
        match self.sources.get(key, 0) {
            Ok(v) => Ok(Some(Totals::of(&v, unit))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(Error::map("reading a source's counters")(e)),
        }
    }

    /// Final responses the SBC sent, per client.
    pub fn reply_totals(&self) -> Result<Vec<(IpKey, Replies)>> {
        let data = self
            .replies
            .as_ref()
            .ok_or_else(|| Self::missing(MAP_REPLIES))?;
        let mut out = Vec::new();
        batch::for_each::<IpKey, ReplyStats>(data, |k, s| {
            out.push((*k, s.codes.map(u64::from)));
        })
        .map_err(Error::io("reading reply counters"))?;
        Ok(out)
    }

    /// How `ip` earned trust, if it holds trust now.
    pub fn trust_of(&self, ip: IpAddr) -> Option<Trust> {
        let v = self.verified.as_ref()?.get(&key_of(ip), 0).ok()?;
        v.active_at(clock::monotonic_ns())
            .then(|| Trust::from_u32(v.how))
            .flatten()
    }

    /// Every verified source holding trust now, read in batches.
    pub fn verified_now(&self) -> Vec<(IpAddr, Trust)> {
        self.verified_until()
            .into_iter()
            .map(|(ip, t, _)| (ip, t))
            .collect()
    }

    /// Every verified source holding trust now, with the monotonic time its
    /// trust ends (a later one than last read: proven again), in batches.
    pub fn verified_until(&self) -> Vec<(IpAddr, Trust, u64)> {
        let now = clock::monotonic_ns();
        let mut out = Vec::new();
        let Some(m) = &self.verified else {
            return out;
        };
        let read = batch::for_each::<IpKey, Verified>(data_of(m), |k, v| {
            if let Some(t) = Trust::from_u32(v.how).filter(|_| v.active_at(now)) {
                out.push((ip_of(k), t, v.expires_ns));
            }
        })
        .map_err(Error::io("reading verified sources"));
        if let Err(e) = read {
            tracing::warn!(error = %e, "reading verified sources failed");
        }
        out
    }

    /// Verified sources holding trust now, soonest to expire last.
    pub fn list_verified(&self) -> Vec<VerifiedEntry> {
        let now = clock::monotonic_ns();
        let Some(m) = &self.verified else {
            return Vec::new();
        };
        let mut out: Vec<VerifiedEntry> = m
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, v)| v.active_at(now))
            .map(|(k, v)| VerifiedEntry {
                src_ip: ip_of(&k),
                how: Trust::from_u32(v.how).map_or("unknown", Trust::as_str),
                expires_in_s: (v.expires_ns - now) / 1_000_000_000,
            })
            .collect();
        out.sort_by_key(|e| e.src_ip);
        out
    }

    /// Tracked sources, busiest first.
    pub fn top(&self, n: usize) -> Vec<SourceRow> {
        let now = clock::monotonic_ns();
        let cfg = self.config().unwrap_or_default();
        let len_of = |ip: &IpAddr| match ip {
            IpAddr::V4(_) if (1..32).contains(&cfg.prefix_v4) => cfg.prefix_v4 as u8,
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) if (1..128).contains(&cfg.prefix_v6) => cfg.prefix_v6 as u8,
            IpAddr::V6(_) => 128,
        };
        let mut rows: Vec<SourceRow> = self
            .sources
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, per_cpu)| {
                let mut row = SourceRow {
                    src_ip: ip_of(&k),
                    prefix_len: len_of(&ip_of(&k)),
                    verified: None,
                    packets: 0,
                    bytes: 0,
                    dropped: 0,
                    first_seen_s_ago: 0,
                    last_seen_s_ago: 0,
                    classes: Default::default(),
                };
                let mut classes = [0u64; SIP_CLASSES];
                let (mut first, mut last) = (u64::MAX, 0u64);
                for s in per_cpu.iter().filter(|s| s.packets > 0) {
                    row.packets += s.packets;
                    row.bytes += s.bytes;
                    row.dropped += u64::from(s.dropped);
                    first = first.min(s.first_seen_ns);
                    last = last.max(s.last_seen_ns);
                    for (acc, c) in classes.iter_mut().zip(s.class) {
                        *acc += u64::from(c);
                    }
                }
                row.first_seen_s_ago = now.saturating_sub(first) / 1_000_000_000;
                row.last_seen_s_ago = now.saturating_sub(last) / 1_000_000_000;
                row.classes = SipClass::ALL
                    .iter()
                    .zip(classes)
                    .map(|(c, n)| (c.name(), n))
                    .collect();
                row
            })
            .collect();
        rows.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.src_ip.cmp(&b.src_ip)));
        rows.truncate(n);
        let verified = self.verified_now();
        for r in &mut rows {
            let net = IpNet::new(r.src_ip, r.prefix_len).unwrap_or(r.src_ip.into());
            r.verified = verified
                .iter()
                .find(|(ip, _)| net.contains(ip))
                .map(|(_, t)| t.as_str());
        }
        rows
    }
}
