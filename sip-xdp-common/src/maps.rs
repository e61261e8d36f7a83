//! Map names and value layouts. Every value is `#[repr(C)]` with explicit
//! padding so the kernel and userspace agree byte for byte.

pub const MAP_BANS: &str = "BANS";
/// The IPv4 bans again, one cache line per lookup (`crate::banindex`).
pub const MAP_BAN_INDEX: &str = "BAN_INDEX";
pub const MAP_ALLOW: &str = "ALLOW";
pub const MAP_BLOCK: &str = "BLOCK";
pub const MAP_SOURCES: &str = "SOURCES";
pub const MAP_SIP_PORTS: &str = "SIP_PORTS";
pub const MAP_TCP_PORTS: &str = "TCP_PORTS";
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_STATS: &str = "STATS";
pub const MAP_RATE: &str = "RATE";
pub const MAP_SAMPLES: &str = "SAMPLES";
pub const MAP_SAMPLE_BUDGET: &str = "SAMPLE_BUDGET";
pub const MAP_REPLIES: &str = "REPLIES";
pub const MAP_VERIFIED: &str = "VERIFIED";
pub const MAP_TRUST_PROG: &str = "TRUST_PROG";
/// Addresses in an exchange with the SBC (challenged, asked, or with a
/// transaction pending): their SIP is scanned at ingress.
pub const MAP_WATCH: &str = "WATCH";
/// Digest nonces the SBC sent, per address.
pub const MAP_NONCES: &str = "NONCES";
/// Transactions pending an answer, per address.
pub const MAP_EXCHANGES: &str = "EXCHANGES";
/// Requests the SBC sent, per address: only egress writes it.
pub const MAP_ASKED: &str = "ASKED";
/// Per-CPU scratch of the header scans (both directions).
pub const MAP_SCAN: &str = "SCAN";
/// The deny lists' automata (`crate::rules`).
pub const MAP_RULES: &str = "RULES";
/// Slot 0: the ingress exchange program, tail-called by the XDP program.
pub const MAP_EXCHANGE_PROG: &str = "EXCHANGE_PROG";
pub const MAP_SHED: &str = "SHED";
/// One u32: the sampling unit the controller's passes are in (see `HOT0`).
pub const MAP_UNIT: &str = "UNIT";
/// Sources that reached the hot mark in an even and an odd unit: what a
/// sampling pass reads instead of every tracked source.
pub const MAP_HOT0: &str = "HOT0";
pub const MAP_HOT1: &str = "HOT1";
/// Addresses proven within the memory the controller keeps (`crate::admission`).
pub const MAP_REMEMBERED: &str = "REMEMBERED";
/// Per CPU, one word per bucket of stranger prefixes (`crate::admission`).
pub const MAP_STRANGERS: &str = "STRANGERS";
/// Bitmaps read before the allow-list trie and the proof lookups
/// (`crate::hints`).
pub const MAP_ALLOW_HINT: &str = "ALLOW_HINT";
pub const MAP_PROOF_HINT: &str = "PROOF_HINT";
/// One u64: the stamp of the object the pinned programs came from.
pub const MAP_META: &str = "META";

/// Every map the programs own, in pin order.
pub const ALL_MAPS: [&str; 16] = [
    MAP_BANS,
    MAP_BAN_INDEX,
    MAP_ALLOW,
    MAP_BLOCK,
    MAP_SOURCES,
    MAP_SIP_PORTS,
    MAP_TCP_PORTS,
    MAP_CONFIG,
    MAP_STATS,
    MAP_RATE,
    MAP_SAMPLES,
    MAP_SAMPLE_BUDGET,
    MAP_REPLIES,
    MAP_UNIT,
    MAP_HOT0,
    MAP_HOT1,
];

/// Entries in the `SIP_PORTS` bitmap: 1024 × 64 bits covers every port.
pub const SIP_PORT_WORDS: u32 = 1024;

