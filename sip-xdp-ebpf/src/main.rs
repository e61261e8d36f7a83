//! sip-xdp: per-packet SIP flood filter. Cheapest decisive check first:
//! parse, SIP port, exact ban, allow-list, block-list, classify, rate limit,
//! account, sample. Also the egress program that counts the SBC's final
//! responses per client (`egress`).
#![no_std]
#![no_main]
// Atomic add on a map value shared by all CPUs: core's AtomicU64 has no
// fetch_add on the BPF target, the intrinsic lowers to BPF_ATOMIC add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod runtime;

mod egress;
mod exchange;
mod maps;
mod parse;

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::MaybeUninit,
};

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        BPF_NOEXIST,
    },
    helpers::{bpf_ktime_get_coarse_ns, generated::bpf_xdp_load_bytes},
    macros::xdp,
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use maps::{
    ALLOW, ALLOW_HINT, BANS, BAN_INDEX, BLOCK, CONFIG, HOT0, HOT1, PROOF_HINT, RATE, REMEMBERED,
    SAMPLES, SAMPLE_BUDGET, SHED, SIP_PORTS, SOURCES, STATS, STRANGERS, TCP_PORTS, UNIT, VERIFIED,
};
use parse::{ptr_at, Pkt, Truncated, MAX_OFFSET};
use sip_xdp_common::{
    addr::Words,
    admission, banindex,
    classify::{classify_words, SIP_CLASSES},
    config::SAMPLE_MAX_PAYLOAD,
    frame::{self, Refusal, Shape, IPPROTO_TCP, IPPROTO_UDP},
    hints,
    maps::{RateState, Sample, SampleKind},
    Counter, IpKey, KernelConfig, SipClass, SourceStats, CLASSIFY_LEN,
};

#[xdp]
pub fn sip_xdp(ctx: XdpContext) -> u32 {
    // A filter that cannot parse a packet lets the stack judge it.
    match filter(&ctx) {
        Ok(action) => action,
        Err(Truncated) => pass(Counter::Truncated),
    }
}

