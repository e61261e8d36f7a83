//! The filters the comparison benchmark puts in front of the SIP server, each
//! installed inside the server's namespace with its own tools and removed on
//! drop: sip-xdp (native or generic XDP), ip6tables `raw` with one rule per
//! source, an ipset `hash:ip` matched by one ip6tables rule, and nftables
//! sets in the netdev ingress hook or the ip6 prerouting hook.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::Ipv6Addr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use sip_xdp::{
    guard::Guard,
    kernel::{Maps, Pins},
};
use sip_xdp_common::{maps::BanReason, Counter};

use crate::lab::Netns;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No filter: a UDP socket reads and discards every packet.
    None,
    XdpNative,
    XdpGeneric,
    /// ip6tables raw PREROUTING, one `-s ADDR -j DROP` rule per source.
    IptablesRules,
    /// One ip6tables raw rule matching an ipset hash:ip.
    Ipset,
    /// nftables set in a netdev ingress chain on the receiving interface.
    NftIngress,
    /// nftables set in an ip6 prerouting chain at raw priority.
    NftPrerouting,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::None => "no filter (UDP socket reads and discards)",
            Kind::XdpNative => "sip-xdp, native XDP",
            Kind::XdpGeneric => "sip-xdp, generic XDP",
            Kind::IptablesRules => "ip6tables raw, one rule per source",
            Kind::Ipset => "ipset hash:ip + one ip6tables raw rule",
            Kind::NftIngress => "nftables set, netdev ingress",
            Kind::NftPrerouting => "nftables set, ip6 prerouting (raw)",
        }
    }

    pub fn is_xdp(self) -> bool {
        matches!(self, Kind::XdpNative | Kind::XdpGeneric)
    }
}

const SET: &str = "sipxdp_bench";
const TABLE: &str = "sipxdp_bench";

/// An installed filter, removed on drop.
pub struct Filter {
    pub kind: Kind,
    /// Wall time to load the list into the filter.
    pub load: Duration,
    /// sip-xdp only: the part of `load` spent writing the list into the
    /// loaded program's map (the rest loads, verifies and attaches it,
    /// once per boot).
    pub list_only: Option<Duration>,
    ns: String,
    iface: String,
    pins: Pins,
}

impl Filter {
    /// Installs `kind` on `iface` in `ns`, blocking every address in `list`.
    pub fn install(kind: Kind, ns: &Netns, iface: &str, pins: &Pins, list: &[Ipv6Addr]) -> Self {
        let start = Instant::now();
        let mut list_only = None;
        match kind {
            Kind::None => {}
            Kind::XdpNative | Kind::XdpGeneric => {
                let mode = if kind == Kind::XdpNative {
                    "native"
                } else {
                    "skb"
                };
                run_in(
                    ns,
                    crate::cli::bin().to_str().unwrap(),
                    &[
                        "--pin-dir",
                        pins.root().to_str().unwrap(),
                        "attach",
                        "--iface",
                        iface,
                        "--mode",
                        mode,
                    ],
                    None,
                );
                // What the controller's sync does with new rows, minus the
                // database: the safety rails, then batched map writes.
                let writes = Instant::now();
                let mut maps = Maps::open(pins).expect("opening the pinned maps");
                let guard = Guard::for_this_host();
                let entries: Vec<(IpNet, u64, BanReason)> = list
                    .iter()
                    .map(|a| IpNet::from(std::net::IpAddr::V6(*a)))
                    .filter(|n| guard.refusal(n).is_none())
                    .map(|n| (n, 0, BanReason::Manual))
                    .collect();
                maps.put_new(&entries).expect("banning the flood sources");
                list_only = Some(writes.elapsed());
            }
            Kind::IptablesRules => {
                let mut rules = String::from("*raw\n:PREROUTING ACCEPT [0:0]\n");
                for a in list {
                    writeln!(rules, "-A PREROUTING -s {a}/128 -j DROP").unwrap();
                }
                rules.push_str("COMMIT\n");
                run_in(ns, "ip6tables-restore", &[], Some(&rules));
            }
            Kind::Ipset => {
                let mut set = format!(
                    "create {SET} hash:ip family inet6 hashsize 65536 maxelem {}\n",
                    list.len().max(65536) * 2
                );
                for a in list {
                    writeln!(set, "add {SET} {a}").unwrap();
                }
                run_in(ns, "ipset", &["restore"], Some(&set));
                run_in(
                    ns,
                    "ip6tables",
                    &[
                        "-t",
                        "raw",
                        "-A",
                        "PREROUTING",
                        "-m",
                        "set",
                        "--match-set",
                        SET,
                        "src",
                        "-j",
                        "DROP",
                    ],
                    None,
                );
            }
            Kind::NftIngress | Kind::NftPrerouting => {
                let (family, hook) = if kind == Kind::NftIngress {
                    (
                        "netdev",
                        format!("type filter hook ingress device {iface} priority -500;"),
                    )
                } else {
                    (
                        "ip6",
                        "type filter hook prerouting priority raw;".to_string(),
                    )
                };
                let mut script = format!(
                    "table {family} {TABLE} {{\n set blocked {{ type ipv6_addr; size {}; }}\n \
                     chain flood {{ {hook} ip6 saddr @blocked counter drop; }}\n}}\n",
                    list.len().max(65536) * 2
                );
                // Elements in chunks: one huge line is slow to parse.
                for chunk in list.chunks(5000) {
                    let elems: Vec<String> = chunk.iter().map(|a| a.to_string()).collect();
                    writeln!(
                        script,
                        "add element {family} {TABLE} blocked {{ {} }}",
                        elems.join(", ")
                    )
                    .unwrap();
                }
                run_in(ns, "nft", &["-f", "-"], Some(&script));
            }
        }
        Self {
            kind,
            load: start.elapsed(),
            list_only,
            ns: ns.name.clone(),
            iface: iface.to_string(),
            pins: pins.clone(),
        }
    }