/// Default capacities; the loader may override them.
pub const DEFAULT_MAX_BANS: u32 = 131_072;
pub const DEFAULT_MAX_ALLOW: u32 = 16_384;
pub const DEFAULT_MAX_BLOCK: u32 = 65_536;
pub const DEFAULT_MAX_SOURCES: u32 = 262_144;
/// Sources with a live kernel rate-limit window, and clients the SBC has
/// sent final error responses to.
pub const DEFAULT_MAX_RATE: u32 = 262_144;
pub const DEFAULT_MAX_REPLIES: u32 = 65_536;
/// Verified sources: registered phones and the SBC's own peers. An LRU, so
/// a flood of verifications (the SBC answering many spoofed requests) can
/// only evict the least recently refreshed, never fail.
pub const DEFAULT_MAX_VERIFIED: u32 = 65_536;
/// Remembered clients: addresses proven lately (written by the trust
/// program as it verifies) or in the last days (written by the controller
/// from the database). As many as a mid-size commercial SBC's
/// dynamic-trusted table; an LRU, so that a verification never fails for
/// want of room.
pub const MAX_REMEMBERED: u32 = 262_144;
/// Addresses in an exchange, nonces sent, and transactions pending. LRUs:
/// a storm of challenges to spoofed addresses evicts the oldest, never
/// fails (a phone whose entry went loses trust for that exchange, and
/// earns it at its next registration).
pub const MAX_WATCH: u32 = 65_536;
pub const MAX_NONCES: u32 = 65_536;
pub const MAX_EXCHANGES: u32 = 65_536;
pub const MAX_ASKED: u32 = 131_072;
/// How long a nonce the SBC sent is accepted back: past it, a client asks
/// again (registrars expire nonces sooner, and answer `stale=true`).
pub const NONCE_TTL_NS: u64 = 300_000_000_000;
/// How long a transaction waits for its answer: Timer F, 64 × T1.
pub const EXCHANGE_TTL_NS: u64 = 32_000_000_000;
/// An INVITE's: a call may ring for minutes before its final response (a
/// proxy's Timer C is more than 3 min), and the 2xx is retransmitted
/// until the ACK.
pub const INVITE_TTL_NS: u64 = 300_000_000_000;

/// How long a transaction of `method` waits for its answer.
#[inline(always)]
pub const fn exchange_ttl_ns(invite: bool) -> u64 {
    if invite {
        INVITE_TTL_NS
    } else {
        EXCHANGE_TTL_NS
    }
}
/// Sources that can reach the hot mark in one unit before the controller
/// falls back to reading every tracked source (counted as `hot_full`).
pub const MAX_HOT: u32 = 65_536;
/// Ring buffer bytes: about 960 full-size samples in flight.
pub const SAMPLES_RING_BYTES: u32 = 1 << 20;

pub use crate::reason::BanReason;

/// Value of an exact-match ban.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanValue {
    /// `CLOCK_MONOTONIC` nanoseconds (the clock `bpf_ktime_get_coarse_ns`
    /// reads) after which the kernel stops enforcing the ban; 0 = never.
    pub expires_ns: u64,
    /// Packets dropped by this ban, added atomically by the kernel.
    pub hits: u64,
    /// A `BanReason`.
    pub reason: u32,
    pub _pad: u32,
}

impl BanValue {
    /// Whether the ban is still in force at monotonic time `now_ns`.
    #[inline(always)]
    pub const fn active_at(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || self.expires_ns > now_ns
    }
}

/// Value of a block-list CIDR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockValue {
    /// Same clock and meaning as `BanValue::expires_ns`; 0 = never.
    pub expires_ns: u64,
    /// Packets dropped by this rule, added atomically by the kernel.
    pub hits: u64,
}

impl BlockValue {
    #[inline(always)]
    pub const fn active_at(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || self.expires_ns > now_ns
    }
}

