use super::{model, network, udp, Network, Refusal, Shape, MAX_EXT_HDRS};

const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\nUser-Agent: friendly-scanner\r\n\r\n";

/// A frame built layer by layer, lengths computed unless overridden.
#[derive(Clone)]
struct Build {
    tags: usize,
    v6: bool,
    /// IPv6 extension headers before UDP: (type, 8-byte units after the first).
    ext: Vec<(u8, u8)>,
    /// IPv4 fragment field, or the IPv6 Fragment header's offset field.
    frag: Option<u16>,
    ip_len: Option<u16>,
    udp_len: Option<u16>,
    payload: Vec<u8>,
    /// Bytes of the datagram kept (a first fragment's cut), then padding.
    cut: Option<usize>,
    pad: usize,
}

impl Build {
    fn new(v6: bool) -> Self {
        Self {
            tags: 0,
            v6,
            ext: Vec::new(),
            frag: None,
            ip_len: None,
            udp_len: None,
            payload: REGISTER.to_vec(),
            cut: None,
            pad: 0,
        }
    }

    fn frame(&self) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        for i in 0..self.tags {
            f.extend_from_slice(&[0x81, 0x00, 0, i as u8 + 1]);
        }
        let mut l4 = vec![0x13, 0xc6, 0x13, 0xc4];
        let ulen = self.udp_len.unwrap_or(8 + self.payload.len() as u16);
        l4.extend_from_slice(&ulen.to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        l4.extend_from_slice(&self.payload);
        if self.v6 {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut chain = Vec::new();
            let mut kinds: Vec<u8> = self.ext.iter().map(|e| e.0).collect();
            if self.frag.is_some() {
                kinds.push(44);
            }
            kinds.push(17);
            for (i, (_, units)) in self.ext.iter().enumerate() {
                chain.push(kinds[i + 1]);
                chain.push(*units);
                chain.extend(std::iter::repeat_n(1, 6 + 8 * usize::from(*units)));
            }
            if let Some(off) = self.frag {
                chain.extend_from_slice(&[17, 0]);
                chain.extend_from_slice(&off.to_be_bytes());
                chain.extend_from_slice(&[0, 0, 0, 7]);
            }
            let body = [chain, l4].concat();
            let body = &body[..self.cut.unwrap_or(body.len()).min(body.len())];
            let len = self.ip_len.unwrap_or(body.len() as u16);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&[kinds[0], 64]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(body);
        } else {
            f.extend_from_slice(&[0x08, 0x00]);
            let l4 = &l4[..self.cut.unwrap_or(l4.len()).min(l4.len())];
            let len = self.ip_len.unwrap_or(20 + l4.len() as u16);
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&[0, 1]);
            f.extend_from_slice(&self.frag.unwrap_or(0).to_be_bytes());
            f.extend_from_slice(&[64, 17, 0, 0, 203, 0, 113, 9, 198, 51, 100, 1]);
            f.extend_from_slice(l4);
        }
        f.extend(std::iter::repeat_n(0, self.pad));
        f
    }
}

fn read(f: &[u8]) -> (Network, super::Udp) {
    let n = network(f).expect("a network layer");
    let u = udp(f, &n).expect("a UDP header");
    (n, u)
}

#[test]
fn a_plain_datagram_reads_as_the_socket_gets_it() {
    for v6 in [false, true] {
        let f = Build::new(v6).frame();
        let (n, u) = read(&f);
        assert_eq!(n.shape, Shape::Whole);
        assert!(u.valid);
        assert_eq!(u.dst_port, 5060);
        assert_eq!(&f[u.payload_off..u.payload_off + u.payload_len], REGISTER);
        model::check(&f).unwrap();
    }
}

#[test]
fn padding_after_the_datagram_is_not_payload() {
    for v6 in [false, true] {
        let mut b = Build::new(v6);
        b.payload = b"\r\n\r\n".to_vec();
        b.pad = 40;
        // A UDP length of 0 is the rest of the IPv6 datagram, not the frame.
        b.udp_len = v6.then_some(0);
        let f = b.frame();
        let (_, u) = read(&f);
        assert!(u.valid);
        assert_eq!(u.payload_len, 4, "v6 {v6}");
        model::check(&f).unwrap();
    }
}

