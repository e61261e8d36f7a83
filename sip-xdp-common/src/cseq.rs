//! The method named by a SIP message's CSeq header, found by a bounded scan
//! of its first bytes: what tells the egress program that a 2xx answers a
//! REGISTER or an INVITE (trust) and not an OPTIONS (anyone gets one).
//! Plain indexing on a fixed-size array, small constant inner bounds: the
//! same code runs in the kernel, where the verifier walks every iteration.

/// Bytes of a message the scan looks at. CSeq follows Via, From, To and
/// Call-ID: a few hundred bytes into a typical response.
pub const CSEQ_SCAN: usize = 768;
/// The buffer holds a little more than is scanned: reads stay inside it
/// even where the verifier loses the link between an index and `len`.
pub const CSEQ_BUF: usize = CSEQ_SCAN + 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CSeqMethod {
    /// No CSeq header in the scanned bytes.
    Missing,
    Register,
    Invite,
    Other,
}

/// `buf[i]`, or 0 past the end: no panic path for the verifier to reject.
#[inline(always)]
fn byte(buf: &[u8; CSEQ_BUF], i: usize) -> u8 {
    if i < CSEQ_BUF {
        buf[i]
    } else {
        0
    }
}

/// The CSeq method of the message held in `buf[..len]`.
#[inline(always)]
pub fn cseq_method(buf: &[u8; CSEQ_BUF], len: usize) -> CSeqMethod {
    match cseq_at(buf, len) {
        Some(at) => method_after(buf, len, at),
        None => CSeqMethod::Missing,
    }
}

