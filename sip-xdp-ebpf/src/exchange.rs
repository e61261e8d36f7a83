//! Proof of address from a real exchange. A forged source never reads what
//! the SBC sends it, so trust comes only from what needs a reply read:
//!
//! - egress records the digest nonce of every 401/407 the SBC sends to an
//!   address, and the transaction of every request it sends;
//! - ingress, for an address in such an exchange (`WATCH`), records each
//!   REGISTER or INVITE (by its request line) as a pending transaction,
//!   proven when it carries back a nonce the SBC sent to that address; a
//!   response from the address that answers the SBC's own request makes it
//!   a verified peer;
//! - egress, on a 2xx whose transaction is a pending REGISTER or INVITE of
//!   the same method: the challenge was answered (counted for the brute
//!   force detector), and if proven the address is verified.
//!
//! A response copies the request's Call-ID, CSeq and Via, so a request of
//! another method carrying a REGISTER's CSeq would get a 2xx that looks
//! like one to REGISTER (Kamailio's stock script answers OPTIONS so). While
//! an address is watched every request of it is scanned, and one whose
//! CSeq names REGISTER or INVITE under another method, or has no CSeq
//! where the scan reads, is dropped (`drop_bad_cseq`) and ends the watch's
//! unbroken span, so nothing pending before it earns anything.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        BPF_NOEXIST,
    },
    helpers::{bpf_ktime_get_coarse_ns, generated::bpf_loop},
    macros::xdp,
    programs::XdpContext,
};
use sip_xdp_common::{
    exchange::{CSeqMethod, HeaderScan, EXCHANGE_SCAN},
    maps::{
        Exchange, ExchangeKey, NonceKey, Pending, Trust, Verified, Watch, EXCHANGE_TTL_NS,
        NONCE_TTL_NS,
    },
    Counter, IpKey, SipClass,
};

use crate::{
    count,
    maps::{CONFIG, EXCHANGES, EXCHANGE_PROG, NONCES, SCAN, SCAN_BUF, VERIFIED, WATCH},
};

/// What the egress program hands the trust program.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A 401 or 407: its nonce.
    Challenge = 1,
    /// A 2xx: the transaction it answers.
    Answer = 2,
    /// A request the SBC sends: a transaction of its own.
    Ask = 3,
}

/// The scratch, filled for a scan of `len` bytes at `off` of the packet
/// from or to `addr`; `None` when there is nothing to read.
#[inline(always)]
pub fn fill_scratch(addr: &IpKey, off: usize, len: usize, mode: u32, monitor: bool) -> bool {
    let Some(s) = SCAN.get_ptr_mut(0) else {
        return false;
    };
    let n = len.min(EXCHANGE_SCAN);
    if n == 0 {
        return false;
    }
    unsafe {
        (*s).addr = *addr;
        (*s).off = off as u32;
        (*s).len = n as u32;
        (*s).mode = mode;
        (*s).monitor = u32::from(monitor);
    }
    true
}

/// Scans the bytes a tail-called program copied into the scratch with
/// `load(off, buf, len)` (the packet helper of its type).
#[inline(always)]
pub fn scan_scratch(
    load: impl Fn(u32, *mut c_void, u32) -> i64,
) -> Option<(HeaderScan, IpKey, u32, bool)> {
    let s = SCAN.get_ptr_mut(0)?;
    let s = unsafe { &mut *s };
    let (off, n) = (s.off, s.len);
    // Both bounds checked on the value passed: the copy fits the buffer.
    if n == 0 || n > EXCHANGE_SCAN as u32 {
        return None;
    }
    if load(off, s.bytes.as_mut_ptr() as *mut c_void, n) != 0 {
        return None;
    }
    s.scan = HeaderScan::default();
    // SAFETY: the callback has the signature bpf_loop calls; it keeps its
    // state in the scratch, not in the context.
    unsafe {
        let step: unsafe extern "C" fn(u32, *mut c_void) -> i64 = scan_step;
        bpf_loop(n, step as *mut c_void, core::ptr::null_mut(), 0);
    }
    Some((s.scan, s.addr, s.mode, s.monitor != 0))
}

