//! The kernel's side of header parsing: bounds-checked access to an XDP
//! frame or a TC skb, for the shared parser (`sip_xdp_common::frame`) and
//! the programs' own reads. Every access goes through `ptr_at`, which
//! checks the whole read against `data_end` first.

use core::mem;

use aya_ebpf::programs::{TcContext, XdpContext};
use sip_xdp_common::frame::Packet;

use crate::maps::SAMPLE_BUDGET;

/// The frame ended inside a header.
pub struct Truncated;

/// The linear packet data of an XDP frame or a TC skb: the parsers serve
/// both the ingress filter and the egress response counter.
pub trait Frame {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The whole packet's length, which IP lengths are checked against.
    fn len(&self) -> usize;
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
    #[inline(always)]
    fn len(&self) -> usize {
        XdpContext::data_end(self) - XdpContext::data(self)
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
    /// `skb->len`: an skb's tail may lie past its linear data, where the
    /// helpers that copy bytes reach it.
    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
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

/// A frame as the shared parser reads it (`sip_xdp_common::frame`): every
/// read is checked against `data_end` by `ptr_at`. It carries the scratch
/// word in map memory through which values are laundered (`launder`),
/// looked up once per packet.
pub struct Pkt<'a, F: Frame> {
    pub ctx: &'a F,
    scratch: *mut u64,
}

impl<'a, F: Frame> Pkt<'a, F> {
    #[inline(always)]
    pub fn new(ctx: &'a F) -> Result<Self, Truncated> {
        let b = SAMPLE_BUDGET.get_ptr_mut(0).ok_or(Truncated)?;
        Ok(Self {
            ctx,
            scratch: unsafe { core::ptr::addr_of_mut!((*b).scratch_off) },
        })
    }

    /// `v`, written to map memory and read back: the verifier then knows
    /// nothing of it but the bounds checked after, and walks what follows
    /// once instead of once per path that produced it. The egress program
    /// uses the same scratch: TC egress runs with bottom halves off, so
    /// XDP never runs on its CPU between the write and the read.
    #[inline(always)]
    pub fn launder(&self, v: u64) -> u64 {
        unsafe {
            core::ptr::write_volatile(self.scratch, v);
            core::ptr::read_volatile(self.scratch)
        }
    }

    /// An L4 offset, laundered: every header layout the parser accepts
    /// (VLAN tags, IPv4 options, IPv6 extension headers) leaves it with
    /// its own range.
    #[inline(always)]
    pub fn offset(&self, off: usize) -> Result<usize, Truncated> {
        let off = self.launder(off as u64);
        // Past any frame XDP is given, jumbo ones included.
        if off >= MAX_OFFSET {
            return Err(Truncated);
        }
        Ok(off as usize)
    }
}

pub const MAX_OFFSET: u64 = 16_384;

impl<F: Frame> Packet for Pkt<'_, F> {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.ctx.len()
    }
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        match ptr_at::<[u8; N]>(self.ctx, off) {
            Ok(p) => Some(unsafe { &*p }),
            Err(Truncated) => None,
        }
    }
    #[inline(always)]
    fn opaque(&self, v: usize) -> usize {
        self.offset(v).unwrap_or(usize::MAX)
    }
}

/// `n` (checked to be at least 1 and at most `max`) as a load helper's
/// length the verifier can bound: read back through memory, so that LLVM
/// cannot fold the clamp into the check already made, and brought into
/// `1..=max`, which is `n` itself. Verifiers before 6.8 learn no lower
/// bound from `n != 0` and refuse a length that may be zero, and lose the
/// bounds of a value LLVM checked in one register and passes in another.
/// A power of two is masked, without a branch: a clamp's two paths would
/// each walk the rest of the program.
#[inline(always)]
pub fn helper_len(n: u32, max: u32) -> u32 {
    let n = unsafe { core::ptr::read_volatile(&n) }.wrapping_sub(1);
    if max.is_power_of_two() {
        (n & (max - 1)) + 1
    } else {
        n.min(max - 1) + 1
    }
}