    /// Packets this filter has dropped so far, by its own counters.
    pub fn dropped(&self) -> u64 {
        match self.kind {
            Kind::None => 0,
            Kind::XdpNative | Kind::XdpGeneric => Maps::open(&self.pins)
                .and_then(|m| m.stats())
                .expect("reading sip-xdp's counters")
                .into_iter()
                .find(|(c, _)| *c == Counter::Banned)
                .map_or(0, |(_, n)| n),
            Kind::IptablesRules | Kind::Ipset => {
                // `[packets:bytes] -A PREROUTING ...` for every rule.
                let out = output_in(&self.ns, "ip6tables-save", &["-c", "-t", "raw"]);
                out.lines()
                    .filter(|l| l.starts_with('[') && l.contains("-j DROP"))
                    .filter_map(|l| l[1..].split(':').next()?.parse::<u64>().ok())
                    .sum()
            }
            Kind::NftIngress | Kind::NftPrerouting => {
                let family = if self.kind == Kind::NftIngress {
                    "netdev"
                } else {
                    "ip6"
                };
                let out = output_in(&self.ns, "nft", &["list", "chain", family, TABLE, "flood"]);
                out.split("counter packets ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0)
            }
        }
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        let ns = self.ns.clone();
        let quiet = |prog: &str, args: &[&str]| {
            let _ = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{ns}"))
                .arg(prog)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        match self.kind {
            Kind::None => {}
            Kind::XdpNative | Kind::XdpGeneric => {
                quiet(
                    crate::cli::bin().to_str().unwrap(),
                    &[
                        "--pin-dir",
                        self.pins.root().to_str().unwrap(),
                        "detach",
                        "--iface",
                        &self.iface,
                        "--purge",
                    ],
                );
                let _ = std::fs::remove_dir_all(self.pins.root());
            }
            Kind::IptablesRules => quiet("ip6tables", &["-t", "raw", "-F", "PREROUTING"]),
            Kind::Ipset => {
                quiet("ip6tables", &["-t", "raw", "-F", "PREROUTING"]);
                quiet("ipset", &["destroy", SET]);
            }
            Kind::NftIngress => quiet("nft", &["delete", "table", "netdev", TABLE]),
            Kind::NftPrerouting => quiet("nft", &["delete", "table", "ip6", TABLE]),
        }
    }
}

/// Runs `prog args` in `ns` (via nsenter, which keeps the host's bpffs),
/// feeding `stdin`; panics with its output on failure.
fn run_in(ns: &Netns, prog: &str, args: &[&str], stdin: Option<&str>) {
    let mut child = ns
        .command(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("feeding {prog}: {e}"));
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output_in(ns: &str, prog: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pin directory the benchmark's sip-xdp uses (not the production one).
pub fn bench_pins() -> Pins {
    Pins::new(PathBuf::from("/sys/fs/bpf/sip-xdp-bench-compare"))
}