/// Judges one frame, in the order docs/detection.md gives ("How a packet
/// is judged"). Long on purpose: the steps read top to bottom as that
/// list does, each one short and calling out for its work.
#[inline(always)]
fn filter(ctx: &XdpContext) -> Result<u32, Truncated> {
    let p = Pkt::new(ctx)?;
    let net = match frame::network(&p) {
        Ok(n) => n,
        Err(Refusal::NotIp) => return Ok(pass(Counter::NonIp)),
        // Linux drops these as well, and counts them in its own statistics.
        Err(Refusal::Truncated) => return Ok(pass(Counter::Truncated)),
        Err(Refusal::Invalid) => return Ok(drop(Counter::Invalid, monitor())),
    };
    let (src, words) = opaque_source(&p, &net.src);
    if net.shape == Shape::LaterFragment {
        // No port to look at. Fragments of a banned or blocked source are
        // dropped so its large INVITEs never reassemble; anyone else's pass
        // (the first fragment, which holds the ports, was judged).
        return Ok(match source_rules(&src) {
            Source::Banned => drop(Counter::Banned, monitor()),
            Source::Blocked => drop(Counter::Blocked, monitor()),
            Source::Allowed | Source::Unknown => pass(Counter::Fragment),
        });
    }
    // A one-entry array always has its entry.
    let Some(cfg) = CONFIG.get(0) else {
        return Ok(pass(Counter::NonUdp));
    };
    let long_chain = net.shape == Shape::LongChain;
    if !long_chain && net.proto != IPPROTO_UDP {
        let sip_tcp = net.proto == IPPROTO_TCP
            && frame::tcp_dst_port(&p, &net).is_ok_and(|port| in_ports(&TCP_PORTS, port));
        return Ok(enforce_only(
            &src,
            sip_tcp || cfg.ban_all(),
            cfg,
            Counter::NonUdp,
        ));
    }
    let net = frame::Network {
        l4_off: p.offset(net.l4_off)?,
        ..net
    };
    // A chain no stack sends is judged as SIP that cannot be read: its
    // port lies past the walk.
    let udp = if long_chain {
        frame::Udp {
            src_port: 0,
            dst_port: 0,
            payload_off: net.l4_off + 8,
            payload_len: 0,
            valid: false,
        }
    } else {
        let udp = match frame::udp(&p, &net) {
            Ok(u) => u,
            Err(Refusal::Truncated) => return Ok(pass(Counter::Truncated)),
            Err(_) => return Ok(drop(Counter::Invalid, cfg.monitor())),
        };
        if !is_sip_port(udp.dst_port) {
            return Ok(enforce_only(&src, cfg.ban_all(), cfg, Counter::OtherPort));
        }
        // A payload past the bound (a jumbo frame in generic mode) cannot
        // be laundered whole: unreadable, never passed unjudged.
        if udp.payload_len > MAX_OFFSET as usize {
            frame::Udp {
                payload_len: 0,
                valid: false,
                ..udp
            }
        } else {
            udp
        }
    };
    let udp = opaque_payload(&p, &udp)?;
    let invalid = !udp.valid;
    // Overload is judged first, and writes nothing for the source: a
    // storm's packet is shed before the ban check and the lists, at the
    // least cost the program has, and a storm of new sources evicts no
    // one.
    let shed = sheds((&src, fresh(&p, words)), cfg);
    if shed {
        if !cfg.monitor() {
            count(Counter::Shed);
            return Ok(XDP_DROP);
        }
        count(Counter::MonitorShed);
    }
    let allowed = match banned_or_allowed(&src) {
        Source::Banned => return Ok(drop(Counter::Banned, cfg.monitor())),
        Source::Allowed => true,
        Source::Blocked | Source::Unknown => false,
    };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !allowed {
        // Blocked sources never count toward the mark or take a share.
        if blocked(&src) {
            return Ok(drop(Counter::Blocked, cfg.monitor()));
        }
        if !shed && !admit((&src, fresh(&p, words)), now, cfg) {
            return Ok(drop(Counter::Shed, cfg.monitor()));
        }
    }
    // Counted, limited and sampled by prefix (an IPv6 host owns its /64);
    // bans and the lists above match the address itself.
    let acct = cfg.source_key(&src);
    // Everything that branches on the SIP class comes last before the
    // class goes dead: the verifier then walks the sampling code once per
    // rate state, not once per class as well.
    let rate = if !allowed && cfg.rate_limit != 0 {
        rate_check(&acct, now, cfg)
    } else {
        Rate::Under
    };
    if invalid {
        return Ok(unreadable(ctx, &acct, allowed, rate, now, cfg));
    }
    let class = opaque_class(&p, classify_payload(ctx, udp.off, udp.len));
    count(class_counter(class));
    let malformed = !allowed && class == SipClass::Malformed && cfg.drop_malformed();
    let (packets, idle) = account(
        ctx,
        &acct,
        class,
        malformed || rate != Rate::Under,
        now,
        cfg.hot_at,
    );
    if allowed {
        // Trusted: no limit, no samples, but still visible in `top`.
        return Ok(pass(Counter::Allowed));
    }
    let kind = if rate == Rate::Crossed {
        Some(SampleKind::RateLimit)
    } else if cfg.wants_sample(packets) || cfg.starts_burst(idle) {
        Some(
            if packets <= u64::from(cfg.sample_first) || cfg.starts_burst(idle) {
                SampleKind::First
            } else {
                SampleKind::Trickle
            },
        )
    } else {
        None
    };
    if let Some(kind) = kind {
        sample(ctx, &src, &udp, kind, now, cfg);
    }
    Ok(if rate != Rate::Under {
        drop(Counter::RateLimited, cfg.monitor())
    } else if malformed {
        drop(Counter::Malformed, cfg.monitor())
    } else {
        // The exchange gives the verdict and counts it.
        exchange::hand_over(ctx, &src, udp.off, udp.len);
        pass(Counter::Sip)
    })
}

/// A frame to a SIP port that cannot be read to its payload, or whose
/// lengths Linux refuses (`frame::Udp::valid`): never judged more
/// leniently than SIP. Counted against its source as malformed and under
/// its rate limit, and dropped, unless the source is on the allow-list.
/// Not sampled: there is no payload to read.
#[inline(always)]
fn unreadable(
    ctx: &XdpContext,
    acct: &IpKey,
    allowed: bool,
    rate: Rate,
    now: u64,
    cfg: &KernelConfig,
) -> u32 {
    count(Counter::ClassMalformed);
    let _ = account(ctx, acct, SipClass::Malformed, !allowed, now, cfg.hot_at);
    if allowed {
        pass(Counter::Allowed)
    } else if rate != Rate::Under {
        drop(Counter::RateLimited, cfg.monitor())
    } else {
        drop(Counter::Invalid, cfg.monitor())
    }
}

