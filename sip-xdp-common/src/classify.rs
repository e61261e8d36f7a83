//! SIP sanity classifier over the first bytes of a UDP payload.
//!
//! The XDP program copies at most [`CLASSIFY_LEN`] payload bytes into a stack
//! buffer and calls [`classify`]; the host runs the very same function in unit
//! tests. It only looks at the start line: requiring `SIP/2.0` somewhere in the
//! first N bytes (as some filters do) drops legitimate requests whose
//! Request-URI is long.

/// Payload bytes the classifier looks at. Long enough for the longest common
/// method, a space and `sips:` (`SUBSCRIBE sips:` is 15 bytes).
pub const CLASSIFY_LEN: usize = 16;

/// The payload length of a UDP datagram whose length field says
/// `udp_len`, with `in_frame` bytes after its header in the frame. A length
/// of 0, which Linux reads over IPv6 as "the rest of the datagram" (RFC
/// 2675) and delivers so, is the rest of the frame: the payload a socket
/// gets is never hidden behind it.
#[inline(always)]
pub const fn udp_payload_len(udp_len: u16, in_frame: usize) -> usize {
    if udp_len == 0 {
        in_frame
    } else {
        (udp_len as usize).saturating_sub(8)
    }
}

/// What the first payload bytes say the datagram is.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SipClass {
    Register = 0,
    Invite = 1,
    Options = 2,
    /// Any other request: ACK, BYE, CANCEL, SUBSCRIBE, extension methods...
    OtherRequest = 3,
    /// A status line, `SIP/2.0 `.
    Response = 4,
    /// CRLF keep-alive (RFC 5626 §4.4.1) or a STUN binding on the SIP flow
    /// (RFC 5626 §4.4.2, which outbound UAs send over UDP).
    Keepalive = 5,
    /// Nothing a SIP element sends.
    Malformed = 6,
    /// A SigComp message (RFC 3320 §7: the first byte's top five bits
    /// set), compressed SIP: not read, and never taken for malformed.
    SigComp = 7,
}

/// Number of `SipClass` values (length of per-class counter arrays).
pub const SIP_CLASSES: usize = 8;

impl SipClass {
    pub const ALL: [SipClass; SIP_CLASSES] = [
        SipClass::Register,
        SipClass::Invite,
        SipClass::Options,
        SipClass::OtherRequest,
        SipClass::Response,
        SipClass::Keepalive,
        SipClass::Malformed,
        SipClass::SigComp,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            SipClass::Register => "register",
            SipClass::Invite => "invite",
            SipClass::Options => "options",
            SipClass::OtherRequest => "other_request",
            SipClass::Response => "response",
            SipClass::Keepalive => "keepalive",
            SipClass::Malformed => "malformed",
            SipClass::SigComp => "sigcomp",
        }
    }
}

/// Shortest methods are 3 letters (ACK, BYE).
const MIN_METHOD: usize = 3;

// The classifier works on the window as two little-endian 64-bit words,
// eight bytes at a time (SWAR), without loops or indexing, so the verifier
// follows few paths through it. Byte loops, with an exit at every byte
// and indices the verifier has to track, multiply the paths it walks
// through the whole program.

const fn rep(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}
const LOW7: u64 = rep(0x7f);
const HIGH: u64 = rep(0x80);

