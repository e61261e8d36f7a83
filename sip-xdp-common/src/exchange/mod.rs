//! One pass over a SIP message's start line and headers that finds what
//! ties a response to its request and a credential to its challenge: the
//! first token of the start line (a method, or `SIP/2.0`), the Call-ID,
//! the CSeq (number and method), the branch of the first Via header, and
//! the digest `nonce` of the first authentication header. The kernel runs
//! it on both sides of an exchange:
//!
//! - egress, on the SBC's challenges (the nonce it sent to an address), its
//!   2xx (which transaction it answers) and its own requests;
//! - ingress, on responses, and on requests from addresses in an exchange
//!   (the transaction, and the nonce a REGISTER or INVITE carries back).
//!
//! A transaction is the hash of Call-ID, CSeq (number and method) and top
//! Via branch: a response copies all of them from its request, so both
//! sides compute the same value.
//!
//! Headers are read as a SIP parser reads them, not by looking for text
//! anywhere: a name is the token before the colon (case-insensitive,
//! compact forms included), a value may be folded onto the next line, the
//! nonce counts only inside an authentication header and the branch only
//! inside the first Via, and leading CR/LF before the start line are
//! skipped as Kamailio and OpenSIPS skip them. The scan is a per-byte state
//! machine (`HeaderScan::step`) with no slices: the kernel calls it as the
//! body of a `bpf_loop`, which the verifier walks once.
//!
//! At ingress it also reads what the deny lists (`crate::rules`) judge a
//! request by: its method, User-Agent, and the user and host of its From,
//! To and Contact URIs (`address`).

mod address;
mod words;

use crate::rules::{feed, Rules, DEAD, START_METHOD};

/// Bytes of a message the scan reads: a whole 1500-byte frame's UDP
/// payload. A UDP message whose headers do not fit is sent over TCP
/// (RFC 3261 §18.1.1), so every real header section fits.
pub const EXCHANGE_SCAN: usize = 1472;

/// What a CSeq names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CSeqMethod {
    /// No CSeq header in the scanned bytes.
    Missing,
    Register,
    Invite,
    Other,
}

/// What the start line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Only CR/LF (a keep-alive), or nothing.
    Empty,
    Response,
    Register,
    Invite,
    OtherRequest,
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x100_0000_01b3;

#[inline(always)]
const fn fnv(h: u64, b: u8) -> u64 {
    (h ^ b as u64).wrapping_mul(FNV_PRIME)
}

/// FNV-1a of `s`, as `step` hashes a value.
const fn name(s: &[u8]) -> u64 {
    let mut h = FNV_BASIS;
    let mut i = 0;
    while i < s.len() {
        h = fnv(h, s[i]);
        i += 1;
    }
    h
}

