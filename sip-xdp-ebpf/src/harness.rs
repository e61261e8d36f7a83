//! Benchmark harness: gives every repeat of a BPF_PROG_TEST_RUN its own
//! source address, then tail-calls the program under test. Non-live XDP test
//! runs reuse one buffer across repeats, so the rewrite carries over and the
//! next repeat continues from it.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{
    bindings::xdp_action::XDP_ABORTED,
    macros::{map, xdp},
    maps::{Array, ProgramArray},
    programs::XdpContext,
};

/// Slot 0: the program under test.
#[map]
static HARNESS_TARGET: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// `[base, modulo, stride, counter]`: repeat `i` gets the source
/// `base + (i % modulo) * stride` (IPv4, host order).
#[map]
static HARNESS_CFG: Array<u32> = Array::with_max_entries(4, 0);

/// IPv4 source address in an untagged frame.
const SRC_OFF: usize = 14 + 12;

#[xdp]
pub fn vary_source(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + SRC_OFF + 4 > ctx.data_end() {
        return XDP_ABORTED;
    }
    let (Some(base), Some(modulo), Some(stride), Some(counter)) = (
        HARNESS_CFG.get(0),
        HARNESS_CFG.get(1),
        HARNESS_CFG.get(2),
        HARNESS_CFG.get_ptr_mut(3),
    ) else {
        return XDP_ABORTED;
    };
    let i = unsafe { *counter };
    unsafe { *counter = i.wrapping_add(1) };
    let m = if *modulo == 0 { 1 } else { *modulo };
    let addr = base.wrapping_add((i % m).wrapping_mul(*stride));
    unsafe { *((start + SRC_OFF) as *mut [u8; 4]) = addr.to_be_bytes() };
    unsafe { HARNESS_TARGET.tail_call(&ctx, 0) };
    XDP_ABORTED
}
