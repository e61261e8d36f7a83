//! One controller per pin directory. Two controllers on one set of maps
//! would split the samples between them, ban and record everything twice,
//! and fight over the index; `status` could only show one. The controller
//! holds an exclusive `flock` on the pin directory for as long as it runs;
//! the kernel drops the lock when the process dies, however it dies, so a
//! crash never leaves a stale lock behind.

use std::{
    fs::{self, File},
    os::unix::fs::MetadataExt,
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use super::Pins;
use crate::{Error, Result};

/// Held by the running controller; the lock goes with it.
#[derive(Debug)]
pub struct ControllerLock {
    _held: Flock<File>,
}

impl ControllerLock {
    /// Takes the lock, or says which process holds it.
    pub fn take(pins: &Pins) -> Result<Self> {
        pins.prepare()?;
        let root = pins.root();
        let dir = File::open(root).map_err(Error::io(format!("opening {}", root.display())))?;
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(Self { _held: held }),
            Err((_, Errno::EWOULDBLOCK)) => Err(Error::AnotherController {
                pins: root.to_path_buf(),
                pid: holder(root),
            }),
            Err((_, e)) => Err(Error::io(format!("locking {}", root.display()))(e.into())),
        }
    }
}

/// The process holding a `flock` on `path`, from `/proc/locks`.
fn holder(path: &Path) -> Option<u32> {
    let meta = fs::metadata(path).ok()?;
    let locks = fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, meta.dev(), meta.ino())
}

/// Reads `/proc/locks` lines such as
/// `3: FLOCK  ADVISORY  WRITE 4711 00:1e:2045 0 EOF`: the device is
/// `major:minor` in hex, the inode in decimal.
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // A waiter's line starts with "->" and shifts every field by one.
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let dev = nix::sys::stat::makedev(0, 0x1e);
        let locks = "1: POSIX  ADVISORY  WRITE 99 00:1e:2045 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4711 00:1e:2045 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 4712 00:1e:2045 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 17 00:1e:2046 0 EOF\n";
        assert_eq!(holder_in(locks, dev, 2045), Some(4711));
        assert_eq!(holder_in(locks, dev, 2047), None);
    }

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let dir = std::env::temp_dir().join(format!("sip-xdp-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let first = Flock::lock(File::open(&dir).unwrap(), FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(holder(&dir), Some(std::process::id()));
        drop(first);
        assert_eq!(holder(&dir), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