/// The word of an 8-byte string as it sits in memory.
const fn word(s: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < s.len() {
        w |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    w
}

/// `SIP/2.0 `, lowered: the version is case-insensitive (RFC 3261 §7.1).
const RESPONSE: u64 = word(b"sip/2.0 ");
const REGISTER: u64 = word(b"REGISTER");
const INVITE: u64 = word(b"INVITE");
const OPTIONS: u64 = word(b"OPTIONS");
/// The top five bits of a SigComp message's first byte (RFC 3320 §7); no
/// SIP start line, keep-alive or STUN message begins so.
const SIGCOMP: u64 = 0xf8;
/// The STUN magic cookie, bytes 4 to 7 of a STUN header.
const STUN_MAGIC: u64 = word(&[0x21, 0x12, 0xa4, 0x42]);

/// Bits of the first `n` bytes (n ≤ 8).
#[inline(always)]
const fn bytes_mask(n: u64) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// 0x80 in every byte of `x` that is zero, exactly (no borrow between bytes).
#[inline(always)]
const fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// 0x80 in every byte of `x` that is an ASCII upper-case letter.
#[inline(always)]
const fn upper_bytes(x: u64) -> u64 {
    let low = x & LOW7;
    // Bytes under 0x80 plus (0x80 - c) reach 0x80 exactly when ≥ c.
    let at_least_a = low.wrapping_add(rep(0x80 - b'A'));
    let past_z = low.wrapping_add(rep(0x80 - b'Z' - 1));
    at_least_a & !past_z & !x & HIGH
}

/// ASCII upper-case letters of `x` lowered, as `u8::to_ascii_lowercase`.
#[inline(always)]
const fn lower(x: u64) -> u64 {
    x | (upper_bytes(x) >> 2)
}

/// 0x80 in every byte of `x` from `lo` to `hi` (ASCII).
#[inline(always)]
const fn range_bytes(x: u64, lo: u8, hi: u8) -> u64 {
    let low = x & LOW7;
    let at_least = low.wrapping_add(rep(0x80 - lo));
    let past = low.wrapping_add(rep(0x80 - hi - 1));
    at_least & !past & !x & HIGH
}

/// 0x80 in every byte of `x` that may be in a URI scheme (RFC 3261
/// §25.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`), and in every
/// letter.
#[inline(always)]
const fn scheme_bytes(x: u64) -> (u64, u64) {
    let alpha = upper_bytes(x & !rep(0x20));
    let other = range_bytes(x, b'0', b'9')
        | (zero_bytes(x ^ rep(b'+')) | zero_bytes(x ^ rep(b'-')) | zero_bytes(x ^ rep(b'.')))
            & HIGH;
    (alpha | other, alpha)
}

/// 0x80 in every CR or LF byte of `x`.
#[inline(always)]
const fn line_end_bytes(x: u64) -> u64 {
    (zero_bytes(x ^ rep(b'\r')) | zero_bytes(x ^ rep(b'\n'))) & HIGH
}

/// Index of the lowest byte flagged 0x80 in `flags` (which is not 0).
#[inline(always)]
const fn first_flagged(flags: u64) -> u64 {
    let lowest = (flags & flags.wrapping_neg()) >> 7;
    // `lowest` has 1 in byte k only: the product's top byte is byte 7-k of
    // the constant, which holds k.
    lowest.wrapping_mul(0x0001_0203_0405_0607) >> 56
}

/// Byte `i` (< 16) of the window.
#[inline(always)]
const fn byte_at(w: [u64; 2], i: u64) -> u64 {
    if i < 8 {
        (w[0] >> (8 * i)) & 0xff
    } else {
        (w[1] >> (8 * (i - 8))) & 0xff
    }
}

/// The window's bytes from `start` (1..16) on, zeros past its end.
#[inline(always)]
const fn from_byte(w: [u64; 2], start: u64) -> u64 {
    if start >= 8 {
        w[1] >> (8 * (start - 8))
    } else {
        (w[0] >> (8 * start)) | (w[1] << (64 - 8 * start))
    }
}

/// Classifies a payload given its first `len` bytes in `buf` (`len` is the
/// payload length capped at `CLASSIFY_LEN`; bytes past it are ignored).
#[inline(always)]
pub fn classify(buf: &[u8; CLASSIFY_LEN], len: usize) -> SipClass {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&buf[..8]);
    hi.copy_from_slice(&buf[8..]);
    classify_words([u64::from_le_bytes(lo), u64::from_le_bytes(hi)], len)
}