#[inline(always)]
fn monitor() -> bool {
    CONFIG.get(0).is_some_and(|c| c.monitor())
}

/// The source address, through map memory as the L4 offset is
/// (`Pkt::launder`, eight bytes at a time): an IPv4 source is built with
/// constant bytes and an IPv6 one read whole, and the verifier would
/// otherwise walk the rest of the program once for each.
#[inline(always)]
fn opaque_source(p: &Pkt<XdpContext>, src: &IpKey) -> (IpKey, Words) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&src[..8]);
    lo.copy_from_slice(&src[8..]);
    let hi = p.launder(u64::from_ne_bytes(hi)).to_ne_bytes();
    let lo = p.launder(u64::from_ne_bytes(lo)).to_ne_bytes();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hi);
    out[8..].copy_from_slice(&lo);
    (
        out,
        Words::of_native(u64::from_ne_bytes(hi), u64::from_ne_bytes(lo)),
    )
}

/// The source's words again, through map memory: each use branches on
/// them (IPv4 or IPv6, which hint bit), and the verifier would carry what
/// one use learnt into every later one, walking the rest of the program
/// once per answer. The copies it learns about die with the use.
#[inline(always)]
fn fresh(p: &Pkt<XdpContext>, w: Words) -> Words {
    Words {
        hi: p.launder(w.hi),
        lo: p.launder(w.lo),
    }
}

/// The payload's bounds and validity, through map memory as the L4
/// offset is (`Pkt::offset`): the parser reaches them by as many paths
/// as it has length rules, and the rest of the program is walked once,
/// not once per path. The ports are left behind: `sample` reads them
/// again.
#[inline(always)]
fn opaque_payload(p: &Pkt<XdpContext>, udp: &frame::Udp) -> Result<Payload, Truncated> {
    let word = udp.payload_off as u64 | (udp.payload_len as u64) << 16 | u64::from(udp.valid) << 32;
    let word = p.launder(word);
    let (off, len) = (word & 0xffff, word >> 16 & 0xffff);
    // Past any frame XDP is given, jumbo ones included.
    if off > MAX_OFFSET + 8 || len > MAX_OFFSET {
        return Err(Truncated);
    }
    Ok(Payload {
        off: off as usize,
        len: len as usize,
        valid: word >> 32 != 0,
    })
}

/// Where a datagram's payload lies in the frame, and whether the parser
/// could read it (`frame::Udp`).
#[derive(Clone, Copy)]
struct Payload {
    off: usize,
    len: usize,
    valid: bool,
}