/// The body of the scan, one byte per call: a `bpf_loop` callback, so the
/// verifier walks it once instead of once per byte.
unsafe extern "C" fn scan_step(i: u32, _: *mut c_void) -> i64 {
    const STOP: i64 = 1;
    let Some(s) = SCAN.get_ptr_mut(0) else {
        return STOP;
    };
    let s = unsafe { &mut *s };
    let b = s.bytes[i as usize & (SCAN_BUF - 1)];
    if s.scan.step(b) {
        STOP
    } else {
        0
    }
}

/// Whether `addr` is in an exchange: its SIP goes through the scan.
#[inline(always)]
pub fn watched(addr: &IpKey, now: u64) -> bool {
    WATCH
        .get_ptr(addr)
        .is_some_and(|w| unsafe { (*w).active_at(now) })
}

/// Keeps `addr` watched until at least `now + ttl`. An expired watch (or
/// none) starts a new unbroken span.
#[inline(always)]
fn watch(addr: &IpKey, now: u64, ttl: u64) {
    let until = now.saturating_add(ttl);
    match WATCH.get_ptr_mut(addr) {
        Some(w) => {
            let w = unsafe { &mut *w };
            if !w.active_at(now) {
                w.since_ns = now;
                w.expires_ns = until;
            } else if w.expires_ns < until {
                w.expires_ns = until;
            }
        }
        None => {
            let w = Watch {
                since_ns: now,
                expires_ns: until,
            };
            let _ = WATCH.insert(addr, w, 0);
        }
    }
}

/// Ends the unbroken span of `addr`'s watch: what is pending from now or
/// before earns nothing (the coarse clock stands still within a tick, so
/// "now" itself is included).
#[inline(always)]
fn break_watch(addr: &IpKey, now: u64) {
    if let Some(w) = WATCH.get_ptr_mut(addr) {
        unsafe { (*w).since_ns = now.saturating_add(1) };
    }
}

/// Egress, a 401/407 to `addr`: the nonce it carries may come back.
#[inline(always)]
pub fn challenged(addr: &IpKey, scan: &HeaderScan, now: u64) {
    let Some(nonce) = scan.nonce() else {
        return;
    };
    let key = NonceKey { addr: *addr, nonce };
    let _ = NONCES.insert(key, now.saturating_add(NONCE_TTL_NS), 0);
    watch(addr, now, NONCE_TTL_NS);
}

/// Egress, a request the SBC sends to `addr`: an answer proves the address.
#[inline(always)]
pub fn asked(addr: &IpKey, scan: &HeaderScan, now: u64) {
    let Some(txn) = scan.transaction() else {
        return;
    };
    pend(addr, txn, Pending::Asked, false, now, 0);
    watch(addr, now, EXCHANGE_TTL_NS);
}

/// Egress, a 2xx to `addr`: whether it answers a pending REGISTER or INVITE
/// of `addr` of the method its CSeq names, recorded while the watch was
/// unbroken; trusts `addr` if that request was proven.
#[inline(always)]
pub fn answered(addr: &IpKey, scan: &HeaderScan, now: u64) -> bool {
    let (kind, how) = match scan.cseq_method() {
        CSeqMethod::Register => (Pending::Register, Trust::Registered),
        CSeqMethod::Invite => (Pending::Invite, Trust::Invited),
        _ => return false,
    };
    let Some(txn) = scan.transaction() else {
        return false;
    };
    let key = ExchangeKey { addr: *addr, txn };
    let Some(e) = (unsafe { EXCHANGES.get(key) }).copied() else {
        return false;
    };
    let _ = EXCHANGES.remove(key);
    if e.kind != kind as u32 || e.expires_ns <= now {
        return false;
    }
    let Some(w) = WATCH.get_ptr(addr) else {
        return false;
    };
    let w = unsafe { *w };
    if !w.active_at(now) || w.since_ns > e.created_ns {
        return false;
    }
    if e.proven != 0 {
        trust(addr, how, now);
    }
    true
}