/// A header name as `step` packs it: its first eight folded bytes, the
/// first in the low byte, and its length. Names of up to eight bytes are
/// compared whole: a name that only looks like `CSeq` is not read as one.
/// Longer names share their first eight bytes and length with nothing a
/// parser reads as another header the scan uses; a lookalike is read as
/// the name it imitates only in its sender's own message.
const fn short(s: &[u8]) -> (u64, u32) {
    let mut w = 0u64;
    let mut i = 0;
    while i < s.len() && i < 8 {
        w |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    (w, s.len() as u32)
}

const N_CALL_ID: (u64, u32) = short(b"call-id");
const N_CALL_ID_SHORT: (u64, u32) = short(b"i");
const N_CSEQ: (u64, u32) = short(b"cseq");
const N_VIA: (u64, u32) = short(b"via");
const N_VIA_SHORT: (u64, u32) = short(b"v");
const N_TO: (u64, u32) = short(b"to");
const N_TO_SHORT: (u64, u32) = short(b"t");
const N_FROM: (u64, u32) = short(b"from");
const N_FROM_SHORT: (u64, u32) = short(b"f");
const N_CONTACT: (u64, u32) = short(b"contact");
const N_CONTACT_SHORT: (u64, u32) = short(b"m");
const N_USER_AGENT: (u64, u32) = short(b"user-agent");
const N_AUTHORIZATION: (u64, u32) = short(b"authorization");
const N_PROXY_AUTHORIZATION: (u64, u32) = short(b"proxy-authorization");
const N_WWW_AUTHENTICATE: (u64, u32) = short(b"www-authenticate");
const N_PROXY_AUTHENTICATE: (u64, u32) = short(b"proxy-authenticate");

/// `found` bits.
pub const CALL_ID: u32 = 1;
pub const CSEQ: u32 = 2;
pub const BRANCH: u32 = 4;
pub const NONCE: u32 = 8;
const STARTED: u32 = 16;
const SEEN_VIA: u32 = 32;
const SEEN_AUTH: u32 = 64;
/// The To header carries a tag: a request inside a dialog.
const TO_TAG: u32 = 1 << 10;
/// More than one Via value: a request relayed from someone else.
const MANY_VIAS: u32 = 1 << 11;
/// What a transaction needs.
pub const TRANSACTION: u32 = CALL_ID | CSEQ | BRANCH;
/// `want` bits: decide what is wanted from the start line, as ingress
/// does (`HeaderScan::ingress`); with `KEEP_TRANSACTION`, requests of
/// other methods are read to their transaction too.
const BY_START: u32 = 1 << 8;
const KEEP_TRANSACTION: u32 = 1 << 9;
/// `want` bits: read a request to the end of its headers for the deny
/// lists that are on (`HeaderScan::ingress`). Defined with the lists.
pub use crate::rules::{READ_ADDRESSES, READ_AGENTS, READ_METHODS};
const READ_LISTS: u32 = READ_AGENTS | READ_ADDRESSES | READ_METHODS;
/// `want` bit: a request from an address in no exchange, whose
/// transaction, nonce and dialog nothing needs.
const NO_EXCHANGE: u32 = 1 << 15;

// States of the scan.
const START: u32 = 0;
const START_REST: u32 = 1;
const LINE_START: u32 = 2;
const NAME: u32 = 3;
const NAME_GAP: u32 = 4;
const SKIP: u32 = 5;
const LEAD_CALL_ID: u32 = 6;
const VALUE_CALL_ID: u32 = 7;
const LEAD_CSEQ: u32 = 8;
const CSEQ_NUMBER: u32 = 9;
const CSEQ_GAP: u32 = 10;
const CSEQ_METHOD: u32 = 11;
const VIA_LINE: u32 = 12;
const VALUE_BRANCH: u32 = 13;
const AUTH_LINE: u32 = 14;
const NONCE_EQ: u32 = 15;
const NONCE_QUOTE: u32 = 16;
const VALUE_NONCE: u32 = 17;
const END: u32 = 18;
const TO_LINE: u32 = 19;
const VIA_REST: u32 = 20;
// The deny lists' values (`address`).
const AGENT_LEAD: u32 = 21;
const AGENT_VALUE: u32 = 22;
const ADDR_LEAD: u32 = 23;
const ADDR_QUOTED: u32 = 24;
const ADDR_ESCAPE: u32 = 25;
const ADDR_NAME: u32 = 26;
const URI_SCHEME: u32 = 27;
const URI_PART: u32 = 28;
const URI_HOST: u32 = 29;
const URI_REST: u32 = 30;

/// What a request was denied for (`HeaderScan::denied`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// A scanner's User-Agent.
    Agent,
    /// A method on the list.
    Method,
    /// A From, To or Contact user or domain on the lists.
    Header,
}