/// The class, through map memory as the L4 offset is (`Pkt::offset`):
/// the rest of the program is walked once per class, not once per path
/// through the classifier (whose CR/LF skip and scheme test doubled the
/// walk without it).
#[inline(always)]
fn opaque_class(p: &Pkt<XdpContext>, class: SipClass) -> SipClass {
    match p.launder(class as u64) {
        0 => SipClass::Register,
        1 => SipClass::Invite,
        2 => SipClass::Options,
        3 => SipClass::OtherRequest,
        4 => SipClass::Response,
        5 => SipClass::Keepalive,
        7 => SipClass::SigComp,
        _ => SipClass::Malformed,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rate {
    Under,
    /// This packet is the first over the limit in the window.
    Crossed,
    Over,
}

/// Fixed-window count per source, shared by all CPUs. Two CPUs opening a
/// new window at once can each reset it: the limit is then loose by a few
/// packets, never tight, which is the safe side for legitimate traffic.
#[inline(always)]
fn rate_check(src: &IpKey, now: u64, cfg: &KernelConfig) -> Rate {
    let Some(r) = RATE.get_ptr_mut(src) else {
        let fresh = RateState {
            window_start_ns: now,
            count: 1,
        };
        let _ = RATE.insert(src, fresh, 0);
        return Rate::Under;
    };
    let r = unsafe { &mut *r };
    if now.wrapping_sub(r.window_start_ns) >= cfg.rate_window_ns {
        r.window_start_ns = now;
        r.count = 1;
        return Rate::Under;
    }
    // The object is built for BPF CPU v1, whose atomic add returns nothing:
    // add, then read. Two CPUs racing past the limit may both see a count
    // beyond it and report no crossing; the sampling pass still finds the
    // source within one unit.
    bump(&r.count);
    let after = unsafe { core::ptr::read_volatile(&r.count) };
    let limit = u64::from(cfg.rate_limit);
    if after <= limit {
        Rate::Under
    } else if after == limit + 1 {
        Rate::Crossed
    } else {
        Rate::Over
    }
}

/// Copies the packet's addresses and up to `SAMPLE_MAX_PAYLOAD` payload
/// bytes into the ring buffer for the controller's SIP parser. A full ring
/// or a spent per-CPU budget loses the sample, never the packet.
///
/// Everything here goes through `bpf_xdp_load_bytes` at the offset
/// `Pkt::offset` read back from map memory, whose value the verifier
/// knows only by its bound, so it walks this code once.
#[inline(always)]
fn sample(
    ctx: &XdpContext,
    src: &IpKey,
    udp: &Payload,
    kind: SampleKind,
    now: u64,
    cfg: &KernelConfig,
) {
    let Some(b) = SAMPLE_BUDGET.get_ptr_mut(0) else {
        return;
    };
    let b = unsafe { &mut *b };
    // A rate-limit crossing is one per source per window and is what the
    // controller bans on at once: it never waits for budget.
    if kind != SampleKind::RateLimit {
        if now.wrapping_sub(b.slot_start_ns) >= 1_000_000_000 {
            b.slot_start_ns = now;
            b.taken = 0;
        }
        if b.taken >= u64::from(cfg.sample_per_sec) {
            count(Counter::SampleBudget);
            return;
        }
        b.taken += 1;
    }
    let mut ports = [0u8; 4];
    let at = udp.off.wrapping_sub(8) as u32;
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, at, ports.as_mut_ptr() as *mut _, 4) } != 0 {
        return;
    }
    let Some(mut entry) = SAMPLES.reserve::<Sample>(0) else {
        count(Counter::SampleRingFull);
        return;
    };
    let p = entry.as_mut_ptr();
    // The parser bounded the payload by the IP datagram, so the sample
    // never holds bytes past it.
    let n = udp.len.min(SAMPLE_MAX_PAYLOAD) as u32;
    // Read back through memory, so that LLVM knows nothing of it and
    // cannot fold the two bounds into one unsigned compare the verifier
    // cannot follow: the length passed is masked into 1..=1024, which is
    // `n` itself for every `n` the min above leaves.
    let n = unsafe { core::ptr::read_volatile(&n) };
    const _: () = assert!(SAMPLE_MAX_PAYLOAD.is_power_of_two());
    let copied = n != 0 && {
        let len = ((n - 1) & (SAMPLE_MAX_PAYLOAD as u32 - 1)) + 1;
        let buf = unsafe { core::ptr::addr_of_mut!((*p).payload) } as *mut core::ffi::c_void;
        (unsafe { bpf_xdp_load_bytes(ctx.ctx, udp.off as u32, buf, len) }) == 0
    };
    unsafe {
        let h = core::ptr::addr_of_mut!((*p).header);
        (*h).ts_ns = now;
        (*h).src = *src;
        (*h).src_port = u16::from_be_bytes([ports[0], ports[1]]);
        (*h).dst_port = u16::from_be_bytes([ports[2], ports[3]]);
        (*h).payload_len = udp.len as u16;
        (*h).cap_len = if copied { n as u16 } else { 0 };
        (*h).kind = kind as u8;
        (*h)._pad = [0; 7];
    }
    entry.submit(0);
    count(Counter::Sampled);
}

enum Source {
    Banned,
    Allowed,
    Blocked,
    Unknown,
}

/// Exact ban, then allow-list, then block-list. Bans come first because the
/// controller never bans an allow-listed address; the allow-list then beats
/// every block CIDR.
#[inline(always)]
fn source_rules(src: &IpKey) -> Source {
    match banned_or_allowed(src) {
        Source::Unknown if blocked(src) => Source::Blocked,
        other => other,
    }
}

/// The exact ban and the allow-list (`source_rules` without the
/// block-list).
#[inline(always)]
fn banned_or_allowed(src: &IpKey) -> Source {
    match indexed_ban(src) {
        Indexed::Banned => return Source::Banned,
        // The index answers for BANS: a legitimate IPv4 source skips the
        // costliest lookup of its path.
        Indexed::NotBanned => {}
        Indexed::AskBans => {
            if let Some(ban) = BANS.get_ptr_mut(src) {
                let ban = unsafe { &mut *ban };
                // Permanent bans skip the clock. Timed ones use the coarse
                // clock: a tick of lag on expiry costs nothing, a TSC read
                // per packet would.
                if ban.expires_ns == 0 || ban.active_at(unsafe { bpf_ktime_get_coarse_ns() }) {
                    // Atomic: several RX queues may drop for the same source.
                    bump(&ban.hits);
                    return Source::Banned;
                }
                count(Counter::BanExpired);
            }
        }
    }
    let key = Key::new(128, *src);
    if ALLOW.get(&key).is_some() {
        return Source::Allowed;
    }
    Source::Unknown
}

