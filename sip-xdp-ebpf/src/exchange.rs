//! Proof of address from a real exchange. A forged source never reads what
//! the SBC sends it, so trust comes only from what needs a reply read:
//!
//! - egress records the digest nonce of every 401/407 the SBC sends to an
//!   address, and the transaction of every request it sends;
//! - ingress, for an address in such an exchange (`WATCH`), records each
//!   REGISTER or INVITE (by its request line) as a pending transaction,
//!   proven when it carries back a nonce the SBC sent to that address; a
//!   response that answers the SBC's own request makes its sender a
//!   verified peer;
//! - egress, on a 2xx whose transaction is a pending REGISTER or INVITE:
//!   the challenge was answered (counted for the brute-force detector), and
//!   if proven the address is verified.
//!
//! A response copies its request's Call-ID, CSeq and Via, so whoever sent a
//! request wrote what its response says. Two ways remain to make the SBC
//! send a 2xx naming a pending REGISTER or INVITE without passing its
//! challenge, and ingress closes both:
//!
//! - a request of another method carrying that CSeq (Kamailio's stock
//!   script answers OPTIONS so): while an address is watched, every
//!   request of it is scanned, and one whose CSeq names REGISTER or INVITE
//!   under another method, or has none where the scan reads, is dropped
//!   (`drop_bad_cseq`);
//! - a forged response the SBC relays (a proxy forwards a response that
//!   matches none of its transactions to the next Via): every response is
//!   scanned, and one naming REGISTER that answers no REGISTER the SBC
//!   sent its sender is dropped the same way. (An INVITE's end verifies
//!   nobody, so calls' answers are never held.)
//!
//! With the deny lists on, the same scan reads every request to the end
//! of its headers, and one whose User-Agent names a scanner, whose method
//! is on the list, or whose From, To or Contact user or domain is, is
//! dropped (`drop_scanner`, `drop_method`, `drop_denied_header`) before
//! anything is recorded for it.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        BPF_NOEXIST,
    },
    helpers::{
        bpf_ktime_get_coarse_ns, bpf_ktime_get_ns,
        generated::{bpf_loop, bpf_xdp_load_bytes},
    },
    macros::xdp,
    programs::XdpContext,
};
use sip_xdp_common::{
    classify::classify_words,
    exchange::{CSeqMethod, Denial, HeaderScan, Start, EXCHANGE_SCAN, NONCE, TRANSACTION},
    hints,
    maps::{
        exchange_ttl_ns, Exchange, ExchangeKey, NonceKey, Pending, Reply, Trust, Verified, Watch,
        NONCE_TTL_NS, SCAN_BUF,
    },
    rules::{Rules, DEAD},
    Counter, IpKey, SipClass, CLASSIFY_LEN,
};

use crate::{
    charge_drop, count,
    maps::{
        ASKED, CONFIG, EXCHANGES, EXCHANGE_PROG, NONCES, PROOF_HINT, RULES, SCAN, VERIFIED, WATCH,
    },
};

/// The deny lists' table, one lookup per byte of a value they read.
struct KernelRules;

impl Rules for KernelRules {
    #[inline(always)]
    fn next(&self, state: u16, b: u8) -> u16 {
        match RULES.get(u32::from(state)) {
            Some(row) => row.next[usize::from(b)],
            None => DEAD,
        }
    }
}

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
    /// A final response that ends an authenticated call attempt without a
    /// 2xx (busy, no answer, declined, redirected).
    Outcome = 4,
}