/// The scan's state between bytes, and what it found. `#[repr(C)]`, no
/// padding: the kernel keeps it in map memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderScan {
    /// The last eight bytes, the latest in the low byte.
    window: u64,
    /// FNV-1a of the name or value being read.
    hash: u64,
    call_id: u64,
    branch: u64,
    nonce: u64,
    /// The CSeq method's and the start line's first token's first eight
    /// bytes, the first in the low byte.
    method: u64,
    start: u64,
    /// The header name being read: its first eight folded bytes.
    name_word: u64,
    cseq: u32,
    method_len: u32,
    start_len: u32,
    found: u32,
    state: u32,
    /// The state a folded line continues in.
    resume: u32,
    /// `found` bits after which nothing else matters (0: read to the end).
    want: u32,
    name_len: u32,
    /// The automaton of the method or the User-Agent being read.
    matcher: u32,
    /// The user and domain automata of the URI being read.
    user: u32,
    domain: u32,
    /// `address::ADDR_*` flags of the URI being read.
    addr: u32,
    /// `address::DENY_*` bits.
    denied: u32,
    /// `address::SEEN_*`: the first From, To and Contact are read.
    seen: u32,
}

impl HeaderScan {
    /// A scan that stops once it has found the `want` bits.
    #[inline(always)]
    pub fn wanting(want: u32) -> Self {
        HeaderScan {
            want,
            ..Default::default()
        }
    }

    /// The scan ingress runs: a REGISTER or INVITE is read to the end of
    /// its headers, a response to its transaction, any other
    /// request only to its CSeq (to its transaction too with
    /// `transaction_always`). With any of `lists` (`READ_*`), every
    /// request is read to the end of its headers for them. A request
    /// from an address in no exchange (not `exchange`) is read only for
    /// the lists: what ties it to an exchange is not read.
    #[inline(always)]
    pub fn ingress(transaction_always: bool, lists: u32, exchange: bool) -> Self {
        let keep = if transaction_always {
            KEEP_TRANSACTION
        } else {
            0
        };
        let alone = if exchange { 0 } else { NO_EXCHANGE };
        let mut s = HeaderScan::wanting(BY_START | keep | alone | (lists & READ_LISTS));
        if lists & READ_METHODS != 0 {
            s.matcher = u32::from(START_METHOD);
        }
        s
    }

