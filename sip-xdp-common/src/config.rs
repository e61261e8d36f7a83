//! Run-time configuration the XDP program reads from the one-entry `CONFIG`
//! array, so behaviour changes without reloading the program.

/// Count what would be dropped, drop nothing (roll-out mode).
pub const CONFIG_MONITOR: u32 = 1 << 0;
/// Drop packets on SIP ports whose payload is not SIP.
pub const CONFIG_DROP_MALFORMED: u32 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// Reserved so that later fields keep the value 8-byte aligned.
    pub _reserved: u32,
}

impl Config {
    pub const fn monitor(&self) -> bool {
        self.flags & CONFIG_MONITOR != 0
    }
    pub const fn drop_malformed(&self) -> bool {
        self.flags & CONFIG_DROP_MALFORMED != 0
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Config {}
