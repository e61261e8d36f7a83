//! What every program object in this crate needs: a panic handler (the
//! verifier never lets a panic path run; this only satisfies `no_std`) and
//! the licence section, which GPL-only helpers require.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