/// Per-source, per-CPU accounting. Kept small (72 bytes): the LRU stores
/// one of these per possible CPU for every tracked source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    pub packets: u64,
    pub bytes: u64,
    /// Monotonic ns of the first and latest packet seen on this CPU.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Packets per `SipClass`, indexed by `SipClass as usize`. u32 per CPU
    /// is enough between two controller reads; readers use wrapping deltas.
    pub class: [u32; crate::classify::SIP_CLASSES],
    /// Packets from this source that were dropped (or would have been).
    pub dropped: u32,
    /// The sampling unit `unit_packets` counts in (the `UNIT` map's value
    /// when this CPU last counted the source).
    pub unit: u32,
    /// Packets on this CPU in `unit`. Reaching `KernelConfig::hot_at`
    /// files the source for the next sampling pass.
    pub unit_packets: u32,
    pub _pad: u32,
}

/// A source's kernel rate-limit window, shared by all CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    pub window_start_ns: u64,
    /// Packets in the current window, added atomically.
    pub count: u64,
}

/// Per-CPU sample budget: samples taken in the current one-second slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleBudget {
    pub slot_start_ns: u64,
    pub taken: u64,
    /// Scratch: the sampler's packet offset, stored and read back so the
    /// verifier treats it as unknown (see the program's `sample`).
    pub scratch_off: u64,
}

/// The overload window of one CPU: SIP packets from sources not on the
/// allow-list in the current second.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShedWindow {
    pub start_ns: u64,
    pub packets: u64,
    /// Strangers admitted during overload, held to the strangers' share.
    pub admitted: u64,
    /// Those from busy buckets, held to half of it.
    pub busy: u64,
}

/// Final responses the SBC sent to one client address (egress), shared by
/// all CPUs and counted with atomic adds.
/// Indexed by `Reply`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyStats {
    pub codes: [u32; REPLY_KINDS],
    pub last_seen_ns: u64,
}

pub const REPLY_KINDS: usize = 6;

/// The responses the egress program counts.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A 2xx to a REGISTER that the XDP program saw arrive: what answers a
    /// 401, and tells a phone's challenge-response apart from guessing.
    Success = 0,
    Unauthorized401 = 1,
    Forbidden403 = 2,
    NotFound404 = 3,
    ProxyAuth407 = 4,
    /// The end of an INVITE the XDP program saw arrive (a 2xx, busy, no
    /// answer, declined, redirected): what answers a 407. Kept apart from
    /// REGISTER's: a call to a route the SBC never authenticates (a public
    /// number) can end so without any password, and must not answer a 401.
    InviteAnswered = 5,
}

impl Reply {
    /// From the three status-code digits of a SIP status line.
    #[inline(always)]
    pub const fn of_status(code: [u8; 3]) -> Option<Reply> {
        match code {
            [b'2', _, _] => Some(Reply::Success),
            [b'4', b'0', b'1'] => Some(Reply::Unauthorized401),
            [b'4', b'0', b'3'] => Some(Reply::Forbidden403),
            [b'4', b'0', b'4'] => Some(Reply::NotFound404),
            [b'4', b'0', b'7'] => Some(Reply::ProxyAuth407),
            _ => None,
        }
    }
}

/// How a source earned trust: only what needs a round trip counts, since a
/// forged source never sees the SBC's answer.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The SBC sent a 2xx to its REGISTER, which carried back a nonce the
    /// SBC had sent to this address: it read the challenge and passed it.
    Registered = 1,
    /// Earned by nothing (an SBC answers some INVITEs without checking
    /// their credentials, so a 2xx to one proves nothing); kept so that a
    /// pinned entry holding it still reads as trust until it expires.
    Invited = 2,
    /// It answered a request the SBC sent it (trunk, carrier, or a
    /// registered contact it calls).
    Peer = 3,
}

