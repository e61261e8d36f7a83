use super::*;
use crate::rules::NoRules;

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
    let only_elsewhere =
        "REGISTER sip:x SIP/2.0\r\nTo: <sip:1@x>;a=\" nonce=\"z\"\r\nSubject: nonce=\"z\"\r\n\r\n";
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
    let s = |line: &str| all(&REGISTER.replace("REGISTER sip:example.com SIP/2.0", line)).start();
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
    let s = scan_with(HeaderScan::ingress(false, 0, true), &options);
    assert_eq!(s.cseq_method(), CSeqMethod::Register);
    assert_eq!(s.transaction(), None, "an OPTIONS is read to its CSeq");
    let s = scan_with(HeaderScan::ingress(true, 0, true), &options);
    assert_eq!(s.transaction(), all(&options).transaction());
    let s = scan_with(HeaderScan::ingress(false, 0, true), REGISTER);
    assert_eq!(
        (s.transaction(), s.nonce()),
        (all(REGISTER).transaction(), all(REGISTER).nonce())
    );
    let s = scan_with(HeaderScan::ingress(false, 0, true), OK);
    assert_eq!(s.transaction(), all(OK).transaction());
}

fn scan_with(s: HeaderScan, msg: &str) -> HeaderScan {
    scan_from(s, msg.as_bytes(), &NoRules)
}

#[test]
fn names_are_compared_whole_and_dialogs_and_relays_are_seen() {
    // A name sharing CSeq's first letters, or its hash's neighbours,
    // is another header.
    let s =
        all("OPTIONS sip:x SIP/2.0\r\nCSeqX: 1 INVITE\r\nCSe: 1 INVITE\r\nCSeq: 1 OPTIONS\r\n\r\n");
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

fn denied_by(lists: &crate::rules::RuleLists, msg: &str) -> Option<Denial> {
    let table = crate::rules::compile(lists).unwrap();
    // From an address in an exchange or not, the lists judge alike.
    let judge = |exchange| {
        scan_from(
            HeaderScan::ingress(false, lists.reads(), exchange),
            msg.as_bytes(),
            &table,
        )
        .denied()
    };
    assert_eq!(judge(true), judge(false), "{msg}");
    judge(false)
}

fn lists(
    agents: &[&str],
    users: &[&str],
    domains: &[&str],
    methods: &[&str],
) -> crate::rules::RuleLists {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    crate::rules::RuleLists {
        agents: v(agents),
        users: v(users),
        domains: v(domains),
        methods: v(methods),
    }
}

/// What svmap sends.
const SVMAP: &str = "OPTIONS sip:100@198.51.100.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-1;rport\r\n\
Max-Forwards: 70\r\n\
To: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
From: \"sipvicious\"<sip:100@1.1.1.1>;tag=6162\r\n\
User-Agent: friendly-scanner\r\n\
Call-ID: 123\r\n\
Contact: sip:100@203.0.113.9:5060\r\n\
CSeq: 1 OPTIONS\r\n\
Accept: application/sdp\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn a_scanner_is_known_by_its_user_agent_wherever_it_stands() {
    let scanners = lists(&["friendly-scanner", "sipcli"], &[], &[], &[]);
    assert_eq!(denied_by(&scanners, SVMAP), Some(Denial::Agent));
    // Last, folded, in capitals, after a borrowed one.
    let moved = SVMAP
        .replace("User-Agent: friendly-scanner\r\n", "")
        .replace(
            "Content-Length: 0",
            "Content-Length: 0\r\nUser-Agent: Linphone\r\nuser-agent:\r\n   x FRIENDLY-SCANNER/2",
        );
    assert_eq!(denied_by(&scanners, &moved), Some(Denial::Agent));
    // Not a User-Agent, in the body, or a response.
    for innocent in [
        SVMAP.replace("User-Agent: friendly-scanner", "Server: friendly-scanner"),
        SVMAP.replace(
            "User-Agent: friendly-scanner",
            "X-User-Agent: friendly-scanner",
        ),
        SVMAP.replace("User-Agent: friendly-scanner\r\n", "") + "User-Agent: friendly-scanner\r\n",
        SVMAP.replace("OPTIONS sip:100@198.51.100.1 SIP/2.0", "SIP/2.0 200 OK"),
    ] {
        assert_eq!(denied_by(&scanners, &innocent), None, "{innocent}");
    }
    // Without the lists the same scan judges nothing.
    let s = scan_from(
        HeaderScan::ingress(false, 0, true),
        SVMAP.as_bytes(),
        &crate::rules::compile(&scanners).unwrap(),
    );
    assert_eq!(s.denied(), None);
    // Past what the scan reads, nothing is seen.
    let far = SVMAP
        .replace(
            "Accept:",
            &format!("X-Pad: {}\r\nAccept:", "a".repeat(EXCHANGE_SCAN)),
        )
        .replace("User-Agent: friendly-scanner\r\n", "")
        .replace(
            "Content-Length: 0",
            "User-Agent: friendly-scanner\r\nContent-Length: 0",
        );
    assert_eq!(denied_by(&scanners, &far), None);
}

