//! The hints overload's first pass reads before the allow-list trie and
//! the proof lookups (`sip_xdp_common::hints`). A set bit no entry needs
//! costs a lookup; a bit missing sheds a source that should pass. So the
//! allow hint is written only here, under the writers' lock, each entry's
//! bits before the entry; a removal leaves its bits, which the check
//! clears (`check_allow_hint`). The proof hint is also set by the kernel
//! as it verifies; the check sets again what a race lost, and the hourly
//! rebuild clears what lapsed. A map that cannot be read whole is never
//! written from a partial read.

use std::collections::HashSet;

use sip_xdp_common::hints::{
    allow_hint, proof_hint, proof_slot, Slot, ALLOW_HINT_FLAGS, BUILT, PROOF_HINT_FLAGS,
};

use super::*;

/// What a check of a hint found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HintCheck {
    /// Words that lacked a bit an entry needs (or the `BUILT` flag).
    pub missing: usize,
    /// Words written, stale bits cleared included.
    pub written: usize,
}

/// Every word of a hint.
fn read_words(map: &Array<MapData, u64>) -> Result<Vec<u64>> {
    (0..map.len())
        .map(|i| map.get(&i, 0).map_err(Error::map("reading a hint")))
        .collect()
}

/// Writes `want` over a hint holding `held`: bits first, the flags last,
/// so a hint is marked built only once its bits are all in.
fn write_words(
    map: &mut Array<MapData, u64>,
    held: &[u64],
    want: &[u64],
    flags_at: u32,
) -> Result<HintCheck> {
    let mut check = HintCheck::default();
    let order = (0..want.len() as u32)
        .filter(|i| *i != flags_at)
        .chain([flags_at]);
    for i in order {
        let (h, w) = (held[i as usize], want[i as usize]);
        if h == w {
            continue;
        }
        if w & !h != 0 {
            check.missing += 1;
        }
        map.set(i, w, 0).map_err(Error::map("writing a hint"))?;
        check.written += 1;
    }
    Ok(check)
}

/// Sets `slot`'s bit unless it is set.
fn set_bit(map: &mut Array<MapData, u64>, slot: Slot) -> Result<()> {
    let held = map
        .get(&slot.word, 0)
        .map_err(Error::map("reading a hint"))?;
    if held & slot.mask == 0 {
        map.set(slot.word, held | slot.mask, 0)
            .map_err(Error::map("writing a hint"))?;
    }
    Ok(())
}

impl Maps {
    /// The allow-list's entries as the trie keys them; an error rather
    /// than a part of them.
    fn allow_entries(&self) -> Result<Vec<(IpKey, u32)>> {
        self.allow
            .keys()
            .map(|k| {
                k.map(|k| (k.data(), k.prefix_len()))
                    .map_err(Error::map("reading the allow-list"))
            })
            .collect()
    }

    /// Writes the allow hint from the whole trie: bits an entry lacks
    /// set, bits no entry needs (left by removals) cleared. `missing`
    /// says whether any entry lacked its bit (0 unless an entry was
    /// written by a binary of another build, or the hint is new).
    pub fn check_allow_hint(&mut self) -> Result<HintCheck> {
        let _held = self.hold_index()?;
        let words = allow_hint(self.allow_entries()?);
        match &mut self.allow_hint {
            Some(m) => {
                let held = read_words(m)?;
                write_words(m, &held, &words, ALLOW_HINT_FLAGS)
            }
            None => Ok(HintCheck::default()),
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
            // Of the entry's flags, only V6_ALWAYS: BUILT is the check's.
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

    /// Sets the proof hint's bit of each address, before it is remembered.
    pub fn hint_proven(&mut self, ips: impl IntoIterator<Item = IpAddr>) -> Result<()> {
        let Some(m) = &mut self.proof_hint else {
            return Ok(());
        };
        for ip in ips {
            set_bit(m, proof_slot(&key_of(ip)))?;
        }
        Ok(())
    }

    /// The verified addresses, read whole, or an error.
    fn verified_keys(&self) -> Result<Vec<IpKey>> {
        let mut out = Vec::new();
        if let Some(m) = &self.verified {
            batch::for_each::<IpKey, Verified>(data_of(m), |k, _| out.push(*k))
                .map_err(Error::io("reading verified sources"))?;
        }
        Ok(out)
    }

    /// Sets the bits of verified addresses that lack theirs: the kernel's
    /// unlocked writes, or a write of ours racing one of its, may lose
    /// one. Returns how many words it wrote.
    pub fn check_proof_hint(&mut self) -> Result<usize> {
        if self.proof_hint.is_none() {
            return Ok(0);
        }
        let verified = self.verified_keys()?;
        let Some(m) = &mut self.proof_hint else {
            return Ok(0);
        };
        let held = read_words(m)?;
        let mut want = held.clone();
        for k in &verified {
            let s = proof_slot(k);
            want[s.word as usize] |= s.mask;
        }
        Ok(write_words(m, &held, &want, PROOF_HINT_FLAGS)?.written)
    }

    /// Writes the proof hint from the verified and remembered addresses,
    /// clearing the bits of those gone. Returns how many words changed.
    pub fn build_proof_hint(&mut self) -> Result<usize> {
        if self.proof_hint.is_none() {
            return Ok(0);
        }
        let mut keys: Vec<IpKey> = self.verified_keys()?;
        keys.extend(self.remembered()?.iter().map(|(ip, _)| key_of(*ip)));
        let words = proof_hint(&keys);
        let changed = match &mut self.proof_hint {
            Some(m) => {
                let held = read_words(m)?;
                write_words(m, &held, &words, PROOF_HINT_FLAGS)?.written
            }
            None => 0,
        };
        // What the kernel verified while the words were written, whose
        // bit the write may have cleared.
        let since: HashSet<IpAddr> = self.verified_keys()?.iter().map(ip_of).collect();
        self.hint_proven(since)?;
        Ok(changed)
    }
}
