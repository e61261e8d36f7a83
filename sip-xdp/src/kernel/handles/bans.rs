//! Exact bans (BANS with its IPv4 index) and block-list prefixes (the
//! BLOCK trie): writing, lifting, listing, and keeping the index in step.

use super::*;

/// One block rule as `list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlockEntry {
    pub net: IpNet,
    /// `ban` for exact addresses, `cidr` for block-list prefixes.
    pub kind: &'static str,
    pub reason: &'static str,
    /// Seconds left; `None` for permanent entries.
    pub expires_in_s: Option<u64>,
    pub expired: bool,
    pub hits: u64,
}

impl Maps {
    /// Whether the kernel holds a ban or block rule for exactly `net`.
    pub fn holds(&self, net: &IpNet) -> bool {
        if is_host(net) {
            self.bans.get(&key_of(net.addr()), 0).is_ok()
        } else {
            self.block.get(&Self::trie_key(net), 0).is_ok()
        }
    }

    /// Blocks an address (exact ban) or a CIDR (block-list rule), with an
    /// optional duration after which the kernel stops enforcing it.
    pub fn block(
        &mut self,
        guard: &Guard,
        net: IpNet,
        dur: Option<Duration>,
        reason: BanReason,
    ) -> Result<()> {
        if let Some(why) = guard.refusal(&net) {
            return Err(Error::Refused { net, why });
        }
        if is_host(&net) && self.is_allowed(net.addr())? {
            return Err(Error::Refused {
                net,
                why: "it is on the allow-list (`sip-xdp disallow` it first)".into(),
            });
        }
        self.put(&net, clock::expiry_after(dur), reason)
    }

    /// Removes the ban or block rule for exactly `net`. False if none existed.
    pub fn unblock(&mut self, net: &IpNet) -> Result<bool> {
        let r = if is_host(net) {
            let _held = self.hold_index()?;
            self.unindex(&[net.addr()])?;
            self.bans.remove(&key_of(net.addr()))
        } else {
            self.block.remove(&Self::trie_key(net))
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(Error::map("removing the rule")(e)),
        }
    }