#[test]
fn users_and_domains_are_read_from_the_uri_not_the_display_name() {
    let users = lists(&[], &["sipvicious", "100"], &[], &[]);
    let domains = lists(&[], &[], &["evil.example"], &[]);
    let plain = "INVITE sip:200@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK-2\r\n\
From: \"Bob\" <sip:bob@good.example>;tag=1\r\nTo: <sip:200@good.example>\r\nCall-ID: 9\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:bob@203.0.113.9:5060>\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(denied_by(&users, plain), None);
    assert_eq!(denied_by(&domains, plain), None);
    let cases: &[(&str, &str, bool, bool)] = &[
        // (from, to): user denied, domain denied
        (
            "From: \"Bob\" <sip:bob@good.example>",
            "From: \"Bob\" <sip:1001@good.example>",
            true,
            false,
        ),
        (
            "From: \"Bob\" <sip:bob@good.example>",
            "From: \"100\" <sip:bob@good.example>",
            false,
            false,
        ),
        (
            "From: \"Bob\" <sip:bob@good.example>",
            "From: \"a<sip:100@x>\\\" @\" <sip:bob@good.example>",
            false,
            false,
        ),
        (
            "From: \"Bob\" <sip:bob@good.example>",
            "f: Bob Smith <sips:SIPVICIOUS:secret@good.example:5061>",
            true,
            false,
        ),
        (
            "From: \"Bob\" <sip:bob@good.example>",
            "From: sip:bob@EVIL.example.net;tag=1",
            false,
            true,
        ),
        (
            "From: \"Bob\" <sip:bob@good.example>",
            "From: <sip:evil.example;lr>",
            false,
            true,
        ),
        (
            "From: \"Bob\" <sip:bob@good.example>",
            "From: <sip:good.example:5060>",
            false,
            false,
        ),
        (
            "From: \"Bob\" <sip:bob@good.example>",
            "From: <tel:1001;phone-context=x>",
            true,
            false,
        ),
        (
            "From: \"Bob\" <sip:bob@good.example>",
            "From: Bob\r\n <sip:100@evil.example>",
            true,
            true,
        ),
        (
            "To: <sip:200@good.example>",
            "t: sip:100@good.example",
            true,
            false,
        ),
        (
            "Contact: <sip:bob@203.0.113.9:5060>",
            "m: <sip:100@evil.example>;expires=60",
            true,
            true,
        ),
        (
            "Contact: <sip:bob@203.0.113.9:5060>",
            "Contact: *",
            false,
            false,
        ),
    ];
    for &(from, to, user, domain) in cases {
        let msg = plain.replace(from, to);
        assert_eq!(
            denied_by(&users, &msg) == Some(Denial::Header),
            user,
            "users: {to}"
        );
        assert_eq!(
            denied_by(&domains, &msg) == Some(Denial::Header),
            domain,
            "domains: {to}"
        );
    }
    // Only the first From: a second is not what a SIP server reads.
    let second = plain.replace("Call-ID", "From: <sip:100@x>\r\nCall-ID");
    assert_eq!(denied_by(&users, &second), None);
    // The To tag is still found after its URI.
    for to in [
        "To: <sip:200@good.example>;tag=9",
        "To: sip:200@good.example;tag=9",
        "To: \"x\" <sip:200@good.example>\r\n ;tag=9",
    ] {
        let msg = plain.replace("To: <sip:200@good.example>", to);
        assert!(all(&msg).in_dialog(), "{to}");
    }
    let uri_param = plain.replace(
        "To: <sip:200@good.example>",
        "To: <sip:200@good.example;tag=9>",
    );
    assert!(!all(&uri_param).in_dialog());
}

