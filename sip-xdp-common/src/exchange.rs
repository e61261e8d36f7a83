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

/// A header name's hash, as `step` computes it from the folded name.
const fn name(s: &[u8]) -> u64 {
    let mut h = FNV_BASIS;
    let mut i = 0;
    while i < s.len() {
        h = fnv(h, s[i]);
        i += 1;
    }
    h
}

/// A short header name as `step` packs it: the folded bytes, the first
/// in the low byte, and the length. Names of up to eight bytes are
/// compared whole, never by hash: a name that only hashes like `CSeq`
/// must not be read as one.
const fn short(s: &[u8]) -> (u64, u32) {
    let mut w = 0u64;
    let mut i = 0;
    while i < s.len() {
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
const N_AUTHORIZATION: u64 = name(b"authorization");
const N_PROXY_AUTHORIZATION: u64 = name(b"proxy-authorization");
const N_WWW_AUTHENTICATE: u64 = name(b"www-authenticate");
const N_PROXY_AUTHENTICATE: u64 = name(b"proxy-authenticate");

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
    /// `transaction_always`).
    #[inline(always)]
    pub fn ingress(transaction_always: bool) -> Self {
        let keep = if transaction_always {
            KEEP_TRANSACTION
        } else {
            0
        };
        HeaderScan::wanting(BY_START | keep)
    }

    /// Feeds one byte; returns true once nothing after it matters (the
    /// header section ended, or everything wanted was found).
    #[inline(always)]
    pub fn step(&mut self, b: u8) -> bool {
        self.window = (self.window << 8) | u64::from(b);
        let blank = b == b' ' || b == b'\t';
        if b == b'\n' || b == b'\r' {
            if self.state == START && self.found & STARTED == 0 {
                return false;
            }
            if b == b'\n' && self.state == LINE_START {
                self.state = END;
                return true;
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
        // Most bytes are in values nobody reads: nothing to do but wait
        // for the line's end.
        if self.state == SKIP {
            return false;
        }
        match self.state {
            START => {
                self.found |= STARTED;
                if blank {
                    self.state = START_REST;
                } else {
                    if self.start_len < 8 {
                        self.start |= u64::from(b) << (8 * self.start_len);
                    }
                    self.start_len += 1;
                }
            }
            LINE_START => {
                if blank {
                    // A folded line: the previous header goes on.
                    self.state = self.resume;
                } else {
                    self.hash = fnv(FNV_BASIS, fold(b));
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
                    self.hash = fnv(self.hash, fold(b));
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
            TO_LINE
                if (self.window | 0x2020_2020) & 0xff_ffff_ffff
                    == u64::from_be_bytes(*b"\0\0\0;tag=") =>
            {
                self.found |= TO_TAG;
                self.state = SKIP;
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
            _ => {}
        }
        self.done()
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
        self.want = match self.start() {
            // To the end: whether it is inside a dialog (its To tag) may
            // come last.
            Start::Register | Start::Invite => 0,
            Start::Response => TRANSACTION,
            _ if self.want & KEEP_TRANSACTION != 0 => TRANSACTION,
            _ => CSEQ,
        };
    }

    /// A header's name ended at its colon: what to read in its value. Only
    /// the first of each is read.
    #[inline(always)]
    fn header(&mut self) {
        let n = (self.name_word, self.name_len);
        let h = self.hash;
        let f = self.found;
        self.state = if (n == N_CALL_ID || n == N_CALL_ID_SHORT) && f & CALL_ID == 0 {
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
            TO_LINE
        } else if (h == N_AUTHORIZATION
            || h == N_PROXY_AUTHORIZATION
            || h == N_WWW_AUTHENTICATE
            || h == N_PROXY_AUTHENTICATE)
            && f & SEEN_AUTH == 0
        {
            // Longer names by hash: reading a nonce where there is none
            // proves nothing, since it must be one the SBC sent.
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
            VIA_REST | TO_LINE => SKIP,
            NONCE_EQ | NONCE_QUOTE | VALUE_NONCE => AUTH_LINE,
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
    let mut s = HeaderScan::wanting(want);
    for &b in msg.iter().take(EXCHANGE_SCAN) {
        if s.step(b) {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.2:5060;rport;branch=z9hG4bK-reg2\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-inner\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@example.com>;tag=a1\r\n\
To: <sip:1001@example.com>\r\n\
Call-ID: 8f3a@203.0.113.2\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:1001@203.0.113.2:5060>;expires=3600\r\n\
Authorization: Digest username=\"1001\", realm=\"example.com\", nonce=\"Zk1xYWJj\", uri=\"sip:example.com\", response=\"0123456789abcdef0123456789abcdef\", cnonce=\"c0ffee\", nc=00000001, qop=auth\r\n\
Content-Length: 0\r\n\r\n";

    /// The registrar's 200 to that REGISTER: Via, From, To, Call-ID and
    /// CSeq copied, in another order and form where RFC 3261 allows it.
    const OK: &str = "\r\nsip/2.0 200 OK\r\n\
v: SIP/2.0/UDP 203.0.113.2:5060;rport=5060;branch=z9hG4bK-reg2;received=203.0.113.2, SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-inner\r\n\
cseq:\r\n   2   REGISTER\r\n\
From: <sip:1001@example.com>;tag=a1\r\n\
To: <sip:1001@example.com>;tag=b2\r\n\
i : 8f3a@203.0.113.2 \n\
Content-Length: 0\r\n\r\n";

    const CHALLENGE: &str = "SIP/2.0 401 Unauthorized\r\n\
Via: SIP/2.0/UDP 203.0.113.2:5060;rport=5060;branch=z9hG4bK-reg1\r\n\
Call-ID: 8f3a@203.0.113.2\r\n\
CSeq: 1 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"example.com\", nonce = \"Zk1xYWJj\", qop=\"auth\"\r\n\
Content-Length: 0\r\n\r\n";

    fn all(msg: &str) -> HeaderScan {
        scan(msg.as_bytes(), 0)
    }

    #[test]
    fn a_response_names_its_requests_transaction() {
        let req = all(REGISTER);
        let ok = all(OK);
        assert_eq!(req.start(), Start::Register);
        assert_eq!(ok.start(), Start::Response);
        assert_eq!(req.cseq_method(), CSeqMethod::Register);
        assert_eq!(ok.cseq_method(), CSeqMethod::Register);
        assert!(req.transaction().is_some());
        assert_eq!(req.transaction(), ok.transaction());
        // Another CSeq number or method, Call-ID or top branch is another
        // transaction; the inner Via's branch is not read.
        for (from, to) in [
            ("CSeq: 2", "CSeq: 3"),
            ("2 REGISTER", "2 INVITE"),
            ("8f3a@", "8f3b@"),
            ("z9hG4bK-reg2", "z9hG4bK-reg3"),
        ] {
            let other = all(&REGISTER.replace(from, to));
            assert_ne!(other.transaction(), req.transaction(), "{to}");
        }
        assert_eq!(
            all(&REGISTER.replace("z9hG4bK-inner", "z9hG4bK-x")).transaction(),
            req.transaction()
        );
    }

    #[test]
    fn the_nonce_sent_is_the_nonce_carried_back() {
        let sent = all(CHALLENGE).nonce();
        assert!(sent.is_some());
        assert_eq!(all(REGISTER).nonce(), sent);
        // cnonce is the client's, never the server's nonce.
        let only_cnonce = REGISTER.replace(" nonce=\"Zk1xYWJj\",", "");
        assert_eq!(all(&only_cnonce).nonce(), None);
        // Parameter names are case-insensitive.
        assert_eq!(all(&REGISTER.replace(" nonce=", " NONCE=")).nonce(), sent);
        assert_ne!(all(&REGISTER.replace("Zk1xYWJj", "Zk1xYWJk")).nonce(), sent);
        // A nonce anywhere but in an authentication header is not one.
        let elsewhere = CHALLENGE.replace(
            "Call-ID: 8f3a@203.0.113.2",
            "To: <sip:1001@example.com>;a=\" nonce=\";b=\"z\"\r\nCall-ID: 8f3a@203.0.113.2",
        );
        assert_eq!(all(&elsewhere).nonce(), sent);
        let only_elsewhere = "REGISTER sip:x SIP/2.0\r\nTo: <sip:1@x>;a=\" nonce=\"z\"\r\nSubject: nonce=\"z\"\r\n\r\n";
        assert_eq!(all(only_elsewhere).nonce(), None);
    }

    #[test]
    fn the_branch_is_the_first_vias() {
        let in_to = REGISTER.replace(
            "To: <sip:1001@example.com>",
            "To: <sip:1001@example.com;branch=evil>",
        );
        assert_eq!(all(&in_to).transaction(), all(REGISTER).transaction());
        let before_via = REGISTER.replace(
            "Via: SIP/2.0/UDP 203.0.113.2",
            "Route: <sip:x;branch=evil>\r\nVia: SIP/2.0/UDP 203.0.113.2",
        );
        assert_eq!(all(&before_via).transaction(), all(REGISTER).transaction());
    }

    #[test]
    fn methods_are_exact_and_case_sensitive() {
        let m = |cseq: &str| all(&REGISTER.replace("2 REGISTER", cseq)).cseq_method();
        assert_eq!(m("2 INVITE"), CSeqMethod::Invite);
        assert_eq!(m("2 OPTIONS"), CSeqMethod::Other);
        assert_eq!(m("2 register"), CSeqMethod::Other);
        assert_eq!(m("2 REGISTERX"), CSeqMethod::Other);
        assert_eq!(m("2 INVITEX"), CSeqMethod::Other);
        assert_eq!(m("REGISTER"), CSeqMethod::Missing);
        let s =
            |line: &str| all(&REGISTER.replace("REGISTER sip:example.com SIP/2.0", line)).start();
        assert_eq!(s("INVITE sip:x SIP/2.0"), Start::Invite);
        assert_eq!(s("register sip:x SIP/2.0"), Start::OtherRequest);
        assert_eq!(s("OPTIONS sip:x SIP/2.0"), Start::OtherRequest);
        assert_eq!(s("\r\n\r\nREGISTER sip:x SIP/2.0"), Start::Register);
        assert_eq!(s("SIP/2.0 200 OK"), Start::Response);
        assert_eq!(all("\r\n\r\n").start(), Start::Empty);
        assert_eq!(all("").start(), Start::Empty);
    }

    #[test]
    fn the_start_line_and_the_body_are_not_headers() {
        let msg = "OPTIONS sip:x;branch=evil;nonce=\"x\" SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.2;branch=z9hG4bK-1\r\n\
Call-ID: a\r\nCSeq: 1 OPTIONS\r\nContent-Length: 30\r\n\r\n\
CSeq: 1 REGISTER\r\nAuthorization: Digest nonce=\"x\"\r\n";
        let s = all(msg);
        assert_eq!(s.cseq_method(), CSeqMethod::Other);
        assert_eq!(s.nonce(), None);
        let plain = msg.replace("sip:x;branch=evil;nonce=\"x\"", "sip:x");
        assert_eq!(s.transaction(), all(&plain).transaction());
        // A header named like Call-ID's compact form only by its first
        // letter is not it.
        let s = all("INVITE sip:x SIP/2.0\r\nIn-Reply-To: z\r\nCSeq: 1 INVITE\r\n\r\n");
        assert_eq!(s.transaction(), None);
    }

    #[test]
    fn ingress_reads_what_the_start_line_calls_for() {
        // Call-ID after CSeq: a scan that stops at the CSeq misses it.
        let options = REGISTER
            .replacen("REGISTER sip:", "OPTIONS sip:", 1)
            .replace("Call-ID: 8f3a@203.0.113.2\r\n", "")
            .replace(
                "Content-Length",
                "Call-ID: 8f3a@203.0.113.2\r\nContent-Length",
            );
        let s = scan_with(HeaderScan::ingress(false), &options);
        assert_eq!(s.cseq_method(), CSeqMethod::Register);
        assert_eq!(s.transaction(), None, "an OPTIONS is read to its CSeq");
        let s = scan_with(HeaderScan::ingress(true), &options);
        assert_eq!(s.transaction(), all(&options).transaction());
        let s = scan_with(HeaderScan::ingress(false), REGISTER);
        assert_eq!(
            (s.transaction(), s.nonce()),
            (all(REGISTER).transaction(), all(REGISTER).nonce())
        );
        let s = scan_with(HeaderScan::ingress(false), OK);
        assert_eq!(s.transaction(), all(OK).transaction());
    }

    fn scan_with(mut s: HeaderScan, msg: &str) -> HeaderScan {
        for &b in msg.as_bytes() {
            if s.step(b) {
                break;
            }
        }
        s
    }

    #[test]
    fn names_are_compared_whole_and_dialogs_and_relays_are_seen() {
        // A name sharing CSeq's first letters, or its hash's neighbours,
        // is another header.
        let s = all(
            "OPTIONS sip:x SIP/2.0\r\nCSeqX: 1 INVITE\r\nCSe: 1 INVITE\r\nCSeq: 1 OPTIONS\r\n\r\n",
        );
        assert_eq!(s.cseq_method(), CSeqMethod::Other);
        assert!(!all(REGISTER).in_dialog());
        let tagged = REGISTER.replace(
            "To: <sip:1001@example.com>",
            "t: <sip:1001@example.com>;TAG=x9",
        );
        assert!(all(&tagged).in_dialog());
        let uri_tag = REGISTER.replace(
            "From: <sip:1001@example.com>;tag=a1",
            "From: <sip:1001@example.com>;tag=a1;x",
        );
        assert!(!all(&uri_tag).in_dialog(), "a From tag is not a To tag");
        assert!(all(REGISTER).relayed(), "two Via headers");
        let one = REGISTER.replace(
            "Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-inner\r\n",
            "",
        );
        assert!(!all(&one).relayed());
        let comma = one.replace(
            ";branch=z9hG4bK-reg2",
            ";branch=z9hG4bK-reg2, SIP/2.0/UDP 10.0.0.2",
        );
        assert!(all(&comma).relayed());
        assert_eq!(all(&comma).transaction(), all(&one).transaction());
    }

    #[test]
    fn a_scan_stops_at_what_it_wants() {
        let s = scan(REGISTER.as_bytes(), CSEQ);
        assert_eq!(s.cseq_method(), CSeqMethod::Register);
        assert_eq!(s.nonce(), None, "the Authorization comes after the CSeq");
        let s = scan(REGISTER.as_bytes(), TRANSACTION | NONCE);
        let whole = all(REGISTER);
        assert_eq!(s.transaction(), whole.transaction());
        assert_eq!(s.nonce(), whole.nonce());
    }

    #[test]
    fn every_cut_of_a_message_is_safe_and_a_cut_value_is_not_taken() {
        let end = REGISTER.find("CSeq: 2 REGISTER").unwrap() + "CSeq: 2 REGISTER".len();
        for n in 0..REGISTER.len() {
            let s = scan(&REGISTER.as_bytes()[..n], 0);
            assert_eq!(
                s.cseq_method() == CSeqMethod::Register,
                n > end,
                "cut at {n}"
            );
        }
        let far = format!(
            "{}X-Pad: {}\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n\r\n",
            &REGISTER[..REGISTER.find("Call-ID").unwrap()],
            "a".repeat(EXCHANGE_SCAN)
        );
        assert_eq!(all(&far).cseq_method(), CSeqMethod::Missing);
    }
}
