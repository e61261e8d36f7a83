//! The program's maps. All are pinned by name, so the controller, the CLI and
//! a reloaded program share one set under the pin directory.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray, RingBuf,
    },
};
use sip_xdp_common::{
    admission::{BucketWord, BUCKETS},
    banindex::{self, Bucket},
    hints::{ALLOW_HINT_WORDS, PROOF_HINT_WORDS},
    maps::{
        Exchange, ExchangeKey, NonceKey, ScanScratch, ShedWindow, Verified, Watch, MAX_ASKED,
        MAX_EXCHANGES, MAX_NONCES, MAX_WATCH,
    },
    maps::{
        RateState, ReplyStats, SampleBudget, DEFAULT_MAX_ALLOW, DEFAULT_MAX_BANS,
        DEFAULT_MAX_BLOCK, DEFAULT_MAX_RATE, DEFAULT_MAX_REPLIES, DEFAULT_MAX_SOURCES,
        DEFAULT_MAX_VERIFIED, MAX_HOT, MAX_REMEMBERED, SAMPLES_RING_BYTES, SIP_PORT_WORDS,
    },
    rules::{RuleRow, RULE_STATES},
    stats::COUNTERS,
    BanValue, BlockValue, IpKey, KernelConfig, SourceStats,
};

/// Exact-match bans with kernel-checked expiry. A plain hash, value inline:
/// under a flood from many banned sources every lookup misses the cache, and
/// a per-CPU value would add one more dependent access.
#[map]
pub static BANS: HashMap<IpKey, BanValue> = HashMap::pinned(DEFAULT_MAX_BANS, 0);

/// IPv4 bans again, compact: one cache line per lookup (see
/// `sip_xdp_common::banindex`). Read before BANS, and instead of it for an
/// IPv4 source whose bucket has no spill mark.
#[map]
pub static BAN_INDEX: Array<Bucket> = Array::pinned(banindex::BUCKETS, 0);

/// Allow-list CIDRs; a match beats every block rule.
#[map]
pub static ALLOW: LpmTrie<IpKey, u32> = LpmTrie::pinned(DEFAULT_MAX_ALLOW, BPF_F_NO_PREALLOC);

/// Block-list CIDRs with their hit counters.
#[map]
pub static BLOCK: LpmTrie<IpKey, BlockValue> =
    LpmTrie::pinned(DEFAULT_MAX_BLOCK, BPF_F_NO_PREALLOC);

/// Per-source accounting, per CPU so the hot path never contends.
#[map]
pub static SOURCES: LruPerCpuHashMap<IpKey, SourceStats> =
    LruPerCpuHashMap::pinned(DEFAULT_MAX_SOURCES, 0);

/// Slot 0: the sampling unit, advanced by the controller at every pass.
#[map]
pub static UNIT: Array<u32> = Array::pinned(1, 0);

/// Sources whose packets on one CPU reached `hot_at` in an even (HOT0) or
/// odd (HOT1) unit. The controller reads and empties the closed unit's map
/// while the program files into the other, so a pass costs what the busy
/// sources cost, not what every tracked one does. Preallocated: filing
/// happens once per source per unit, and must not allocate under a flood.
#[map]
pub static HOT0: HashMap<IpKey, u32> = HashMap::pinned(MAX_HOT, 0);
#[map]
pub static HOT1: HashMap<IpKey, u32> = HashMap::pinned(MAX_HOT, 0);

/// Bitmap of SIP destination ports: bit `p & 63` of word `p >> 6`.
#[map]
pub static SIP_PORTS: Array<u64> = Array::pinned(SIP_PORT_WORDS, 0);

/// Bitmap of TCP ports (SIP over TCP and TLS) on which bans are enforced;
/// nothing is counted or sampled there.
#[map]
pub static TCP_PORTS: Array<u64> = Array::pinned(SIP_PORT_WORDS, 0);

/// The stamp of the object the pinned programs came from, written by the
/// loader; a controller with another stamp replaces the programs.
#[map]
pub static META: Array<u64> = Array::pinned(1, 0);

#[map]
pub static CONFIG: Array<KernelConfig> = Array::pinned(1, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTERS, 0);

/// Per-source rate-limit windows. Shared by all CPUs (one limit per source,
/// not per CPU); only touched when a limit is configured.
#[map]
pub static RATE: LruHashMap<IpKey, RateState> = LruHashMap::pinned(DEFAULT_MAX_RATE, 0);