    /// Feeds one byte; returns true once nothing after it matters (the
    /// header section ended, or everything wanted was found).
    ///
    /// Long on purpose: one match over the scan's states, each arm a few
    /// lines, so that the kernel program runs one inlined state machine per
    /// byte and a reader sees every transition in one place.
    #[inline(always)]
    pub fn step(&mut self, b: u8, rules: &impl Rules) -> bool {
        self.window = (self.window << 8) | u64::from(b);
        let blank = b == b' ' || b == b'\t';
        if b == b'\n' || b == b'\r' {
            if self.state == START && self.found & STARTED == 0 {
                return false;
            }
            if b == b'\n' && self.state == LINE_START {
                self.end_header();
                self.state = END;
                return true;
            }
            if self.state == START {
                self.end_method(rules);
            }
            if self.state == START || self.state == START_REST {
                self.want_by_start();
            }
            self.end_of_line();
            if b == b'\n' {
                self.resume = self.state;
                self.state = LINE_START;
            }
            return self.done();
        }
        // Most bytes are in values nobody reads (and the start line's
        // rest): nothing to do but wait for the line's end.
        if self.state == SKIP || self.state == START_REST {
            return false;
        }
        match self.state {
            // Blanks and NULs before the start line are skipped, as
            // Kamailio's parser skips them (and CR/LF, above).
            START if self.found & STARTED == 0 && (blank || b == 0) => {}
            START => {
                self.found |= STARTED;
                if blank {
                    self.end_method(rules);
                    self.state = START_REST;
                } else {
                    if self.start_len < 8 {
                        self.start |= u64::from(b) << (8 * self.start_len);
                    }
                    self.start_len += 1;
                    self.matcher = feed(rules, self.matcher, b).0;
                }
            }
            LINE_START => {
                if blank {
                    // A folded line: the previous header goes on.
                    self.state = self.resume;
                } else {
                    self.end_header();
                    self.name_word = u64::from(fold(b));
                    self.name_len = 1;
                    self.state = NAME;
                }
            }
            NAME => {
                if b == b':' {
                    self.header();
                } else if blank {
                    self.state = NAME_GAP;
                } else {
                    if self.name_len < 8 {
                        self.name_word |= u64::from(fold(b)) << (8 * self.name_len);
                    }
                    self.name_len = self.name_len.saturating_add(1);
                }
            }
            NAME_GAP => {
                if b == b':' {
                    self.header();
                } else if !blank {
                    self.state = SKIP;
                }
            }
            LEAD_CALL_ID if !blank => {
                self.hash = fnv(FNV_BASIS, b);
                self.state = VALUE_CALL_ID;
            }
            VALUE_CALL_ID if !blank => {
                self.hash = fnv(self.hash, b);
            }
            LEAD_CSEQ => {
                if b.is_ascii_digit() {
                    self.cseq = u32::from(b - b'0');
                    self.state = CSEQ_NUMBER;
                } else if !blank {
                    self.state = SKIP;
                }
            }
            CSEQ_NUMBER => {
                if b.is_ascii_digit() {
                    self.cseq = self.cseq.wrapping_mul(10).wrapping_add(u32::from(b - b'0'));
                } else if blank {
                    self.state = CSEQ_GAP;
                } else {
                    self.state = SKIP;
                }
            }
            CSEQ_GAP if !blank => {
                self.method = u64::from(b);
                self.method_len = 1;
                self.state = CSEQ_METHOD;
            }
            CSEQ_METHOD => {
                if blank {
                    self.found |= CSEQ;
                    self.state = SKIP;
                } else {
                    if self.method_len < 8 {
                        self.method |= u64::from(b) << (8 * self.method_len);
                    }
                    self.method_len = self.method_len.saturating_add(1);
                }
            }
            VIA_LINE => {
                if b == b',' {
                    self.found |= MANY_VIAS;
                } else if (self.window | 0x2020_2020_2020_2020) == u64::from_be_bytes(*b";branch=")
                {
                    self.hash = FNV_BASIS;
                    self.state = VALUE_BRANCH;
                }
            }
            VIA_REST if b == b',' => {
                self.found |= MANY_VIAS;
            }
            // `;tag=` with blanks (and folds) anywhere around its parts, as
            // Kamailio reads the parameter: the blanks are left out of the
            // word the test reads.
            TO_LINE if !blank => {
                self.hash = (self.hash << 8) | u64::from(fold(b));
                if self.hash & 0xff_ffff_ffff == u64::from_be_bytes(*b"\0\0\0;tag=") {
                    self.found |= TO_TAG;
                    self.state = SKIP;
                }
            }
            VALUE_BRANCH => {
                if matches!(b, b';' | b',' | b'>' | b' ' | b'\t') {
                    self.commit_branch();
                    if b == b',' {
                        self.found |= MANY_VIAS;
                    }
                } else {
                    self.hash = fnv(self.hash, b);
                }
            }
            AUTH_LINE => {
                // "nonce" after a blank, a comma or the colon; the
                // client's "cnonce" is another parameter.
                let w = self.window;
                if (w | 0x20_2020_2020) & 0xff_ffff_ffff == 0x6e_6f6e_6365
                    && matches!((w >> 40) as u8, b' ' | b',' | b'\t' | b':')
                {
                    self.state = NONCE_EQ;
                }
            }
            NONCE_EQ => {
                if b == b'=' {
                    self.state = NONCE_QUOTE;
                } else if !blank {
                    self.state = AUTH_LINE;
                }
            }
            NONCE_QUOTE => {
                if b == b'"' {
                    self.hash = FNV_BASIS;
                    self.state = VALUE_NONCE;
                } else if !blank {
                    self.state = AUTH_LINE;
                }
            }
            VALUE_NONCE => {
                if b == b'"' {
                    self.nonce = self.hash;
                    self.found |= NONCE;
                    self.state = SKIP;
                } else {
                    self.hash = fnv(self.hash, b);
                }
            }
            AGENT_LEAD..=URI_REST => self.value_byte(b, blank, rules),
            _ => {}
        }
        self.done()
    }

