//! Where sip-xdp keeps its kernel objects in bpffs. One program and one set
//! of maps serve every protected interface; each attachment is a pinned link.
//!
//! ```text
//! /sys/fs/bpf/sip-xdp/prog                 the loaded XDP program
//! /sys/fs/bpf/sip-xdp/maps/<MAP>           BANS, ALLOW, BLOCK, SOURCES, ...
//! /sys/fs/bpf/sip-xdp/links/<mode>/<iface> one bpf_link per attachment
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
};

use nix::{mount::MsFlags, sys::statfs};

use crate::{Error, Result};

pub const BPFFS: &str = "/sys/fs/bpf";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sip-xdp";
/// Environment variable that moves the pin directory (tests, several
/// independent instances on one host).
pub const PIN_DIR_ENV: &str = "SIP_XDP_PIN_DIR";

#[derive(Clone, Debug)]
pub struct Pins {
    root: PathBuf,
}

impl Pins {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn prog(&self) -> PathBuf {
        self.root.join("prog")
    }
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }
    /// The TC egress program that counts the SBC's responses.
    pub fn egress_prog(&self) -> PathBuf {
        self.root.join("prog_egress")
    }
    /// Egress attachments live apart from `links/`, which holds one XDP
    /// link per interface.
    pub fn egress_link(&self, iface: &str) -> PathBuf {
        self.root.join("egress").join(iface)
    }
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }
    pub fn link(&self, mode: &str, iface: &str) -> PathBuf {
        self.links_dir().join(mode).join(iface)
    }

    /// Every pinned attachment as `(iface, mode, path)`.
    pub fn links(&self) -> Vec<(String, String, PathBuf)> {
        let mut out = Vec::new();
        let Ok(modes) = fs::read_dir(self.links_dir()) else {
            return out;
        };
        for mode in modes.flatten() {
            let Ok(ifaces) = fs::read_dir(mode.path()) else {
                continue;
            };
            for iface in ifaces.flatten() {
                out.push((
                    iface.file_name().to_string_lossy().into_owned(),
                    mode.file_name().to_string_lossy().into_owned(),
                    iface.path(),
                ));
            }
        }
        out.sort();
        out
    }

    /// The attachment pinned for `iface`, if any: `(mode, path)`.
    pub fn link_of(&self, iface: &str) -> Option<(String, PathBuf)> {
        self.links()
            .into_iter()
            .find(|(i, _, _)| i == iface)
            .map(|(_, m, p)| (m, p))
    }

    /// The kernel memory a pinned map holds, in KiB, as the kernel charges
    /// it (`memlock` in the map's fdinfo); `None` when the map is not
    /// pinned here.
    pub fn map_kib(&self, name: &str) -> Option<u64> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let data = aya::maps::MapData::from_pin(self.map(name)).ok()?;
        let fd = data.fd().as_fd().as_raw_fd();
        let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|b| b / 1024)
    }

    pub fn is_loaded(&self) -> bool {
        self.map(sip_xdp_common::maps::MAP_BANS).exists()
    }

    /// Like `is_loaded`, but a pin directory we may not look into (bpffs is
    /// usually mode 0700) is a permission problem, not a missing program.
    pub fn check_loaded(&self, what: &str) -> Result<()> {
        match fs::metadata(self.map(sip_xdp_common::maps::MAP_BANS)) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied || !is_root() => {
                Err(Error::Permission { what: what.into() })
            }
            Err(_) => Err(Error::NotLoaded(self.root.clone())),
        }
    }

    /// Creates the directories, mounting bpffs first if needed (as bpftool
    /// does), and checks the root really lives on bpffs.
    pub fn prepare(&self) -> Result<()> {
        ensure_bpffs(Path::new(BPFFS))?;
        for d in [self.maps_dir(), self.links_dir()] {
            fs::create_dir_all(&d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        if !is_bpffs(&self.root) {
            return Err(Error::Io {
                context: format!("{} is not on a bpf filesystem", self.root.display()),
                source: std::io::Error::other("pins need bpffs"),
            });
        }
        Ok(())
    }
}

impl Default for Pins {
    fn default() -> Self {
        Self::new(
            std::env::var_os(PIN_DIR_ENV)
                .map_or_else(|| PathBuf::from(DEFAULT_PIN_DIR), PathBuf::from),
        )
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn is_bpffs(p: &Path) -> bool {
    statfs::statfs(p).is_ok_and(|s| s.filesystem_type() == statfs::BPF_FS_MAGIC)
}

fn ensure_bpffs(mount_point: &Path) -> Result<()> {
    if is_bpffs(mount_point) {
        return Ok(());
    }
    fs::create_dir_all(mount_point)
        .map_err(Error::io(format!("creating {}", mount_point.display())))?;
    tracing::info!(path = %mount_point.display(), "mounting bpffs");
    nix::mount::mount(
        Some("bpf"),
        mount_point,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|e| Error::io(format!("mounting bpffs on {}", mount_point.display()))(e.into()))
}
