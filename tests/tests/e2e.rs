//! End to end: the real `sip-xdp` binary attached natively to the server's
//! veths in a namespace lab, real UDP SIP from two client namespaces.
//! Needs root; run with `cargo xtask test`.

use std::{net::SocketAddr, time::Duration};

use sip_xdp_tests::{
    cli::{bin, Cli},
    frames::OPTIONS,
    lab::{send_sip, Lab, SipListener},
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
    cli.ok(&["block", &c1]);
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