/// Packet samples for the controller's SIP parser.
#[map]
pub static SAMPLES: RingBuf = RingBuf::pinned(SAMPLES_RING_BYTES, 0);

#[map]
pub static SAMPLE_BUDGET: PerCpuArray<SampleBudget> = PerCpuArray::pinned(1, 0);

/// Final responses sent by the SBC, per client address (egress program).
/// One value for all CPUs, counted with atomic adds: replies come at the
/// SBC's own pace, not a flood's, so the shared line costs little, while a
/// per-CPU value costs a kernel allocation per entry and CPU at load, and
/// memory that grows with the CPUs (docs/configuration.md, "Map sizes and
/// kernel memory").
#[map]
pub static REPLIES: LruHashMap<IpKey, ReplyStats> = LruHashMap::pinned(DEFAULT_MAX_REPLIES, 0);

/// Sources that proved they own their address by a round trip: the SBC's
/// 2xx to a REGISTER or INVITE that carried back a nonce the SBC had sent
/// them, or their answer to a request the SBC sent (`exchange`). Detectors
/// never ban them on evidence a forged packet can produce.
#[map]
pub static VERIFIED: LruHashMap<IpKey, Verified> = LruHashMap::pinned(DEFAULT_MAX_VERIFIED, 0);

/// Addresses in an exchange with the SBC (`exchange`).
#[map]
pub static WATCH: LruHashMap<IpKey, Watch> = LruHashMap::pinned(MAX_WATCH, 0);

/// Nonces the SBC sent, with their expiry (`exchange`).
#[map]
pub static NONCES: LruHashMap<NonceKey, u64> = LruHashMap::pinned(MAX_NONCES, 0);

/// Transactions of addresses in an exchange waiting for the SBC's answer
/// (`exchange`).
#[map]
pub static EXCHANGES: LruHashMap<ExchangeKey, Exchange> = LruHashMap::pinned(MAX_EXCHANGES, 0);

/// The SBC's requests waiting for their answer (`exchange`). Apart from
/// EXCHANGES, which what arrives fills: no sender can evict them.
#[map]
pub static ASKED: LruHashMap<ExchangeKey, Exchange> = LruHashMap::pinned(MAX_ASKED, 0);

#[map]
pub static SCAN: PerCpuArray<ScanScratch> = PerCpuArray::pinned(1, 0);

/// The deny lists' automata (`sip_xdp_common::rules`), written by the
/// controller.
#[map]
pub static RULES: Array<RuleRow> = Array::pinned(RULE_STATES, 0);

/// Slot 0: the trust program (`sip_xdp_trust`), filled in by the loader.
/// A tail call gives the header scan a verification of its own: inline, the
/// verifier walked its loop once per header layout and hit its limit.
#[map]
pub static TRUST_PROG: ProgramArray = ProgramArray::pinned(1, 0);

/// Slot 0: the ingress exchange program (`sip_xdp_exchange`), filled in by
/// the loader, for the same reason.
#[map]
pub static EXCHANGE_PROG: ProgramArray = ProgramArray::pinned(1, 0);

/// Per-CPU overload window (see `shed` in the program).
#[map]
pub static SHED: PerCpuArray<ShedWindow> = PerCpuArray::pinned(1, 0);

/// Addresses that proved themselves within the memory of good clients,
/// with the monotonic time their memory lapses: what overload admits
/// first after the verified (`admit`). Only the controller writes it,
/// from the database, at a bounded number per prefix: what arrives never
/// writes here, so no sender can push a remembered phone out.
#[map]
pub static REMEMBERED: LruHashMap<IpKey, u64> = LruHashMap::pinned(MAX_REMEMBERED, 0);

/// Per CPU, the strangers each bucket of source prefixes sent through in
/// this window (`sip_xdp_common::admission`).
#[map]
pub static STRANGERS: PerCpuArray<BucketWord> = PerCpuArray::pinned(BUCKETS, 0);

/// A bit per IPv4 /16 and per hashed IPv6 /32 that an allow-list entry
/// covers (`sip_xdp_common::hints`): a source on a clear bit skips the
/// trie. Only userspace writes it.
#[map]
pub static ALLOW_HINT: Array<u64> = Array::pinned(ALLOW_HINT_WORDS, 0);

/// A bit per hashed proven address (`sip_xdp_common::hints`): a source on
/// a clear bit skips `VERIFIED` and `REMEMBERED` in overload. Set by the
/// exchange as it verifies and by the controller as it remembers.
#[map]
pub static PROOF_HINT: Array<u64> = Array::pinned(PROOF_HINT_WORDS, 0);
