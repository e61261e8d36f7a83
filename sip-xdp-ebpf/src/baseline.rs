//! Trivial XDP program: the cost floor of the hook itself.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{bindings::xdp_action::XDP_DROP, macros::xdp, programs::XdpContext};

#[xdp]
pub fn baseline_drop(_ctx: XdpContext) -> u32 {
    XDP_DROP
}
