//! TC egress: counts the SBC's own final responses per client address, so
//! the controller sees password guessing (401/407/403 with no answered
//! challenge) and extension enumeration (404) without reading any SIP
//! server's database; and feeds the exchange (`crate::exchange`) with the
//! SBC's challenges, 2xx and requests. It only counts: every packet
//! continues.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_ktime_get_coarse_ns, macros::classifier,
    programs::TcContext,
};
use sip_xdp_common::{
    classify,
    frame::{self, Shape, IPPROTO_UDP},
    maps::{Reply, ReplyStats},
    Counter, IpKey, SipClass, CLASSIFY_LEN,
};

use crate::{
    count,
    exchange::{self, Mode},
    is_sip_port,
    maps::{CONFIG, REPLIES, TRUST_PROG},
    parse::{ptr_at, Pkt, Truncated},
};

/// TC_ACT_UNSPEC (TCX_NEXT): let the next program or the default decide.
const NEXT: i32 = -1;

const STATUS_PREFIX: u64 = u64::from_le_bytes(*b"SIP/2.0 ");

#[classifier]
pub fn sip_xdp_egress(ctx: TcContext) -> i32 {
    let _ = replies(&ctx);
    NEXT
}

#[inline(always)]
fn replies(ctx: &TcContext) -> Result<(), Truncated> {
    let p = Pkt::new(ctx)?;
    let Ok(net) = frame::network(&p) else {
        return Ok(());
    };
    if !matches!(net.shape, Shape::Whole | Shape::FirstFragment) || net.proto != IPPROTO_UDP {
        return Ok(());
    }
    // As on ingress: one walk of what follows, not one per header layout.
    let net = frame::Network {
        l4_off: p.offset(net.l4_off)?,
        ..net
    };
    let Ok(udp) = frame::udp(&p, &net) else {
        return Ok(());
    };
    // Responses leave from the SIP port the SBC listens on.
    if !udp.valid || !is_sip_port(udp.src_port) || udp.payload_len < 12 {
        return Ok(());
    }
    let payload_off = udp.payload_off;
    let line = ptr_at::<[u8; 12]>(ctx, payload_off)?;
    let line = unsafe { *line };
    let prefix = u64::from_le_bytes([
        line[0], line[1], line[2], line[3], line[4], line[5], line[6], line[7],
    ]);
    let payload_len = udp.payload_len;
    if prefix != STATUS_PREFIX || line[11] != b' ' {
        if is_request(ctx, payload_off)? {
            hand_to_trust(ctx, &net.dst, payload_off, payload_len, Mode::Ask);
        }
        return Ok(());
    }
    let code = [line[8], line[9], line[10]];
    let Some(reply) = Reply::of_status(code) else {
        // A call that passed its challenge and ended without a 2xx (busy,
        // no answer, declined, redirected) answered the challenge too.
        let outcome =
            code[0] == b'3' || matches!(&code, b"480" | b"486" | b"487" | b"600" | b"603");
        if outcome && exchange::watched(&net.dst, unsafe { bpf_ktime_get_coarse_ns() }).is_some() {
            hand_to_trust(ctx, &net.dst, payload_off, payload_len, Mode::Outcome);
        }
        return Ok(());
    };
    count(match reply {
        Reply::Success | Reply::InviteAnswered => Counter::ReplySuccess,
        Reply::Unauthorized401 => Counter::Reply401,
        Reply::Forbidden403 => Counter::Reply403,
        Reply::NotFound404 => Counter::Reply404,
        Reply::ProxyAuth407 => Counter::Reply407,
    });
    // Last: a tail call does not come back.
    match reply {
        // Counted for the client by the trust program, if it answers a
        // challenge.
        Reply::Success => hand_to_trust(ctx, &net.dst, payload_off, payload_len, Mode::Answer),
        Reply::Unauthorized401 | Reply::ProxyAuth407 => {
            count_reply(&net.dst, reply, unsafe { bpf_ktime_get_coarse_ns() });
            hand_to_trust(ctx, &net.dst, payload_off, payload_len, Mode::Challenge);
        }
        _ => count_reply(&net.dst, reply, unsafe { bpf_ktime_get_coarse_ns() }),
    }
    Ok(())
}

/// Adds one `reply` to the counts of `dst`'s prefix (as the ingress side
/// counts requests). Two CPUs may answer the same client at once: the adds
/// are atomic, and an insert that lost the race to create the entry adds
/// to the winner's instead of replacing it.
#[inline(always)]
fn count_reply(dst: &IpKey, reply: Reply, now: u64) {
    let client = match CONFIG.get(0) {
        Some(c) => c.source_key(dst),
        None => *dst,
    };
    let (client, i) = (&client, reply as usize);
    if let Some(r) = REPLIES.get_ptr_mut(client) {
        add_reply(unsafe { &mut *r }, i, now);
        return;
    }
    let mut fresh = ReplyStats {
        last_seen_ns: now,
        ..Default::default()
    };
    if let Some(n) = fresh.codes.get_mut(i) {
        *n = 1;
    }
    if REPLIES.insert(client, fresh, BPF_NOEXIST as u64).is_err() {
        if let Some(r) = REPLIES.get_ptr_mut(client) {
            add_reply(unsafe { &mut *r }, i, now);
        }
    }
}

#[inline(always)]
fn add_reply(r: &mut ReplyStats, i: usize, now: u64) {
    if let Some(n) = r.codes.get_mut(i) {
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(n as *mut u32, 1) };
    }
    r.last_seen_ns = now;
}

/// Whether the payload at `off` starts with a SIP request line.
#[inline(always)]
fn is_request(ctx: &TcContext, off: usize) -> Result<bool, Truncated> {
    let head = ptr_at::<[u8; CLASSIFY_LEN]>(ctx, off)?;
    let head = unsafe { *head };
    Ok(matches!(
        classify(&head, CLASSIFY_LEN),
        SipClass::Register | SipClass::Invite | SipClass::Options | SipClass::OtherRequest
    ))
}

/// Passes a message to `dst` to the trust program, which scans its
/// headers.
#[inline(always)]
fn hand_to_trust(ctx: &TcContext, dst: &IpKey, off: usize, payload_len: usize, mode: Mode) {
    let frame = ctx.len() as usize;
    let len = payload_len.min(frame.saturating_sub(off));
    if exchange::fill_scratch(dst, off, len, mode as u32, false) {
        unsafe {
            TRUST_PROG.tail_call(ctx, 0);
        }
    }
}

/// Tail-called by the egress program for a challenge, a 2xx or a request
/// the SBC sends (`crate::exchange`).
#[classifier]
pub fn sip_xdp_trust(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let Some((scan, dst, mode, _)) = exchange::scan_scratch(false, |off, buf, n| unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(skb as *const _, off, buf, n)
    }) else {
        return NEXT;
    };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if mode == Mode::Challenge as u32 {
        exchange::challenged(&dst, &scan, now);
    } else if mode == Mode::Answer as u32 || mode == Mode::Outcome as u32 {
        if let Some(answers) = exchange::answered(&dst, &scan, now, mode == Mode::Answer as u32) {
            count_reply(&dst, answers, now);
        }
    } else if mode == Mode::Ask as u32 {
        exchange::asked(&dst, &scan, now);
    }
    NEXT
}
