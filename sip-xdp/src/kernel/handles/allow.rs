//! The allow-list trie: entries in and out, and what they cover.

use super::*;

impl Maps {
    /// Whether an allow-list entry covers `ip`.
    pub fn is_allowed(&self, ip: IpAddr) -> Result<bool> {
        match self.allow.get(&Key::new(128, key_of(ip)), 0) {
            Ok(_) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(Error::map("reading the allow-list")(e)),
        }
    }

    /// Allow-list entries that overlap `net`.
    pub fn allow_overlapping(&self, net: &IpNet) -> Vec<IpNet> {
        self.list_allowed()
            .into_iter()
            .filter(|a| crate::guard::overlaps(a, net))
            .collect()
    }

    /// Adds an allow-list entry and lifts every exact ban it covers, so the
    /// invariant "no allow-listed address is banned" holds at once. Returns
    /// the lifted bans.
    pub fn allow(&mut self, net: IpNet) -> Result<Vec<IpAddr>> {
        self.put_allow(&net)?;
        let _held = self.hold_index()?;
        let covered: Vec<IpKey> = if is_host(&net) {
            vec![key_of(net.addr())]
        } else {
            self.bans
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| net.contains(&ip_of(k)))
                .collect()
        };
        let mut lifted = Vec::new();
        self.unindex(&covered.iter().map(ip_of).collect::<Vec<_>>())?;
        for k in covered {
            if self.bans.remove(&k).is_ok() {
                lifted.push(ip_of(&k));
            }
        }
        Ok(lifted)
    }

    /// Removes an allow-list entry. Its hint bits stay until the
    /// controller's check clears them: a stale bit costs a lookup, and a
    /// rebuild per removal would cost a walk of the trie each.
    pub fn disallow(&mut self, net: &IpNet) -> Result<bool> {
        match self.allow.remove(&Self::trie_key(net)) {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(Error::map("removing the allow entry")(e)),
        }
    }

    pub fn list_allowed(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self
            .allow
            .keys()
            .filter_map(|r| r.ok())
            .map(|k| Self::net_of(&k))
            .collect();
        out.sort();
        out
    }

    /// Adds an allow-list entry without touching bans (`allow` lifts them;
    /// the sync lifts them itself, recording each).
    pub fn put_allow(&mut self, net: &IpNet) -> Result<()> {
        let _held = self.hold_index()?;
        let key = Self::trie_key(net);
        self.hint_allow(&key)?;
        self.allow.insert(&key, 1, 0).map_err(write_error(
            MAP_ALLOW,
            self.max.allow,
            "writing the allow entry",
        ))
    }
}