/// Whether the allow hint sends `src` to the trie: a clear bit means no
/// entry covers it (`sip_xdp_common::hints`). Read only by overload's
/// first pass: everywhere else the trie answers, so a bit missing (an
/// entry written by a binary of another build, until the controller's
/// check) can at worst shed an allowed source in overload, never judge
/// it as a stranger otherwise.
#[inline(always)]
fn may_be_allowed(src: Words) -> bool {
    let (slot, v6) = hints::allow_slot_of(src);
    match (
        ALLOW_HINT.get(hints::ALLOW_HINT_FLAGS),
        ALLOW_HINT.get(slot.word),
    ) {
        (Some(flags), Some(word)) => hints::must_look(*flags, *word, slot, v6),
        _ => true,
    }
}

/// Whether the proof hint sends `src` to `VERIFIED` and `REMEMBERED`.
#[inline(always)]
fn may_be_proven(src: Words) -> bool {
    let slot = hints::proof_slot_of(src);
    match (
        PROOF_HINT.get(hints::PROOF_HINT_FLAGS),
        PROOF_HINT.get(slot.word),
    ) {
        (Some(flags), Some(word)) => hints::must_look(*flags, *word, slot, false),
        _ => true,
    }
}

/// Whether an active block-list CIDR holds `src` (counted on the rule).
#[inline(always)]
fn blocked(src: &IpKey) -> bool {
    let key = Key::new(128, *src);
    match BLOCK.get(&key) {
        Some(rule)
            if rule.expires_ns == 0 || rule.active_at(unsafe { bpf_ktime_get_coarse_ns() }) =>
        {
            bump(&rule.hits);
            true
        }
        _ => false,
    }
}

enum Indexed {
    Banned,
    NotBanned,
    /// An IPv6 source, a spilled bucket, or a slot expired or at its cap.
    AskBans,
}

/// The IPv4 ban index (`sip_xdp_common::banindex`): the bucket's five bans
/// and its spill mark share one cache line.
#[inline(always)]
fn indexed_ban(src: &IpKey) -> Indexed {
    let hi = u64::from_ne_bytes([
        src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
    ]);
    if hi != 0 || src[8] != 0 || src[9] != 0 || src[10] != 0xff || src[11] != 0xff {
        return Indexed::AskBans;
    }
    let a = banindex::addr_word([src[12], src[13], src[14], src[15]]);
    let Some(bucket) = BAN_INDEX.get(banindex::bucket_of(a)) else {
        return Indexed::AskBans;
    };
    for s in &bucket.slots {
        if s.addr == a && !s.is_empty() {
            // Permanent bans skip the clock, as in BANS: a helper call is
            // a visible share of a drop that costs one cache line.
            if s.hits >= banindex::HITS_CAP
                || (!s.is_permanent() && !s.active_at(unsafe { bpf_ktime_get_coarse_ns() }))
            {
                return Indexed::AskBans;
            }
            unsafe {
                atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(
                    &s.hits as *const u32 as *mut u32,
                    1,
                )
            };
            return Indexed::Banned;
        }
    }
    if bucket.spill != 0 {
        Indexed::AskBans
    } else {
        Indexed::NotBanned
    }
}

/// Atomically adds one to a hit counter living in a map value shared by all
/// CPUs. Exact: counting one hit in 16 past the first thousand (to spare
/// the shared line a write from every CPU) cost more per hot drop, with a
/// per-CPU tick or with `bpf_get_prandom_u32`, than it saved on two CPUs
/// (docs/benchmarks.md, "Design choices the measurements settled").
#[inline(always)]
fn bump(hits: &u64) {
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(hits as *const u64 as *mut u64, 1)
    };
}

