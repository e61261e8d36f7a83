//! End to end: the real `sip-xdp` binary attached natively to the server's
//! veths in a namespace lab, real UDP SIP from two client namespaces.
//! Needs root; run with `cargo xtask test`.

use std::{net::SocketAddr, time::Duration};

use sip_xdp_tests::{
    cli::{bin, Cli},
    frames::OPTIONS,
    lab::{send_sip, send_sip_for, xdp_prog_id, Lab, SipListener},
};

/// Sends `n` OPTIONS from each (client, destination) and returns how many
/// reached the listener per client address.
fn exchange(lab: &Lab, l: &SipListener, sends: &[(usize, SocketAddr)], n: usize) -> Vec<usize> {
    for (client, to) in sends {
        send_sip(&lab.clients[*client], *to, OPTIONS, n);
    }
    let got = l.drain(Duration::from_millis(300), Duration::from_secs(5));
    sends
        .iter()
        .map(|(client, to)| {
            let link = &lab.links[*client];
            let src = if to.is_ipv4() {
                link.client_v4
            } else {
                link.client_v6
            };
            got.get(&src).copied().unwrap_or(0)
        })
        .collect()
}

#[test]
fn block_and_unblock_between_two_clients() {
    let lab = Lab::two_clients("a");
    let cli = Cli::new(&lab.server);
    let out = cli.ok(&[
        "attach", "--iface", "s1", "--iface", "s2", "--mode", "native",
    ]);
    assert!(out.contains("attached to s1 in native mode"), "{out}");
    assert!(lab.server.xdp_attached("s1") && lab.server.xdp_attached("s2"));
    let status = cli.ok(&["status"]);
    assert!(status.contains("attached: s1 (native mode)"), "{status}");
    // Kernel memory per map, as the kernel charges it.
    let st = cli.json(&["status", "--json"]);
    let sources = st["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["map"] == "SOURCES")
        .unwrap();
    assert!(sources["kernel_kib"].as_u64().unwrap() > 1024, "{st}");
    assert!(st["kernel_kib"].as_u64().unwrap() > sources["kernel_kib"].as_u64().unwrap());
    assert!(
        status.contains("KiB in the kernel") && status.contains("kernel memory, every map:"),
        "{status}"
    );

    let listener = SipListener::start(&lab.server, 5060);
    let v4 = |i: usize| SocketAddr::new(lab.links[i].server_v4, 5060);
    let v6 = |i: usize| SocketAddr::new(lab.links[i].server_v6, 5060);
    let both = [(0, v4(0)), (1, v4(1)), (0, v6(0)), (1, v6(1))];
    const N: usize = 20;

    assert_eq!(
        exchange(&lab, &listener, &both, N),
        vec![N; 4],
        "before any block"
    );

    let c1 = lab.links[0].client_v4.to_string();
    let c2v6 = lab.links[1].client_v6.to_string();
    // A reason as a script might pass it on, with a terminal's escape
    // codes and a line break in it.
    cli.ok(&["block", &c1, "--reason", "storm\x1b[2J\r\nforged row"]);
    cli.ok(&["block", &c2v6, "--for", "10m"]);
    assert_eq!(
        exchange(&lab, &listener, &both, N),
        vec![0, N, N, 0],
        "client 1 blocked on IPv4, client 2 on IPv6"
    );
    let stats = cli.stats();
    assert_eq!(stats["drop_banned"], 2 * N as u64, "{stats}");
    assert_eq!(stats["dropped"], 2 * N as u64, "{stats}");
    let listed: serde_json::Value =
        serde_json::from_str(&cli.ok(&["list", "blocked", "--json"])).unwrap();
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // The table shows the reason escaped: one line per row, nothing a
    // terminal would obey.
    let table = cli.ok(&["list", "blocked"]);
    assert_eq!(table.lines().count(), 3, "{table:?}");
    assert!(
        !table.contains('\x1b') && table.contains(r"storm\u{1b}[2J\r\nforged row"),
        "{table:?}"
    );
    assert!(rows.iter().all(|r| r["hits"] == N as u64), "{listed}");
    let top = cli.ok(&["top", "--json"]);
    assert!(top.contains(&lab.links[1].client_v4.to_string()), "{top}");

    cli.ok(&["unblock", &c1]);
    cli.ok(&["unblock", &c2v6]);
    assert_eq!(
        exchange(&lab, &listener, &both, N),
        vec![N; 4],
        "after unblock"
    );

    // A CIDR covering client 2 (203.0.113.2/31 leaves out the server's .1),
    // then client 2 allow-listed inside it.
    cli.ok(&["block", "203.0.113.2/31"]);
    assert_eq!(exchange(&lab, &listener, &both[..2], N), vec![N, 0]);
    cli.ok(&["allow", &lab.links[1].client_v4.to_string()]);
    assert_eq!(exchange(&lab, &listener, &both[..2], N), vec![N, N]);

    // Detach leaves no program behind.
    cli.ok(&["detach", "--iface", "s1", "--iface", "s2"]);
    assert!(!lab.server.xdp_attached("s1") && !lab.server.xdp_attached("s2"));
    assert!(
        !cli.pins.join("prog").exists(),
        "program pin removed with the last link"
    );
    let status = cli.ok(&["status"]);
    assert!(status.contains("program: not loaded"), "{status}");
}

#[test]
fn operator_mistakes_get_one_clear_line() {
    let lab = Lab::two_clients("b");
    let cli = Cli::new(&lab.server);

    let e = cli.fails(&["stats"]);
    assert!(
        e.contains("not loaded") && e.contains("sip-xdp attach"),
        "{e}"
    );
    let e = cli.fails(&["attach", "--iface", "nosuch0"]);
    assert!(e.contains("no network interface named \"nosuch0\""), "{e}");

    // Another vendor's XDP program already on s1.
    let foreign = lab.server.enter(|| {
        let mut ebpf = aya::Ebpf::load(sip_xdp::BASELINE_OBJECT).unwrap();
        let prog: &mut aya::programs::Xdp = ebpf
            .program_mut(sip_xdp::BASELINE_PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        prog.load().unwrap();
        prog.attach("s1", aya::programs::XdpMode::Driver).unwrap();
        ebpf
    });
    let e = cli.fails(&["attach", "--iface", "s1"]);
    assert!(e.contains("already has another XDP program"), "{e}");
    drop(foreign);

    cli.ok(&["attach", "--iface", "s1"]);
    let e = cli.fails(&["attach", "--iface", "s1"]);
    assert!(e.contains("already attached to s1"), "{e}");
    let e = cli.fails(&["block", "203.0.113.300"]);
    assert!(e.contains("not an IPv4 or IPv6 address"), "{e}");
    let e = cli.fails(&["block", "198.51.100.0/33"]);
    assert!(e.contains("prefix length"), "{e}");
    let e = cli.fails(&["block", "198.51.100.1"]);
    assert!(e.contains("an address of this host"), "{e}");
    let e = cli.fails(&["block", "127.0.0.1"]);
    assert!(e.contains("loopback"), "{e}");
    // Huge durations are refused with the limit, not a panic.
    for args in [
        &["block", "203.0.113.9", "--for", "999999999d"][..],
        &["events", "--since", "999999999d"][..],
    ] {
        let out = cli.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("longer than ten years"), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    // Usage errors come from clap: exit 2, the first line says what is wrong.
    let out = cli.run(&["block", "203.0.113.9", "--for", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.lines()
            .next()
            .unwrap()
            .contains("use e.g. 30s, 10m, 1h, 7d"),
        "{e}"
    );
    let out = cli.run(&["blok", "203.0.113.9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("similar subcommands exist: 'unblock', 'block'"));

    // Without root.
    let out = lab
        .server
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin())
        .args(["block", "203.0.113.9"])
        .env("SIP_XDP_PIN_DIR", &cli.pins)
        .env("SIP_XDP_DB", &cli.db_url)
        .env("SIP_XDP_CONFIG", cli.dir.join("sip-xdp.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("needs root"), "{e}");
}

/// Whether a TCP handshake from `client` to `to` completes within 700 ms.
fn tcp_connects(client: &sip_xdp_tests::lab::Netns, to: SocketAddr) -> bool {
    client.enter(|| std::net::TcpStream::connect_timeout(&to, Duration::from_millis(700)).is_ok())
}

/// A banned scanner moving to SIP over TCP or TLS is dropped there too;
/// with `scope all` everything from it is, and the allow-list still wins.
#[test]
fn a_ban_covers_sip_over_tcp_and_with_scope_all_everything() {
    let lab = Lab::two_clients("t");
    let cli = Cli::new(&lab.server);
    cli.ok(&[
        "attach", "--iface", "s1", "--iface", "s2", "--mode", "native",
    ]);
    // Listeners on SIP over TCP, SIP over TLS and a web port; the kernel
    // completes the handshake, nothing needs to accept.
    let _listeners: Vec<std::net::TcpListener> = lab.server.enter(|| {
        [5060, 5061, 8080]
            .iter()
            .map(|p| std::net::TcpListener::bind(("::", *p)).unwrap())
            .collect()
    });
    let to = |i: usize, port: u16| SocketAddr::new(lab.links[i].server_v4, port);
    let (c1, c2) = (&lab.clients[0], &lab.clients[1]);
    for port in [5060, 5061, 8080] {
        assert!(tcp_connects(c1, to(0, port)), "before the ban, port {port}");
    }
    let ports = cli.ok(&["ports"]);
    assert!(
        ports.contains("TCP/TLS ports (bans enforced): 5060 5061"),
        "{ports}"
    );

    cli.ok(&["block", &lab.links[0].client_v4.to_string(), "--for", "10m"]);
    assert!(
        !tcp_connects(c1, to(0, 5060)),
        "SIP over TCP from a banned source"
    );
    assert!(
        !tcp_connects(c1, to(0, 5061)),
        "SIP over TLS from a banned source"
    );
    assert!(tcp_connects(c1, to(0, 8080)), "scope sip: other ports pass");
    assert!(
        tcp_connects(c2, to(1, 5061)),
        "another client is not touched"
    );
    let stats = cli.stats();
    assert!(stats["drop_banned"].as_u64().unwrap() >= 2, "{stats}");

    let out = cli.ok(&["scope", "all"]);
    assert!(out.contains("ban scope: all"), "{out}");
    assert!(!tcp_connects(c1, to(0, 8080)), "scope all: every port");
    assert!(
        tcp_connects(c2, to(1, 8080)),
        "scope all: only the banned source"
    );
    cli.ok(&["allow", &lab.links[0].client_v4.to_string()]);
    assert!(tcp_connects(c1, to(0, 5061)), "the allow-list wins");
    let status = cli.ok(&["status"]);
    assert!(status.contains("ban scope: all"), "{status}");
}

/// A new version finds programs pinned by another build: it loads its own
/// on the same maps and swaps them into the pinned links. The interface is
/// never without its filter: a banned client sending all along gets nothing
/// through, its ban (a map entry) is kept, and the program id changes.
#[test]
fn a_new_version_replaces_the_pinned_program_without_a_gap() {
    use aya::maps::{Array, Map, MapData};
    let lab = Lab::two_clients("u");
    let cli = Cli::new(&lab.server);
    cli.ok(&["attach", "--iface", "s1", "--mode", "native"]);
    let c1 = lab.links[0].client_v4.to_string();
    cli.ok(&["block", &c1]);
    let before = xdp_prog_id(&lab.server, "s1").expect("attached");
    let meta_pin = cli.pins.join("maps/META");
    let stamp = |v: Option<u64>| {
        let mut m: Array<MapData, u64> =
            Array::try_from(Map::Array(MapData::from_pin(&meta_pin).unwrap())).unwrap();
        if let Some(v) = v {
            m.set(0, v, 0).unwrap();
        }
        m.get(&0, 0).unwrap()
    };
    let ours = stamp(None);
    assert_ne!(ours, 0, "the loader stamps what it pinned");
    // As if an older build had pinned them: the build before the spill
    // mark pinned a BAN_INDEX of 60-byte buckets, which this build cannot
    // share (its own program keeps the one it has). The upgrade must build
    // a new index from BANS before its program runs: this one trusts the
    // index for IPv4, and the banned client sends all along.
    stamp(Some(1));
    let index_pin = cli.pins.join("maps/BAN_INDEX");
    std::fs::remove_file(&index_pin).expect("unpinning BAN_INDEX");
    let old_layout = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        4,
        60,
        sip_xdp_common::banindex::BUCKETS,
        0,
    );
    MapData::create(old_layout, "BAN_INDEX", None)
        .expect("an index of the older layout")
        .pin(&index_pin)
        .expect("pinning it");
    // And a build with seven SIP classes pinned 72-byte source counts: they
    // restart at zero in the new layout, never read as this build's.
    let sources_pin = cli.pins.join("maps/SOURCES");
    std::fs::remove_file(&sources_pin).expect("unpinning SOURCES");
    let old_sources = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LRU_PERCPU_HASH as u32,
        16,
        72,
        4096,
        0,
    );
    MapData::create(old_sources, "SOURCES", None)
        .expect("source counts of the older layout")
        .pin(&sources_pin)
        .expect("pinning them");

    let listener = SipListener::start(&lab.server, 5060);
    let to = SocketAddr::new(lab.links[0].server_v4, 5060);
    std::thread::scope(|s| {
        let sender = s.spawn(|| send_sip_for(&lab.clients[0], to, Duration::from_secs(2)));
        std::thread::sleep(Duration::from_millis(300));
        cli.ok(&["attach", "--iface", "s2", "--mode", "native"]);
        let sent = sender.join().unwrap();
        assert!(sent > 100, "only {sent} sent");
    });
    let got = listener.drain(Duration::from_millis(300), Duration::from_secs(5));
    assert_eq!(
        got.get(&lab.links[0].client_v4).copied().unwrap_or(0),
        0,
        "a packet of the banned client got through during the replacement"
    );
    let after = xdp_prog_id(&lab.server, "s1").expect("still attached");
    assert_ne!(before, after, "the program on s1 was not replaced");
    assert_eq!(xdp_prog_id(&lab.server, "s2"), Some(after));
    assert_eq!(stamp(None), ours);
    let listed = cli.ok(&["list", "blocked", "--kernel", "--json"]);
    assert!(listed.contains(&c1), "the ban was lost: {listed}");
    let sources = MapData::from_pin(&sources_pin)
        .and_then(|d| d.info())
        .expect("a new SOURCES");
    assert_eq!(
        sources.value_size() as usize,
        std::mem::size_of::<sip_xdp_common::maps::SourceStats>()
    );
    // The new build's index was created empty and filled from the kept BANS.
    let index: Array<MapData, sip_xdp_common::banindex::Bucket> = Array::try_from(Map::Array(
        MapData::from_pin(&index_pin).expect("a new BAN_INDEX"),
    ))
    .unwrap();
    let c1_word = match lab.links[0].client_v4 {
        std::net::IpAddr::V4(a) => sip_xdp_common::banindex::addr_word(a.octets()),
        other => panic!("{other} is not IPv4"),
    };
    let bucket = index
        .get(&sip_xdp_common::banindex::bucket_of(c1_word), 0)
        .unwrap();
    assert!(
        bucket
            .slots
            .iter()
            .any(|s| !s.is_empty() && s.addr == c1_word),
        "the kept ban was not indexed by the new build"
    );
}

/// A configuration pinned by a build from before overload admission (56
/// bytes) is carried into the new layout: monitor mode and the limits the
/// operator set stay, and nothing of the old map is left behind.
#[test]
fn a_configuration_of_the_layout_before_admission_is_carried_over() {
    use aya::maps::{Array, Map, MapData};
    let lab = Lab::two_clients("cf");
    let cli = Cli::new(&lab.server);
    cli.ok(&["attach", "--iface", "s1", "--mode", "native"]);
    cli.ok(&["detach", "--iface", "s1"]);
    let maps = cli.pins.join("maps");
    std::fs::remove_file(maps.join("CONFIG")).unwrap();
    let old = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        4,
        56,
        1,
        0,
    );
    let data = MapData::create(old, "CONFIG", None).expect("a configuration of the older layout");
    data.pin(maps.join("CONFIG")).expect("pinning it");
    let mut old: Array<MapData, [u8; 56]> =
        Array::try_from(Map::Array(MapData::from_pin(maps.join("CONFIG")).unwrap())).unwrap();
    let mut bytes = [0u8; 56];
    bytes[..4].copy_from_slice(&sip_xdp_common::CONFIG_MONITOR.to_ne_bytes());
    bytes[4..8].copy_from_slice(&77u32.to_ne_bytes());
    old.set(0, bytes, 0).unwrap();
    drop(old);
    cli.ok(&["attach", "--iface", "s1", "--mode", "native"]);
    let c = sip_xdp::kernel::Maps::open(&sip_xdp::kernel::Pins::new(&cli.pins))
        .unwrap()
        .config()
        .unwrap();
    assert!(c.monitor(), "monitor mode was lost: {c:?}");
    assert_eq!(c.rate_limit, 77);
    assert_eq!((c.shed_per_cpu, c.strangers_per_cpu), (0, 0));
    assert!(!maps.join("CONFIG_PREVIOUS").exists());
}

/// Maps left pinned with another layout are never shared with programs
/// that would read them wrong: one line says which map differs and what
/// to run, and nothing is attached.
#[test]
fn incompatible_pinned_maps_are_refused_with_the_command_to_run() {
    use aya::maps::MapData;
    let lab = Lab::two_clients("i");
    let cli = Cli::new(&lab.server);
    cli.ok(&["attach", "--iface", "s1", "--mode", "native"]);
    cli.ok(&["detach", "--iface", "s1"]);
    // An older build's TCP_PORTS with another layout: the CONFIG map.
    let maps = cli.pins.join("maps");
    std::fs::remove_file(maps.join("TCP_PORTS")).unwrap();
    MapData::from_pin(maps.join("CONFIG"))
        .unwrap()
        .pin(maps.join("TCP_PORTS"))
        .unwrap();
    let err = cli.fails(&["attach", "--iface", "s1", "--mode", "native"]);
    assert!(err.contains("incompatible"), "{err}");
    assert!(
        err.contains("TCP_PORTS: value 72 B pinned, 8 B now"),
        "{err}"
    );
    assert!(err.contains("detach --purge"), "{err}");
    assert!(!lab.server.xdp_attached("s1"));
}

/// A change that cannot last (the database unreachable and the outbox not
/// writable: the controller's next sync would undo it) fails with its
/// reason, so that fail2ban, which trusts exit codes, knows; and a reader
/// that goes away (`sip-xdp list blocked | head`) ends the command quietly.
#[test]
fn a_change_that_will_not_last_fails_and_a_closed_pipe_is_quiet() {
    use std::os::unix::process::ExitStatusExt as _;
    let lab = Lab::two_clients("u");
    let cli = Cli::new(&lab.server);
    cli.ok(&["attach", "--iface", "s1"]);
    cli.ok(&["block", "198.51.100.9", "--reason", "listed"]);

    // /proc takes no new directories: the outbox cannot be written.
    let cfg = cli.dir.join("unwritable.toml");
    std::fs::write(&cfg, "outbox = \"/proc/sip-xdp/outbox.jsonl\"\n").unwrap();
    let out = cli
        .command()
        .args(["block", "198.51.100.2"])
        .env("SIP_XDP_DB", "mysql://nobody:x@127.0.0.1:1/none")
        .env("SIP_XDP_CONFIG", &cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("applied to the kernel only"), "{err}");

    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = cli
        .command()
        .args(["list", "blocked"])
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}

/// A block queued during an outage is not overtaken by an unblock given
/// once the database is back: the command writes the queued changes first,
/// so the unblock lifts the block instead of finding nothing, and nothing
/// is left to bring the ban back later.
#[test]
fn a_queued_change_is_not_overtaken_by_a_later_one() {
    use sip_xdp::db::outbox::{Change, Op, Outbox};
    let lab = Lab::two_clients("q");
    let cli = Cli::new(&lab.server);
    cli.ok(&["attach", "--iface", "s1"]);
    let outbox = Outbox::new(cli.dir.join("outbox.jsonl"));
    let op = Op::Block {
        reason: "queued in the outage".into(),
        expires_at: None,
        source: "manual".into(),
    };
    let at = sip_xdp::db::store::now() - chrono::Duration::minutes(5);
    outbox
        .push(&Change::new(
            op,
            &"198.51.100.2/32".parse().unwrap(),
            at,
            "n",
        ))
        .unwrap();
    let out = cli.ok(&["unblock", "198.51.100.2"]);
    assert!(out.contains("unblocked 198.51.100.2"), "{out}");
    assert!(
        outbox.peek().unwrap().is_empty(),
        "the queued block is still waiting"
    );
    let listed = cli.json(&["list", "blocked", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
}
