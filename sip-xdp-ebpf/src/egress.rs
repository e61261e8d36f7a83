//! TC egress: counts the SBC's own final responses per client address, so
//! the controller sees password guessing (401/407/403 with no 2xx) and
//! extension enumeration (404) without reading any SIP server's database;
//! and learns verified sources: the destination of a 2xx to REGISTER or
//! INVITE, or of a request the SBC sends. It only counts: every packet
//! continues.

use core::{
    ffi::c_void,
    intrinsics::{atomic_xadd, AtomicOrdering},
};

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::generated::bpf_loop, macros::classifier, programs::TcContext,
};
use network_types::udp::UdpHdr;
use sip_xdp_common::{
    classify,
    cseq::{cseq_step, method_after, CSeqMethod, CSEQ_SCAN},
    maps::{Reply, ReplyStats, Trust, Verified},
    Counter, IpKey, SipClass, CLASSIFY_LEN,
};

use crate::{
    count, is_sip_port,
    maps::{CONFIG, REPLIES, TRUST_PROG, TRUST_SCAN, VERIFIED},
    opaque_offset,
    parse::{self, ptr_at, Truncated, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP},
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
    let (ether_type, l3_off) = parse::ethernet(ctx)?;
    let l3 = match ether_type {
        ETH_P_IPV4 => parse::ipv4(ctx, l3_off)?,
        ETH_P_IPV6 => parse::ipv6(ctx, l3_off)?,
        _ => return Ok(()),
    };
    if l3.no_l4 || l3.proto != IPPROTO_UDP {
        return Ok(());
    }
    // As on ingress: one walk of what follows, not one per header layout.
    let l3 = parse::L3 {
        l4_off: opaque_offset(l3.l4_off)?,
        ..l3
    };
    let udp = parse::udp(ctx, l3.l4_off)?;
    // Responses leave from the SIP port the SBC listens on.
    if !is_sip_port(udp.src_port) || udp.payload_len < 12 {
        return Ok(());
    }
    let payload_off = l3.l4_off + UdpHdr::LEN;
    let line = ptr_at::<[u8; 12]>(ctx, payload_off)?;
    let line = unsafe { *line };
    let prefix = u64::from_le_bytes([
        line[0], line[1], line[2], line[3], line[4], line[5], line[6], line[7],
    ]);
    if prefix != STATUS_PREFIX || line[11] != b' ' {
        if is_request(ctx, payload_off)? {
            trust(&l3.dst, Trust::Peer);
        }
        return Ok(());
    }
    let Some(reply) = Reply::of_status([line[8], line[9], line[10]]) else {
        return Ok(());
    };
    count(match reply {
        Reply::Success => Counter::ReplySuccess,
        Reply::Unauthorized401 => Counter::Reply401,
        Reply::Forbidden403 => Counter::Reply403,
        Reply::NotFound404 => Counter::Reply404,
        Reply::ProxyAuth407 => Counter::Reply407,
    });
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() };
    // Per prefix, as the ingress side counts the requests.
    let client = match CONFIG.get(0) {
        Some(c) => c.source_key(&l3.dst),
        None => l3.dst,
    };
    count_reply(&client, reply as usize, now);
    if reply == Reply::Success {
        // Last: a tail call does not come back.
        hand_to_trust(ctx, &l3.dst, payload_off, udp.payload_len);
    }
    Ok(())
}