/// Traffic the flood filter neither counts nor samples: SIP over TCP and
/// TLS, and with `ban_scope = "all"` everything else. A banned or blocked
/// source is still dropped there (`enforce`), so a scanner banned on UDP
/// cannot carry on over TCP; anyone else passes as `otherwise`.
#[inline(always)]
fn enforce_only(src: &IpKey, enforce: bool, cfg: &KernelConfig, otherwise: Counter) -> u32 {
    if !enforce {
        return pass(otherwise);
    }
    match source_rules(src) {
        Source::Banned => drop(Counter::Banned, cfg.monitor()),
        Source::Blocked => drop(Counter::Blocked, cfg.monitor()),
        Source::Allowed | Source::Unknown => pass(otherwise),
    }
}

#[inline(always)]
pub(crate) fn is_sip_port(port: u16) -> bool {
    in_ports(&SIP_PORTS, port)
}

#[inline(always)]
fn in_ports(map: &aya_ebpf::maps::Array<u64>, port: u16) -> bool {
    match map.get(u32::from(port >> 6)) {
        Some(word) => (*word >> (port & 63)) & 1 != 0,
        None => false,
    }
}

/// Copies up to `CLASSIFY_LEN` payload bytes to the stack and classifies them.
///
/// The copy is two 8-byte loads: a byte array initialised or copied as a
/// whole compiles to calls into byte-at-a-time memset/memmove subprograms on
/// the BPF target, which cost more than the classifier itself.
#[inline(always)]
fn classify_payload(ctx: &XdpContext, off: usize, payload_len: usize) -> SipClass {
    let (words, mut len) = match ptr_at::<[u64; 2]>(ctx, off) {
        Ok(p) => unsafe {
            let p = p as *const u64;
            (
                [p.read_unaligned(), p.add(1).read_unaligned()],
                CLASSIFY_LEN,
            )
        },
        Err(_) => short_payload(ctx, off),
    };
    if payload_len < len {
        len = payload_len;
    }
    // The words as loaded are the classifier's little-endian window.
    classify_words(words, len)
}

/// Fewer than `CLASSIFY_LEN` bytes left (keep-alives, truncated frames):
/// one bounded helper copy instead of a byte loop, whose per-byte packet
/// checks LLVM folds into compares the verifier cannot follow.
#[inline(always)]
fn short_payload(ctx: &XdpContext, off: usize) -> ([u64; 2], usize) {
    let left = ctx.data_end().saturating_sub(ctx.data() + off);
    let mut words = [0u64; 2];
    let n = left.min(CLASSIFY_LEN) as u32;
    if n > 0 && n <= CLASSIFY_LEN as u32 {
        let buf = words.as_mut_ptr() as *mut core::ffi::c_void;
        let len = parse::helper_len(n, CLASSIFY_LEN as u32);
        if unsafe { bpf_xdp_load_bytes(ctx.ctx, off as u32, buf, len) } != 0 {
            return ([0, 0], 0);
        }
    }
    (words, n as usize)
}