#[test]
fn lengths_linux_refuses_are_invalid() {
    for v6 in [false, true] {
        // The IP length past the frame.
        let mut b = Build::new(v6);
        b.ip_len = Some(1400);
        assert_eq!(network(b.frame().as_slice()), Err(Refusal::Invalid));
        // A UDP length past the IP length, or short of its header.
        for ulen in [9 + REGISTER.len() as u16, 7] {
            let mut b = Build::new(v6);
            b.udp_len = Some(ulen);
            let (_, u) = read(&b.frame());
            assert!(!u.valid, "v6 {v6} ulen {ulen}");
        }
    }
    // An IPv4 UDP length of 0 is refused; IPv6 reads it as the rest.
    let mut b = Build::new(false);
    b.udp_len = Some(0);
    assert!(!read(&b.frame()).1.valid);
    // An IPv6 payload length of 0 (a jumbogram's).
    let mut b = Build::new(true);
    b.ip_len = Some(0);
    assert_eq!(network(b.frame().as_slice()), Err(Refusal::Invalid));
}

#[test]
fn a_shorter_udp_length_is_what_linux_trims_to() {
    for v6 in [false, true] {
        let mut b = Build::new(v6);
        b.udp_len = Some(8 + 8);
        let f = b.frame();
        let (_, u) = read(&f);
        assert!(u.valid);
        assert_eq!(
            &f[u.payload_off..u.payload_off + u.payload_len],
            b"REGISTER"
        );
        model::check(&f).unwrap();
    }
}

#[test]
fn a_chain_past_the_walk_is_a_long_chain_not_a_fragment() {
    let mut b = Build::new(true);
    b.ext = vec![(60, 0); MAX_EXT_HDRS];
    let (n, u) = read(&b.frame());
    assert_eq!(n.shape, Shape::Whole);
    assert!(u.valid);
    b.ext.push((60, 0));
    let f = b.frame();
    assert_eq!(network(f.as_slice()).unwrap().shape, Shape::LongChain);
    model::check(&f).unwrap();
}

#[test]
fn fragments() {
    for v6 in [false, true] {
        // IPv4's MF bit is 0x2000, IPv6's M flag 1; offsets in 8-byte units.
        let (first, later) = if v6 { (1, 8 << 3) } else { (0x2000, 8) };
        let mut b = Build::new(v6);
        b.frag = Some(first);
        b.payload = REGISTER.repeat(20);
        b.cut = Some(if v6 { 8 + 8 + 1024 } else { 8 + 1024 });
        let f = b.frame();
        let (n, u) = read(&f);
        assert_eq!(n.shape, Shape::FirstFragment);
        assert!(u.valid);
        model::check(&f).unwrap();
        // A first fragment that carries the UDP header and 8 bytes.
        b.cut = Some(if v6 { 8 + 16 } else { 16 });
        let f = b.frame();
        let (_, u) = read(&f);
        assert!(!u.valid, "v6 {v6}: too short to read");
        model::check(&f).unwrap();
        // Only the UDP header.
        b.cut = Some(if v6 { 8 + 8 } else { 8 });
        assert!(!read(&b.frame()).1.valid);
        let mut b = Build::new(v6);
        b.frag = Some(later);
        assert_eq!(
            network(b.frame().as_slice()).unwrap().shape,
            Shape::LaterFragment
        );
    }
}

#[test]
fn vlan_stacks_up_to_eight_deep_and_no_deeper() {
    for tags in 0..=8 {
        let mut b = Build::new(tags % 2 == 0);
        b.tags = tags;
        let (n, u) = read(&b.frame());
        assert_eq!(n.shape, Shape::Whole);
        assert_eq!(u.dst_port, 5060);
    }
    let mut b = Build::new(false);
    b.tags = 9;
    assert_eq!(network(b.frame().as_slice()), Err(Refusal::Invalid));
}

