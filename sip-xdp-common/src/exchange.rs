//! One pass over a SIP message's header section that finds what ties a
//! response to its request and a credential to its challenge: the Call-ID,
//! the CSeq (number and method), the first Via branch and the first digest
//! `nonce`. The kernel runs it on both sides of an exchange:
//!
//! - egress, on the SBC's challenges (the nonce it sent to an address), its
//!   2xx (which transaction it answers) and its own requests;
//! - ingress, on requests and responses from addresses in an exchange (the
//!   transaction, and the nonce a REGISTER or INVITE carries back).
//!
//! A transaction is the hash of Call-ID, CSeq number and top Via branch:
//! a response copies all three from its request, so both sides compute the
//! same value. The scan is a per-byte state machine (`HeaderScan::step`)
//! with no slices and small constant bounds: the kernel calls it as the
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

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x100_0000_01b3;

/// `found` bits.
const IN_HEADERS: u32 = 1;
const CALL_ID: u32 = 2;
const CSEQ: u32 = 4;
const BRANCH: u32 = 8;
const NONCE: u32 = 16;

// States of the scan.
const LINE: u32 = 0;
const NAME_CALL_ID: u32 = 1;
const NAME_CSEQ: u32 = 2;
const LEAD_CALL_ID: u32 = 3;
const VALUE_CALL_ID: u32 = 4;
const LEAD_CSEQ: u32 = 5;
const CSEQ_NUMBER: u32 = 6;
const CSEQ_GAP: u32 = 7;
const CSEQ_METHOD: u32 = 8;
const VALUE_BRANCH: u32 = 9;
const VALUE_NONCE: u32 = 10;
const END: u32 = 11;

/// The scan's state between bytes, and what it found. `#[repr(C)]`, no
/// padding: the kernel keeps it on the stack of the `bpf_loop` caller.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderScan {
    /// The last eight bytes, the latest in the low byte.
    window: u64,
    /// FNV-1a of the value being read.
    hash: u64,
    pub call_id: u64,
    pub branch: u64,
    pub nonce: u64,
    /// The CSeq method's first eight bytes, the first in the low byte.
    method: u64,
    pub cseq: u32,
    found: u32,
    state: u32,
    method_len: u32,
}