/// Overload admission (`sip_xdp_common::admission`), first pass: whether
/// the packet is shed, before the ban check and the lists, so that a
/// storm's packet costs the least the program has. Writes nothing but a
/// shed stranger's offer in its bucket; what an admitted packet takes is
/// written by `admit`, once the source is known to be neither banned nor
/// on a list (a banned flood must not push a CPU past its mark).
///
/// Under this CPU's load mark for the current window everyone goes on;
/// past it, a source that proved its address (`VERIFIED` now, or
/// `REMEMBERED`), or a stranger while the strangers' share and its
/// bucket's share last (a busy bucket, half the share). Overload ends by
/// itself with the window (about a second) in which the load falls under
/// the mark.
#[inline(always)]
fn sheds((src, words): (&IpKey, Words), cfg: &KernelConfig) -> bool {
    let cfg = &knobs(cfg);
    let w = match SHED.get_ptr(0) {
        Some(w) if cfg.shed_per_cpu != 0 => unsafe { &*w },
        _ => return false,
    };
    // A count under the mark is under it in any window, the current one
    // or a later one (which starts at zero): no clock needed, so a banned
    // source's drop, which follows, pays none.
    if w.packets < u64::from(cfg.shed_per_cpu) {
        return false;
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if admission::window_of(now) != admission::window_of(w.start_ns) {
        return false;
    }
    // The allow-list is asked after the ban check; a source it may hold
    // is judged then.
    if may_be_allowed(words) || proven(src, words, now) {
        return false;
    }
    match offer((src, words), now, cfg) {
        Some(Offered::Shed) | None => true,
        Some(Offered::Admit(..)) => false,
    }
}

/// Overload admission, second pass, for a source neither banned nor on a
/// list: whether it goes on, writing what it takes (its place under the
/// mark, or its bucket's and the share's). Judges as `sheds` did, on the
/// same state.
#[inline(always)]
fn admit((src, words): (&IpKey, Words), now: u64, cfg: &KernelConfig) -> bool {
    let cfg = &knobs(cfg);
    let w = match SHED.get_ptr_mut(0) {
        Some(w) if cfg.shed_per_cpu != 0 => unsafe { &mut *w },
        _ => return true,
    };
    // The buckets' window: a phone's REGISTER and its answer to the
    // challenge fall in one window of both or in the next of both.
    if admission::window_of(now) != admission::window_of(w.start_ns) {
        w.start_ns = now;
        w.packets = 0;
        w.admitted = 0;
        w.busy = 0;
    }
    if w.packets < u64::from(cfg.shed_per_cpu) {
        w.packets += 1;
        return true;
    }
    if proven(src, words, now) {
        count(Counter::AdmitProven);
        return true;
    }
    match offer((src, words), now, cfg) {
        Some(Offered::Admit(word, o)) => {
            let word = unsafe { &mut *word };
            *word = o.admitted;
            w.admitted += 1;
            w.busy += u64::from(o.busy);
            count(Counter::AdmitStranger);
            true
        }
        Some(Offered::Shed) | None => false,
    }
}

/// Whether `src` proved its address: verified now, or remembered. The
/// proof hint spares a stranger both lookups.
#[inline(always)]
fn proven(src: &IpKey, words: Words, now: u64) -> bool {
    may_be_proven(words)
        && (VERIFIED
            .get_ptr(src)
            .is_some_and(|v| unsafe { (*v).active_at(now) })
            || REMEMBERED
                .get_ptr(src)
                .is_some_and(|until| unsafe { *until } > now))
}

/// Admission's settings, read afresh by each pass: values kept in
/// registers from one pass to the other would carry what the first pass
/// learnt of them through the ban check, which the verifier would then
/// walk once per thing learnt.
struct Knobs {
    shed_per_cpu: u32,
    strangers_per_cpu: u32,
    bucket_cap: u32,
    bucket_prefix_v4: u16,
    bucket_prefix_v6: u16,
    bucket_seed: u64,
}

#[inline(always)]
fn knobs(cfg: &KernelConfig) -> Knobs {
    unsafe {
        Knobs {
            shed_per_cpu: core::ptr::read_volatile(&cfg.shed_per_cpu),
            strangers_per_cpu: core::ptr::read_volatile(&cfg.strangers_per_cpu),
            bucket_cap: core::ptr::read_volatile(&cfg.bucket_cap),
            bucket_prefix_v4: core::ptr::read_volatile(&cfg.bucket_prefix_v4),
            bucket_prefix_v6: core::ptr::read_volatile(&cfg.bucket_prefix_v6),
            bucket_seed: core::ptr::read_volatile(&cfg.bucket_seed),
        }
    }
}

enum Offered {
    /// The bucket's word and the offer that would admit the stranger.
    Admit(*mut admission::BucketWord, admission::Offer),
    /// Counted in its bucket, and shed.
    Shed,
}

/// A stranger past the mark offered to its bucket: shed (the offer
/// counted: every offer counts, admitted or not, which is what makes a
/// storm's bucket busy in its next window) or let through by the bucket
/// and the share, written by the caller. `None`: no bucket.
#[inline(always)]
fn offer((_, words): (&IpKey, Words), now: u64, cfg: &Knobs) -> Option<Offered> {
    let w = unsafe { &*SHED.get_ptr(0)? };
    let b = admission::bucket_of_words(
        words,
        u32::from(cfg.bucket_prefix_v4),
        u32::from(cfg.bucket_prefix_v6),
        cfg.bucket_seed,
    );
    let word = STRANGERS.get_ptr_mut(b)?;
    let o = admission::offer(unsafe { *word }, now, cfg.bucket_cap);
    let share = u64::from(cfg.strangers_per_cpu);
    if !o.open || w.admitted >= share || (o.busy && w.busy >= share / 2) {
        unsafe { *word = o.counted };
        return Some(Offered::Shed);
    }
    Some(Offered::Admit(word, o))
}

/// Counts the packet against its source; returns the source's packet count
/// on this CPU, this one included, and how long the source had been silent
/// on it (0 for a new one).
#[inline(always)]
fn account(
    ctx: &XdpContext,
    src: &IpKey,
    class: SipClass,
    dropped: bool,
    now: u64,
    hot_at: u32,
) -> (u64, u64) {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let c = class as usize;
    let unit = UNIT.get(0).copied().unwrap_or(0);
    match SOURCES.get_ptr_mut(src) {
        Some(s) => {
            let s = unsafe { &mut *s };
            let idle = now.saturating_sub(s.last_seen_ns);
            s.packets += 1;
            s.bytes += bytes;
            s.last_seen_ns = now;
            // A constant index per class, never the class as an offset:
            // LLVM knows the class is below SIP_CLASSES and emits no check,
            // and older verifiers (6.1) lose the bound once the class is
            // spilled. Volatile, or LLVM merges the arms into that offset.
            for k in 0..SIP_CLASSES {
                if c == k {
                    let n = &mut s.class[k];
                    unsafe { core::ptr::write_volatile(n, n.wrapping_add(1)) };
                }
            }
            s.dropped = s.dropped.wrapping_add(u32::from(dropped));
            if s.unit != unit {
                s.unit = unit;
                s.unit_packets = 0;
            }
            s.unit_packets = s.unit_packets.wrapping_add(1);
            if s.unit_packets == hot_at {
                file_hot(src, unit);
            }
            (s.packets, idle)
        }
        None => {
            // Field by field into uninitialised memory: a struct literal
            // compiles to a memset call (a byte loop on BPF) first. Every
            // byte is written: the struct has no padding.
            let mut s = MaybeUninit::<SourceStats>::uninit();
            let p = s.as_mut_ptr();
            unsafe {
                (*p).packets = 1;
                (*p).bytes = bytes;
                (*p).first_seen_ns = now;
                (*p).last_seen_ns = now;
                for k in 0..SIP_CLASSES {
                    // Volatile, or LLVM turns the loop back into a memset.
                    core::ptr::write_volatile(&mut (*p).class[k], u32::from(c == k));
                }
                (*p).dropped = u32::from(dropped);
                (*p).unit = unit;
                (*p).unit_packets = 1;
                (*p)._pad = 0;
            }
            let _ = SOURCES.insert(src, unsafe { s.assume_init_ref() }, 0);
            if hot_at == 1 {
                file_hot(src, unit);
            }
            (1, 0)
        }
    }
}

/// Charges a drop decided after `account` (shedding, or a verdict of the
/// exchange program) to the source's count on this CPU, so that `top`
/// shows every packet the program refused it.
#[inline(always)]
pub(crate) fn charge_drop(acct: &IpKey) {
    if let Some(s) = SOURCES.get_ptr_mut(acct) {
        let s = unsafe { &mut *s };
        s.dropped = s.dropped.wrapping_add(1);
    }
}

/// Files a source for the controller's pass over `unit`. Another CPU may
/// have filed it already (EEXIST); a full map is counted, and the
/// controller then sweeps every source.
#[inline(always)]
fn file_hot(src: &IpKey, unit: u32) {
    let map = if unit & 1 == 0 { &HOT0 } else { &HOT1 };
    if let Err(e) = map.insert(src, unit, BPF_NOEXIST as u64) {
        // E2BIG: the map is full.
        if e == -7 {
            count(Counter::HotFull);
        }
    }
}

#[inline(always)]
fn class_counter(class: SipClass) -> Counter {
    match class {
        SipClass::Register => Counter::ClassRegister,
        SipClass::Invite => Counter::ClassInvite,
        SipClass::Options => Counter::ClassOptions,
        SipClass::OtherRequest => Counter::ClassOtherRequest,
        SipClass::Response => Counter::ClassResponse,
        SipClass::Keepalive => Counter::ClassKeepalive,
        SipClass::SigComp => Counter::ClassSigComp,
        SipClass::Malformed => Counter::ClassMalformed,
    }
}

#[inline(always)]
pub(crate) fn count(c: Counter) {
    if let Some(p) = STATS.get_ptr_mut(c as u32) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn pass(reason: Counter) -> u32 {
    count(reason);
    XDP_PASS
}

/// Drops, unless monitor mode is on: then counts the would-be drop and passes.
#[inline(always)]
fn drop(reason: Counter, monitor: bool) -> u32 {
    if monitor {
        count(reason.monitored());
        XDP_PASS
    } else {
        count(reason);
        XDP_DROP
    }
}
