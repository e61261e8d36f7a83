//! The program's settings (ports, flags) and its global counters.

use super::*;

/// The set bits of the port bitmap, in one batch read (an array's batch
/// walks its indexes in order, so the ports come out sorted).
fn read_ports(map: &Array<MapData, u64>) -> Result<Vec<u16>> {
    use aya::maps::IterableMap as _;
    let mut out = Vec::new();
    batch::for_each::<u32, u64>(map.map(), |w, bits| {
        for b in 0..64 {
            if bits & (1 << b) != 0 {
                out.push((w * 64 + b) as u16);
            }
        }
    })
    .map_err(Error::io("reading ports"))?;
    Ok(out)
}

/// Adds the new ports before removing old ones, so no port the operator
/// keeps is ever briefly unfiltered.
fn write_ports(map: &mut Array<MapData, u64>, ports: &[u16]) -> Result<()> {
    let mut words = vec![0u64; SIP_PORT_WORDS as usize];
    for p in ports {
        words[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    for pass in 0..2 {
        for (i, w) in words.iter().enumerate() {
            let old = map
                .get(&(i as u32), 0)
                .map_err(Error::map("reading ports"))?;
            let new = if pass == 0 { old | w } else { *w };
            if new != old {
                map.set(i as u32, new, 0)
                    .map_err(Error::map("writing ports"))?;
            }
        }
    }
    Ok(())
}

impl Maps {
    /// Verdict totals and every counter, summed over CPUs, as `stats` and
    /// metrics show them.
    pub fn report(&self) -> Result<Vec<(&'static str, u64)>> {
        let raw = self.stats()?;
        let total = |v: Verdict| {
            raw.iter()
                .filter(|(c, _)| c.verdict() == v)
                .map(|(_, n)| n)
                .sum()
        };
        let mut out = vec![
            ("passed", total(Verdict::Pass) + total(Verdict::WouldDrop)),
            ("dropped", total(Verdict::Drop)),
            ("would_drop", total(Verdict::WouldDrop)),
        ];
        out.extend(raw.iter().map(|(c, n)| (c.name(), *n)));
        Ok(out)
    }

    /// Global counters summed over CPUs, in `Counter::ALL` order.
    /// One counter, summed over CPUs.
    pub fn counter(&self, c: Counter) -> Result<u64> {
        let v = self
            .stats
            .get(&(c as u32), 0)
            .map_err(Error::map("reading counters"))?;
        Ok(v.iter().sum())
    }

    pub fn stats(&self) -> Result<Vec<(Counter, u64)>> {
        let mut out = Vec::with_capacity(COUNTERS as usize);
        for c in Counter::ALL {
            let v = self
                .stats
                .get(&(c as u32), 0)
                .map_err(Error::map("reading counters"))?;
            out.push((c, v.iter().sum()));
        }
        Ok(out)
    }

    /// Per CPU, the packets the program gave a verdict (the CPUs that run
    /// it, and how busy each is), cumulative.
    pub fn packets_per_cpu(&self) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = Vec::new();
        for c in Counter::ALL {
            if c.verdict() == Verdict::None {
                continue;
            }
            let v = self
                .stats
                .get(&(c as u32), 0)
                .map_err(Error::map("reading counters"))?;
            out.resize(out.len().max(v.len()), 0);
            for (o, n) in out.iter_mut().zip(v.iter()) {
                *o += n;
            }
        }
        Ok(out)
    }

    pub fn config(&self) -> Result<KernelConfig> {
        self.config.get(&0, 0).map_err(Error::map("reading config"))
    }

    pub fn set_config(&mut self, c: KernelConfig) -> Result<()> {
        self.config
            .set(0, c, 0)
            .map_err(Error::map("writing config"))
    }

    /// The UDP ports SIP is filtered on.
    pub fn ports(&self) -> Result<Vec<u16>> {
        read_ports(&self.ports)
    }

    /// Replaces the UDP SIP port set.
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<()> {
        write_ports(&mut self.ports, ports)
    }

    /// The TCP ports (SIP over TCP and TLS) bans are enforced on; `None`
    /// when the pinned program predates them.
    pub fn tcp_ports(&self) -> Result<Option<Vec<u16>>> {
        self.tcp_ports.as_ref().map(read_ports).transpose()
    }

    /// Replaces the TCP port set.
    pub fn set_tcp_ports(&mut self, ports: &[u16]) -> Result<()> {
        match &mut self.tcp_ports {
            Some(map) => write_ports(map, ports),
            None => Err(Error::Io {
                context: "setting TCP ports".into(),
                source: std::io::Error::other(
                    "the loaded program predates TCP enforcement; reload it (see `sip-xdp status`)",
                ),
            }),
        }
    }
}