/// Where the CSeq header's name ends in `buf[..len]`: the name,
/// case-insensitive, at the start of a line.
///
/// The last five bytes roll through one register and are compared at once,
/// so each step has one branch: the verifier walks the loop in a straight
/// line. The kernel splits the scan here and reads the position back from
/// map memory, so that it walks the parse of the value once, not once per
/// position the name could be found at.
#[inline(always)]
pub fn cseq_at(buf: &[u8; CSEQ_BUF], len: usize) -> Option<usize> {
    let len = if len > CSEQ_SCAN { CSEQ_SCAN } else { len };
    let mut window: u64 = 0;
    let mut i = 0;
    while i < len {
        let found;
        (window, found) = cseq_step(window, byte(buf, i), i, len);
        if found {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// One step of `cseq_at`: the window after byte `b`, at `i` of `len`, and
/// whether the header's name ends there. The kernel runs it as the body of
/// a `bpf_loop`, which the verifier walks once instead of once per byte.
#[inline(always)]
pub fn cseq_step(window: u64, b: u8, i: usize, len: usize) -> (u64, bool) {
    // "\ncseq", each letter folded to lower case by OR 0x20 as below.
    const NAME: u64 = 0x0a_63_73_65_71;
    const FOLD: u64 = 0x00_20_20_20_20;
    const LAST5: u64 = 0xff_ff_ff_ff_ff;
    let window = (window << 8) | u64::from(b);
    // A value must follow the name: leave room for ':' and more.
    (window, (window | FOLD) & LAST5 == NAME && i + 2 < len)
}

/// `buf[at..]` is what follows the header name: optional blanks, the colon,
/// blanks, the sequence number, blanks, the method.
#[inline(always)]
pub fn method_after(buf: &[u8; CSEQ_BUF], len: usize, mut at: usize) -> CSeqMethod {
    let len = if len > CSEQ_SCAN { CSEQ_SCAN } else { len };
    at = skip_blanks(buf, len, at);
    if at >= len || byte(buf, at) != b':' {
        return CSeqMethod::Other;
    }
    at = skip_blanks(buf, len, at + 1);
    let mut digits = 0;
    while digits < 10 && at < len && byte(buf, at).is_ascii_digit() {
        at += 1;
        digits += 1;
    }
    if digits == 0 {
        return CSeqMethod::Other;
    }
    at = skip_blanks(buf, len, at);
    if token_at(buf, len, at, b"REGISTER") {
        CSeqMethod::Register
    } else if token_at(buf, len, at, b"INVITE") {
        CSeqMethod::Invite
    } else {
        CSeqMethod::Other
    }
}

#[inline(always)]
fn skip_blanks(buf: &[u8; CSEQ_BUF], len: usize, mut at: usize) -> usize {
    let mut n = 0;
    while n < 4 && at < len && (byte(buf, at) == b' ' || byte(buf, at) == b'\t') {
        at += 1;
        n += 1;
    }
    at
}

/// Whether `word` (methods are case-sensitive) stands at `at`, followed by
/// the end of the line or of the header value.
#[inline(always)]
fn token_at<const N: usize>(buf: &[u8; CSEQ_BUF], len: usize, at: usize, word: &[u8; N]) -> bool {
    if at + N >= len {
        return false;
    }
    let mut j = 0;
    while j < N {
        if byte(buf, at + j) != word[j] {
            return false;
        }
        j += 1;
    }
    matches!(byte(buf, at + N), b'\r' | b'\n' | b' ' | b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> CSeqMethod {
        let mut buf = [0u8; CSEQ_BUF];
        let n = text.len().min(CSEQ_SCAN);
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        cseq_method(&buf, n)
    }

    const OK_REGISTER: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 203.0.113.2:5060;branch=z9hG4bK-1;received=203.0.113.2;rport=5060\r\n\
From: <sip:1001@example.com>;tag=a1\r\n\
To: <sip:1001@example.com>;tag=b2\r\n\
Call-ID: 8f3a@203.0.113.2\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:1001@203.0.113.2:5060>;expires=3600\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn finds_the_method_of_real_responses() {
        assert_eq!(m(OK_REGISTER), CSeqMethod::Register);
        assert_eq!(
            m(&OK_REGISTER.replace("2 REGISTER", "1 INVITE")),
            CSeqMethod::Invite
        );
        assert_eq!(
            m(&OK_REGISTER.replace("2 REGISTER", "7 OPTIONS")),
            CSeqMethod::Other
        );
        // Header names are case-insensitive; blanks vary.
        assert_eq!(
            m(&OK_REGISTER.replace("CSeq: 2 REGISTER", "cseq:\t102  REGISTER")),
            CSeqMethod::Register
        );
        assert_eq!(
            m(&OK_REGISTER.replace("CSeq: 2", "CSEQ :2")),
            CSeqMethod::Register
        );
    }

    #[test]
    fn lookalikes_are_not_register() {
        // Methods are case-sensitive, and a longer token is another method.
        assert_eq!(
            m(&OK_REGISTER.replace("2 REGISTER", "2 register")),
            CSeqMethod::Other
        );
        assert_eq!(
            m(&OK_REGISTER.replace("2 REGISTER", "2 REGISTERX")),
            CSeqMethod::Other
        );
        // No number, or the name inside another header's value.
        assert_eq!(
            m(&OK_REGISTER.replace("CSeq: 2 REGISTER", "CSeq: REGISTER")),
            CSeqMethod::Other
        );
        assert_eq!(
            m("SIP/2.0 200 OK\r\nSubject: x CSeq: 1 REGISTER\r\n\r\n"),
            CSeqMethod::Missing
        );
        assert_eq!(m("SIP/2.0 200 OK\r\n\r\n"), CSeqMethod::Missing);
        assert_eq!(m(""), CSeqMethod::Missing);
    }

    #[test]
    fn a_header_past_the_window_or_cut_is_not_read() {
        let far = format!(
            "SIP/2.0 200 OK\r\nX-Pad: {}\r\nCSeq: 1 REGISTER\r\n\r\n",
            "a".repeat(CSEQ_SCAN)
        );
        assert_eq!(m(&far), CSeqMethod::Missing);
        // Every cut of the message: REGISTER only once the token and what
        // ends it are inside `len`.
        let end = OK_REGISTER.find("REGISTER").unwrap() + "REGISTER".len();
        for n in 0..OK_REGISTER.len() {
            let mut buf = [0u8; CSEQ_BUF];
            buf[..OK_REGISTER.len()].copy_from_slice(OK_REGISTER.as_bytes());
            let got = cseq_method(&buf, n);
            assert_eq!(got == CSeqMethod::Register, n > end, "cut at {n}: {got:?}");
        }
    }
}
