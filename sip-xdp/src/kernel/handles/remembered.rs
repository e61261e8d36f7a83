//! The memory of good clients in the kernel (`REMEMBERED`): addresses
//! proven within `detect.shedding.remember`, admitted first in overload
//! after the verified. Only the controller writes it, from the database
//! every node shares.

use super::*;

impl Maps {
    /// Every remembered address, with the monotonic time its memory lapses.
    /// Empty when the pinned program predates the memory.
    pub fn remembered(&self) -> Result<Vec<(IpAddr, u64)>> {
        let Some(m) = &self.remembered else {
            return Ok(Vec::new());
        };
        // One batch read: the memory holds up to a quarter of a million.
        let mut out = Vec::new();
        batch::for_each::<IpKey, u64>(data_of(m), |k, until| out.push((ip_of(k), *until)))
            .map_err(Error::io("reading remembered clients"))?;
        Ok(out)
    }

    /// Remembers `ip` until the monotonic time `until_ns`, or longer if
    /// it is remembered longer already (a later read of an older row
    /// never shortens it).
    pub fn remember(&mut self, ip: IpAddr, until_ns: u64) -> Result<()> {
        let Some(m) = &mut self.remembered else {
            return Ok(());
        };
        let key = key_of(ip);
        if m.get(&key, 0).is_ok_and(|held| held >= until_ns) {
            return Ok(());
        }
        self.hint_proven([ip])?;
        let Some(m) = &mut self.remembered else {
            return Ok(());
        };
        m.insert(key, until_ns, 0).map_err(write_error(
            MAP_REMEMBERED,
            MAX_REMEMBERED,
            "remembering a client",
        ))
    }

    /// Forgets `ip`; forgetting what is not there is not an error.
    pub fn forget_remembered(&mut self, ip: IpAddr) -> Result<()> {
        let Some(m) = &mut self.remembered else {
            return Ok(());
        };
        match m.remove(&key_of(ip)) {
            Err(e) if !is_missing(&e) => Err(Error::map("forgetting a client")(e)),
            _ => Ok(()),
        }
    }
}
