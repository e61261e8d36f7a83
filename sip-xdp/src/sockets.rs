//! What Linux says of the SIP server's sockets, for this network
//! namespace: datagrams dropped because a socket's receive buffer was
//! full (`RcvbufErrors` in `/proc/net/snmp`, `Udp6RcvbufErrors` in
//! `/proc/net/snmp6`). A rising count is a server falling behind, whatever
//! its software. Checksum failures, which anyone can send, are counted
//! apart and never read here.

/// Receive-buffer drops of the namespace's UDP sockets, both families;
/// `None` when neither file can be read.
pub fn rcvbuf_errors() -> Option<u64> {
    let v4 = std::fs::read_to_string("/proc/net/snmp").ok();
    let v6 = std::fs::read_to_string("/proc/net/snmp6").ok();
    if v4.is_none() && v6.is_none() {
        return None;
    }
    Some(v4.as_deref().map_or(0, udp_rcvbuf_errors) + v6.as_deref().map_or(0, udp6_rcvbuf_errors))
}

/// `RcvbufErrors` of the `Udp:` table in `/proc/net/snmp` (a line of
/// names, then a line of values).
pub fn udp_rcvbuf_errors(snmp: &str) -> u64 {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .and_then(|i| values.split_whitespace().nth(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `Udp6RcvbufErrors` in `/proc/net/snmp6` (a name and a value a line).
pub fn udp6_rcvbuf_errors(snmp6: &str) -> u64 {
    snmp6
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("Udp6RcvbufErrors")).then(|| f.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receive_buffer_drops_and_nothing_else() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
Udp: 1000 5 70 900 64 0 6 0 0\n\
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
UdpLite: 0 0 0 0 9 0 0 0 0\n";
        assert_eq!(
            udp_rcvbuf_errors(snmp),
            64,
            "not the checksum errors, not UDP-Lite's"
        );
        let snmp6 = "Udp6InDatagrams                 	52\nUdp6RcvbufErrors                	7\nUdp6InCsumErrors                	3\n";
        assert_eq!(udp6_rcvbuf_errors(snmp6), 7);
        assert_eq!(udp_rcvbuf_errors("garbage"), 0);
    }

    #[test]
    fn this_machines_files_read() {
        assert!(rcvbuf_errors().is_some());
    }
}