    pub fn list_blocked(&self) -> Vec<BlockEntry> {
        let now = clock::monotonic_ns();
        let indexed = self.indexed_hits();
        let mut out: Vec<BlockEntry> = self
            .bans
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| BlockEntry {
                net: IpNet::from(ip_of(&k)),
                kind: "ban",
                reason: BanReason::from_u32(v.reason).map_or("unknown", BanReason::as_str),
                expires_in_s: clock::remaining(v.expires_ns).map(|d| d.as_secs()),
                expired: !v.active_at(now),
                hits: v.hits + v4_of(ip_of(&k)).and_then(|a| indexed.get(&a)).unwrap_or(&0),
            })
            .collect();
        out.extend(
            self.block
                .iter()
                .filter_map(|r| r.ok())
                .map(|(k, v)| BlockEntry {
                    net: Self::net_of(&k),
                    kind: "cidr",
                    reason: "manual",
                    expires_in_s: clock::remaining(v.expires_ns).map(|d| d.as_secs()),
                    expired: !v.active_at(now),
                    hits: v.hits,
                }),
        );
        out.sort_by_key(|e| e.net);
        out
    }

    /// Exact bans as the kernel holds them.
    /// Every exact ban, read in batches: the sync and the metrics pass walk
    /// them all every cycle, and 100k bans entry by entry are 200k calls.
    pub fn bans_raw(&self) -> Vec<(IpAddr, BanValue)> {
        let mut out = Vec::new();
        let read = batch::for_each::<IpKey, BanValue>(data_of(&self.bans), |k, v| {
            out.push((ip_of(k), *v))
        })
        .map_err(Error::io("reading bans"));
        if let Err(e) = read {
            // Same outcome as the iterator it replaces: what could be read.
            tracing::warn!(error = %e, "reading bans in batches failed; entry by entry instead");
            out = self
                .bans
                .iter()
                .filter_map(|r| r.ok())
                .map(|(k, v)| (ip_of(&k), v))
                .collect();
        }
        out
    }

    /// Every address and prefix the kernel bans or blocks, without their
    /// values: what a caller needs to tell new entries from held ones, at
    /// a third of the memory of `bans_raw` with 100k bans.
    pub fn held_nets(&self) -> std::collections::HashSet<IpNet> {
        let mut held = std::collections::HashSet::new();
        let read = batch::for_each::<IpKey, BanValue>(data_of(&self.bans), |k, _| {
            held.insert(IpNet::from(ip_of(k)));
        })
        .map_err(Error::io("reading bans"));
        if read.is_err() {
            held = self
                .bans_raw()
                .into_iter()
                .map(|(ip, _)| IpNet::from(ip))
                .collect();
        }
        held.extend(
            self.block
                .keys()
                .filter_map(|r| r.ok())
                .map(|k| Self::net_of(&k)),
        );
        held
    }

    /// Block-list rules as the kernel holds them.
    pub fn blocks_raw(&self) -> Vec<(IpNet, BlockValue)> {
        self.block
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (Self::net_of(&k), v))
            .collect()
    }

    /// Writes a ban or block value as given, without the safety rails (the
    /// callers apply them: `block` here, the sync on database rows). Keeps
    /// the hit counter of an entry being updated.
    pub fn put(&mut self, net: &IpNet, expires_ns: u64, reason: BanReason) -> Result<()> {
        if is_host(net) {
            let _held = self.hold_index()?;
            let k = key_of(net.addr());
            let existing = self.bans.get(&k, 0).ok();
            let v = BanValue {
                expires_ns,
                hits: existing.map_or(0, |v| v.hits),
                reason: reason as u32,
                _pad: 0,
            };
            self.bans.insert(k, v, 0).map_err(write_error(
                MAP_BANS,
                self.max.bans,
                "writing the ban",
            ))?;
            // A ban being changed keeps its old slot if the index cannot
            // be written: it stays enforced. A new one is taken back out.
            let fresh: &[IpNet] = if existing.is_some() { &[] } else { &[*net] };
            self.index(&[(net.addr(), expires_ns)], fresh)
        } else {
            let key = Self::trie_key(net);
            let hits = self.block.get(&key, 0).map_or(0, |v| v.hits);
            self.block
                .insert(&key, BlockValue { expires_ns, hits }, 0)
                .map_err(write_error(
                    MAP_BLOCK,
                    self.max.block,
                    "writing the block rule",
                ))
        }
    }

    /// Writes new exact bans (addresses the map does not hold: their hit
    /// counts start at zero) in batches; prefixes go one by one, as the
    /// kernel has no batch writes for tries. What a sync or a feed with
    /// thousands of new entries needs. A write that fails part-way still
    /// indexes exactly the bans it wrote (the program skips a ban whose
    /// index bucket is unmarked) and still writes every prefix; the first
    /// error is returned, with how many were written when BANS was full.
    pub fn put_new(&mut self, entries: &[(IpNet, u64, BanReason)]) -> Result<()> {
        let (hosts, nets): (Vec<&(IpNet, u64, BanReason)>, Vec<_>) =
            entries.iter().partition(|(n, _, _)| is_host(n));
        let mut first = self.put_new_hosts(&hosts).err();
        for &(n, expires_ns, reason) in nets {
            if let Err(e) = self.put(&n, expires_ns, reason) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn put_new_hosts(&mut self, hosts: &[&(IpNet, u64, BanReason)]) -> Result<()> {
        if !hosts.is_empty() {
            let _held = self.hold_index()?;
            let keys: Vec<IpKey> = hosts.iter().map(|(n, _, _)| key_of(n.addr())).collect();
            let values: Vec<BanValue> = hosts
                .iter()
                .map(|(_, expires_ns, reason)| BanValue {
                    expires_ns: *expires_ns,
                    hits: 0,
                    reason: *reason as u32,
                    _pad: 0,
                })
                .collect();
            let (written, failed) = match batch::update(self.bans_data(), &keys, &values) {
                Ok(n) => (n, None),
                // The kernel writes the count back only once it tried
                // entries: an error before that leaves the count asked
                // for. Only the entries BANS now holds are indexed (the
                // index is consulted before the allow-list: an entry for
                // a ban that is not there would drop an allowed source).
                Err(p) => {
                    let held = keys[..p.written.min(keys.len())]
                        .iter()
                        .take_while(|k| self.bans.get(k, 0).is_ok())
                        .count();
                    (held, Some(p))
                }
            };
            let written = &hosts[..written.min(hosts.len())];
            let indexed: Vec<(IpAddr, u64)> =
                written.iter().map(|(n, e, _)| (n.addr(), *e)).collect();
            let fresh: Vec<IpNet> = written.iter().map(|(n, _, _)| *n).collect();
            self.index(&indexed, &fresh)?;
            if let Some(p) = failed {
                let full = matches!(p.error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC));
                return Err(if full {
                    Error::FullAfter {
                        map: MAP_BANS,
                        max: self.max.bans,
                        written: written.len(),
                        of: hosts.len(),
                    }
                } else {
                    Error::Io {
                        context: format!(
                            "writing bans: {} of {} written",
                            written.len(),
                            hosts.len()
                        ),
                        source: p.error,
                    }
                });
            }
        }
        Ok(())
    }

    /// Removes many bans and block-list rules: exact bans in batches,
    /// prefixes one by one (no batch calls for tries). Returns how many
    /// the kernel held.
    pub fn remove_many(&mut self, nets: &[IpNet]) -> Result<usize> {
        let (hosts, prefixes): (Vec<&IpNet>, Vec<&IpNet>) = nets.iter().partition(|n| is_host(n));
        let mut removed = 0;
        if !hosts.is_empty() {
            let _held = self.hold_index()?;
            self.unindex(&hosts.iter().map(|n| n.addr()).collect::<Vec<_>>())?;
            let keys: Vec<IpKey> = hosts.iter().map(|n| key_of(n.addr())).collect();
            removed += batch::delete(self.bans_data(), &keys).map_err(|e| Error::Io {
                context: "removing bans".into(),
                source: e,
            })?;
        }
        for n in prefixes {
            removed += usize::from(self.unblock(n)?);
        }
        Ok(removed)
    }

    /// The index writers' lock, held across both maps while a ban goes in
    /// or out: a `heal_ban_index` in another process then never sees a ban
    /// half removed (out of the index, still in BANS) and puts it back.
    pub(super) fn hold_index(&self) -> Result<Option<crate::kernel::ban_index::Held>> {
        self.index.as_ref().map(|i| i.lock()).transpose()
    }

    /// Indexes the IPv4 bans the program cannot see: in BANS, but in no
    /// slot of a bucket without its spill mark. There are none unless BANS
    /// was written behind the index (a command killed between its two
    /// writes, a binary of another build); the controller checks every
    /// 30 s. Returns how many it indexed.
    pub fn heal_ban_index(&mut self) -> Result<usize> {
        let Some(held) = self.hold_index()? else {
            return Ok(0);
        };
        let bans = self.v4_bans();
        let Some(index) = self.index.as_mut() else {
            return Ok(0);
        };
        let unseen = index.unseen(&bans)?;
        if !unseen.is_empty() {
            index.put(&unseen)?;
        }
        drop(held);
        Ok(unseen.len())
    }

    /// Adds IPv4 bans to the index after BANS holds them. The program
    /// trusts the index for IPv4, so an index that cannot be written is an
    /// error, and the new bans (`fresh`) are taken back out of BANS: a ban
    /// is either enforced or reported as failed, never silently left out.
    fn index(&mut self, bans: &[(IpAddr, u64)], fresh: &[IpNet]) -> Result<()> {
        let Some(index) = self.index.as_mut() else {
            return Ok(());
        };
        let v4: Vec<(Ipv4Addr, u64)> = bans
            .iter()
            .filter_map(|(a, e)| v4_of(*a).map(|a| (a, *e)))
            .collect();
        match index.put(&v4) {
            Ok(0) => Ok(()),
            Ok(full) => {
                tracing::debug!(
                    bans = full,
                    "ban index buckets full; BANS enforces them, the buckets are marked"
                );
                Ok(())
            }
            Err(e) => {
                let keys: Vec<IpKey> = fresh
                    .iter()
                    .filter(|n| v4_of(n.addr()).is_some())
                    .map(|n| key_of(n.addr()))
                    .collect();
                if let Err(undo) =
                    batch::delete(self.bans_data(), &keys).map_err(|source| Error::Io {
                        context: "taking unindexed bans back out".into(),
                        source,
                    })
                {
                    tracing::error!(error = %undo, "bans in BANS but not in the ban index: the controller's next check (at most 30 s) indexes them");
                }
                Err(e)
            }
        }
    }

    /// Takes addresses out of the index before they leave BANS: an error
    /// here stops the removal, so the index never bans an address BANS
    /// does not.
    pub(super) fn unindex(&mut self, addrs: &[IpAddr]) -> Result<()> {
        let Some(index) = self.index.as_mut() else {
            return Ok(());
        };
        let v4: Vec<Ipv4Addr> = addrs.iter().filter_map(|a| v4_of(*a)).collect();
        index.remove(&v4)
    }

    /// Rewrites the index from BANS: at every load of the program and every
    /// start of the controller. Returns (indexed, left to BANS). Holds the
    /// writers' lock from the read of BANS on, as `heal_ban_index` does.
    pub fn rebuild_ban_index(&mut self) -> Result<(usize, usize)> {
        let _held = self.hold_index()?;
        let bans = self.v4_bans();
        let Some(index) = self.index.as_mut() else {
            return Ok((0, bans.len()));
        };
        let full = index.rebuild(&bans)?;
        Ok((bans.len() - full, full))
    }

    /// BANS' IPv4 bans with their expiry, as the index keeps them.
    fn v4_bans(&self) -> Vec<(Ipv4Addr, u64)> {
        self.bans_raw()
            .into_iter()
            .filter_map(|(a, v)| v4_of(a).map(|a| (a, v.expires_ns)))
            .collect()
    }

    /// Slots in use in the ban index; `None` without one.
    pub fn ban_index_used(&self) -> Option<usize> {
        self.index.as_ref().and_then(|i| i.used().ok())
    }

    /// Hits counted in the index, by address (empty without one).
    fn indexed_hits(&self) -> std::collections::HashMap<Ipv4Addr, u64> {
        self.index
            .as_ref()
            .and_then(|i| {
                i.hits()
                    .map_err(|e| tracing::warn!(error = %e, "reading the ban index's hit counts"))
                    .ok()
            })
            .unwrap_or_default()
    }

    /// The BANS map's own handle, for batch calls.
    fn bans_data(&self) -> &MapData {
        data_of(&self.bans)
    }
}
