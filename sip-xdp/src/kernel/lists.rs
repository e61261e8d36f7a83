//! The kernel's lists as the layers above write them: bans, block rules,
//! the allow-list and what the program trusts. A trait, implemented by
//! `Maps`, so that the sync's applier and the defender are tested on the
//! host against `Fake` as the detectors are.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
};

use ipnet::IpNet;
use sip_xdp_common::maps::{BanReason, Trust};

use super::Maps;
use crate::Result;

/// Every ban and block rule with its expiry (kernel monotonic ns, 0 =
/// permanent) and, for exact bans, its reason: block rules keep none.
pub type Rules = BTreeMap<IpNet, (u64, Option<BanReason>)>;

pub trait KernelLists {
    fn allowed(&self) -> Vec<IpNet>;
    fn rules(&self) -> Rules;
    /// The nets of `rules` alone: cheaper with 100k bans.
    fn held(&self) -> HashSet<IpNet>;
    fn put_allow(&mut self, net: &IpNet) -> Result<()>;
    fn disallow(&mut self, net: &IpNet) -> Result<bool>;
    /// Writes new entries in batches; their hit counts start at zero.
    fn put_new(&mut self, entries: &[(IpNet, u64, BanReason)]) -> Result<()>;
    /// Writes one entry, keeping its hit count if it exists.
    fn put(&mut self, net: &IpNet, expires_ns: u64, reason: BanReason) -> Result<()>;
    fn unblock(&mut self, net: &IpNet) -> Result<bool>;
    fn remove_many(&mut self, nets: &[IpNet]) -> Result<usize>;
    /// Whether the program only counts (monitor mode) instead of dropping.
    fn monitor(&self) -> bool;
    /// How `ip` earned trust, if it holds trust now.
    fn trust_of(&self, ip: IpAddr) -> Option<Trust>;
    /// Every source holding trust now.
    fn trusted_now(&self) -> Vec<(IpAddr, Trust)>;
}

impl KernelLists for Maps {
    fn allowed(&self) -> Vec<IpNet> {
        self.list_allowed()
    }
    fn rules(&self) -> Rules {
        self.bans_raw()
            .into_iter()
            .map(|(ip, v)| (ip.into(), (v.expires_ns, BanReason::from_u32(v.reason))))
            .chain(
                self.blocks_raw()
                    .into_iter()
                    .map(|(n, v)| (n, (v.expires_ns, None))),
            )
            .collect()
    }
    fn held(&self) -> HashSet<IpNet> {
        self.held_nets()
    }
    fn put_allow(&mut self, net: &IpNet) -> Result<()> {
        Maps::put_allow(self, net)
    }
    fn disallow(&mut self, net: &IpNet) -> Result<bool> {
        Maps::disallow(self, net)
    }
    fn put_new(&mut self, entries: &[(IpNet, u64, BanReason)]) -> Result<()> {
        Maps::put_new(self, entries)
    }
    fn put(&mut self, net: &IpNet, expires_ns: u64, reason: BanReason) -> Result<()> {
        Maps::put(self, net, expires_ns, reason)
    }
    fn unblock(&mut self, net: &IpNet) -> Result<bool> {
        Maps::unblock(self, net)
    }
    fn remove_many(&mut self, nets: &[IpNet]) -> Result<usize> {
        Maps::remove_many(self, nets)
    }
    fn monitor(&self) -> bool {
        self.config().is_ok_and(|c| c.monitor())
    }
    fn trust_of(&self, ip: IpAddr) -> Option<Trust> {
        Maps::trust_of(self, ip)
    }
    fn trusted_now(&self) -> Vec<(IpAddr, Trust)> {
        self.verified_now()
    }
}

/// The kernel's lists in memory, for host tests: what each write did, in
/// order, and a write that fails on demand.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Fake {
    pub allows: std::collections::BTreeSet<IpNet>,
    pub rules: Rules,
    pub trusted: Vec<(IpAddr, Trust)>,
    pub monitor: bool,
    /// Writes of these nets fail as a full map would.
    pub refuse: HashSet<IpNet>,
    pub writes: Vec<String>,
}

#[cfg(test)]
impl Fake {
    fn write(&mut self, what: &str, net: &IpNet) -> Result<()> {
        self.writes.push(format!("{what} {net}"));
        if self.refuse.contains(net) {
            return Err(crate::Error::Full {
                map: "test",
                max: 0,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
impl KernelLists for Fake {
    fn allowed(&self) -> Vec<IpNet> {
        self.allows.iter().copied().collect()
    }
    fn rules(&self) -> Rules {
        self.rules.clone()
    }
    fn held(&self) -> HashSet<IpNet> {
        self.rules.keys().copied().collect()
    }
    fn put_allow(&mut self, net: &IpNet) -> Result<()> {
        self.write("allow", net)?;
        self.allows.insert(*net);
        Ok(())
    }
    fn disallow(&mut self, net: &IpNet) -> Result<bool> {
        self.write("disallow", net)?;
        Ok(self.allows.remove(net))
    }
    fn put_new(&mut self, entries: &[(IpNet, u64, BanReason)]) -> Result<()> {
        for (net, expires_ns, reason) in entries {
            self.write("new", net)?;
            let kept = crate::parse::is_host(net).then_some(*reason);
            self.rules.insert(*net, (*expires_ns, kept));
        }
        Ok(())
    }
    fn put(&mut self, net: &IpNet, expires_ns: u64, reason: BanReason) -> Result<()> {
        self.write("put", net)?;
        let kept = crate::parse::is_host(net).then_some(reason);
        self.rules.insert(*net, (expires_ns, kept));
        Ok(())
    }
    fn unblock(&mut self, net: &IpNet) -> Result<bool> {
        self.write("unblock", net)?;
        Ok(self.rules.remove(net).is_some())
    }
    fn remove_many(&mut self, nets: &[IpNet]) -> Result<usize> {
        let mut n = 0;
        for net in nets {
            self.write("remove", net)?;
            n += usize::from(self.rules.remove(net).is_some());
        }
        Ok(n)
    }
    fn monitor(&self) -> bool {
        self.monitor
    }
    fn trust_of(&self, ip: IpAddr) -> Option<Trust> {
        self.trusted.iter().find(|(a, _)| *a == ip).map(|(_, t)| *t)
    }
    fn trusted_now(&self) -> Vec<(IpAddr, Trust)> {
        self.trusted.clone()
    }
}