#[inline(always)]
fn pend(addr: &IpKey, txn: u64, kind: Pending, proven: bool, now: u64, flags: u64) {
    let e = Exchange {
        created_ns: now,
        expires_ns: now.saturating_add(EXCHANGE_TTL_NS),
        kind: kind as u32,
        proven: u32::from(proven),
    };
    let _ = EXCHANGES.insert(ExchangeKey { addr: *addr, txn }, e, flags);
}

/// Marks `addr` verified for the configured time, refreshing an entry in
/// place: a registered phone's re-REGISTERs keep it verified.
#[inline(always)]
pub fn trust(addr: &IpKey, how: Trust, now: u64) {
    let ttl = match CONFIG.get(0) {
        Some(c) if c.trust_ttl_ns != 0 => c.trust_ttl_ns,
        _ => return,
    };
    let expires_ns = now.saturating_add(ttl);
    match VERIFIED.get_ptr_mut(addr) {
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
            let _ = VERIFIED.insert(addr, v, 0);
        }
    }
}

/// Ingress: hands SIP from a watched address to the exchange program, which
/// gives the verdict. Returns only if the tail call failed (no program in
/// the slot): the packet then passes as it would have.
#[inline(always)]
pub fn hand_to_exchange(
    ctx: &XdpContext,
    src: &IpKey,
    off: usize,
    payload_len: usize,
    class: SipClass,
    monitor: bool,
) {
    let frame = ctx.data_end() - ctx.data();
    let len = payload_len.min(frame.saturating_sub(off));
    if fill_scratch(src, off, len, class as u32, monitor) {
        unsafe {
            EXCHANGE_PROG.tail_call(ctx, 0);
        }
    }
}

/// Tail-called by the XDP program for SIP from a watched address, after
/// every other check passed it.
#[xdp]
pub fn sip_xdp_exchange(ctx: XdpContext) -> u32 {
    let Some((scan, src, class, monitor)) = scan_scratch(|off, buf, n| unsafe {
        aya_ebpf::helpers::generated::bpf_xdp_load_bytes(ctx.ctx, off, buf, n)
    }) else {
        count(Counter::Sip);
        return XDP_PASS;
    };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let (kind, names) = match class {
        c if c == SipClass::Register as u32 => (Some(Pending::Register), CSeqMethod::Register),
        c if c == SipClass::Invite as u32 => (Some(Pending::Invite), CSeqMethod::Invite),
        c if c == SipClass::Response as u32 => {
            if let Some(txn) = scan.transaction() {
                let key = ExchangeKey { addr: src, txn };
                if let Some(e) = unsafe { EXCHANGES.get(key) }.copied() {
                    if e.kind == Pending::Asked as u32 && e.expires_ns > now {
                        let _ = EXCHANGES.remove(key);
                        trust(&src, Trust::Peer, now);
                    }
                }
            }
            count(Counter::Sip);
            return XDP_PASS;
        }
        _ => (None, CSeqMethod::Other),
    };
    let cseq = scan.cseq_method();
    let forged = match kind {
        Some(_) => cseq != names,
        None => matches!(
            cseq,
            CSeqMethod::Register | CSeqMethod::Invite | CSeqMethod::Missing
        ),
    };
    if forged {
        break_watch(&src, now);
        return if monitor {
            count(Counter::MonitorBadCSeq);
            XDP_PASS
        } else {
            count(Counter::BadCSeq);
            XDP_DROP
        };
    }
    if let (Some(kind), Some(txn)) = (kind, scan.transaction()) {
        let proven = scan.nonce().is_some_and(|nonce| {
            unsafe { NONCES.get(NonceKey { addr: src, nonce }) }.is_some_and(|exp| *exp > now)
        });
        // The first request of a transaction is the one recorded: a
        // retransmission does not refresh it.
        pend(&src, txn, kind, proven, now, BPF_NOEXIST as u64);
        watch(&src, now, EXCHANGE_TTL_NS);
    }
    count(Counter::Sip);
    XDP_PASS
}