/// A deterministic stream of mutated frames: every shape above, with
/// header bytes, lengths and cuts changed at random. Each must keep the
/// parser's promise (`model::check`).
#[test]
fn mutated_frames_keep_the_promise() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut delivered = 0;
    for i in 0..200_000 {
        let r = next();
        let mut b = Build::new(r & 1 == 0);
        b.tags = (r >> 1) as usize % 4 * usize::from(r >> 3 & 7 == 0) * 3;
        if b.v6 {
            let n = (r >> 6) as usize % 9;
            b.ext = (0..n)
                .map(|k| {
                    (
                        [0, 43, 60, 51][(r >> (10 + k)) as usize % 4],
                        (r >> (20 + k)) as u8 % 2,
                    )
                })
                .collect();
        }
        if r >> 30 & 3 == 0 {
            // The offset (IPv6 keeps it above its flag bits), then "more".
            let (unit, more) = if b.v6 { (8, 1) } else { (1, 0x2000) };
            b.frag = Some(((next() % 4) as u16 * unit) | ((r >> 32 & 1) as u16 * more));
        }
        if r >> 34 & 7 == 0 {
            b.udp_len = Some((next() % 200) as u16);
        }
        if r >> 37 & 7 == 0 {
            b.ip_len = Some((next() % 200) as u16);
        }
        if r >> 40 & 3 == 0 {
            b.cut = Some((next() % 120) as usize);
        }
        b.pad = (r >> 42) as usize % 3 * 12;
        let mut f = b.frame();
        // Flip a few bytes anywhere in the headers.
        for _ in 0..(r >> 45) % 3 {
            let at = (next() % 120) as usize % f.len();
            f[at] ^= 1 << (next() % 8);
        }
        if let Err(e) = model::check(&f) {
            panic!("frame {i}: {e}\n{f:02x?}");
        }
        delivered += usize::from(model::deliver(&f).is_some());
    }
    eprintln!("{delivered} of 200000 delivered");
    // Most frames are ones Linux delivers: the promise is tested, not
    // skipped.
    assert!(delivered > 70_000, "{delivered}");
}

/// A first fragment must carry at least `FIRST_FRAGMENT_HEAD` bytes of
/// payload (or all of it): a scanner's REGISTER cut after its first line
/// would otherwise reach the socket with its User-Agent never read.
#[test]
fn a_first_fragment_short_of_the_head_is_unreadable() {
    let long = [REGISTER, b"X-Pad: 0123456789\r\n"[..].repeat(60).as_slice()].concat();
    for v6 in [false, true] {
        let mut b = Build::new(v6);
        b.payload = long.clone();
        b.frag = Some(if v6 { 1 } else { 0x2000 });
        let hdrs = if v6 { 8 + 8 } else { 8 };
        for (head, valid) in [
            (16, false),
            (64, false),
            (504, false),
            (512, true),
            (1024, true),
        ] {
            b.cut = Some(hdrs + head);
            let f = b.frame();
            let (n, u) = read(&f);
            assert_eq!(n.shape, Shape::FirstFragment);
            assert_eq!(u.payload_len, head, "v6 {v6}");
            assert_eq!(u.valid, valid, "v6 {v6}, {head} bytes of payload");
            model::check(&f).unwrap();
        }
    }
}

/// A first fragment whose extension chain runs off its end: Linux queues
/// it (RFC 7112's check lets through what it cannot walk), and the datagram
/// that reassembles may reach the socket, so it is refused, never passed
/// as cut short.
#[test]
fn a_chain_cut_by_a_first_fragment_is_refused() {
    let mut b = Build::new(true);
    b.ext = vec![(60, 0), (60, 0)];
    b.frag = Some(1);
    let whole = b.frame();
    // Ethernet, IPv6, then the Fragment header the builder puts last: cut
    // the chain inside the second header (8 + 8 + 2 bytes of the body).
    for keep in [8, 9, 10, 15] {
        let mut f = whole[..14 + 40 + keep].to_vec();
        f[18..20].copy_from_slice(&(keep as u16).to_be_bytes());
        assert_ne!(network(f.as_slice()), Err(Refusal::Truncated), "{keep}");
    }
    // The same, the fragment header first: the builder's order reversed.
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 16, 44, 64]);
    f.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[60, 0, 0, 1, 0, 0, 0, 7]);
    f.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    assert_eq!(network(f.as_slice()), Err(Refusal::Invalid));
    assert!(model::deliver(&f).is_some_and(|d| d.unknown));
    model::check(&f).unwrap();
}

/// Linux trims an IPv4 fragment with more to come to whole eight-byte
/// units: what is read of its head is what reassembles.
#[test]
fn an_ipv4_first_fragment_is_read_as_linux_trims_it() {
    let mut b = Build::new(false);
    b.frag = Some(0x2000);
    b.cut = Some(8 + 20);
    let f = b.frame();
    let (n, u) = read(&f);
    assert_eq!(n.shape, Shape::FirstFragment);
    assert_eq!(u.payload_len, 16);
    model::check(&f).unwrap();
}