impl HeaderScan {
    /// Feeds one byte; returns true once the header section has ended, when
    /// nothing after it matters.
    #[inline(always)]
    pub fn step(&mut self, b: u8) -> bool {
        self.window = (self.window << 8) | u64::from(b);
        let end_of_line = b == b'\r' || b == b'\n';
        let blank = b == b' ' || b == b'\t';
        match self.state {
            LINE => self.line(b),
            NAME_CALL_ID | NAME_CSEQ => {
                if b == b':' {
                    self.state += LEAD_CALL_ID - NAME_CALL_ID;
                    if self.state == LEAD_CALL_ID + (NAME_CSEQ - NAME_CALL_ID) {
                        self.state = LEAD_CSEQ;
                    }
                } else if !blank {
                    self.state = LINE;
                }
            }
            LEAD_CALL_ID => {
                if end_of_line {
                    self.state = LINE;
                } else if !blank {
                    self.hash = (FNV_BASIS ^ u64::from(b)).wrapping_mul(FNV_PRIME);
                    self.state = VALUE_CALL_ID;
                }
            }
            VALUE_CALL_ID => {
                if end_of_line {
                    self.call_id = self.hash;
                    self.found |= CALL_ID;
                    self.state = LINE;
                } else if !blank {
                    self.hash = (self.hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
                }
            }
            LEAD_CSEQ => {
                if b.is_ascii_digit() {
                    self.cseq = u32::from(b - b'0');
                    self.state = CSEQ_NUMBER;
                } else if !blank {
                    self.state = LINE;
                }
            }
            CSEQ_NUMBER => {
                if b.is_ascii_digit() {
                    self.cseq = self.cseq.wrapping_mul(10).wrapping_add(u32::from(b - b'0'));
                } else if blank {
                    self.state = CSEQ_GAP;
                } else {
                    self.state = LINE;
                }
            }
            CSEQ_GAP => {
                if end_of_line {
                    self.state = LINE;
                } else if !blank {
                    self.method = u64::from(b);
                    self.method_len = 1;
                    self.state = CSEQ_METHOD;
                }
            }
            CSEQ_METHOD => {
                if end_of_line || blank {
                    self.found |= CSEQ;
                    self.state = LINE;
                } else {
                    if self.method_len < 8 {
                        self.method |= u64::from(b) << (8 * self.method_len);
                    }
                    self.method_len = self.method_len.saturating_add(1);
                }
            }
            VALUE_BRANCH => {
                if matches!(b, b';' | b',' | b'>' | b'\r' | b'\n' | b' ' | b'\t') {
                    self.branch = self.hash;
                    self.found |= BRANCH;
                    self.state = LINE;
                } else {
                    self.hash = (self.hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
                }
            }
            VALUE_NONCE => {
                if b == b'"' {
                    self.nonce = self.hash;
                    self.found |= NONCE;
                    self.state = LINE;
                } else if end_of_line {
                    self.state = LINE;
                } else {
                    self.hash = (self.hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
                }
            }
            _ => {}
        }
        self.state == END
    }

    /// Between values: looks for the end of the header section and for the
    /// names and parameters the scan reads.
    #[inline(always)]
    fn line(&mut self, b: u8) {
        let w = self.window;
        if b == b'\n' {
            if self.found & IN_HEADERS != 0
                && (w & 0xffff_ffff == 0x0d0a_0d0a || w & 0xffff == 0x0a0a)
            {
                self.state = END;
                return;
            }
            self.found |= IN_HEADERS;
            return;
        }
        if self.found & IN_HEADERS == 0 {
            // The start line: a Request-URI may carry anything.
            return;
        }
        // Letters folded to lower case by OR 0x20; the newline kept as is.
        if self.found & CALL_ID == 0
            && ((w | 0x0020_2020_2020_2020) == u64::from_be_bytes(*b"\ncall-id")
                || (w & 0xffff) | 0x20 == 0x0a69)
        {
            self.state = NAME_CALL_ID;
        } else if self.found & CSEQ == 0 && (w | 0x2020_2020) & 0xff_ffff_ffff == 0x0a_6373_6571 {
            self.state = NAME_CSEQ;
        } else if self.found & BRANCH == 0
            && (w | 0x2020_2020_2020_2020) == u64::from_be_bytes(*b";branch=")
        {
            self.hash = FNV_BASIS;
            self.state = VALUE_BRANCH;
        } else if self.found & NONCE == 0
            && (w | 0x20_2020_2020_2020) & 0xff_ffff_ffff_ffff == 0x6e_6f6e_6365_3d22
            && matches!((w >> 56) as u8, b' ' | b',' | b'\t')
        {
            self.hash = FNV_BASIS;
            self.state = VALUE_NONCE;
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

    /// The transaction: Call-ID, CSeq number and top Via branch (0 when a
    /// pre-RFC 3261 client sent none). `None` without Call-ID or CSeq.
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
            ^ u64::from(self.cseq).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // 0 is never a key: callers may use it for "none".
        Some(if t == 0 { 1 } else { t })
    }

    /// The first digest nonce, hashed; `None` if the message has none.
    #[inline(always)]
    pub fn nonce(&self) -> Option<u64> {
        (self.found & NONCE != 0).then_some(self.nonce)
    }
}

/// Scans `msg` (its first `EXCHANGE_SCAN` bytes) on the host: what the
/// kernel computes, for tests, fuzzing and tools.
pub fn scan(msg: &[u8]) -> HeaderScan {
    let mut s = HeaderScan::default();
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
    const OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 203.0.113.2:5060;rport=5060;branch=z9hG4bK-reg2;received=203.0.113.2\r\n\
From: <sip:1001@example.com>;tag=a1\r\n\
To: <sip:1001@example.com>;tag=b2\r\n\
i: 8f3a@203.0.113.2 \r\n\
cseq:   2   REGISTER\r\n\
Content-Length: 0\r\n\r\n";

    const CHALLENGE: &str = "SIP/2.0 401 Unauthorized\r\n\
Via: SIP/2.0/UDP 203.0.113.2:5060;rport=5060;branch=z9hG4bK-reg1\r\n\
Call-ID: 8f3a@203.0.113.2\r\n\
CSeq: 1 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"example.com\", nonce=\"Zk1xYWJj\", qop=\"auth\"\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn a_response_names_its_requests_transaction() {
        let req = scan(REGISTER.as_bytes());
        let ok = scan(OK.as_bytes());
        assert_eq!(req.cseq_method(), CSeqMethod::Register);
        assert_eq!(ok.cseq_method(), CSeqMethod::Register);
        assert!(req.transaction().is_some());
        assert_eq!(req.transaction(), ok.transaction());
        // Another CSeq number, Call-ID or branch is another transaction.
        for (from, to) in [
            ("CSeq: 2", "CSeq: 3"),
            ("8f3a@", "8f3b@"),
            ("z9hG4bK-reg2", "z9hG4bK-reg3"),
        ] {
            let other = scan(REGISTER.replace(from, to).as_bytes());
            assert_ne!(other.transaction(), req.transaction(), "{to}");
        }
    }

    #[test]
    fn the_nonce_sent_is_the_nonce_carried_back() {
        let sent = scan(CHALLENGE.as_bytes()).nonce();
        assert!(sent.is_some());
        assert_eq!(scan(REGISTER.as_bytes()).nonce(), sent);
        // cnonce is the client's, never the server's nonce.
        let only_cnonce = REGISTER.replace(" nonce=\"Zk1xYWJj\",", "");
        assert_eq!(scan(only_cnonce.as_bytes()).nonce(), None);
        // Parameter names are case-insensitive.
        let upper = REGISTER.replace(" nonce=", " NONCE=");
        assert_eq!(scan(upper.as_bytes()).nonce(), sent);
        assert_ne!(
            scan(REGISTER.replace("Zk1xYWJj", "Zk1xYWJk").as_bytes()).nonce(),
            sent
        );
    }

    #[test]
    fn methods_are_exact_and_case_sensitive() {
        let m = |cseq: &str| scan(REGISTER.replace("2 REGISTER", cseq).as_bytes()).cseq_method();
        assert_eq!(m("2 INVITE"), CSeqMethod::Invite);
        assert_eq!(m("2 OPTIONS"), CSeqMethod::Other);
        assert_eq!(m("2 register"), CSeqMethod::Other);
        assert_eq!(m("2 REGISTERX"), CSeqMethod::Other);
        assert_eq!(m("2 INVITEX"), CSeqMethod::Other);
        assert_eq!(m("REGISTER"), CSeqMethod::Missing);
        assert_eq!(
            scan(b"OPTIONS sip:x SIP/2.0\r\n\r\n").cseq_method(),
            CSeqMethod::Missing
        );
    }

    #[test]
    fn the_start_line_and_the_body_are_not_headers() {
        // A Request-URI or a body carrying look-alikes names nothing.
        let msg = "OPTIONS sip:x;branch=evil SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.2;branch=z9hG4bK-1\r\n\
Call-ID: a\r\nCSeq: 1 OPTIONS\r\nContent-Length: 30\r\n\r\n\
CSeq: 1 REGISTER\r\nnonce=\"x\"\r\n";
        let s = scan(msg.as_bytes());
        assert_eq!(s.cseq_method(), CSeqMethod::Other);
        assert_eq!(s.nonce(), None);
        let plain = msg.replace("sip:x;branch=evil", "sip:x");
        assert_eq!(s.transaction(), scan(plain.as_bytes()).transaction());
        // A header named like Call-ID's compact form only by its first
        // letter is not it.
        let s = scan(b"INVITE sip:x SIP/2.0\r\nIn-Reply-To: z\r\nCSeq: 1 INVITE\r\n\r\n");
        assert_eq!(s.transaction(), None);
    }

    #[test]
    fn every_cut_of_a_message_is_safe_and_a_cut_value_is_not_taken() {
        for n in 0..REGISTER.len() {
            let s = scan(&REGISTER.as_bytes()[..n]);
            let end = REGISTER.find("CSeq: 2 REGISTER").unwrap() + "CSeq: 2 REGISTER".len();
            assert_eq!(
                s.cseq_method() == CSeqMethod::Register,
                n > end,
                "cut at {n}"
            );
        }
        let far = format!(
            "{}\r\nX-Pad: {}\r\n",
            &REGISTER[..REGISTER.find("Call-ID").unwrap()],
            "a".repeat(EXCHANGE_SCAN)
        );
        let far = format!("{far}Call-ID: x\r\nCSeq: 1 REGISTER\r\n\r\n");
        assert_eq!(scan(far.as_bytes()).cseq_method(), CSeqMethod::Missing);
    }
}
