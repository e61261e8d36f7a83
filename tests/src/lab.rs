//! Network-namespace labs: every host in a namespace of its own, joined by
//! veth, torn down on drop (also when a test panics). No lab address or route
//! ever touches the root namespace and no namespace gets a default route.

use std::{
    collections::HashMap,
    fs::File,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use nix::sched::{setns, CloneFlags};

/// Runs a command and panics with its output if it fails.
pub fn sh(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop (which also deletes its veths).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Self {
        // A previous run killed mid-test may have left one behind.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh("ip", &["netns", "add", name]);
        let ns = Self { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets made
    /// there stay in the namespace after the thread ends.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                let f_ns = File::open(&path).expect("opening netns");
                setns(f_ns, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in netns")
        })
    }

    /// Whether an XDP program is attached to `iface` here.
    pub fn xdp_attached(&self, iface: &str) -> bool {
        let out = self.ip(&["-d", "link", "show", "dev", iface]);
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }

    /// A command run inside the namespace with `nsenter --net`, which keeps
    /// the host's /sys/fs/bpf (unlike `ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        command_in(&self.path(), program)
    }
}

/// `program` run in the network namespace at `netns` (`nsenter --net`,
/// which keeps the host's /sys/fs/bpf, unlike `ip netns exec`).
pub fn command_in(netns: &std::path::Path, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns.display())).arg(program);
    c
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One veth link between a client namespace and the server namespace.
pub struct Link {
    pub server_if: String,
    pub server_v4: IpAddr,
    pub server_v6: IpAddr,
    pub client_v4: IpAddr,
    pub client_v6: IpAddr,
}

/// A protected server and two clients, each on its own veth:
/// client1 198.51.100.2 / 2001:db8:1::2 <-> server s1 198.51.100.1 / 2001:db8:1::1
/// client2 203.0.113.2  / 2001:db8:2::2 <-> server s2 203.0.113.1  / 2001:db8:2::1
pub struct Lab {
    // Clients first so they are dropped before the server.
    pub clients: Vec<Netns>,
    pub server: Netns,
    pub links: Vec<Link>,
}

impl Lab {
    /// The classic lab: one server, two clients on their own veths.
    pub fn two_clients(tag: &str) -> Self {
        Self::new(
            tag,
            &[("198.51.100", "2001:db8:1"), ("203.0.113", "2001:db8:2")],
        )
    }

    /// One server and one client per `(IPv4 /24 prefix, IPv6 /64 prefix)`:
    /// the client is `.2`/`::2`, the server's end `.1`/`::1`, on `s<n>`.
    pub fn new(tag: &str, nets: &[(&str, &str)]) -> Self {
        crate::require_root();
        let id = std::process::id() % 100_000;
        let server = Netns::new(&format!("sx{id}{tag}-srv"));
        let mut clients = Vec::new();
        let mut links = Vec::new();
        for (i, (v4net, v6net)) in nets.iter().enumerate() {
            let n = i + 1;
            let client = Netns::new(&format!("sx{id}{tag}-c{n}"));
            let s_if = format!("s{n}");
            // Create the pair inside the client namespace, then move one end.
            client.ip(&["link", "add", "e0", "type", "veth", "peer", "name", &s_if]);
            client.ip(&["link", "set", &s_if, "netns", &server.name]);
            client.ip(&["addr", "add", &format!("{v4net}.2/24"), "dev", "e0"]);
            client.ip(&[
                "addr",
                "add",
                &format!("{v6net}::2/64"),
                "dev",
                "e0",
                "nodad",
            ]);
            client.ip(&["link", "set", "e0", "up"]);
            server.ip(&["addr", "add", &format!("{v4net}.1/24"), "dev", &s_if]);
            server.ip(&[
                "addr",
                "add",
                &format!("{v6net}::1/64"),
                "dev",
                &s_if,
                "nodad",
            ]);
            server.ip(&["link", "set", &s_if, "up"]);
            links.push(Link {
                server_if: s_if,
                server_v4: format!("{v4net}.1").parse().unwrap(),
                server_v6: format!("{v6net}::1").parse().unwrap(),
                client_v4: format!("{v4net}.2").parse().unwrap(),
                client_v6: format!("{v6net}::2").parse().unwrap(),
            });
            clients.push(client);
        }
        Self {
            clients,
            server,
            links,
        }
    }
}

/// A UDP listener on port 5060 in the server namespace, v4 and v6.
pub struct SipListener {
    socks: Vec<UdpSocket>,
}

impl SipListener {
    pub fn start(server: &Netns, port: u16) -> Self {
        let socks = server.enter(|| {
            let v4 = UdpSocket::bind(("0.0.0.0", port)).expect("bind v4 listener");
            let v6 = socket2_v6only(port);
            vec![v4, v6]
        });
        for s in &socks {
            s.set_nonblocking(true).unwrap();
        }
        Self { socks }
    }

