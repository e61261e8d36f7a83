//! The SIP server's UDP sockets as Linux reports them for this network
//! namespace (`/proc/net/udp`, `/proc/net/udp6`): how many datagrams they
//! dropped because the server did not read them in time. A rising count
//! is the server falling behind, whatever its software.

/// The drops of every UDP socket bound to one of `ports`, summed over
/// both families; `None` when neither file can be read.
pub fn udp_drops(ports: &[u16]) -> Option<u64> {
    let mut total = None;
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            *total.get_or_insert(0) += drops_in(&text, ports);
        }
    }
    total
}

/// The `drops` column of the rows whose local port is one of `ports`.
/// Rows read: `sl local_address rem_address st tx_queue:rx_queue tr
/// tm->when retrnsmt uid timeout inode ref pointer drops`, the port in hex
/// after the local address's colon.
pub fn drops_in(text: &str, ports: &[u16]) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            if !ports.contains(&port) {
                return None;
            }
            line.split_whitespace().last()?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_of_the_sip_ports_only() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 00000000:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 24417 2 0000000000000000 1234\n\
  2: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 24418 2 0000000000000000 99\n\
  3: 0164A8C0:13C5 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 24419 2 0000000000000000 6\n\
garbage\n";
        assert_eq!(drops_in(text, &[5060, 5061]), 1240);
        assert_eq!(drops_in(text, &[53]), 99);
        assert_eq!(drops_in(text, &[]), 0);
    }

    #[test]
    fn this_machines_files_read() {
        // Whatever is bound here, the files parse.
        assert!(udp_drops(&[5060]).is_some());
    }
}
