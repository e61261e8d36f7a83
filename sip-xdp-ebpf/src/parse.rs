//! Header parsing, one helper per header. Every access goes through
//! `ptr_at`, which checks the whole header against `data_end` first.

use core::mem;

use aya_ebpf::programs::{TcContext, XdpContext};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
    vlan::VlanHdr,
};
use sip_xdp_common::{addr::v4_mapped, classify::udp_payload_len, IpKey};

/// The frame ended inside a header.
pub struct Truncated;

/// The linear packet data of an XDP frame or a TC skb: the parsers serve
/// both the ingress filter and the egress response counter.
pub trait Frame {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
}

#[inline(always)]
pub fn ptr_at<T>(ctx: &impl Frame, offset: usize) -> Result<*const T, Truncated> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(Truncated);
    }
    Ok((start + offset) as *const T)
}

pub const ETH_P_IPV4: u16 = EtherType::Ipv4 as u16;
pub const ETH_P_IPV6: u16 = EtherType::Ipv6 as u16;
const ETH_P_8021Q: u16 = EtherType::Ieee8021q as u16;
const ETH_P_8021AD: u16 = EtherType::Ieee8021ad as u16;

pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_TCP: u8 = 6;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// IPv6 extension headers walked before giving up on finding L4.
const MAX_EXT_HDRS: usize = 6;

/// Ethernet plus up to two VLAN tags (802.1Q, 802.1ad QinQ). Returns the
/// network-order EtherType of the payload and its offset.
#[inline(always)]
pub fn ethernet(ctx: &impl Frame) -> Result<(u16, usize), Truncated> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    let mut proto = unsafe { (*eth).ether_type };
    let mut off = EthHdr::LEN;
    for _ in 0..2 {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let vlan = ptr_at::<VlanHdr>(ctx, off)?;
        proto = unsafe { (*vlan).ether_type };
        off += VlanHdr::LEN;
    }
    Ok((proto, off))
}

/// What the controller's rules need from the network layer.
pub struct L3 {
    pub src: IpKey,
    pub dst: IpKey,
    pub proto: u8,
    pub l4_off: usize,
    /// No L4 header in this packet: an IPv4/IPv6 non-first fragment, or an
    /// IPv6 extension chain longer than we walk.
    pub no_l4: bool,
}

#[inline(always)]
pub fn ipv4(ctx: &impl Frame, off: usize) -> Result<L3, Truncated> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, off)?;
    let (vihl, proto, frags, src, dst) = unsafe {
        (
            (*ip).vihl,
            (*ip).proto,
            (*ip).frags,
            (*ip).src_addr,
            (*ip).dst_addr,
        )
    };
    // IHL counts 32-bit words, options included; below 5 is not IPv4.
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < Ipv4Hdr::LEN {
        return Err(Truncated);
    }
    let frag_offset = u16::from_be_bytes(frags) & 0x1fff;
    Ok(L3 {
        src: v4_mapped(src),
        dst: v4_mapped(dst),
        proto,
        l4_off: off + ihl,
        no_l4: frag_offset != 0,
    })
}

#[inline(always)]
pub fn ipv6(ctx: &impl Frame, off: usize) -> Result<L3, Truncated> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, off)?;
    let (src, dst, mut nh) = unsafe { ((*ip).src_addr, (*ip).dst_addr, (*ip).next_hdr) };
    let mut off = off + Ipv6Hdr::LEN;
    for _ in 0..MAX_EXT_HDRS {
        match nh {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let h = ptr_at::<[u8; 2]>(ctx, off)?;
                let (next, len) = unsafe { ((*h)[0], (*h)[1]) };
                nh = next;
                off += (usize::from(len) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let h = ptr_at::<[u8; 4]>(ctx, off)?;
                let (next, hi, lo) = unsafe { ((*h)[0], (*h)[2], (*h)[3]) };
                if u16::from_be_bytes([hi, lo]) & 0xfff8 != 0 {
                    return Ok(L3 {
                        src,
                        dst,
                        proto: next,
                        l4_off: off,
                        no_l4: true,
                    });
                }
                nh = next;
                off += 8;
            }
            IPPROTO_AH => {
                let h = ptr_at::<[u8; 2]>(ctx, off)?;
                let (next, len) = unsafe { ((*h)[0], (*h)[1]) };
                nh = next;
                off += (usize::from(len) + 2) * 4;
            }
            _ => {
                return Ok(L3 {
                    src,
                    dst,
                    proto: nh,
                    l4_off: off,
                    no_l4: false,
                })
            }
        }
    }
    let still_ext = matches!(
        nh,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH
    );
    Ok(L3 {
        src,
        dst,
        proto: nh,
        l4_off: off,
        no_l4: still_ext,
    })
}

/// The destination port of a TCP segment: all a ban needs.
#[inline(always)]
pub fn tcp_dst_port(ctx: &impl Frame, off: usize) -> Result<u16, Truncated> {
    let h = ptr_at::<[u8; 4]>(ctx, off)?;
    let (hi, lo) = unsafe { ((*h)[2], (*h)[3]) };
    Ok(u16::from_be_bytes([hi, lo]))
}

pub struct Udp {
    pub src_port: u16,
    pub dst_port: u16,
    /// From the UDP length field, so that Ethernet padding after a short
    /// datagram is never read as payload (`udp_payload_len`: a length of 0
    /// is the rest of the frame).
    pub payload_len: usize,
}

#[inline(always)]
pub fn udp(ctx: &impl Frame, off: usize) -> Result<Udp, Truncated> {
    let h = ptr_at::<UdpHdr>(ctx, off)?;
    let (src, dst, len) = unsafe { ((*h).src, (*h).dst, (*h).len) };
    let in_frame = ctx
        .data_end()
        .saturating_sub(ctx.data() + off + UdpHdr::LEN);
    Ok(Udp {
        src_port: u16::from_be_bytes(src),
        dst_port: u16::from_be_bytes(dst),
        payload_len: udp_payload_len(u16::from_be_bytes(len), in_frame),
    })
}
