//! Crafted Ethernet frames, built with etherparse.

use std::net::IpAddr;

use etherparse::{
    EtherType, Ethernet2Header, IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv4Options,
    Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, PacketBuilder, VlanId,
};

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub const OPTIONS: &[u8] = b"OPTIONS sip:100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-1\r\nMax-Forwards: 70\r\nFrom: <sip:probe@203.0.113.9>;tag=1\r\nTo: <sip:100@198.51.100.1>\r\nCall-ID: 1@203.0.113.9\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
pub const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-2\r\nMax-Forwards: 70\r\nFrom: <sip:100@example.com>;tag=2\r\nTo: <sip:100@example.com>\r\nCall-ID: 2@203.0.113.9\r\nCSeq: 1 REGISTER\r\nContact: <sip:100@203.0.113.9>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n";
pub const INVITE: &[u8] = b"INVITE sip:200@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-3\r\nMax-Forwards: 70\r\nFrom: <sip:100@example.com>;tag=3\r\nTo: <sip:200@example.com>\r\nCall-ID: 3@203.0.113.9\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

#[derive(Clone, Debug)]
pub enum L4 {
    Udp { sport: u16, dport: u16 },
    Tcp { sport: u16, dport: u16 },
}

/// A frame to build. Defaults: untagged, UDP 5062 -> 5060, the OPTIONS above.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub vlans: Vec<u16>,
    pub l4: L4,
    pub payload: Vec<u8>,
    pub ipv4_options: Vec<u8>,
    /// Fragment offset in 8-byte units and the more-fragments flag.
    pub fragment: Option<(u16, bool)>,
    pub ipv6_hop_by_hop: bool,
    /// Pad the frame to this length with zeros (Ethernet minimum is 60).
    pub pad_to: usize,
}

impl Frame {
    pub fn sip(src: &str, payload: &[u8]) -> Self {
        let src: IpAddr = src.parse().expect("test address");
        let dst: IpAddr = if src.is_ipv4() {
            "198.51.100.1".parse().unwrap()
        } else {
            "2001:db8:1::1".parse().unwrap()
        };
        Self {
            src,
            dst,
            vlans: Vec::new(),
            l4: L4::Udp {
                sport: 5062,
                dport: 5060,
            },
            payload: payload.to_vec(),
            ipv4_options: Vec::new(),
            fragment: None,
            ipv6_hop_by_hop: false,
            pad_to: 0,
        }
    }
    /// A response from the protected server (port 5060) to `client`.
    pub fn reply(client: &str, payload: &[u8]) -> Self {
        let mut f = Self::sip(client, payload);
        std::mem::swap(&mut f.src, &mut f.dst);
        f.l4 = L4::Udp {
            sport: 5060,
            dport: 5062,
        };
        f
    }
    pub fn udp_sport(mut self, sport: u16) -> Self {
        if let L4::Udp { dport, .. } = self.l4 {
            self.l4 = L4::Udp { sport, dport };
        }
        self
    }
    pub fn udp_port(mut self, dport: u16) -> Self {
        self.l4 = L4::Udp { sport: 5062, dport };
        self
    }
    pub fn tcp(mut self, dport: u16) -> Self {
        self.l4 = L4::Tcp {
            sport: 40000,
            dport,
        };
        self
    }
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans.push(id);
        self
    }
    pub fn ipv4_options(mut self, opts: &[u8]) -> Self {
        self.ipv4_options = opts.to_vec();
        self
    }
    pub fn fragment(mut self, offset_units: u16, more: bool) -> Self {
        self.fragment = Some((offset_units, more));
        self
    }
    pub fn hop_by_hop(mut self) -> Self {
        self.ipv6_hop_by_hop = true;
        self
    }
    pub fn pad_to(mut self, n: usize) -> Self {
        self.pad_to = n;
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
        let ip = self.ip_headers();
        let step = match self.vlans.as_slice() {
            [] => eth.ip(ip),
            [one] => eth.single_vlan(VlanId::try_new(*one).unwrap()).ip(ip),
            [outer, inner] => eth
                .double_vlan(
                    VlanId::try_new(*outer).unwrap(),
                    VlanId::try_new(*inner).unwrap(),
                )
                .ip(ip),
            _ => panic!("at most two VLAN tags"),
        };
        let mut out = Vec::new();
        match self.l4 {
            L4::Udp { sport, dport } => step
                .udp(sport, dport)
                .write(&mut out, &self.payload)
                .expect("frame"),
            L4::Tcp { sport, dport } => step
                .tcp(sport, dport, 1, 64240)
                .write(&mut out, &self.payload)
                .expect("frame"),
        }
        if out.len() < self.pad_to {
            out.resize(self.pad_to, 0);
        }
        out
    }

    fn ip_headers(&self) -> IpHeaders {
        let proto = match self.l4 {
            L4::Udp { .. } => IpNumber::UDP,
            L4::Tcp { .. } => IpNumber::TCP,
        };
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4Header::new(0, 64, proto, s.octets(), d.octets()).unwrap();
                h.options = Ipv4Options::try_from(self.ipv4_options.as_slice()).expect("options");
                if let Some((off, more)) = self.fragment {
                    h.fragment_offset = IpFragOffset::try_new(off).unwrap();
                    h.more_fragments = more;
                }
                IpHeaders::Ipv4(h, Default::default())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let h = Ipv6Header {
                    hop_limit: 64,
                    source: s.octets(),
                    destination: d.octets(),
                    ..Default::default()
                };
                let mut ext = Ipv6Extensions::default();
                if self.ipv6_hop_by_hop {
                    // Router alert option, padded to 8 bytes.
                    ext.hop_by_hop_options =
                        Some(Ipv6RawExtHeader::new_raw(proto, &[5, 2, 0, 0, 1, 0]).unwrap());
                }
                if let Some((off, more)) = self.fragment {
                    ext.fragment = Some(Ipv6FragmentHeader::new(
                        proto,
                        IpFragOffset::try_new(off).unwrap(),
                        more,
                        0x1234,
                    ));
                }
                IpHeaders::Ipv6(h, ext)
            }
            _ => panic!("source and destination of one family"),
        }
    }
}