#[test]
fn methods_on_the_list_are_denied_whole_and_in_any_case() {
    let m = lists(&[], &[], &[], &["SUBSCRIBE", "PUBLISH"]);
    let msg = |method: &str| {
        format!("{method} sip:x SIP/2.0\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n")
    };
    assert_eq!(denied_by(&m, &msg("SUBSCRIBE")), Some(Denial::Method));
    assert_eq!(denied_by(&m, &msg("publish")), Some(Denial::Method));
    assert_eq!(
        denied_by(&m, &format!("\r\n{}", msg("PUBLISH"))),
        Some(Denial::Method)
    );
    assert_eq!(denied_by(&m, &msg("SUBSCRIBEX")), None);
    assert_eq!(denied_by(&m, &msg("SUBSCRIB")), None);
    assert_eq!(denied_by(&m, &msg("NOTIFY")), None);
    assert_eq!(denied_by(&m, "SUBSCRIBE\r\n\r\n"), Some(Denial::Method));
}

#[test]
fn a_word_skipped_whole_leaves_the_scan_where_bytes_would() {
    let table = crate::rules::compile(&lists(
        &["friendly-scanner"],
        &["100"],
        &["evil"],
        &["PUBLISH"],
    ))
    .unwrap();
    // A line that starts with a colon, found by the fuzz target.
    let colon_first: &[u8] = b"\t\ni:\ni:\n\xff\tI\ni:\n:i\n\ni:i:\n";
    let msgs = [SVMAP, REGISTER, OK, CHALLENGE].map(str::as_bytes);
    for msg in msgs.into_iter().chain([colon_first]) {
        for cut in 0..msg.len() {
            let m = &msg[cut..];
            let mut bytewise = HeaderScan::ingress(false, READ_LISTS, true);
            for &b in m {
                if bytewise.step(b, &table) {
                    break;
                }
            }
            assert_eq!(
                scan_from(HeaderScan::ingress(false, READ_LISTS, true), m, &table),
                bytewise
            );
        }
    }
}

/// Forms a SIP parser reads as the attacker means them, found by reading
/// the scan as an attacker would.
#[test]
fn what_a_sip_server_reads_the_lists_read() {
    let l = lists(
        &["friendly-scanner"],
        &["100"],
        &["evil.example", "[2001:db8::1]"],
        &["PUBLISH"],
    );
    let base = "INVITE sip:200@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK-2\r\n\
From: \"Bob\" <sip:bob@good.example>;tag=1\r\nTo: <sip:200@good.example>\r\nCall-ID: 9\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:bob@203.0.113.9:5060>\r\nUser-Agent: Yealink SIP-T46S\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(denied_by(&l, base), None);
    let from = "\"Bob\" <sip:bob@good.example>";
    for (what, to, want) in [
        // Blanks and NULs before the start line, as Kamailio skips them.
        ("INVITE sip:200", " PUBLISH sip:200", Denial::Method),
        ("INVITE sip:200", "\t\0\r\nPUBLISH sip:200", Denial::Method),
        // An unquoted display name with a colon, then the URI.
        (from, "a:b <sip:1001@good.example>", Denial::Header),
        (from, "a:b <sip:bob@evil.example>", Denial::Header),
        (from, "a:b\r\n <sip:bob@evil.example>", Denial::Header),
        // `;`, `?` and `,` in a user inside `<>`.
        (from, "<sip:1001;x@good.example>", Denial::Header),
        (from, "<sip:bob;x@evil.example>", Denial::Header),
        (from, "<sip:1001?x@evil.example>", Denial::Header),
        (
            from,
            "<sip:+1001;npdi@evil.example;user=phone>",
            Denial::Header,
        ),
        // An IPv6 host's colons are the host's.
        (from, "<sip:bob@[2001:db8::1]:5060>", Denial::Header),
    ] {
        let msg = base.replacen(what, to, 1);
        assert_eq!(denied_by(&l, &msg), Some(want), "{to:?}");
    }
    // A host ends at `;` inside `<>` when no `@` follows.
    for clean in [
        "<sip:good.example;evil.example>",
        "sip:bob@good.example ;x=evil.example",
        "<sip:bob@[2001:db8::2]>",
    ] {
        let msg = base.replacen(from, clean, 1);
        assert_eq!(denied_by(&l, &msg), None, "{clean:?}");
    }
    // A bare URI followed by header parameters after a blank is judged.
    let msg = base.replacen(from, "sip:bob@evil.example ;tag=1", 1);
    assert_eq!(denied_by(&l, &msg), Some(Denial::Header));
    // A To tag as Kamailio reads it, blanks and folds around its parts.
    for to in [
        "To: <sip:200@good.example>; tag=9",
        "To: <sip:200@good.example>;tag =9",
        "To: <sip:200@good.example> ;\r\n tag = 9",
        "To: sip:200@good.example ;tag=9",
    ] {
        let msg = base.replacen("To: <sip:200@good.example>", to, 1);
        assert!(all(&msg).in_dialog(), "{to:?}");
    }
}
