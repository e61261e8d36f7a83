//! The hints the program reads before the allow-list trie and the proof
//! lookups (`sip_xdp_common::hints`). The allow hint is written only here,
//! under the writers' lock, so that no entry is ever in the trie without
//! its bit: a bit set before the entry is inserted, and cleared only by a
//! rebuild from the whole trie after an entry left. The proof hint is
//! also set by the kernel as it verifies; its rebuild reads `VERIFIED`
//! again after writing, so that a bit the kernel set meanwhile is not
//! lost.

use std::collections::HashSet;

use sip_xdp_common::hints::{
    allow_hint, proof_hint, proof_slot, ALLOW_HINT_FLAGS, BUILT, PROOF_HINT_FLAGS,
};

use super::*;

/// A hint's words as the kernel holds them, and what changes.
fn write_words(map: &mut Array<MapData, u64>, words: &[u64], flags_at: u32) -> Result<usize> {
    let mut changed = 0;
    // Bits first, the flags last: a hint is marked built only once its
    // bits are all in.
    for (i, want) in words.iter().enumerate() {
        let i = i as u32;
        if i == flags_at {
            continue;
        }
        if map.get(&i, 0).map_err(Error::map("reading a hint"))? != *want {
            map.set(i, *want, 0).map_err(Error::map("writing a hint"))?;
            changed += 1;
        }
    }
    let flags = words[flags_at as usize];
    if map
        .get(&flags_at, 0)
        .map_err(Error::map("reading a hint"))?
        != flags
    {
        map.set(flags_at, flags, 0)
            .map_err(Error::map("writing a hint"))?;
        changed += 1;
    }
    Ok(changed)
}

impl Maps {
    /// The allow-list's entries as the trie keys them.
    fn allow_entries(&self) -> Vec<(IpKey, u32)> {
        self.allow
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| (k.data(), k.prefix_len()))
            .collect()
    }

    /// Writes the allow hint from the whole trie, clearing what no entry
    /// needs any more. Returns how many words changed (0 when it was in
    /// step, or when the pinned program predates hints).
    pub fn build_allow_hint(&mut self) -> Result<usize> {
        let _held = self.hold_index()?;
        let words = allow_hint(self.allow_entries());
        match &mut self.allow_hint {
            Some(m) => write_words(m, &words, ALLOW_HINT_FLAGS),
            None => Ok(0),
        }
    }

    /// Sets the bits an entry needs, before it goes into the trie. The
    /// caller holds the writers' lock.
    pub(super) fn hint_allow(&mut self, entry: &Key<IpKey>) -> Result<()> {
        let Some(m) = &mut self.allow_hint else {
            return Ok(());
        };
        let needed = allow_hint([(entry.data(), entry.prefix_len())]);
        for (i, bits) in needed.iter().enumerate() {
            let i = i as u32;
            // Of the entry's flags, only V6_ALWAYS: BUILT is the rebuild's.
            let bits = if i == ALLOW_HINT_FLAGS {
                bits & !BUILT
            } else {
                *bits
            };
            if bits == 0 {
                continue;
            }
            let held = m.get(&i, 0).map_err(Error::map("reading a hint"))?;
            if held & bits != bits {
                m.set(i, held | bits, 0)
                    .map_err(Error::map("writing a hint"))?;
            }
        }
        Ok(())
    }

    /// Sets the proof hint's bit of each address, before it is remembered
    /// (and again for the verified, in case the kernel lost one).
    pub fn hint_proven(&mut self, ips: impl IntoIterator<Item = IpAddr>) -> Result<()> {
        let Some(m) = &mut self.proof_hint else {
            return Ok(());
        };
        for ip in ips {
            let s = proof_slot(&key_of(ip));
            let held = m.get(&s.word, 0).map_err(Error::map("reading a hint"))?;
            if held & s.mask == 0 {
                m.set(s.word, held | s.mask, 0)
                    .map_err(Error::map("writing a hint"))?;
            }
        }
        Ok(())
    }

    /// Writes the proof hint from the verified and remembered addresses,
    /// clearing the bits of those gone. Returns how many words changed.
    pub fn build_proof_hint(&mut self) -> Result<usize> {
        if self.proof_hint.is_none() {
            return Ok(0);
        }
        let verified = |maps: &Self| -> HashSet<IpAddr> {
            maps.verified_until()
                .into_iter()
                .map(|(ip, ..)| ip)
                .collect()
        };
        let mut keys: Vec<IpKey> = verified(self).iter().map(|ip| key_of(*ip)).collect();
        keys.extend(self.remembered()?.iter().map(|(ip, _)| key_of(*ip)));
        let words = proof_hint(&keys);
        let changed = match &mut self.proof_hint {
            Some(m) => write_words(m, &words, PROOF_HINT_FLAGS)?,
            None => 0,
        };
        // What the kernel verified while the words were written, whose
        // bit the write may have cleared.
        let since = verified(self);
        self.hint_proven(since)?;
        Ok(changed)
    }
}