/// Adds one reply of kind `i` to `client`'s counts. Two CPUs may answer
/// the same client at once: the adds are atomic, and an insert that lost
/// the race to create the entry adds to the winner's instead of replacing
/// it.
#[inline(always)]
fn count_reply(client: &IpKey, i: usize, now: u64) {
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

/// Passes a 2xx to `dst` to the trust program, which reads its CSeq.
#[inline(always)]
fn hand_to_trust(ctx: &TcContext, dst: &IpKey, off: usize, payload_len: usize) {
    let Some(s) = TRUST_SCAN.get_ptr_mut(0) else {
        return;
    };
    let frame = ctx.len() as usize;
    let n = payload_len.min(frame.saturating_sub(off)).min(CSEQ_SCAN);
    unsafe {
        (*s).dst = *dst;
        (*s).off = off as u32;
        (*s).len = n as u32;
        TRUST_PROG.tail_call(ctx, 0);
    }
}

/// Tail-called by the egress program for a 2xx the SBC sends: a 2xx to
/// REGISTER or INVITE makes its destination verified. Offset, length and
/// client come from `TRUST_SCAN`, so the verifier knows nothing of them and
/// walks the scan once.
#[classifier]
pub fn sip_xdp_trust(ctx: TcContext) -> i32 {
    match scan_cseq(&ctx) {
        (CSeqMethod::Register, dst) => trust(&dst, Trust::Registered),
        (CSeqMethod::Invite, dst) => trust(&dst, Trust::Invited),
        _ => {}
    }
    NEXT
}

#[inline(always)]
fn scan_cseq(ctx: &TcContext) -> (CSeqMethod, IpKey) {
    let Some(s) = TRUST_SCAN.get_ptr_mut(0) else {
        return (CSeqMethod::Missing, IpKey::default());
    };
    let s = unsafe { &mut *s };
    let (off, n, dst) = (s.off, s.len, s.dst);
    // Both bounds checked on the value passed: the copy fits the buffer.
    if n == 0 || n > CSEQ_SCAN as u32 {
        return (CSeqMethod::Missing, dst);
    }
    let loaded = unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            off,
            s.bytes.as_mut_ptr() as *mut _,
            n,
        )
    };
    if loaded != 0 {
        return (CSeqMethod::Missing, dst);
    }
    let mut scan = Scan {
        len: u64::from(n),
        window: 0,
        at: 0,
    };
    // SAFETY: the callback has the signature bpf_loop calls, and `scan`
    // outlives the call.
    unsafe {
        let step: unsafe extern "C" fn(u32, *mut c_void) -> i64 = scan_step;
        bpf_loop(
            n,
            step as *mut c_void,
            core::ptr::addr_of_mut!(scan).cast(),
            0,
        );
    }
    if scan.at == 0 {
        return (CSeqMethod::Missing, dst);
    }
    // Read back from map memory: one state after the loop, not one per
    // position the name was found at.
    let at = unsafe {
        core::ptr::write_volatile(&mut s.off, scan.at as u32);
        core::ptr::read_volatile(&s.off)
    };
    (method_after(&s.bytes, n as usize, at as usize), dst)
}

/// What the CSeq scan carries from one byte to the next.
#[repr(C)]
struct Scan {
    len: u64,
    window: u64,
    /// Where the header name ends; 0 until found (it cannot end at 0).
    at: u64,
}

/// The body of the CSeq scan (`cseq_at`, one byte per call): a `bpf_loop`
/// callback, so the verifier walks it once instead of once for each of
/// the 768 bytes (47,889 instructions for the whole program before).
unsafe extern "C" fn scan_step(i: u32, ctx: *mut c_void) -> i64 {
    const STOP: i64 = 1;
    let scan = unsafe { &mut *(ctx as *mut Scan) };
    let i = i as usize;
    let Some(s) = TRUST_SCAN.get_ptr(0) else {
        return STOP;
    };
    let Some(&b) = (unsafe { &(*s).bytes }).get(i) else {
        return STOP;
    };
    let (window, found) = cseq_step(scan.window, b, i, scan.len as usize);
    scan.window = window;
    if found {
        scan.at = (i + 1) as u64;
        return STOP;
    }
    0
}

/// Marks `dst` verified for the configured time, refreshing an entry in
/// place: a registered phone's re-REGISTERs keep it verified.
#[inline(always)]
fn trust(dst: &IpKey, how: Trust) {
    let ttl = match CONFIG.get(0) {
        Some(c) if c.trust_ttl_ns != 0 => c.trust_ttl_ns,
        _ => return,
    };
    let expires_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() }.saturating_add(ttl);
    match VERIFIED.get_ptr_mut(dst) {
        Some(v) => {
            let v = unsafe { &mut *v };
            v.expires_ns = expires_ns;
            v.how = how as u32;
        }
        None => {
            let v = Verified {
                expires_ns,
                how: how as u32,
                _pad: 0,
            };
            let _ = VERIFIED.insert(*dst, v, 0);
        }
    }
}
