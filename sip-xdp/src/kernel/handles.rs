//! Handles on the pinned maps and typed access to them: what `block`, `allow`, `stats`, `top`
//! and the controller do to the kernel's state.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap,
};
use ipnet::IpNet;
use serde::Serialize;
use sip_xdp_common::{
    addr::{ip_of, key_of, trie_prefix_len, V4_MAPPED_PREFIX},
    classify::{SipClass, SIP_CLASSES},
    maps::*,
    stats::Verdict,
    stats::COUNTERS,
    BanValue, BlockValue, Counter, IpKey, KernelConfig, SourceStats,
};

use super::{ban_index::BanIndex, batch, clock, pins::Pins};
use crate::guard::Guard;
use crate::{parse::is_host, Error, Result};

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

pub struct Maps {
    bans: HashMap<MapData, IpKey, BanValue>,
    /// Absent when the pinned program predates the IPv4 ban index.
    index: Option<BanIndex>,
    /// Absent when the pinned program predates earned trust.
    verified: Option<HashMap<MapData, IpKey, Verified>>,
    allow: LpmTrie<MapData, IpKey, u32>,
    block: LpmTrie<MapData, IpKey, BlockValue>,
    sources: PerCpuHashMap<MapData, IpKey, SourceStats>,
    ports: Array<MapData, u64>,
    /// Absent when the pinned program predates TCP enforcement.
    tcp_ports: Option<Array<MapData, u64>>,
    config: Array<MapData, KernelConfig>,
    stats: PerCpuArray<MapData, u64>,
    max: [u32; 4],
    pins: Pins,
}

/// One block rule as `list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlockEntry {
    pub net: IpNet,
    /// `ban` for exact addresses, `cidr` for block-list prefixes.
    pub kind: &'static str,
    pub reason: &'static str,
    /// Seconds left; `None` for permanent entries.
    pub expires_in_s: Option<u64>,
    pub expired: bool,
    pub hits: u64,
}

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

fn open(pins: &Pins, name: &str) -> Result<MapData> {
    MapData::from_pin(pins.map(name)).map_err(Error::map(format!("opening pinned map {name}")))
}

/// The errno behind a map operation's failure, if it came from the kernel.
fn errno(e: &MapError) -> Option<i32> {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        src = s.source();
    }
    None
}

/// A hash map refuses a new key with E2BIG when full; a trie with ENOSPC.
fn is_full(e: &MapError) -> bool {
    matches!(errno(e), Some(libc::E2BIG) | Some(libc::ENOSPC))
}

/// Maps a failed insert to `Error::Full` when the map is full.
fn write_error(
    map: &'static str,
    max: u32,
    context: &'static str,
) -> impl FnOnce(MapError) -> Error {
    move |e| {
        if is_full(&e) {
            Error::Full { map, max }
        } else {
            Error::map(context)(e)
        }
    }
}

/// The IPv4 address the kernel keys `a` by, IPv4-mapped IPv6 included.
fn v4_of(a: IpAddr) -> Option<Ipv4Addr> {
    match a.to_canonical() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

fn is_missing(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound) || errno(e) == Some(libc::ENOENT)
}

