//! sip-xdp: per-packet SIP flood filter. Cheapest decisive check first:
//! parse, SIP port, exact ban, allow-list, block-list, classify, account.
#![no_std]
#![no_main]
// Atomic add on a map value shared by all CPUs: core's AtomicU64 has no
// fetch_add on the BPF target, the intrinsic lowers to BPF_ATOMIC add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod runtime;

mod maps;
mod parse;

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::MaybeUninit,
};

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_coarse_ns,
    macros::xdp,
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use maps::{ALLOW, BANS, BLOCK, CONFIG, SIP_PORTS, SOURCES, STATS};
use network_types::udp::UdpHdr;
use parse::{ptr_at, Truncated, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP};
use sip_xdp_common::{
    classify, classify::SIP_CLASSES, Counter, IpKey, SipClass, SourceStats, CLASSIFY_LEN,
};

#[xdp]
pub fn sip_xdp(ctx: XdpContext) -> u32 {
    // A filter that cannot parse a packet lets the stack judge it.
    match filter(&ctx) {
        Ok(action) => action,
        Err(Truncated) => pass(Counter::Truncated),
    }
}

#[inline(always)]
fn filter(ctx: &XdpContext) -> Result<u32, Truncated> {
    let (ether_type, l3_off) = parse::ethernet(ctx)?;
    let l3 = match ether_type {
        ETH_P_IPV4 => parse::ipv4(ctx, l3_off)?,
        ETH_P_IPV6 => parse::ipv6(ctx, l3_off)?,
        _ => return Ok(pass(Counter::NonIp)),
    };
    let src = l3.src;
    if l3.no_l4 {
        // No port to look at. Fragments of a banned or blocked source are
        // dropped so its large INVITEs never reassemble; anyone else's pass.
        return Ok(match source_rules(&src) {
            Source::Banned => drop(Counter::Banned),
            Source::Blocked => drop(Counter::Blocked),
            Source::Allowed | Source::Unknown => pass(Counter::Fragment),
        });
    }
    if l3.proto != IPPROTO_UDP {
        return Ok(pass(Counter::NonUdp));
    }
    let (dport, payload_len) = parse::udp(ctx, l3.l4_off)?;
    if !is_sip_port(dport) {
        return Ok(pass(Counter::OtherPort));
    }
    let allowed = match source_rules(&src) {
        Source::Banned => return Ok(drop(Counter::Banned)),
        Source::Blocked => return Ok(drop(Counter::Blocked)),
        Source::Allowed => true,
        Source::Unknown => false,
    };
    let class = classify_payload(ctx, l3.l4_off + UdpHdr::LEN, payload_len);
    count(class_counter(class));
    let drop_it = !allowed && class == SipClass::Malformed && drop_malformed();
    account(ctx, &src, class, drop_it);
    Ok(if allowed {
        pass(Counter::Allowed)
    } else if drop_it {
        drop(Counter::Malformed)
    } else {
        pass(Counter::Sip)
    })
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
    if let Some(ban) = BANS.get_ptr_mut(src) {
        let ban = unsafe { &mut *ban };
        // Permanent bans skip the clock. Timed ones use the coarse clock: a
        // tick of lag on expiry costs nothing, a TSC read per packet would.
        if ban.expires_ns == 0 || ban.active_at(unsafe { bpf_ktime_get_coarse_ns() }) {
            // Atomic: several RX queues may drop for the same source.
            bump(&ban.hits);
            return Source::Banned;
        }
        count(Counter::BanExpired);
    }
    let key = Key::new(128, *src);
    if ALLOW.get(&key).is_some() {
        return Source::Allowed;
    }
    if let Some(rule) = BLOCK.get(&key) {
        if rule.expires_ns == 0 || rule.active_at(unsafe { bpf_ktime_get_coarse_ns() }) {
            bump(&rule.hits);
            return Source::Blocked;
        }
    }
    Source::Unknown
}

/// Atomically adds one to a hit counter living in a map value shared by all
/// CPUs.
#[inline(always)]
fn bump(hits: &u64) {
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(hits as *const u64 as *mut u64, 1)
    };
}

#[inline(always)]
fn is_sip_port(port: u16) -> bool {
    match SIP_PORTS.get(u32::from(port >> 6)) {
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
    // Native (little-endian) words laid out as the bytes they were read from.
    let buf: [u8; CLASSIFY_LEN] = unsafe { core::mem::transmute(words) };
    classify(&buf, len)
}

/// Fewer than `CLASSIFY_LEN` bytes left: byte by byte, each access checked.
/// The length comes from `data_end`, not from the loop counter: a constant
/// per loop exit would make the verifier walk the classifier once per exit.
#[inline(always)]
fn short_payload(ctx: &XdpContext, off: usize) -> ([u64; 2], usize) {
    let (start, end) = (ctx.data() + off, ctx.data_end());
    let len = end.saturating_sub(start);
    let (mut lo, mut hi) = (0u64, 0u64);
    for i in 0..CLASSIFY_LEN {
        let Ok(p) = ptr_at::<u8>(ctx, off + i) else {
            break;
        };
        let b = u64::from(unsafe { *p });
        if i < 8 {
            lo |= b << (8 * i);
        } else {
            hi |= b << (8 * (i - 8));
        }
    }
    ([lo, hi], len.min(CLASSIFY_LEN))
}

#[inline(always)]
fn account(ctx: &XdpContext, src: &IpKey, class: SipClass, dropped: bool) {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let c = class as usize;
    match SOURCES.get_ptr_mut(src) {
        Some(s) => {
            let s = unsafe { &mut *s };
            s.packets += 1;
            s.bytes += bytes;
            s.last_seen_ns = now;
            if let Some(n) = s.class.get_mut(c) {
                *n = n.wrapping_add(1);
            }
            s.dropped = s.dropped.wrapping_add(u32::from(dropped));
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
            }
            let _ = SOURCES.insert(src, unsafe { s.assume_init_ref() }, 0);
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
        SipClass::Malformed => Counter::ClassMalformed,
    }
}

#[inline(always)]
fn drop_malformed() -> bool {
    CONFIG.get(0).is_some_and(|c| c.drop_malformed())
}

#[inline(always)]
fn count(c: Counter) {
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
fn drop(reason: Counter) -> u32 {
    if CONFIG.get(0).is_some_and(|c| c.monitor()) {
        count(reason.monitored());
        XDP_PASS
    } else {
        count(reason);
        XDP_DROP
    }
}
