//! What Linux's receive path hands a UDP socket for one frame, written
//! from its checks (`ip_rcv_core`, `ip6_rcv_core`, the IPv6 extension
//! handlers, `ipv6_frag_rcv`, `__udp4_lib_rcv`, `__udp6_lib_rcv`) with no
//! walking limit: the reference the parser is tested against. It assumes
//! the stacked VLAN devices any tag stack needs exist, and checks no
//! checksum, so it delivers at least what Linux delivers.

use crate::{addr::v4_mapped, IpKey};

/// A datagram, or the head of one that a first fragment starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub src: IpKey,
    pub dst_port: u16,
    /// The payload, or for a first fragment the part of it in this frame
    /// that the socket will get.
    pub payload: Vec<u8>,
    pub first_fragment: bool,
    /// A first fragment whose header chain runs off its end: what
    /// reassembles is unknown.
    pub unknown: bool,
}

fn be16(f: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *f.get(at)?,
        *f.get(at + 1)?,
    ])))
}

/// The datagram Linux would give a UDP socket for `frame`, if any.
pub fn deliver(frame: &[u8]) -> Option<Delivered> {
    let mut at = 12;
    let mut ether_type = be16(frame, at)?;
    while ether_type == 0x8100 || ether_type == 0x88a8 {
        at += 4;
        ether_type = be16(frame, at)?;
    }
    let ip = at + 2;
    match ether_type {
        0x0800 => ipv4(frame, ip),
        0x86dd => ipv6(frame, ip),
        _ => None,
    }
}

fn ipv4(frame: &[u8], ip: usize) -> Option<Delivered> {
    let first = *frame.get(ip)?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 15) * 4;
    let total = be16(frame, ip + 2)?;
    if ihl < 20 || frame.len() < ip + ihl || total < ihl || frame.len() < ip + total {
        return None;
    }
    // Linux trims the skb to the total length: padding is gone.
    let mut datagram = &frame[ip..ip + total];
    let frag = be16(datagram, 6)?;
    if frag & 0x1fff != 0 {
        return None;
    }
    if frag & 0x2000 != 0 {
        // `ip_frag_queue` trims a fragment with more to come to whole
        // eight-byte units.
        datagram = &datagram[..ihl + ((total - ihl) & !7)];
    }
    if datagram[9] != 17 {
        return None;
    }
    let mut src = [0u8; 4];
    src.copy_from_slice(&datagram[12..16]);
    udp(v4_mapped(src), &datagram[ihl..], false, frag & 0x2000 != 0)
}

fn ipv6(frame: &[u8], ip: usize) -> Option<Delivered> {
    let header = frame.get(ip..ip + 40)?;
    if header[0] >> 4 != 6 {
        return None;
    }
    let len = be16(header, 4)?;
    if len == 0 || frame.len() < ip + 40 + len {
        return None;
    }
    let body = &frame[ip + 40..ip + 40 + len];
    let mut src = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    let mut next = header[6];
    let mut at = 0;
    let mut first_fragment = false;
    loop {
        // A chain cut by the end of a first fragment is queued (the RFC 7112
        // check in `ipv6frag_thdr_truncated` passes what `ipv6_skip_exthdr`
        // cannot walk), and what reassembles may reach the socket: unknown
        // here, so only a refusal keeps the promise.
        if first_fragment && matches!(next, 0 | 43 | 44 | 51 | 60) && at + 8 > body.len() {
            return Some(Delivered {
                src,
                dst_port: 0,
                payload: Vec::new(),
                first_fragment: true,
                unknown: true,
            });
        }
        match next {
            0 | 43 | 60 => {
                next = *body.get(at)?;
                at += (usize::from(*body.get(at + 1)?) + 1) * 8;
            }
            51 => {
                next = *body.get(at)?;
                at += (usize::from(*body.get(at + 1)?) + 2) * 4;
            }
            44 => {
                let frag = be16(body, at + 2)?;
                next = *body.get(at)?;
                if frag & 0xfff8 != 0 {
                    return None;
                }
                first_fragment |= frag & 1 != 0;
                at += 8;
            }
            17 => return udp(src, body.get(at..)?, true, first_fragment),
            _ => return None,
        }
    }
}

fn udp(src: IpKey, l4: &[u8], v6: bool, first_fragment: bool) -> Option<Delivered> {
    if l4.len() < 8 {
        return None;
    }
    let dst_port = u16::try_from(be16(l4, 2)?).ok()?;
    let ulen = be16(l4, 4)?;
    let payload = if v6 && ulen == 0 {
        &l4[8..]
    } else if ulen < 8 {
        return None;
    } else if first_fragment {
        // The datagram's length is checked once reassembled; this frame's
        // part of it is what the socket will get first.
        &l4[8..ulen.min(l4.len())]
    } else if ulen > l4.len() {
        return None;
    } else {
        &l4[8..ulen]
    };
    Some(Delivered {
        src,
        dst_port,
        payload: payload.to_vec(),
        first_fragment,
        unknown: false,
    })
}

/// The parser's promise, for one frame: whatever Linux would deliver to a
/// UDP socket, the parser reads as UDP from the same source to the same
/// port with the same payload, or refuses as invalid (the program drops
/// it). A whole datagram Linux delivers is never refused.
pub fn check(frame: &[u8]) -> Result<(), String> {
    use super::{network, udp, Refusal, Shape, IPPROTO_UDP};
    let Some(d) = deliver(frame) else {
        return Ok(());
    };
    let n = match network(frame) {
        Ok(n) => n,
        Err(Refusal::Invalid) => return Ok(()),
        Err(e) => return Err(format!("Linux delivers {d:?}; the parser says {e:?}")),
    };
    if d.unknown && n.shape != Shape::LongChain {
        return Err(format!("a cut chain Linux queues, read as {n:?}"));
    }
    if n.src != d.src {
        return Err(format!("source {:?}, Linux's {:?}", n.src, d.src));
    }
    match n.shape {
        Shape::LongChain => return Ok(()),
        Shape::LaterFragment => return Err(format!("Linux delivers {d:?} from a later fragment")),
        Shape::Whole | Shape::FirstFragment => {}
    }
    if (n.shape == Shape::FirstFragment) != d.first_fragment || n.proto != IPPROTO_UDP {
        return Err(format!("read as {n:?}, Linux delivers {d:?}"));
    }
    let u = udp(frame, &n).map_err(|e| format!("Linux delivers {d:?}; UDP {e:?}"))?;
    if u.dst_port != d.dst_port {
        return Err(format!("port {}, Linux's {}", u.dst_port, d.dst_port));
    }
    if !u.valid {
        return if d.first_fragment && d.payload.len() < super::FIRST_FRAGMENT_HEAD {
            Ok(())
        } else {
            Err(format!("refused {u:?}, which Linux delivers as {d:?}"))
        };
    }
    let read = frame.get(u.payload_off..u.payload_off + u.payload_len);
    if read != Some(d.payload.as_slice()) {
        return Err(format!("payload {read:?}, Linux's {:?}", d.payload));
    }
    Ok(())
}