    /// The method's token ended: the method list's automaton takes the
    /// space that ends its patterns.
    #[inline(always)]
    fn end_method(&mut self, rules: &impl Rules) {
        if feed(rules, self.matcher, b' ').1 {
            self.denied |= address::DENY_METHOD;
        }
        self.matcher = u32::from(DEAD);
    }

    #[inline(always)]
    fn done(&self) -> bool {
        let want = self.want & (CALL_ID | CSEQ | BRANCH | NONCE);
        self.state == END || (want != 0 && self.found & want == want)
    }

    #[inline(always)]
    fn want_by_start(&mut self) {
        if self.want & BY_START == 0 {
            return;
        }
        let lists = self.want & (READ_LISTS | NO_EXCHANGE);
        self.want = match self.start() {
            // A response is not judged by the lists, and is always read
            // for its transaction.
            Start::Response => TRANSACTION,
            // To the end: whether it is inside a dialog (its To tag) may
            // come last, and so may what the lists read.
            Start::Register | Start::Invite => lists,
            _ if lists & READ_LISTS != 0 => lists,
            _ if self.want & KEEP_TRANSACTION != 0 => TRANSACTION,
            _ => CSEQ,
        };
    }

    /// A header's name ended at its colon: what to read in its value. Only
    /// the first of each is read.
    #[inline(always)]
    fn header(&mut self) {
        let n = (self.name_word, self.name_len);
        let f = self.found;
        let exchange = self.want & NO_EXCHANGE == 0;
        self.state = if !exchange {
            // Only the lists read this request.
            if self.want & READ_LISTS != 0 && self.matched_header(n) {
                self.state
            } else {
                SKIP
            }
        } else if (n == N_CALL_ID || n == N_CALL_ID_SHORT) && f & CALL_ID == 0 {
            LEAD_CALL_ID
        } else if n == N_CSEQ && f & CSEQ == 0 {
            LEAD_CSEQ
        } else if n == N_VIA || n == N_VIA_SHORT {
            if f & SEEN_VIA == 0 {
                self.found |= SEEN_VIA;
                VIA_LINE
            } else {
                self.found |= MANY_VIAS;
                SKIP
            }
        } else if n == N_TO || n == N_TO_SHORT {
            // Read whole for its tag; the first one's URI for the lists.
            if self.seen & address::SEEN_TO == 0 {
                self.seen |= address::SEEN_TO;
                self.begin_address(true)
            } else {
                self.tag_search(b':')
            }
        } else if self.want & READ_LISTS != 0 && self.matched_header(n) {
            self.state
        } else if (n == N_AUTHORIZATION
            || n == N_PROXY_AUTHORIZATION
            || n == N_WWW_AUTHENTICATE
            || n == N_PROXY_AUTHENTICATE)
            && f & SEEN_AUTH == 0
        {
            // Reading a nonce where there is none proves nothing, since
            // it must be one the SBC sent.
            self.found |= SEEN_AUTH;
            AUTH_LINE
        } else {
            SKIP
        };
    }

    /// A CR or LF: values that end with their line are taken; a header
    /// whose value has not begun may go on on a folded line.
    #[inline(always)]
    fn end_of_line(&mut self) {
        self.state = match self.state {
            START | START_REST => START_REST,
            VALUE_CALL_ID => {
                self.call_id = self.hash;
                self.found |= CALL_ID;
                SKIP
            }
            CSEQ_METHOD => {
                self.found |= CSEQ;
                SKIP
            }
            VALUE_BRANCH => {
                self.commit_branch();
                SKIP
            }
            NONCE_EQ | NONCE_QUOTE | VALUE_NONCE => AUTH_LINE,
            URI_PART | URI_HOST => {
                self.uri_line_end();
                self.state
            }
            URI_SCHEME if self.addr & address::ADDR_ANGLE == 0 => ADDR_NAME,
            NAME | NAME_GAP => SKIP,
            s => s,
        };
    }

    #[inline(always)]
    fn commit_branch(&mut self) {
        self.branch = self.hash;
        self.found |= BRANCH;
        // Only the first Via value's branch; the rest of the line is read
        // for more values.
        self.state = VIA_REST;
    }