    /// Datagrams received per source address, reading until `quiet` passes
    /// with nothing new (bounded by `max_wait`).
    pub fn drain(&self, quiet: Duration, max_wait: Duration) -> HashMap<IpAddr, usize> {
        let mut got = HashMap::new();
        let start = Instant::now();
        let mut last = Instant::now();
        let mut buf = [0u8; 2048];
        while start.elapsed() < max_wait && last.elapsed() < quiet {
            let mut any = false;
            for s in &self.socks {
                while let Ok((_, from)) = s.recv_from(&mut buf) {
                    *got.entry(canonical(from)).or_insert(0) += 1;
                    any = true;
                }
            }
            if any {
                last = Instant::now();
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        got
    }
}

fn canonical(a: SocketAddr) -> IpAddr {
    match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A v6-only socket so the v4 listener gets the IPv4 traffic.
fn socket2_v6only(port: u16) -> UdpSocket {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::DGRAM, None).expect("socket(AF_INET6)");
    s.set_only_v6(true).expect("IPV6_V6ONLY");
    let addr: SocketAddr = format!("[::]:{port}").parse().unwrap();
    s.bind(&addr.into()).expect("bind v6 listener");
    s.into()
}

/// A client socket inside `ns` that sends `n` SIP datagrams to `to`.
pub fn send_sip(ns: &Netns, to: SocketAddr, payload: &[u8], n: usize) {
    let sock = ns.enter(|| {
        let bind: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        UdpSocket::bind(bind).expect("client socket")
    });
    for _ in 0..n {
        sock.send_to(payload, to).expect("send");
        // Paced so that no receive queue overflows: losses must come from
        // the filter only.
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The comparison benchmark's lab, all IPv6 (the only range the lab rules
/// allow with room for 100k distinct sources):
/// - `gen` floods from `FLOOD_PREFIX` sources through g0 <-> s0 (server
///   2001:db8:100::1, generator 2001:db8:100::2);
/// - `client` is a legitimate host on c0 <-> s1 (2001:db8:200::2 <-> ::1),
///   routed to the server's flood-side address;
/// - the server routes replies for the flood prefix back to `gen`, which
///   blackholes them;
/// - g2 <-> s2 is a one-queue veth, and d0 an ifb device that frees every
///   frame sent to it (the sender-only baseline).
pub struct FloodLab {
    pub gen: Netns,
    pub client: Netns,
    pub server: Netns,
    pub gen_mac: [u8; 6],
    pub server_mac: [u8; 6],
    /// s2's MAC (the one-queue link).
    pub server_mac_1q: [u8; 6],
}

pub const FLOOD_SERVER: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
pub const LEGIT_CLIENT: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 2);

/// The `n`th flooding source, 2001:db8:ff::/48 + n.
pub fn flood_source(n: u32) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, (n >> 16) as u16, n as u16)
}

impl FloodLab {
    /// Fixed names, so that a run killed outright is cleaned up by the next.
    pub fn new() -> Self {
        crate::require_root();
        let server = Netns::new("sxb-srv");
        let gen = Netns::new("sxb-gen");
        let client = Netns::new("sxb-cli");
        // One queue per CPU on the flood link, as a multi-queue NIC has: each
        // sending CPU then feeds its own veth queue and, under native XDP,
        // its own NAPI context.
        let queues = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string();
        let q = queues.as_str();
        gen.ip(&[
            "link",
            "add",
            "g0",
            "numtxqueues",
            q,
            "numrxqueues",
            q,
            "type",
            "veth",
            "peer",
            "name",
            "s0",
            "numtxqueues",
            q,
            "numrxqueues",
            q,
        ]);
        gen.ip(&["link", "set", "s0", "netns", &server.name]);
        client.ip(&["link", "add", "c0", "type", "veth", "peer", "name", "s1"]);
        client.ip(&["link", "set", "s1", "netns", &server.name]);
        for (ns, dev, addr) in [
            (&gen, "g0", "2001:db8:100::2/64"),
            (&server, "s0", "2001:db8:100::1/64"),
            (&client, "c0", "2001:db8:200::2/64"),
            (&server, "s1", "2001:db8:200::1/64"),
        ] {
            ns.ip(&["addr", "add", addr, "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        // The sender-only baseline: an ifb device frees every frame that
        // was not redirected to it by tc, so sending to it costs the
        // sender's work and nothing else (this kernel has no dummy driver).
        gen.ip(&["link", "add", "d0", "type", "ifb"]);
        gen.ip(&["link", "set", "d0", "up"]);
        // The same flood path with one veth queue, as veth comes by default.
        gen.ip(&["link", "add", "g2", "type", "veth", "peer", "name", "s2"]);
        gen.ip(&["link", "set", "s2", "netns", &server.name]);
        gen.ip(&["link", "set", "g2", "up"]);
        server.ip(&["link", "set", "s2", "up"]);
        server.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:ff::/48",
            "via",
            "2001:db8:100::2",
            "dev",
            "s0",
        ]);
        gen.ip(&["-6", "route", "add", "blackhole", "2001:db8:ff::/48"]);
        client.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:100::/64",
            "via",
            "2001:db8:200::1",
            "dev",
            "c0",
        ]);
        let gen_mac = mac(&gen, "g0");
        let server_mac = mac(&server, "s0");
        let server_mac_1q = mac(&server, "s2");
        Self {
            server_mac_1q,
            gen,
            client,
            server,
            gen_mac,
            server_mac,
        }
    }
}

impl Default for FloodLab {
    fn default() -> Self {
        Self::new()
    }
}

/// An interface's MAC address, from `ip -j link`.
pub fn mac(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = ns.ip(&["-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    let s = v[0]["address"].as_str().expect("a MAC address");
    let mut m = [0u8; 6];
    for (b, part) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    m
}

/// The id of the XDP program attached to `iface` in `ns`.
pub fn xdp_prog_id(ns: &Netns, iface: &str) -> Option<u32> {
    let out = ns.ip(&["-d", "link", "show", "dev", iface]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rest = &text[text.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// OPTIONS from `ns` to `to` in bursts of ten for `d` (at most 20,000):
/// how many were sent.
pub fn send_sip_for(ns: &Netns, to: std::net::SocketAddr, d: std::time::Duration) -> usize {
    let start = std::time::Instant::now();
    let mut n = 0;
    while start.elapsed() < d && n < 20_000 {
        send_sip(ns, to, crate::frames::OPTIONS, 10);
        n += 10;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    n
}