/// The scan each egress mode needs: each stops at what it uses. (Ingress
/// decides by the start line, and in monitor mode reads every request to
/// its transaction: a forged one passes there, and the transaction it
/// names is voided.)
#[inline(always)]
fn scan_for(mode: u32) -> HeaderScan {
    if mode == Mode::Challenge as u32 {
        HeaderScan::wanting(NONCE)
    } else if mode == Mode::Ask as u32 {
        // To the end: a Via anywhere makes it a relayed request.
        HeaderScan::wanting(0)
    } else {
        HeaderScan::wanting(TRANSACTION)
    }
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
    ingress: bool,
    load: impl Fn(u32, *mut c_void, u32) -> i64,
) -> Option<(HeaderScan, IpKey, u32, bool)> {
    let s = SCAN.get_ptr_mut(0)?;
    let s = unsafe { &mut *s };
    let (off, n) = (s.off, s.len);
    // Both bounds checked on the value passed: the copy fits the buffer.
    if n == 0 || n > EXCHANGE_SCAN as u32 {
        return None;
    }
    let n = crate::parse::helper_len(n, EXCHANGE_SCAN as u32);
    if load(off, s.bytes.as_mut_ptr() as *mut c_void, n) != 0 {
        return None;
    }
    s.at = 0;
    s.scan = if ingress {
        HeaderScan::ingress(s.monitor != 0, s.mode, s.mode & IN_EXCHANGE != 0)
    } else {
        scan_for(s.mode)
    };
    // SAFETY: the callback has the signature bpf_loop calls; it keeps its
    // state in the scratch, not in the context.
    unsafe {
        let step: unsafe extern "C" fn(u32, *mut c_void) -> i64 = scan_step;
        bpf_loop(
            n.div_ceil(STRIDE),
            step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    Some((s.scan, s.addr, s.mode, s.monitor != 0))
}

/// Steps per call of the loop body: each call costs an indirect call and
/// a scratch lookup, shared by this many steps. A step takes at least one
/// byte, so `len / STRIDE` calls (rounded up) read the whole copy.
const STRIDE: u32 = 8;

/// The body of the scan, `STRIDE` steps per call, each the bytes
/// `HeaderScan::advance` takes at once or one byte through `step`: a
/// `bpf_loop` callback, so the verifier walks it once instead of once per
/// byte.
unsafe extern "C" fn scan_step(_: u32, _: *mut c_void) -> i64 {
    const STOP: i64 = 1;
    let Some(s) = SCAN.get_ptr_mut(0) else {
        return STOP;
    };
    for _ in 0..STRIDE {
        // Every step reads the scan's state back from map memory: the
        // compiler would otherwise carry the state a step wrote (a
        // constant on each of its paths) into the next step in registers,
        // and the verifier, seeing a different constant on every way the
        // steps before took, would walk each step once per way (close to
        // the million-instruction limit, seconds of every load) instead of
        // once with the state unknown.
        let s = unsafe { &mut *core::hint::black_box(s) };
        let at = s.at;
        // Past the copy the buffer holds an earlier packet's bytes.
        if at >= s.len {
            return STOP;
        }
        let i = at as usize & (SCAN_BUF - 1);
        let mut next = at + 1;
        let mut taken = 0;
        if at + 8 <= s.len && s.scan.takes_words() {
            // In bounds: the buffer has eight bytes past SCAN_BUF.
            let word = unsafe { (s.bytes.as_ptr().add(i) as *const u64).read_unaligned() };
            taken = s.scan.advance(u64::from_le(word));
            next = at + taken;
        }
        if taken == 0 && s.scan.step(s.bytes[i], &KernelRules) {
            return STOP;
        }
        s.at = next.max(at + 1);
    }
    0
}

/// The generation of `addr`'s watch, if it is in an exchange: its SIP
/// goes through the scan.
#[inline(always)]
pub fn watched(addr: &IpKey, now: u64) -> Option<u64> {
    let w = WATCH.get_ptr(addr)?;
    let w = unsafe { *w };
    w.active_at(now).then_some(w.gen)
}

/// Keeps `addr` watched until at least `now + ttl`. An expired watch (or
/// none) starts a new generation, drawn from the fine clock: two never
/// share one.
#[inline(always)]
fn watch(addr: &IpKey, now: u64, ttl: u64) {
    let until = now.saturating_add(ttl);
    match WATCH.get_ptr_mut(addr) {
        Some(w) => {
            let w = unsafe { &mut *w };
            if !w.active_at(now) {
                w.gen = unsafe { bpf_ktime_get_ns() };
                w.expires_ns = until;
            } else if w.expires_ns < until {
                w.expires_ns = until;
            }
        }
        None => {
            let w = Watch {
                gen: unsafe { bpf_ktime_get_ns() },
                expires_ns: until,
            };
            let _ = WATCH.insert(addr, w, 0);
        }
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
    // What an answer is needed for: a REGISTER's, to let it in (below),
    // and the answer to a request the SBC sent on its own, to make a peer.
    // A relayed call's or message's answer needs nothing: ASKED keeps
    // room for the rest.
    let register = scan.cseq_method() == CSeqMethod::Register;
    if !register && scan.relayed() {
        return;
    }
    let ttl = exchange_ttl_ns(scan.cseq_method() == CSeqMethod::Invite);
    let e = Exchange {
        gen: 0,
        expires_ns: now.saturating_add(ttl),
        kind: Pending::Asked as u32,
        // Only a request the SBC sent on its own can make a peer: a proxy
        // relays a request inside a dialog wherever its Route headers
        // point, and the sender may point them at itself.
        proven: u32::from(!scan.relayed()),
    };
    let _ = ASKED.insert(ExchangeKey { addr: *addr, txn }, e, 0);
    watch(addr, now, ttl);
}

/// Egress, a 2xx (`success`) or a call's other final outcome to `addr`:
/// which challenge it answers, if it ends a pending REGISTER or INVITE of
/// `addr` of the method its CSeq names, recorded under the current
/// generation of the watch. A 2xx to a proven REGISTER verifies `addr`:
/// a registrar that challenges checks every REGISTER's credentials. An
/// INVITE's end verifies nothing: an SBC answers some calls (a public
/// number, an IVR) without checking the credentials they carry.
#[inline(always)]
pub fn answered(addr: &IpKey, scan: &HeaderScan, now: u64, success: bool) -> Option<Reply> {
    let (kind, answers) = match scan.cseq_method() {
        CSeqMethod::Register if success => (Pending::Register, Reply::Success),
        CSeqMethod::Invite => (Pending::Invite, Reply::InviteAnswered),
        _ => return None,
    };
    let key = ExchangeKey {
        addr: *addr,
        txn: scan.transaction()?,
    };
    let e = (unsafe { EXCHANGES.get(key) }).copied()?;
    if e.kind != kind as u32 {
        return None;
    }
    let _ = EXCHANGES.remove(key);
    if e.expires_ns <= now || watched(addr, now) != Some(e.gen) {
        return None;
    }
    if kind == Pending::Register && e.proven != 0 {
        trust(addr, Trust::Registered, now);
    }
    Some(answers)
}

/// Records a REGISTER or INVITE of `addr` as pending under watch
/// generation `gen`. The first request of a transaction is the one
/// recorded: a retransmission does not refresh it.
#[inline(always)]
fn pend(addr: &IpKey, txn: u64, kind: Pending, proven: bool, now: u64, gen: u64) {
    let e = Exchange {
        gen,
        expires_ns: now.saturating_add(exchange_ttl_ns(kind == Pending::Invite)),
        kind: kind as u32,
        proven: u32::from(proven),
    };
    let key = ExchangeKey { addr: *addr, txn };
    let _ = EXCHANGES.insert(key, e, BPF_NOEXIST as u64);
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
    mark_proven(addr);
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

/// Sets `addr`'s bit in the proof hint, before its `VERIFIED` entry: a
/// bit without an entry costs a lookup, an entry without its bit would go
/// unseen in overload. Not atomic: two CPUs writing one word at once may
/// lose a bit, which the controller's check sets again from `VERIFIED`
/// within 30 s.
#[inline(always)]
fn mark_proven(addr: &IpKey) {
    let slot = hints::proof_slot(addr);
    if let Some(w) = PROOF_HINT.get_ptr_mut(slot.word) {
        let w = unsafe { &mut *w };
        if *w & slot.mask == 0 {
            *w |= slot.mask;
        }
    }
}

/// Ingress, the packet passing: hands it to the exchange program, which
/// gives the verdict. Only the source and the payload's bounds travel
/// (live anyway at the end of the XDP program): the class and the mode
/// are found again there, so that nothing the verifier tracks is carried
/// through the sampling code. Returns only if the tail
/// call failed (no program in the slot): the packet then passes as it
/// would have.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, src: &IpKey, payload_off: usize, payload_len: usize) {
    if let Some(s) = SCAN.get_ptr_mut(0) {
        unsafe {
            (*s).addr = *src;
            (*s).off = payload_off as u32;
            (*s).len = payload_len as u32;
        }
    }
    unsafe {
        EXCHANGE_PROG.tail_call(ctx, 0);
    }
}

/// What `hand_over` left, completed from the packet: the payload's offset
/// and the length to read (the payload as the parser bounded it, up to
/// `EXCHANGE_SCAN`), written back to the scratch, with its class.
#[inline(always)]
fn ingress_packet(ctx: &XdpContext, now: u64) -> Option<bool> {
    let s = SCAN.get_ptr_mut(0)?;
    let s = unsafe { &mut *s };
    let off = s.off as usize;
    let payload_len = s.len as usize;
    let frame = ctx.data_end() - ctx.data();
    let n = payload_len
        .min(frame.saturating_sub(off))
        .min(EXCHANGE_SCAN);
    let mut head = [0u64; 2];
    let m = n.min(CLASSIFY_LEN) as u32;
    if m > 0 && m <= CLASSIFY_LEN as u32 {
        let buf = head.as_mut_ptr() as *mut c_void;
        let len = crate::parse::helper_len(m, CLASSIFY_LEN as u32);
        if unsafe { bpf_xdp_load_bytes(ctx.ctx, off as u32, buf, len) } != 0 {
            return None;
        }
    }
    let class = classify_words(head, m as usize) as u32;
    s.off = off as u32;
    s.len = n as u32;
    let (monitor, lists) = CONFIG
        .get(0)
        .map_or((false, 0), |c| (c.monitor(), c.lists()));
    let exchange = watched(&s.addr, now).is_some();
    s.monitor = u32::from(monitor);
    s.mode = lists | if exchange { IN_EXCHANGE } else { 0 };
    Some(wanted(class, payload_len, lists != 0, exchange))
}

/// The ingress scratch's `mode` bit for a source in an exchange, beside
/// the lists' `READ_*` bits.
const IN_EXCHANGE: u32 = 1;

/// What the exchange reads: every response, every request from an address
/// in an exchange or (with the deny lists on) from anyone, and what a SIP
/// server may parse though the classifier could not (a message after
/// CR/LF), not a keep-alive. Without the lists, everyone else's requests
/// cost one lookup that misses.
#[inline(always)]
fn wanted(class: u32, payload_len: usize, lists: bool, exchange: bool) -> bool {
    if class == SipClass::Keepalive as u32 {
        payload_len > CLASSIFY_LEN
    } else if class == SipClass::Response as u32
        || class == SipClass::Malformed as u32
        // SigComp is known by its first byte alone, and SIP servers read a
        // request behind such a byte as a method of their own: read as any
        // request a server may parse.
        || class == SipClass::SigComp as u32
    {
        true
    } else {
        lists || exchange
    }
}

/// Tail-called by the XDP program, after every other check passed the
/// packet, for every SIP response, every request from an address in an
/// exchange, and anything the classifier could not read (a SIP server may
/// still parse it: Kamailio skips CR/LF before the start line).
#[xdp]
pub fn sip_xdp_exchange(ctx: XdpContext) -> u32 {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if ingress_packet(&ctx, now) != Some(true) {
        return pass();
    }
    let Some((scan, src, mode, monitor)) = scan_scratch(true, |off, buf, n| unsafe {
        bpf_xdp_load_bytes(ctx.ctx, off, buf, n)
    }) else {
        return pass();
    };
    if let Some(d) = scan.denied() {
        // Dropped, it records nothing; in monitor mode it passes counted
        // as what it would have been dropped for, and records nothing
        // either.
        return deny(d, &src, monitor);
    }
    let cseq = scan.cseq_method();
    let (kind, names) = match scan.start() {
        Start::Empty => return pass(),
        Start::Response => return response(&scan, &src, cseq, now, monitor),
        Start::Register => (Some(Pending::Register), CSeqMethod::Register),
        Start::Invite => (Some(Pending::Invite), CSeqMethod::Invite),
        Start::OtherRequest => (None, CSeqMethod::Other),
    };
    // Looked up once already, to choose the scan: a source that was in no
    // exchange then costs no second lookup.
    let exchange = mode & IN_EXCHANGE != 0;
    let Some(gen) = exchange.then(|| watched(&src, now)).flatten() else {
        // A request from an address in no exchange can pass nothing off.
        return pass();
    };
    let forged = match kind {
        // A REGISTER or INVITE whose CSeq lies past the scan (a trunk's
        // long headers, in the next fragment) is recorded as nothing, and
        // passes: its own answer names its own method.
        Some(_) if cseq == CSeqMethod::Missing => false,
        Some(_) => cseq != names,
        None => matches!(
            cseq,
            CSeqMethod::Register | CSeqMethod::Invite | CSeqMethod::Missing
        ),
    };
    if forged {
        // Dropped, it is never answered. In monitor mode it passes, and
        // what it could pass itself off as earns nothing.
        if monitor {
            if let Some(txn) = scan.transaction() {
                let _ = EXCHANGES.remove(ExchangeKey { addr: src, txn });
            }
        }
        return bad_cseq(&src, monitor);
    }
    if let (Some(kind), Some(txn)) = (kind, scan.transaction()) {
        if scan.in_dialog() {
            // Inside a dialog a proxy relays it by its Route headers, and
            // the sender may route it to itself and answer it: such an
            // answer must not pass for the SBC's to a request pending in
            // the same transaction.
            let _ = EXCHANGES.remove(ExchangeKey { addr: src, txn });
            return pass();
        }
        let proven = scan.nonce().is_some_and(|nonce| {
            unsafe { NONCES.get(NonceKey { addr: src, nonce }) }.is_some_and(|exp| *exp > now)
        });
        pend(&src, txn, kind, proven, now, gen);
        watch(&src, now, exchange_ttl_ns(kind == Pending::Invite));
    }
    pass()
}

/// A response: an answer to a request the SBC sent its sender on its own
/// makes the sender a verified peer; one naming REGISTER that answers no
/// REGISTER the SBC sent it is dropped, so the SBC never relays it.
#[inline(always)]
fn response(scan: &HeaderScan, src: &IpKey, cseq: CSeqMethod, now: u64, monitor: bool) -> u32 {
    let asked = scan
        .transaction()
        .and_then(|txn| unsafe { ASKED.get(ExchangeKey { addr: *src, txn }) }.copied())
        .filter(|e| e.expires_ns > now);
    match asked {
        Some(e) if e.proven != 0 => trust(src, Trust::Peer, now),
        Some(_) => {}
        // Only REGISTER's answers are held: an INVITE's end verifies
        // nobody, and a call's answers must never depend on a map's room.
        None if cseq == CSeqMethod::Register => {
            return bad_cseq(src, monitor);
        }
        None => {}
    }
    pass()
}

#[inline(always)]
fn pass() -> u32 {
    count(Counter::Sip);
    XDP_PASS
}

#[inline(always)]
fn deny(d: Denial, src: &IpKey, monitor: bool) -> u32 {
    refuse(
        match d {
            Denial::Agent => Counter::Scanner,
            Denial::Method => Counter::Method,
            Denial::Header => Counter::DeniedHeader,
        },
        src,
        monitor,
    )
}

#[inline(always)]
fn bad_cseq(src: &IpKey, monitor: bool) -> u32 {
    refuse(Counter::BadCSeq, src, monitor)
}

/// Drops, counted as `c` and against `src`'s prefix as the XDP program
/// counted the packet; in monitor mode passes, counted as what it would
/// have been dropped for.
#[inline(always)]
fn refuse(c: Counter, src: &IpKey, monitor: bool) -> u32 {
    if let Some(cfg) = CONFIG.get(0) {
        charge_drop(&cfg.source_key(src));
    }
    if monitor {
        count(c.monitored());
        XDP_PASS
    } else {
        count(c);
        XDP_DROP
    }
}
