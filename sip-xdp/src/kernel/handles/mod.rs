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

/// The sizes the maps that fill up were created with.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    bans: u32,
    allow: u32,
    block: u32,
    sources: u32,
}

pub struct Maps {
    bans: HashMap<MapData, IpKey, BanValue>,
    /// Absent when the pinned program predates the IPv4 ban index.
    index: Option<BanIndex>,
    /// Absent when the pinned program predates earned trust.
    verified: Option<HashMap<MapData, IpKey, Verified>>,
    /// Absent when the pinned program predates the memory of clients.
    remembered: Option<HashMap<MapData, IpKey, u64>>,
    allow: LpmTrie<MapData, IpKey, u32>,
    /// Absent when the pinned program predates hints (`hints`).
    allow_hint: Option<Array<MapData, u64>>,
    proof_hint: Option<Array<MapData, u64>>,
    block: LpmTrie<MapData, IpKey, BlockValue>,
    sources: PerCpuHashMap<MapData, IpKey, SourceStats>,
    ports: Array<MapData, u64>,
    /// Absent when the pinned program predates TCP enforcement.
    tcp_ports: Option<Array<MapData, u64>>,
    config: Array<MapData, KernelConfig>,
    stats: PerCpuArray<MapData, u64>,
    /// The SBC's replies per client, read in batches.
    replies: Option<MapData>,
    /// The kernel's sampling unit and its two hot maps (`hot`).
    unit: Option<Array<MapData, u32>>,
    hot: Option<[MapData; 2]>,
    /// The deny lists' table (`rules`).
    rules: Option<Array<MapData, sip_xdp_common::rules::RuleRow>>,
    max: Sizes,
}

/// The handle a typed map holds, for batch calls: every map is opened once,
/// with `Maps`, and kept, so that a controller out of file descriptors (a
/// flood of connections, a low `LimitNOFILE`) still reads and bans.
fn data_of<K: aya::Pod, V>(m: &impl aya::maps::IterableMap<K, V>) -> &MapData {
    m.map()
}

/// A map the pinned program may predate: `None` when it is not pinned.
fn open_if_pinned(pins: &Pins, name: &str) -> Result<Option<MapData>> {
    if !pins.map(name).exists() {
        return Ok(None);
    }
    open(pins, name).map(Some)
}

fn open(pins: &Pins, name: &str) -> Result<MapData> {
    MapData::from_pin(pins.map(name)).map_err(Error::map(format!("opening pinned map {name}")))
}

/// An array the pinned program may predate: `None` when it is not
/// pinned, an error when it is but cannot be opened (the program reads
/// it, so writing around it would leave the program a stale copy).
fn open_array(pins: &Pins, name: &str) -> Result<Option<Array<MapData, u64>>> {
    if !pins.map(name).exists() {
        return Ok(None);
    }
    let d = open(pins, name)?;
    Array::try_from(Map::Array(d))
        .map(Some)
        .map_err(Error::map(format!("opening pinned map {name}")))
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

mod allow;
mod bans;
mod hints;
mod remembered;
mod settings;
mod sources;

pub use bans::BlockEntry;
pub use hints::HintCheck;
pub use sources::{Replies, SourceRow, Totals, VerifiedEntry};

impl Maps {
    pub fn open(pins: &Pins) -> Result<Self> {
        pins.check_loaded("reading sip-xdp's pinned maps")?;
        let e = |n: &str| Error::map(format!("opening pinned map {n}"));
        let bans_d = open(pins, MAP_BANS)?;
        let allow_d = open(pins, MAP_ALLOW)?;
        let block_d = open(pins, MAP_BLOCK)?;
        let sources_d = open(pins, MAP_SOURCES)?;
        let size = |d: &MapData, default| d.info().map_or(default, |i| i.max_entries());
        let max = Sizes {
            bans: size(&bans_d, DEFAULT_MAX_BANS),
            allow: size(&allow_d, DEFAULT_MAX_ALLOW),
            block: size(&block_d, DEFAULT_MAX_BLOCK),
            sources: size(&sources_d, DEFAULT_MAX_SOURCES),
        };
        Ok(Self {
            bans: HashMap::try_from(Map::HashMap(bans_d)).map_err(e(MAP_BANS))?,
            index: BanIndex::open(pins)?,
            verified: open(pins, MAP_VERIFIED)
                .ok()
                .and_then(|d| HashMap::try_from(Map::LruHashMap(d)).ok()),
            remembered: open(pins, MAP_REMEMBERED)
                .ok()
                .and_then(|d| HashMap::try_from(Map::LruHashMap(d)).ok()),
            allow: LpmTrie::try_from(Map::LpmTrie(allow_d)).map_err(e(MAP_ALLOW))?,
            allow_hint: open_array(pins, MAP_ALLOW_HINT)?,
            proof_hint: open_array(pins, MAP_PROOF_HINT)?,
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
            replies: open_if_pinned(pins, MAP_REPLIES)?,
            unit: open_if_pinned(pins, MAP_UNIT)?
                .map(|d| Array::try_from(Map::Array(d)))
                .transpose()
                .map_err(e(MAP_UNIT))?,
            hot: match (
                open_if_pinned(pins, MAP_HOT0)?,
                open_if_pinned(pins, MAP_HOT1)?,
            ) {
                (Some(a), Some(b)) => Some([a, b]),
                _ => None,
            },
            rules: open_if_pinned(pins, MAP_RULES)?
                .map(|d| Array::try_from(Map::Array(d)))
                .transpose()
                .map_err(e(MAP_RULES))?,
            max,
        })
    }

    /// A map this build's program has and a pinned older one may lack.
    fn missing(name: &str) -> Error {
        Error::Io {
            context: format!("opening pinned map {name}"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not pinned: the pinned program predates it",
            ),
        }
    }

    /// Closes the kernel's current sampling unit: the unit closed and the
    /// hot map its sources were filed in.
    pub(in crate::kernel) fn close_unit(&mut self) -> Result<(u32, &MapData)> {
        let unit = self.unit.as_mut().ok_or_else(|| Self::missing(MAP_UNIT))?;
        let closed = unit.get(&0, 0).map_err(Error::map("reading the unit"))?;
        unit.set(0, closed.wrapping_add(1), 0)
            .map_err(Error::map("advancing the unit"))?;
        let hot = self.hot.as_ref().ok_or_else(|| Self::missing(MAP_HOT0))?;
        Ok((closed, &hot[(closed & 1) as usize]))
    }

    /// The deny lists' table, to write.
    pub(in crate::kernel) fn rules_table(
        &mut self,
    ) -> Result<&mut Array<MapData, sip_xdp_common::rules::RuleRow>> {
        self.rules.as_mut().ok_or_else(|| Self::missing(MAP_RULES))
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

    /// `(map, entries, capacity)` for the maps that fill up. Tracked
    /// sources are what the caller last counted in a batch read, when it
    /// has a count (the controller's sampling pass): a key-by-key walk of
    /// a full source map is a quarter of a million system calls.
    pub fn fill(&self, sources: Option<usize>) -> Vec<(&'static str, usize, u32)> {
        let sources = sources.unwrap_or_else(|| self.sources.keys().count());
        vec![
            (MAP_BANS, self.bans_raw().len(), self.max.bans),
            (MAP_ALLOW, self.allow.keys().count(), self.max.allow),
            (MAP_BLOCK, self.block.keys().count(), self.max.block),
            (MAP_SOURCES, sources, self.max.sources),
        ]
    }
}