    /// What the start line is. Methods are case-sensitive; the version is
    /// not (RFC 3261 §7.1).
    #[inline(always)]
    pub fn start(&self) -> Start {
        if self.found & STARTED == 0 {
            Start::Empty
        } else if self.start_len == 7 && self.start | 0x20_2020 == u64::from_le_bytes(*b"sip/2.0\0")
        {
            Start::Response
        } else if self.start_len == 8 && self.start == u64::from_le_bytes(*b"REGISTER") {
            Start::Register
        } else if self.start_len == 6 && self.start == u64::from_le_bytes(*b"INVITE\0\0") {
            Start::Invite
        } else {
            Start::OtherRequest
        }
    }

    /// What the CSeq names.
    #[inline(always)]
    pub fn cseq_method(&self) -> CSeqMethod {
        if self.found & CSEQ == 0 {
            CSeqMethod::Missing
        } else if self.method_len == 8 && self.method == u64::from_le_bytes(*b"REGISTER") {
            CSeqMethod::Register
        } else if self.method_len == 6 && self.method == u64::from_le_bytes(*b"INVITE\0\0") {
            CSeqMethod::Invite
        } else {
            CSeqMethod::Other
        }
    }

    /// The transaction: Call-ID, CSeq (number and method) and top Via
    /// branch (0 when a pre-RFC 3261 client sent none). `None` without
    /// Call-ID or CSeq.
    #[inline(always)]
    pub fn transaction(&self) -> Option<u64> {
        if self.found & (CALL_ID | CSEQ) != CALL_ID | CSEQ {
            return None;
        }
        let branch = if self.found & BRANCH != 0 {
            self.branch
        } else {
            0
        };
        let t = self.call_id
            ^ branch.rotate_left(29)
            ^ u64::from(self.cseq).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (self.method ^ u64::from(self.method_len)).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        // 0 is never a key: callers may use it for "none".
        Some(if t == 0 { 1 } else { t })
    }

    /// Whether the To header has a tag: a request inside a dialog, which a
    /// proxy relays by its Route headers wherever they point.
    #[inline(always)]
    pub fn in_dialog(&self) -> bool {
        self.found & TO_TAG != 0
    }

    /// Whether the message has more than one Via value: a request the
    /// sender relays for someone else, not one of its own. Read in full
    /// only by a scan that reads to the end of the headers.
    #[inline(always)]
    pub fn relayed(&self) -> bool {
        self.found & MANY_VIAS != 0
    }

    /// The first authentication header's digest nonce, hashed.
    #[inline(always)]
    pub fn nonce(&self) -> Option<u64> {
        (self.found & NONCE != 0).then_some(self.nonce)
    }
}

/// A header-name byte folded to lower case.
#[inline(always)]
fn fold(b: u8) -> u8 {
    if b.is_ascii_uppercase() {
        b | 0x20
    } else {
        b
    }
}

/// Scans `msg` (its first `EXCHANGE_SCAN` bytes) as the kernel does, for
/// tests, fuzzing and tools.
pub fn scan(msg: &[u8], want: u32) -> HeaderScan {
    scan_from(HeaderScan::wanting(want), msg, &crate::rules::NoRules)
}

/// Runs `s` over `msg` as the kernel does: the bytes `advance` takes
/// from the eight at the scan's position, else one byte through `step`.
pub fn scan_from(mut s: HeaderScan, msg: &[u8], rules: &impl Rules) -> HeaderScan {
    let msg = &msg[..msg.len().min(EXCHANGE_SCAN)];
    let mut at = 0;
    while at < msg.len() {
        if let Some(word) = msg.get(at..at + 8).filter(|_| s.takes_words()) {
            let taken = s.advance(u64::from_le_bytes(word.try_into().unwrap()));
            if taken > 0 {
                at += taken as usize;
                continue;
            }
        }
        if s.step(msg[at], rules) {
            break;
        }
        at += 1;
    }
    s
}

#[cfg(test)]
mod tests;
