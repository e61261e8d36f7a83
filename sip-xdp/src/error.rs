//! Errors an operator can act on. Each message says what to do next.

use std::path::PathBuf;

use ipnet::IpNet;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sip-xdp is not loaded (no pins under {0}): run `sip-xdp attach --iface IFACE` first")]
    NotLoaded(PathBuf),

    #[error("no network interface named {0:?} in this network namespace (see `ip link`)")]
    UnknownInterface(String),

    #[error(
        "interface {0} already has another XDP program attached; remove it first \
         (`ip link set dev {0} xdp off`) or pick another interface"
    )]
    InterfaceBusy(String),

    #[error("sip-xdp is already attached to {iface} ({mode} mode)")]
    AlreadyAttached { iface: String, mode: String },

    #[error("sip-xdp is not attached to {0}")]
    NotAttached(String),

    #[error("{what} needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo")]
    Permission { what: String },

    #[error("refusing to block {net}: {why}")]
    Refused { net: IpNet, why: String },

    #[error("the {map} map is full ({max} entries); remove entries or raise its size")]
    Full { map: &'static str, max: u32 },

    #[error("the {map} map is full ({max} entries): {written} of {of} new entries written; remove entries or raise its size")]
    FullAfter {
        map: &'static str,
        max: u32,
        written: usize,
        of: usize,
    },

    #[error("invalid address {input:?}: {why} (expected e.g. 203.0.113.7, 198.51.100.0/24 or 2001:db8::/32)")]
    BadAddress { input: String, why: String },

    #[error("{context}: {source}")]
    Map {
        context: String,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("{context}: {source}")]
    Program {
        context: String,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("this kernel cannot run sip-xdp: {0}")]
    Unsupported(String),

    #[error(
        "the pinned maps under {pins} were made by an incompatible version ({why}); \
         run `sip-xdp detach --purge --iface IFACE` for each attached interface, then start again \
         (bans and lists are reloaded from the database; counters start from zero)"
    )]
    Incompatible { pins: PathBuf, why: String },

    #[error(
        "another sip-xdp controller{} already runs on {pins}; stop it first \
         (`systemctl stop sip-xdp`), or give this one its own SIP_XDP_PIN_DIR",
        pid.map(|p| format!(" (PID {p})")).unwrap_or_default()
    )]
    AnotherController { pins: PathBuf, pid: Option<u32> },

    #[error("loading the XDP program failed: {0}")]
    Load(#[from] aya::EbpfError),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn map(context: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> Error {
        let context = context.into();
        move |source| {
            if is_permission(&source) {
                return Error::Permission { what: context };
            }
            Error::Map { context, source }
        }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| {
            if matches!(
                source.raw_os_error(),
                Some(libc::EPERM) | Some(libc::EACCES)
            ) {
                return Error::Permission { what: context };
            }
            Error::Io { context, source }
        }
    }
}

/// Whether `e`, or anything under it, is a refusal for want of
/// privilege: aya puts the system call's own error a level or two down.
fn is_permission(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(e) = at {
        let denied = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES)));
        let msg = e.to_string();
        if denied || msg.contains("Operation not permitted") || msg.contains("Permission denied") {
            return true;
        }
        at = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// aya's map errors keep the system call's error under their own
    /// text: an EACCES from `BPF_OBJ_GET` (a pinned map a user may not
    /// open) is still a want of privilege.
    #[test]
    fn a_refused_map_open_is_a_want_of_privilege() {
        for errno in [libc::EACCES, libc::EPERM] {
            let source = aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "BPF_OBJ_GET",
                io_error: std::io::Error::from_raw_os_error(errno),
            });
            let e = Error::map("opening pinned map BANS")(source);
            assert!(e.to_string().contains("needs root"), "{e}");
        }
        let source = aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "BPF_OBJ_GET",
            io_error: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert!(!Error::map("opening pinned map BANS")(source)
            .to_string()
            .contains("needs root"));
    }
}