/// `classify` on the window as two little-endian words, as the XDP program
/// loads it.
#[inline(always)]
pub fn classify_words(w: [u64; 2], len: usize) -> SipClass {
    let len = if len > CLASSIFY_LEN {
        CLASSIFY_LEN as u64
    } else {
        len as u64
    };
    if len == 0 {
        return SipClass::Malformed;
    }
    if w[0] & SIGCOMP == SIGCOMP {
        return SipClass::SigComp;
    }
    if is_keepalive(w[0], len) {
        return SipClass::Keepalive;
    }
    // CR/LF before the start line, as SIP servers skip them (RFC 3261
    // §7.5), up to seven: what follows is judged on the window's rest.
    // Shifted without a branch: each one here is a path the verifier walks
    // through the rest of the program.
    let not_crlf = !line_end_bytes(w[0]) & HIGH;
    if not_crlf == 0 {
        return SipClass::Malformed;
    }
    let skip = first_flagged(not_crlf);
    if skip >= len {
        return SipClass::Malformed;
    }
    let full = len == CLASSIFY_LEN as u64;
    let bits = 8 * skip;
    let w = [(w[0] >> bits) | ((w[1] << (63 - bits)) << 1), w[1] >> bits];
    let len = len - skip;
    if len >= 8 && lower(w[0]) == RESPONSE {
        return SipClass::Response;
    }
    request_class(w, len, full)
}

#[inline(always)]
fn is_keepalive(w0: u64, len: u64) -> bool {
    // CRLF pings are at most "\r\n\r\n".
    if len <= 4 {
        let crlf = zero_bytes(w0 ^ rep(b'\r')) | zero_bytes(w0 ^ rep(b'\n'));
        return !crlf & HIGH & bytes_mask(len) == 0;
    }
    // STUN: two zero top bits, then the magic cookie at offset 4.
    len >= 8 && w0 & 0xc0 == 0 && w0 >> 32 == STUN_MAGIC
}

/// `full`: the window was full, so what it cuts off goes on.
#[inline(always)]
fn request_class(w: [u64; 2], len: u64, full: bool) -> SipClass {
    // Method: upper-case token (methods are case-sensitive), then one space
    // inside the payload.
    let other0 = !upper_bytes(w[0]) & HIGH;
    let other1 = !upper_bytes(w[1]) & HIGH;
    let sp = if other0 != 0 {
        first_flagged(other0)
    } else if other1 != 0 {
        8 + first_flagged(other1)
    } else {
        CLASSIFY_LEN as u64
    };
    if sp >= len || sp < MIN_METHOD as u64 || byte_at(w, sp) != u64::from(b' ') {
        return SipClass::Malformed;
    }
    if !uri_scheme_plausible(w, len, sp + 1, full) {
        return SipClass::Malformed;
    }
    // The space is known to follow the token, so the first word decides.
    if sp == 8 && w[0] == REGISTER {
        SipClass::Register
    } else if sp == 6 && w[0] & bytes_mask(6) == INVITE {
        SipClass::Invite
    } else if sp == 7 && w[0] & bytes_mask(7) == OPTIONS {
        SipClass::Options
    } else {
        SipClass::OtherRequest
    }
}

/// The Request-URI starts with a scheme and its colon (RFC 3261 §25.1:
/// `sip:`, `sips:`, `tel:`, and any other, such as `pres:` or `im:`),
/// judged on the bytes we have: a URI cut off by a full window is accepted
/// as far as it goes. Eight bytes are read: a longer scheme is judged on
/// them.
#[inline(always)]
fn uri_scheme_plausible(w: [u64; 2], len: u64, start: u64, full: bool) -> bool {
    if start >= len {
        // Nothing after the method's space (or past our window): the start
        // line is cut off, not malformed, only if the window is full.
        return full;
    }
    let have = len - start;
    let seen = if have < 8 { have } else { 8 };
    let uri = from_byte(w, start) & bytes_mask(seen);
    let (scheme, alpha) = scheme_bytes(uri);
    if alpha & 0x80 == 0 {
        return false;
    }
    let colon = zero_bytes(uri ^ rep(b':')) & HIGH & bytes_mask(seen);
    if colon != 0 {
        let k = first_flagged(colon);
        return !scheme & HIGH & bytes_mask(k) == 0;
    }
    // No colon in what we see: a scheme of eight or more, or one the
    // window cut off.
    (have > 8 || full) && !scheme & HIGH & bytes_mask(seen) == 0
}