/// An ARP request frame (not IP).
pub fn arp() -> Vec<u8> {
    let mut out = Vec::new();
    Ethernet2Header {
        source: SRC_MAC,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    }
    .write(&mut out)
    .unwrap();
    // htype 1, ptype IPv4, hlen 6, plen 4, op request, then addresses.
    out.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    out.extend_from_slice(&SRC_MAC);
    out.extend_from_slice(&[198, 51, 100, 2]);
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&[198, 51, 100, 1]);
    out
}

/// `frame` with VLAN tags `ids` pushed in front of its own (802.1Q each),
/// for stacks deeper than etherparse builds.
pub fn with_vlan_stack(frame: &[u8], ids: &[u16]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for id in ids {
        out.extend_from_slice(&[0x81, 0x00]);
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// An untagged IPv6 `frame` with `n` empty Destination Options headers
/// (8 bytes of PadN each) between its IPv6 header and what followed it.
/// The UDP checksum holds: its pseudo-header does not cover them.
pub fn with_dest_opts(frame: &[u8], n: usize) -> Vec<u8> {
    assert_eq!(&frame[12..14], &[0x86, 0xdd], "an untagged IPv6 frame");
    let (head, rest) = frame.split_at(14 + 40);
    let mut out = head.to_vec();
    let upper = out[14 + 6];
    out[14 + 6] = 60;
    for i in 0..n {
        let next = if i + 1 == n { upper } else { 60 };
        out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    out.extend_from_slice(rest);
    let len = u16::from_be_bytes([out[18], out[19]]) + 8 * n as u16;
    out[18..20].copy_from_slice(&len.to_be_bytes());
    out
}

/// An untagged `frame` cut at byte `at`, its IP length set to match (and
/// the IPv4 header checksum recomputed): a first fragment that carries
/// only part of its datagram, as a fragmenting attacker sends it.
pub fn cut_datagram(frame: &[u8], at: usize) -> Vec<u8> {
    let mut out = frame[..at].to_vec();
    match u16::from_be_bytes([out[12], out[13]]) {
        0x0800 => {
            out[16..18].copy_from_slice(&((at - 14) as u16).to_be_bytes());
            set_ipv4_checksum(&mut out);
        }
        0x86dd => out[18..20].copy_from_slice(&((at - 54) as u16).to_be_bytes()),
        t => panic!("not IP: {t:#x}"),
    }
    out
}

/// The first fragment of an untagged datagram from `src` (IPv4, or IPv6
/// with a Fragment header) carrying `payload`, with `head` bytes of the
/// payload in it: the UDP length says the whole payload, the IP length
/// this fragment.
pub fn first_fragment(src: &str, payload: &[u8], head: usize) -> Vec<u8> {
    let whole = Frame::sip(src, payload).fragment(0, true).build();
    let l4 = if src.contains(':') {
        14 + 40 + 8
    } else {
        14 + 20
    };
    cut_datagram(&whole, l4 + 8 + head)
}

/// Sets the UDP length field of an untagged `frame` whose UDP header is at
/// `l4` (the checksum is left as it was).
pub fn set_udp_len(frame: &mut [u8], l4: usize, len: u16) {
    frame[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
}

fn set_ipv4_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 15) * 4;
    frame[24..26].copy_from_slice(&[0, 0]);
    let mut sum: u32 = frame[14..14 + ihl]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}