impl Maps {
    pub fn open(pins: &Pins) -> Result<Self> {
        pins.check_loaded("reading sip-xdp's pinned maps")?;
        let e = |n: &str| Error::map(format!("opening pinned map {n}"));
        let bans_d = open(pins, MAP_BANS)?;
        let allow_d = open(pins, MAP_ALLOW)?;
        let block_d = open(pins, MAP_BLOCK)?;
        let sources_d = open(pins, MAP_SOURCES)?;
        let max = [
            bans_d.info().map_or(DEFAULT_MAX_BANS, |i| i.max_entries()),
            allow_d
                .info()
                .map_or(DEFAULT_MAX_ALLOW, |i| i.max_entries()),
            block_d
                .info()
                .map_or(DEFAULT_MAX_BLOCK, |i| i.max_entries()),
            sources_d
                .info()
                .map_or(DEFAULT_MAX_SOURCES, |i| i.max_entries()),
        ];
        Ok(Self {
            bans: HashMap::try_from(Map::HashMap(bans_d)).map_err(e(MAP_BANS))?,
            index: BanIndex::open(pins)?,
            verified: open(pins, MAP_VERIFIED)
                .ok()
                .and_then(|d| HashMap::try_from(Map::LruHashMap(d)).ok()),
            allow: LpmTrie::try_from(Map::LpmTrie(allow_d)).map_err(e(MAP_ALLOW))?,
            block: LpmTrie::try_from(Map::LpmTrie(block_d)).map_err(e(MAP_BLOCK))?,
            sources: PerCpuHashMap::try_from(Map::PerCpuLruHashMap(sources_d))
                .map_err(e(MAP_SOURCES))?,
            ports: Array::try_from(Map::Array(open(pins, MAP_SIP_PORTS)?))
                .map_err(e(MAP_SIP_PORTS))?,
            tcp_ports: open(pins, MAP_TCP_PORTS)
                .ok()
                .and_then(|d| Array::try_from(Map::Array(d)).ok()),
            config: Array::try_from(Map::Array(open(pins, MAP_CONFIG)?)).map_err(e(MAP_CONFIG))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(open(pins, MAP_STATS)?))
                .map_err(e(MAP_STATS))?,
            max,
            pins: pins.clone(),
        })
    }

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
        let data = open(&self.pins, MAP_SOURCES)?;
        batch::for_each_per_cpu::<IpKey, SourceStats>(&data, |k, per_cpu| {
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
        let data = open(&self.pins, MAP_SOURCES)?;
        batch::per_cpu_part::<IpKey, SourceStats>(&data, from, at_most, |k, per_cpu| {
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

    pub(super) fn pins(&self) -> &Pins {
        &self.pins
    }

    /// Final responses the SBC sent, per client.
    pub fn reply_totals(&self) -> Result<Vec<(IpKey, Replies)>> {
        let data = open(&self.pins, MAP_REPLIES)?;
        let mut out = Vec::new();
        batch::for_each::<IpKey, ReplyStats>(&data, |k, s| {
            out.push((*k, s.codes.map(u64::from)));
        })
        .map_err(Error::io("reading reply counters"))?;
        Ok(out)
    }

    fn trie_key(net: &IpNet) -> Key<IpKey> {
        Key::new(
            trie_prefix_len(net.addr(), net.prefix_len()),
            key_of(net.network()),
        )
    }

    fn net_of(key: &Key<IpKey>) -> IpNet {
        let ip = ip_of(&key.data());
        let len = match ip {
            IpAddr::V4(_) => key.prefix_len().saturating_sub(V4_MAPPED_PREFIX),
            IpAddr::V6(_) => key.prefix_len(),
        };
        IpNet::new(ip, len as u8).unwrap_or_else(|_| IpNet::from(ip))
    }

    /// Whether an allow-list entry covers `ip`.
    pub fn is_allowed(&self, ip: IpAddr) -> Result<bool> {
        match self.allow.get(&Key::new(128, key_of(ip)), 0) {
            Ok(_) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(Error::map("reading the allow-list")(e)),
        }
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
        let now = clock::monotonic_ns();
        let mut out = Vec::new();
        let read = open(&self.pins, MAP_VERIFIED).and_then(|data| {
            batch::for_each::<IpKey, Verified>(&data, |k, v| {
                if let Some(t) = Trust::from_u32(v.how).filter(|_| v.active_at(now)) {
                    out.push((ip_of(k), t));
                }
            })
            .map_err(Error::io("reading verified sources"))
        });
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

    /// Whether the kernel holds a ban or block rule for exactly `net`.
    pub fn holds(&self, net: &IpNet) -> bool {
        if is_host(net) {
            self.bans.get(&key_of(net.addr()), 0).is_ok()
        } else {
            self.block.get(&Self::trie_key(net), 0).is_ok()
        }
    }

    /// Allow-list entries that overlap `net`.
    pub fn allow_overlapping(&self, net: &IpNet) -> Vec<IpNet> {
        self.list_allowed()
            .into_iter()
            .filter(|a| crate::guard::overlaps(a, net))
            .collect()
    }

    /// Blocks an address (exact ban) or a CIDR (block-list rule), with an
    /// optional duration after which the kernel stops enforcing it.
    pub fn block(
        &mut self,
        guard: &Guard,
        net: IpNet,
        dur: Option<Duration>,
        reason: BanReason,
    ) -> Result<()> {
        if let Some(why) = guard.refusal(&net) {
            return Err(Error::Refused { net, why });
        }
        if is_host(&net) && self.is_allowed(net.addr())? {
            return Err(Error::Refused {
                net,
                why: "it is on the allow-list (`sip-xdp disallow` it first)".into(),
            });
        }
        self.put(&net, clock::expiry_after(dur), reason)
    }

    /// Removes the ban or block rule for exactly `net`. False if none existed.
    pub fn unblock(&mut self, net: &IpNet) -> Result<bool> {
        let r = if is_host(net) {
            let _held = self.hold_index()?;
            self.unindex(&[net.addr()])?;
            self.bans.remove(&key_of(net.addr()))
        } else {
            self.block.remove(&Self::trie_key(net))
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(Error::map("removing the rule")(e)),
        }
    }

    /// Adds an allow-list entry and lifts every exact ban it covers, so the
    /// invariant "no allow-listed address is banned" holds at once. Returns
    /// the lifted bans.
    pub fn allow(&mut self, net: IpNet) -> Result<Vec<IpAddr>> {
        self.put_allow(&net)?;
        let _held = self.hold_index()?;
        let covered: Vec<IpKey> = if is_host(&net) {
            vec![key_of(net.addr())]
        } else {
            self.bans
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| net.contains(&ip_of(k)))
                .collect()
        };
        let mut lifted = Vec::new();
        self.unindex(&covered.iter().map(ip_of).collect::<Vec<_>>())?;
        for k in covered {
            if self.bans.remove(&k).is_ok() {
                lifted.push(ip_of(&k));
            }
        }
        Ok(lifted)
    }

    pub fn disallow(&mut self, net: &IpNet) -> Result<bool> {
        match self.allow.remove(&Self::trie_key(net)) {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(Error::map("removing the allow entry")(e)),
        }
    }

    pub fn list_blocked(&self) -> Vec<BlockEntry> {
        let now = clock::monotonic_ns();
        let indexed = self.indexed_hits();
        let mut out: Vec<BlockEntry> = self
            .bans
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| BlockEntry {
                net: IpNet::from(ip_of(&k)),
                kind: "ban",
                reason: BanReason::from_u32(v.reason).map_or("unknown", BanReason::as_str),
                expires_in_s: clock::remaining(v.expires_ns).map(|d| d.as_secs()),
                expired: !v.active_at(now),
                hits: v.hits + v4_of(ip_of(&k)).and_then(|a| indexed.get(&a)).unwrap_or(&0),
            })
            .collect();
        out.extend(
            self.block
                .iter()
                .filter_map(|r| r.ok())
                .map(|(k, v)| BlockEntry {
                    net: Self::net_of(&k),
                    kind: "cidr",
                    reason: "manual",
                    expires_in_s: clock::remaining(v.expires_ns).map(|d| d.as_secs()),
                    expired: !v.active_at(now),
                    hits: v.hits,
                }),
        );
        out.sort_by_key(|e| e.net);
        out
    }

    pub fn list_allowed(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self
            .allow
            .keys()
            .filter_map(|r| r.ok())
            .map(|k| Self::net_of(&k))
            .collect();
        out.sort();
        out
    }

    /// Verdict totals and every counter, summed over CPUs, as `stats` and
    /// metrics show them.
    pub fn report(&self) -> Result<Vec<(&'static str, u64)>> {
        let raw = self.stats()?;
        let total = |v: Verdict| {
            raw.iter()
                .filter(|(c, _)| c.verdict() == v)
                .map(|(_, n)| n)
                .sum()
        };
        let mut out = vec![
            ("passed", total(Verdict::Pass) + total(Verdict::WouldDrop)),
            ("dropped", total(Verdict::Drop)),
            ("would_drop", total(Verdict::WouldDrop)),
        ];
        out.extend(raw.iter().map(|(c, n)| (c.name(), *n)));
        Ok(out)
    }

    /// Global counters summed over CPUs, in `Counter::ALL` order.
    /// One counter, summed over CPUs.
    pub fn counter(&self, c: Counter) -> Result<u64> {
        let v = self
            .stats
            .get(&(c as u32), 0)
            .map_err(Error::map("reading counters"))?;
        Ok(v.iter().sum())
    }

    pub fn stats(&self) -> Result<Vec<(Counter, u64)>> {
        let mut out = Vec::with_capacity(COUNTERS as usize);
        for c in Counter::ALL {
            let v = self
                .stats
                .get(&(c as u32), 0)
                .map_err(Error::map("reading counters"))?;
            out.push((c, v.iter().sum()));
        }
        Ok(out)
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

    pub fn config(&self) -> Result<KernelConfig> {
        self.config.get(&0, 0).map_err(Error::map("reading config"))
    }

    pub fn set_config(&mut self, c: KernelConfig) -> Result<()> {
        self.config
            .set(0, c, 0)
            .map_err(Error::map("writing config"))
    }

    /// The UDP ports SIP is filtered on.
    pub fn ports(&self) -> Result<Vec<u16>> {
        read_ports(&self.ports)
    }

    /// Replaces the UDP SIP port set.
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<()> {
        write_ports(&mut self.ports, ports)
    }

    /// The TCP ports (SIP over TCP and TLS) bans are enforced on; `None`
    /// when the pinned program predates them.
    pub fn tcp_ports(&self) -> Result<Option<Vec<u16>>> {
        self.tcp_ports.as_ref().map(read_ports).transpose()
    }

    /// Replaces the TCP port set.
    pub fn set_tcp_ports(&mut self, ports: &[u16]) -> Result<()> {
        match &mut self.tcp_ports {
            Some(map) => write_ports(map, ports),
            None => Err(Error::Io {
                context: "setting TCP ports".into(),
                source: std::io::Error::other(
                    "the loaded program predates TCP enforcement; reload it (see `sip-xdp status`)",
                ),
            }),
        }
    }

    /// Exact bans as the kernel holds them.
    /// Every exact ban, read in batches: the sync and the metrics pass walk
    /// them all every cycle, and 100k bans entry by entry are 200k calls.
    pub fn bans_raw(&self) -> Vec<(IpAddr, BanValue)> {
        let mut out = Vec::new();
        let read = open(&self.pins, MAP_BANS).and_then(|data| {
            batch::for_each::<IpKey, BanValue>(&data, |k, v| out.push((ip_of(k), *v)))
                .map_err(Error::io("reading bans"))
        });
        if let Err(e) = read {
            // Same outcome as the iterator it replaces: what could be read.
            tracing::warn!(error = %e, "reading bans in batches failed; entry by entry instead");
            out = self
                .bans
                .iter()
                .filter_map(|r| r.ok())
                .map(|(k, v)| (ip_of(&k), v))
                .collect();
        }
        out
    }

    /// Every address and prefix the kernel bans or blocks, without their
    /// values: what a caller needs to tell new entries from held ones, at
    /// a third of the memory of `bans_raw` with 100k bans.
    pub fn held_nets(&self) -> std::collections::HashSet<IpNet> {
        let mut held = std::collections::HashSet::new();
        let read = open(&self.pins, MAP_BANS).and_then(|data| {
            batch::for_each::<IpKey, BanValue>(&data, |k, _| {
                held.insert(IpNet::from(ip_of(k)));
            })
            .map_err(Error::io("reading bans"))
        });
        if read.is_err() {
            held = self
                .bans_raw()
                .into_iter()
                .map(|(ip, _)| IpNet::from(ip))
                .collect();
        }
        held.extend(
            self.block
                .keys()
                .filter_map(|r| r.ok())
                .map(|k| Self::net_of(&k)),
        );
        held
    }

    /// Block-list rules as the kernel holds them.
    pub fn blocks_raw(&self) -> Vec<(IpNet, BlockValue)> {
        self.block
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (Self::net_of(&k), v))
            .collect()
    }

    /// Writes a ban or block value as given, without the safety rails (the
    /// callers apply them: `block` here, the sync on database rows). Keeps
    /// the hit counter of an entry being updated.
    pub fn put(&mut self, net: &IpNet, expires_ns: u64, reason: BanReason) -> Result<()> {
        if is_host(net) {
            let _held = self.hold_index()?;
            let k = key_of(net.addr());
            let existing = self.bans.get(&k, 0).ok();
            let v = BanValue {
                expires_ns,
                hits: existing.map_or(0, |v| v.hits),
                reason: reason as u32,
                _pad: 0,
            };
            self.bans.insert(k, v, 0).map_err(write_error(
                MAP_BANS,
                self.max[0],
                "writing the ban",
            ))?;
            // A ban being changed keeps its old slot if the index cannot
            // be written: it stays enforced. A new one is taken back out.
            let fresh: &[IpNet] = if existing.is_some() { &[] } else { &[*net] };
            self.index(&[(net.addr(), expires_ns)], fresh)
        } else {
            let key = Self::trie_key(net);
            let hits = self.block.get(&key, 0).map_or(0, |v| v.hits);
            self.block
                .insert(&key, BlockValue { expires_ns, hits }, 0)
                .map_err(write_error(
                    MAP_BLOCK,
                    self.max[2],
                    "writing the block rule",
                ))
        }
    }

    /// Writes new exact bans (addresses the map does not hold: their hit
    /// counts start at zero) in batches; prefixes go one by one, as the
    /// kernel has no batch writes for tries. What a sync or a feed with
    /// thousands of new entries needs.
    pub fn put_new(&mut self, entries: &[(IpNet, u64, BanReason)]) -> Result<()> {
        let (hosts, nets): (Vec<&(IpNet, u64, BanReason)>, Vec<_>) =
            entries.iter().partition(|(n, _, _)| is_host(n));
        if !hosts.is_empty() {
            let _held = self.hold_index()?;
            let keys: Vec<IpKey> = hosts.iter().map(|(n, _, _)| key_of(n.addr())).collect();
            let values: Vec<BanValue> = hosts
                .iter()
                .map(|(_, expires_ns, reason)| BanValue {
                    expires_ns: *expires_ns,
                    hits: 0,
                    reason: *reason as u32,
                    _pad: 0,
                })
                .collect();
            let data = self.bans_data()?;
            if let Err(e) = batch::update(&data, &keys, &values) {
                if e.raw_os_error() == Some(libc::E2BIG) || e.raw_os_error() == Some(libc::ENOSPC) {
                    return Err(Error::Full {
                        map: MAP_BANS,
                        max: self.max[0],
                    });
                }
                return Err(Error::Io {
                    context: "writing bans".into(),
                    source: e,
                });
            }
            let indexed: Vec<(IpAddr, u64)> =
                hosts.iter().map(|(n, e, _)| (n.addr(), *e)).collect();
            let fresh: Vec<IpNet> = hosts.iter().map(|(n, _, _)| *n).collect();
            self.index(&indexed, &fresh)?;
        }
        for &(n, expires_ns, reason) in nets {
            self.put(&n, expires_ns, reason)?;
        }
        Ok(())
    }

    /// Removes many bans and block-list rules: exact bans in batches,
    /// prefixes one by one (no batch calls for tries). Returns how many
    /// the kernel held.
    pub fn remove_many(&mut self, nets: &[IpNet]) -> Result<usize> {
        let (hosts, prefixes): (Vec<&IpNet>, Vec<&IpNet>) = nets.iter().partition(|n| is_host(n));
        let mut removed = 0;
        if !hosts.is_empty() {
            let _held = self.hold_index()?;
            self.unindex(&hosts.iter().map(|n| n.addr()).collect::<Vec<_>>())?;
            let keys: Vec<IpKey> = hosts.iter().map(|n| key_of(n.addr())).collect();
            removed += batch::delete(&self.bans_data()?, &keys).map_err(|e| Error::Io {
                context: "removing bans".into(),
                source: e,
            })?;
        }
        for n in prefixes {
            removed += usize::from(self.unblock(n)?);
        }
        Ok(removed)
    }

    /// The index writers' lock, held across both maps while a ban goes in
    /// or out: a `heal_ban_index` in another process then never sees a ban
    /// half removed (out of the index, still in BANS) and puts it back.
    fn hold_index(&self) -> Result<Option<super::ban_index::Held>> {
        self.index.as_ref().map(|i| i.lock()).transpose()
    }

    /// Indexes the IPv4 bans the program cannot see: in BANS, but in no
    /// slot of a bucket without its spill mark. There are none unless BANS
    /// was written behind the index (a command killed between its two
    /// writes, a binary of another build); the controller checks every
    /// 30 s. Returns how many it indexed.
    pub fn heal_ban_index(&mut self) -> Result<usize> {
        let Some(held) = self.hold_index()? else {
            return Ok(0);
        };
        let bans = self.v4_bans();
        let Some(index) = self.index.as_mut() else {
            return Ok(0);
        };
        let unseen = index.unseen(&bans)?;
        if !unseen.is_empty() {
            index.put(&unseen)?;
        }
        drop(held);
        Ok(unseen.len())
    }

    /// Adds IPv4 bans to the index after BANS holds them. The program
    /// trusts the index for IPv4, so an index that cannot be written is an
    /// error, and the new bans (`fresh`) are taken back out of BANS: a ban
    /// is either enforced or reported as failed, never silently left out.
    fn index(&mut self, bans: &[(IpAddr, u64)], fresh: &[IpNet]) -> Result<()> {
        let Some(index) = self.index.as_mut() else {
            return Ok(());
        };
        let v4: Vec<(Ipv4Addr, u64)> = bans
            .iter()
            .filter_map(|(a, e)| v4_of(*a).map(|a| (a, *e)))
            .collect();
        match index.put(&v4) {
            Ok(0) => Ok(()),
            Ok(full) => {
                tracing::debug!(
                    bans = full,
                    "ban index buckets full; BANS enforces them, the buckets are marked"
                );
                Ok(())
            }
            Err(e) => {
                let keys: Vec<IpKey> = fresh
                    .iter()
                    .filter(|n| v4_of(n.addr()).is_some())
                    .map(|n| key_of(n.addr()))
                    .collect();
                if let Err(undo) = self.bans_data().and_then(|d| {
                    batch::delete(&d, &keys).map_err(|source| Error::Io {
                        context: "taking unindexed bans back out".into(),
                        source,
                    })
                }) {
                    tracing::error!(error = %undo, "bans in BANS but not in the ban index: the controller's next check (at most 30 s) indexes them");
                }
                Err(e)
            }
        }
    }

    /// Takes addresses out of the index before they leave BANS: an error
    /// here stops the removal, so the index never bans an address BANS
    /// does not.
    fn unindex(&mut self, addrs: &[IpAddr]) -> Result<()> {
        let Some(index) = self.index.as_mut() else {
            return Ok(());
        };
        let v4: Vec<Ipv4Addr> = addrs.iter().filter_map(|a| v4_of(*a)).collect();
        index.remove(&v4)
    }

    /// Rewrites the index from BANS: at every load of the program and every
    /// start of the controller. Returns (indexed, left to BANS). Holds the
    /// writers' lock from the read of BANS on, as `heal_ban_index` does.
    pub fn rebuild_ban_index(&mut self) -> Result<(usize, usize)> {
        let _held = self.hold_index()?;
        let bans = self.v4_bans();
        let Some(index) = self.index.as_mut() else {
            return Ok((0, bans.len()));
        };
        let full = index.rebuild(&bans)?;
        Ok((bans.len() - full, full))
    }

    /// BANS' IPv4 bans with their expiry, as the index keeps them.
    fn v4_bans(&self) -> Vec<(Ipv4Addr, u64)> {
        self.bans_raw()
            .into_iter()
            .filter_map(|(a, v)| v4_of(a).map(|a| (a, v.expires_ns)))
            .collect()
    }

    /// Slots in use in the ban index; `None` without one.
    pub fn ban_index_used(&self) -> Option<usize> {
        self.index.as_ref().and_then(|i| i.used().ok())
    }

    /// Hits counted in the index, by address (empty without one).
    fn indexed_hits(&self) -> std::collections::HashMap<Ipv4Addr, u64> {
        self.index
            .as_ref()
            .and_then(|i| {
                i.hits()
                    .map_err(|e| tracing::warn!(error = %e, "reading the ban index's hit counts"))
                    .ok()
            })
            .unwrap_or_default()
    }

    /// The BANS map's own handle, for batch calls.
    fn bans_data(&self) -> Result<MapData> {
        MapData::from_pin(self.pins.map(MAP_BANS)).map_err(Error::map("opening the ban map"))
    }

    /// Adds an allow-list entry without touching bans (`allow` lifts them;
    /// the sync lifts them itself, recording each).
    pub fn put_allow(&mut self, net: &IpNet) -> Result<()> {
        self.allow
            .insert(&Self::trie_key(net), 1, 0)
            .map_err(write_error(
                MAP_ALLOW,
                self.max[1],
                "writing the allow entry",
            ))
    }

    /// `(map, entries, capacity)` for the maps that fill up. Tracked
    /// sources are what the caller last counted in a batch read, when it
    /// has a count (the controller's sampling pass): a key-by-key walk of
    /// a full source map is a quarter of a million system calls.
    pub fn fill(&self, sources: Option<usize>) -> Vec<(&'static str, usize, u32)> {
        let sources = sources.unwrap_or_else(|| self.sources.keys().count());
        vec![
            (MAP_BANS, self.bans_raw().len(), self.max[0]),
            (MAP_ALLOW, self.allow.keys().count(), self.max[1]),
            (MAP_BLOCK, self.block.keys().count(), self.max[2]),
            (MAP_SOURCES, sources, self.max[3]),
        ]
    }
}

/// The set bits of the port bitmap, in one batch read (an array's batch
/// walks its indexes in order, so the ports come out sorted).
fn read_ports(map: &Array<MapData, u64>) -> Result<Vec<u16>> {
    use aya::maps::IterableMap as _;
    let mut out = Vec::new();
    batch::for_each::<u32, u64>(map.map(), |w, bits| {
        for b in 0..64 {
            if bits & (1 << b) != 0 {
                out.push((w * 64 + b) as u16);
            }
        }
    })
    .map_err(Error::io("reading ports"))?;
    Ok(out)
}

/// Adds the new ports before removing old ones, so no port the operator
/// keeps is ever briefly unfiltered.
fn write_ports(map: &mut Array<MapData, u64>, ports: &[u16]) -> Result<()> {
    let mut words = vec![0u64; SIP_PORT_WORDS as usize];
    for p in ports {
        words[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    for pass in 0..2 {
        for (i, w) in words.iter().enumerate() {
            let old = map
                .get(&(i as u32), 0)
                .map_err(Error::map("reading ports"))?;
            let new = if pass == 0 { old | w } else { *w };
            if new != old {
                map.set(i as u32, new, 0)
                    .map_err(Error::map("writing ports"))?;
            }
        }
    }
    Ok(())
}
