//! TC egress: counts the SBC's own final responses per client address, so
//! the controller sees password guessing (401/407/403 with no 2xx) and
//! extension enumeration (404) without reading any SIP server's database.
//! It only counts: every packet continues.

use aya_ebpf::{macros::classifier, programs::TcContext};
use network_types::udp::UdpHdr;
use sip_xdp_common::{
    maps::{Reply, ReplyStats},
    Counter,
};

use crate::{
    count, is_sip_port,
    maps::REPLIES,
    parse::{self, ptr_at, Truncated, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP},
};

/// TC_ACT_UNSPEC (TCX_NEXT): let the next program or the default decide.
const NEXT: i32 = -1;

const STATUS_PREFIX: u64 = u64::from_le_bytes(*b"SIP/2.0 ");

#[classifier]
pub fn sip_xdp_egress(ctx: TcContext) -> i32 {
    let _ = replies(&ctx);
    NEXT
}

#[inline(always)]
fn replies(ctx: &TcContext) -> Result<(), Truncated> {
    let (ether_type, l3_off) = parse::ethernet(ctx)?;
    let l3 = match ether_type {
        ETH_P_IPV4 => parse::ipv4(ctx, l3_off)?,
        ETH_P_IPV6 => parse::ipv6(ctx, l3_off)?,
        _ => return Ok(()),
    };
    if l3.no_l4 || l3.proto != IPPROTO_UDP {
        return Ok(());
    }
    let udp = parse::udp(ctx, l3.l4_off)?;
    // Responses leave from the SIP port the SBC listens on.
    if !is_sip_port(udp.src_port) || udp.payload_len < 12 {
        return Ok(());
    }
    let line = ptr_at::<[u8; 12]>(ctx, l3.l4_off + UdpHdr::LEN)?;
    let line = unsafe { *line };
    let prefix = u64::from_le_bytes([
        line[0], line[1], line[2], line[3], line[4], line[5], line[6], line[7],
    ]);
    if prefix != STATUS_PREFIX || line[11] != b' ' {
        return Ok(());
    }
    let Some(reply) = Reply::of_status([line[8], line[9], line[10]]) else {
        return Ok(());
    };
    count(match reply {
        Reply::Success => Counter::ReplySuccess,
        Reply::Unauthorized401 => Counter::Reply401,
        Reply::Forbidden403 => Counter::Reply403,
        Reply::NotFound404 => Counter::Reply404,
        Reply::ProxyAuth407 => Counter::Reply407,
    });
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() };
    let i = reply as usize;
    match REPLIES.get_ptr_mut(l3.dst) {
        Some(r) => {
            let r = unsafe { &mut *r };
            if let Some(n) = r.codes.get_mut(i) {
                *n = n.wrapping_add(1);
            }
            r.last_seen_ns = now;
        }
        None => {
            let mut r = ReplyStats {
                last_seen_ns: now,
                ..Default::default()
            };
            if let Some(n) = r.codes.get_mut(i) {
                *n = 1;
            }
            let _ = REPLIES.insert(l3.dst, r, 0);
        }
    }
    Ok(())
}