impl Trust {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Registered,
            2 => Self::Invited,
            3 => Self::Peer,
            _ => return None,
        })
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Invited => "invited",
            Self::Peer => "peer",
        }
    }
}

/// Value of a verified source, written by the egress program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Monotonic ns after which the trust is gone unless refreshed.
    pub expires_ns: u64,
    /// A `Trust`: the latest way it was earned.
    pub how: u32,
    pub _pad: u32,
}

impl Verified {
    #[inline(always)]
    pub const fn active_at(&self, now_ns: u64) -> bool {
        self.expires_ns > now_ns
    }
}

/// An address in an exchange with the SBC. Ingress scans its requests
/// while the entry lives, so nothing it sends can make a pending
/// transaction's response look like another method's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    /// Drawn when the entry is made (or remade after it expired): a
    /// transaction recorded under another generation (the entry expired or
    /// was evicted meanwhile, so a request may have gone unscanned) earns
    /// nothing.
    pub gen: u64,
    pub expires_ns: u64,
}

impl Watch {
    #[inline(always)]
    pub const fn active_at(&self, now_ns: u64) -> bool {
        self.expires_ns > now_ns
    }
}

/// A nonce the SBC sent to an address in a 401 or 407.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NonceKey {
    pub addr: crate::IpKey,
    /// `exchange::HeaderScan::nonce`.
    pub nonce: u64,
}

/// A transaction of an address (`exchange::HeaderScan::transaction`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeKey {
    pub addr: crate::IpKey,
    pub txn: u64,
}

/// What a pending transaction is.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// The address sent a REGISTER (by its request line) in it.
    Register = 1,
    /// The address sent an INVITE.
    Invite = 2,
    /// The SBC sent the address a request: any response from it is an
    /// answer.
    Asked = 3,
}

/// A pending transaction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exchange {
    pub expires_ns: u64,
    /// The address's `Watch::gen` when it was recorded.
    pub gen: u64,
    /// A `Pending`.
    pub kind: u32,
    /// 1 when the request carried back a nonce the SBC had sent to this
    /// address: only its owner could read it. For `Asked`: 1 when the SBC
    /// sent the request on its own (one Via), not relayed someone else's.
    pub proven: u32,
}

/// Why a packet was sampled.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleKind {
    /// One of the first packets of a source.
    First = 1,
    /// The periodic trickle afterwards.
    Trickle = 2,
    /// The first packet over the kernel rate limit in a window.
    RateLimit = 3,
}

impl SampleKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::First,
            2 => Self::Trickle,
            3 => Self::RateLimit,
            _ => return None,
        })
    }
}

/// Header of a ring-buffer sample; `cap_len` payload bytes follow in the
/// same record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHeader {
    /// Monotonic ns (coarse clock) when the packet was seen.
    pub ts_ns: u64,
    pub src: crate::IpKey,
    pub src_port: u16,
    pub dst_port: u16,
    /// UDP payload length on the wire.
    pub payload_len: u16,
    /// Payload bytes copied into this sample.
    pub cap_len: u16,
    /// A `SampleKind`. (The class is not sent: the reader classifies the
    /// payload with the same pure function, and keeping the class out of
    /// the kernel's sampling path keeps it cheap to verify.)
    pub kind: u8,
    pub _pad: [u8; 7],
}

/// One ring-buffer record: fixed size, so the kernel reserves it in one go.
#[repr(C)]
pub struct Sample {
    pub header: SampleHeader,
    pub payload: [u8; crate::config::SAMPLE_MAX_PAYLOAD],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for BanValue {}
    unsafe impl aya::Pod for crate::banindex::Slot {}
    unsafe impl aya::Pod for crate::banindex::Bucket {}
    unsafe impl aya::Pod for BlockValue {}
    unsafe impl aya::Pod for SourceStats {}
    unsafe impl aya::Pod for RateState {}
    unsafe impl aya::Pod for ReplyStats {}
    unsafe impl aya::Pod for SampleBudget {}
    unsafe impl aya::Pod for Verified {}
    unsafe impl aya::Pod for ShedWindow {}
    unsafe impl aya::Pod for Watch {}
    unsafe impl aya::Pod for NonceKey {}
    unsafe impl aya::Pod for ExchangeKey {}
    unsafe impl aya::Pod for Exchange {}
}