/// Host-side convenience: classify a whole payload slice.
#[cfg(not(target_arch = "bpf"))]
pub fn classify_payload(payload: &[u8]) -> SipClass {
    let mut buf = [0u8; CLASSIFY_LEN];
    let n = payload.len().min(CLASSIFY_LEN);
    buf[..n].copy_from_slice(&payload[..n]);
    classify(&buf, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: &[u8]) -> SipClass {
        classify_payload(p)
    }

    const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\nTo: Bob <sip:bob@example.com>\r\nFrom: Bob <sip:bob@example.com>;tag=456248\r\nCall-ID: 843817637684230@998sdasdh09\r\nCSeq: 1826 REGISTER\r\nContact: <sip:bob@198.51.100.10>\r\nExpires: 7200\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn common_requests() {
        assert_eq!(c(REGISTER), SipClass::Register);
        assert_eq!(
            c(b"INVITE sip:+15551234567@pbx.example.com;user=phone SIP/2.0\r\n"),
            SipClass::Invite
        );
        assert_eq!(
            c(b"OPTIONS sip:100@203.0.113.1 SIP/2.0\r\n"),
            SipClass::Options
        );
        for m in [
            "ACK",
            "BYE",
            "CANCEL",
            "PRACK",
            "SUBSCRIBE",
            "NOTIFY",
            "PUBLISH",
            "INFO",
            "REFER",
            "MESSAGE",
            "UPDATE",
        ] {
            let msg = format!("{m} sip:alice@example.com SIP/2.0\r\n\r\n");
            assert_eq!(c(msg.as_bytes()), SipClass::OtherRequest, "{m}");
        }
    }

    #[test]
    fn other_uri_schemes_and_extension_methods() {
        assert_eq!(
            c(b"SUBSCRIBE sips:bob@example.com SIP/2.0\r\n"),
            SipClass::OtherRequest
        );
        assert_eq!(c(b"INVITE tel:+15551234567 SIP/2.0\r\n"), SipClass::Invite);
        assert_eq!(c(b"INVITE urn:service:sos SIP/2.0\r\n"), SipClass::Invite);
        assert_eq!(
            c(b"INVITE SIP:bob@example.com SIP/2.0\r\n"),
            SipClass::Invite
        );
        assert_eq!(c(b"FOOBAR sip:x SIP/2.0\r\n"), SipClass::OtherRequest);
        // Any scheme RFC 3261 allows (RFC 3856's pres:, RFC 3860's im:).
        assert_eq!(
            c(b"SUBSCRIBE pres:alice@example.com SIP/2.0\r\n"),
            SipClass::OtherRequest
        );
        assert_eq!(c(b"MESSAGE im:bob@x SIP/2.0\r\n"), SipClass::OtherRequest);
        assert_eq!(c(b"INVITE x-a.b+c:1 SIP/2.0\r\n"), SipClass::Invite);
        for bad in [
            &b"INVITE 1sip:x SIP/2.0\r\n"[..],
            b"INVITE sip x SIP/2.0\r\n",
            b"INVITE :x SIP/2.0\r\n",
            b"INVITE s_p:x SIP/2.0\r\n",
        ] {
            assert_eq!(c(bad), SipClass::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn what_servers_skip_and_the_version_in_any_case() {
        assert_eq!(c(b"\r\nREGISTER sip:x SIP/2.0\r\n"), SipClass::Register);
        assert_eq!(c(b"\r\n\r\nINVITE sip:x SIP/2.0\r\n"), SipClass::Invite);
        assert_eq!(c(b"\nsip/2.0 200 OK\r\n"), SipClass::Response);
        assert_eq!(c(b"sip/2.0 200 OK\r\n"), SipClass::Response);
        assert_eq!(c(b"Sip/2.0 180 Ringing\r\n"), SipClass::Response);
        // Up to seven: more is nothing a SIP element sends.
        assert_eq!(c(b"\r\n\r\n\r\nOPTIONS sip:x"), SipClass::Options);
        assert_eq!(c(b"\r\n\r\n\r\n\r\nOPTIONS sip:x"), SipClass::Malformed);
        assert_eq!(c(&[b'\n'; 40]), SipClass::Malformed);
    }

    #[test]
    fn long_request_uri_is_not_malformed() {
        let uri = "a".repeat(2000);
        let msg = format!("INVITE sip:{uri}@example.com SIP/2.0\r\n");
        assert_eq!(c(msg.as_bytes()), SipClass::Invite);
    }

    #[test]
    fn responses() {
        assert_eq!(c(b"SIP/2.0 200 OK\r\n"), SipClass::Response);
        assert_eq!(c(b"SIP/2.0 401 Unauthorized\r\n"), SipClass::Response);
        assert_eq!(c(b"SIP/2.0 100 Trying\r\n"), SipClass::Response);
        assert_eq!(c(b"SIP/2.0 "), SipClass::Response);
    }

    #[test]
    fn a_udp_length_of_zero_is_the_rest_of_the_datagram() {
        assert_eq!(udp_payload_len(0, 137), 137);
        assert_eq!(udp_payload_len(145, 1000), 137);
        assert_eq!(udp_payload_len(4, 1000), 0);
    }

    /// SigComp (RFC 3320 §7, RFC 3486): compressed SIP on the SIP port,
    /// recognised by its first byte alone, whatever follows.
    #[test]
    fn sigcomp_is_its_own_class() {
        for first in 0xf8..=0xff {
            assert_eq!(c(&[first]), SipClass::SigComp, "{first:#x}");
            assert_eq!(c(&[first, 0x12, 0x34, 0x56, 0, 0, 0, 9]), SipClass::SigComp);
        }
        assert_eq!(c(&[0xf7, 0x12, 0x34]), SipClass::Malformed);
        assert_eq!(c(b"\r\n\xf8\x12\x34"), SipClass::Malformed);
    }

    #[test]
    fn keepalives() {
        assert_eq!(c(b"\r\n\r\n"), SipClass::Keepalive);
        assert_eq!(c(b"\r\n"), SipClass::Keepalive);
        assert_eq!(c(b"\n"), SipClass::Keepalive);
        // STUN binding request: type 0x0001, length 0, magic cookie, txid.
        let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[7; 12]);
        assert_eq!(c(&stun), SipClass::Keepalive);
    }

    #[test]
    fn garbage_and_other_protocols() {
        assert_eq!(c(b""), SipClass::Malformed);
        assert_eq!(c(b"\0\0\0\0"), SipClass::Malformed);
        assert_eq!(c(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), SipClass::Malformed);
        assert_eq!(
            c(b"invite sip:bob@example.com SIP/2.0"),
            SipClass::Malformed
        );
        assert_eq!(c(b"INVITE  sip:bob@example.com"), SipClass::Malformed);
        assert_eq!(c(b"INVITEsip:bob@example.com"), SipClass::Malformed);
        assert_eq!(c(b"AB sip:x SIP/2.0"), SipClass::Malformed);
        assert_eq!(c(b"SIP/2.1 200 OK"), SipClass::Malformed);
        assert_eq!(c(&[0xf7u8; 64]), SipClass::Malformed);
        assert_eq!(c(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ sip:x"), SipClass::Malformed);
        // Random bytes never panic and never claim to be a request without a
        // space: whatever is classified as a request starts with an
        // upper-case token of at least MIN_METHOD bytes and one space inside
        // the window. Half the inputs are near-requests (an upper-case run,
        // a space or a stray byte, sometimes a scheme) so that requests do
        // turn up and the property is exercised.
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut requests = 0;
        for n in 0..20_000 {
            let mut p = [0u8; 24];
            for b in &mut p {
                *b = next() as u8;
            }
            if n % 2 == 1 {
                let k = next() as usize % 16;
                for b in &mut p[..k] {
                    *b = b'A' + (next() % 26) as u8;
                }
                if next() % 4 != 0 {
                    p[k] = b' ';
                }
                if next() % 2 == 0 {
                    p[k + 1..k + 5].copy_from_slice(b"sip:");
                }
            }
            let class = c(&p);
            if matches!(
                class,
                SipClass::Register | SipClass::Invite | SipClass::Options | SipClass::OtherRequest
            ) {
                requests += 1;
                let sp = p[..CLASSIFY_LEN].iter().position(|&b| b == b' ');
                let sp = sp.unwrap_or_else(|| panic!("{class:?} without a space: {p:?}"));
                assert!(sp >= MIN_METHOD, "{class:?} with a {sp}-byte method: {p:?}");
                assert!(
                    p[..sp].iter().all(u8::is_ascii_uppercase),
                    "{class:?} with a method that is not an upper-case token: {p:?}"
                );
            }
        }
        assert!(requests > 0, "no random input classified as a request");
    }

    #[test]
    fn truncated_inputs() {
        // Every prefix of a real REGISTER: short prefixes are malformed or
        // (at full window) still a request, never a panic or a wrong class.
        for n in 0..REGISTER.len() {
            let got = c(&REGISTER[..n]);
            if n >= 13 {
                assert_eq!(got, SipClass::Register, "prefix {n}");
            } else {
                assert_eq!(got, SipClass::Malformed, "prefix {n}");
            }
        }
        assert_eq!(c(b"SIP/2.0"), SipClass::Malformed);
        assert_eq!(c(b"\r\n\r\n\r"), SipClass::Malformed);
    }

    /// A byte-loop classifier, plain to read: the specification the
    /// word-at-a-time one must match on every input.
    mod reference {
        use super::super::{SipClass, CLASSIFY_LEN, MIN_METHOD};

        const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

        /// Classifies a payload given its first `len` bytes in `buf` (`len` is the
        /// payload length capped at `CLASSIFY_LEN`; bytes past it are ignored).
        pub(super) fn classify(buf: &[u8; CLASSIFY_LEN], len: usize) -> SipClass {
            if len == 0 {
                return SipClass::Malformed;
            }
            if buf[0] >= 0xf8 {
                return SipClass::SigComp;
            }
            if is_keepalive(buf, len) {
                return SipClass::Keepalive;
            }
            let full = len == CLASSIFY_LEN;
            let mut skip = 0;
            while skip < 8 && (buf[skip] == b'\r' || buf[skip] == b'\n') {
                skip += 1;
            }
            if skip == 8 || skip >= len {
                return SipClass::Malformed;
            }
            let mut rest = [0u8; CLASSIFY_LEN];
            rest[..CLASSIFY_LEN - skip].copy_from_slice(&buf[skip..]);
            let len = len - skip;
            if len >= 8 && rest[..8].eq_ignore_ascii_case(b"SIP/2.0 ") {
                return SipClass::Response;
            }
            request_class(&rest, len, full)
        }

        fn is_keepalive(buf: &[u8; CLASSIFY_LEN], len: usize) -> bool {
            // CRLF pings are at most "\r\n\r\n".
            if len <= 4 {
                let mut i = 0;
                while i < 4 {
                    if i < len && buf[i] != b'\r' && buf[i] != b'\n' {
                        return false;
                    }
                    i += 1;
                }
                return true;
            }
            // STUN: two zero top bits, then the magic cookie at offset 4.
            len >= 8 && buf[0] & 0xc0 == 0 && buf[4..8] == STUN_MAGIC
        }

        fn request_class(buf: &[u8; CLASSIFY_LEN], len: usize, full: bool) -> SipClass {
            // Method: upper-case token (methods are case-sensitive), then one space.
            let mut sp = CLASSIFY_LEN;
            let mut i = 0;
            while i < CLASSIFY_LEN {
                if i >= len {
                    return SipClass::Malformed;
                }
                let b = buf[i];
                if b == b' ' {
                    sp = i;
                    break;
                }
                if !b.is_ascii_uppercase() {
                    return SipClass::Malformed;
                }
                i += 1;
            }
            if !(MIN_METHOD..CLASSIFY_LEN).contains(&sp) {
                return SipClass::Malformed;
            }
            if !uri_scheme_plausible(buf, len, sp + 1, full) {
                return SipClass::Malformed;
            }
            if sp == 8 && prefix_eq(buf, b"REGISTER") {
                SipClass::Register
            } else if sp == 6 && prefix_eq(buf, b"INVITE") {
                SipClass::Invite
            } else if sp == 7 && prefix_eq(buf, b"OPTIONS") {
                SipClass::Options
            } else {
                SipClass::OtherRequest
            }
        }

        /// A scheme (a letter, then letters, digits, `+`, `-`, `.`) and its
        /// colon within the first eight bytes of the URI we have; without
        /// a colon there, all of them scheme bytes and either eight of
        /// them or a full window.
        fn uri_scheme_plausible(
            buf: &[u8; CLASSIFY_LEN],
            len: usize,
            start: usize,
            full: bool,
        ) -> bool {
            if start >= len {
                return full;
            }
            let have = len - start;
            let seen = have.min(8);
            let uri = &buf[start..start + seen];
            if !uri[0].is_ascii_alphabetic() {
                return false;
            }
            let scheme_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.');
            match uri.iter().position(|&b| b == b':') {
                Some(k) => uri[..k].iter().all(scheme_byte),
                None => (have > 8 || full) && uri.iter().all(scheme_byte),
            }
        }

        fn prefix_eq<const N: usize>(buf: &[u8; CLASSIFY_LEN], p: &[u8; N]) -> bool {
            let mut i = 0;
            while i < N {
                if buf[i] != p[i] {
                    return false;
                }
                i += 1;
            }
            true
        }
    }

    /// Every length of windows built from the bytes the classifier
    /// branches on (method letters, space, scheme letters in both cases,
    /// ':', CR, LF, the STUN cookie, high bytes), three million of them:
    /// the same class as the reference.
    #[test]
    fn matches_the_byte_loop_reference() {
        const PIECES: &[&[u8]] = &[
            b"REGISTER ",
            b"INVITE ",
            b"OPTIONS ",
            b"ACK ",
            b"AB ",
            b"SIP/2.0 ",
            b"sip/2.0 ",
            b"pres:",
            b"x-1.+",
            b"sip:",
            b"SIPS:",
            b"sIps:",
            b"tel:",
            b"TEL:",
            b"urn:",
            b"uRn:",
            b"sip",
            b"\r\n",
            b"\r",
            b"\n",
            b" ",
            b":",
            b"@",
            b"A",
            b"Z",
            b"[",
            b"@",
            b"a",
            b"z",
            b"\x00\x01\x00\x00\x21\x12\xa4\x42",
            b"\x21\x12\xa4\x42",
            b"\xc1",
            b"\xda",
            b"\x80",
            b"\xff",
            b"\xf8",
            b"\xf7",
            b"\x00",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut seen = [0usize; SIP_CLASSES];
        for n in 0..3_000_000u32 {
            let mut buf = [0u8; CLASSIFY_LEN];
            let mut at = 0;
            while at < CLASSIFY_LEN {
                let r = next();
                if n % 3 == 0 {
                    buf[at] = r as u8;
                    at += 1;
                } else {
                    let piece = PIECES[(r % PIECES.len() as u64) as usize];
                    for &b in piece.iter().take(CLASSIFY_LEN - at) {
                        buf[at] = b;
                        at += 1;
                    }
                }
            }
            let len = (next() % (CLASSIFY_LEN as u64 + 1)) as usize;
            let want = reference::classify(&buf, len);
            assert_eq!(classify(&buf, len), want, "{buf:?} len {len}");
            seen[want as usize] += 1;
        }
        // Every class turned up, so every branch was compared.
        assert!(seen.iter().all(|&k| k > 100), "{seen:?}");
    }

    #[test]
    fn window_cut_inside_scheme_is_accepted() {
        // "SUBSCRIBE sips:" fills 15 bytes; an extension method whose URI
        // starts past the window is judged on the method alone.
        assert_eq!(c(b"ABCDEFGHIJKL sip:bob@x"), SipClass::OtherRequest);
        assert_eq!(c(b"ABCDEFGHIJKLMNO sip:bob@x"), SipClass::OtherRequest);
    }
}