/// What a program hands the scan through a tail call (per CPU): the
/// address, where the payload starts and how much to read, what the
/// message is (an `exchange::Mode`; at ingress, 1 when the deny lists are
/// on), and room
/// for the copy the scan reads (too big for the stack). Ingress and egress
/// share it: TC egress runs with bottom halves off, so XDP never runs on
/// its CPU between the write and the read.
#[repr(C)]
pub struct ScanScratch {
    pub addr: crate::IpKey,
    pub off: u32,
    pub len: u32,
    pub mode: u32,
    pub monitor: u32,
    /// Where the scan is in `bytes`.
    pub at: u32,
    pub _pad: u32,
    /// The scan's state, in map memory: the verifier knows nothing of a
    /// value loaded from it, so it walks the `bpf_loop` body once, where
    /// the same state on the stack made it follow every state the scan
    /// can be in.
    pub scan: crate::exchange::HeaderScan,
    /// The copy, and room for an eight-byte load at any index below
    /// `SCAN_BUF`.
    pub bytes: [u8; SCAN_BUF + 8],
}

/// The scan's buffer: a power of two past `EXCHANGE_SCAN`, so a byte's
/// index masked by `SCAN_BUF - 1` is in bounds on the very register the
/// load uses (a compare on a copy of it the verifier does not carry over).
pub const SCAN_BUF: usize = 2048;
const _: () = assert!(crate::exchange::EXCHANGE_SCAN <= SCAN_BUF && SCAN_BUF.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<BanValue>(), 24);
        assert_eq!(core::mem::size_of::<BlockValue>(), 16);
        assert_eq!(core::mem::size_of::<SourceStats>(), 80);
        assert_eq!(core::mem::size_of::<RateState>(), 16);
        assert_eq!(core::mem::size_of::<ReplyStats>(), 32);
        assert_eq!(core::mem::size_of::<SampleHeader>(), 40);
        assert_eq!(core::mem::size_of::<Sample>(), 40 + 1024);
        assert_eq!(core::mem::size_of::<Watch>(), 16);
        assert_eq!(core::mem::size_of::<NonceKey>(), 24);
        assert_eq!(core::mem::size_of::<ExchangeKey>(), 24);
        assert_eq!(core::mem::size_of::<Exchange>(), 24);
    }

    #[test]
    fn ban_expiry() {
        let permanent = BanValue::default();
        assert!(permanent.active_at(u64::MAX));
        let timed = BanValue {
            expires_ns: 100,
            ..Default::default()
        };
        assert!(timed.active_at(99));
        assert!(!timed.active_at(100));
    }

    #[test]
    fn reply_codes() {
        assert_eq!(Reply::of_status(*b"401"), Some(Reply::Unauthorized401));
        assert_eq!(Reply::of_status(*b"407"), Some(Reply::ProxyAuth407));
        assert_eq!(Reply::of_status(*b"404"), Some(Reply::NotFound404));
        assert_eq!(Reply::of_status(*b"403"), Some(Reply::Forbidden403));
        assert_eq!(Reply::of_status(*b"200"), Some(Reply::Success));
        assert_eq!(Reply::of_status(*b"202"), Some(Reply::Success));
        assert_eq!(Reply::of_status(*b"180"), None);
        assert_eq!(Reply::of_status(*b"486"), None);
    }

    #[test]
    fn reasons_round_trip() {
        for v in 1..=7 {
            assert_eq!(BanReason::from_u32(v).unwrap() as u32, v);
        }
        assert!(BanReason::from_u32(0).is_none());
    }
}
