//! `cargo xtask bench`, the database and feed part (`sip-xdp-bench-feeds`):
//! how soon what the database and the threat feeds say is enforced in the
//! kernel, through the real controller (`sip-xdp run`) in a lab namespace:
//! - 100,000 `blocked_ips` rows: the first sync, a cycle with no change
//!   and lifting them all, on SQLite and on MariaDB, with the controller's
//!   memory;
//! - a 100,000-line blocklist file, then refreshes with no change;
//! - an APIBAN page of 10,000 addresses (a local server speaking APIBAN's
//!   format, since apiban.org cannot be reached from here);
//! - one CrowdSec decision added and deleted (Debian's CrowdSec Local API);
//! - a country policy (a GeoLite2 country database, $SIP_XDP_GEO_DB);
//! - the database's growth over an hour at the ban cap, with and without
//!   retention.
//!
//! Times come from the controller's own log (`feed refreshed`, `kernel
//! synced`, each stamped by its clock) and from polling the pinned maps.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sip_xdp::kernel::{Maps, Pins};
use sip_xdp_tests::{
    cli::{Cli, Daemon},
    crowdsec::Lapi,
    db::TestDb,
    http::{Response, Server},
    lab::Lab,
};

const ROWS: usize = 100_000;
const APIBAN_PAGE: usize = 10_000;

/// `n` distinct documentation addresses under 2001:db8:`tag`::/48.
fn addresses(n: usize, tag: u16) -> Vec<String> {
    (0..n)
        .map(|i| format!("2001:db8:{tag:x}:{:x}::{:x}", i >> 16, i & 0xffff))
        .collect()
}

/// (exact bans, block-list rules) in the kernel.
fn in_kernel(cli: &Cli) -> (usize, usize) {
    let Ok(m) = Maps::open(&Pins::new(&cli.pins)) else {
        return (0, 0);
    };
    let fill = m.fill(Some(0));
    (fill[0].1, fill[2].1)
}

/// Polls every 10 ms until `f` holds; how long it took.
fn until(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// A controller log line: its time stamp and its `key=value` fields.
struct Line {
    at: DateTime<Utc>,
    text: String,
}

impl Line {
    fn field(&self, name: &str) -> Option<u64> {
        let pat = format!(" {name}=");
        let at = self.text.find(&pat)? + pat.len();
        self.text[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}

/// The log lines with `message` (text format: the time stamp first).
fn lines(d: &Daemon, message: &str) -> Vec<Line> {
    d.log_text()
        .lines()
        .filter(|l| l.contains(message))
        .filter_map(|l| {
            let at = DateTime::parse_from_rfc3339(l.split_whitespace().next()?).ok()?;
            Some(Line {
                at: at.with_timezone(&Utc),
                text: l.to_string(),
            })
        })
        .collect()
}

/// When `n` entries were in the kernel by the controller's own log: a
/// feed's entries installed ahead of their rows, or a sync installing them.
fn installed_at(d: &Daemon, n: usize) -> Option<Line> {
    let enough = |l: &Line, f: &str| l.field(f).is_some_and(|c| c as usize >= n);
    lines(d, "feed entries installed ahead")
        .into_iter()
        .find(|l| enough(l, "count"))
        .or_else(|| {
            lines(d, "kernel synced")
                .into_iter()
                .find(|l| enough(l, "installed"))
        })
}

/// When a feed's `n` rows were written to the database.
fn rows_written_at(d: &Daemon, n: usize) -> Option<Line> {
    lines(d, "feed rows written")
        .into_iter()
        .find(|l| l.field("added").is_some_and(|c| c as usize >= n))
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn since(a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
    (b - a).to_std().unwrap_or_default()
}

fn rss_mb(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

fn start(cli: &Cli, node: &str, interval: &str) -> Daemon {
    let d = cli.start_controller_env(&["s1"], node, interval, &[("RUST_LOG", "sip_xdp=debug")]);
    d.wait_log("database connected", Duration::from_secs(30));
    d
}

struct Sync {
    db: &'static str,
    insert: Duration,
    enforced: Option<Duration>,
    first: Option<(u64, u64)>,
    steady: Vec<u64>,
    writes_in_steady: usize,
    rss: (f64, f64),
    lifted: Option<Duration>,
    lift_sync: Option<(u64, u64)>,
}

/// 100k rows written in one go by another client, synced by a running
/// controller (interval 1 s), left alone for 3 cycles, then lifted.
fn sync(lab: &Lab, db: TestDb, label: &'static str, rt: &tokio::runtime::Runtime) -> Sync {
    let cli = Cli::with_db(&lab.server, db.url());
    cli.add_config("detect = { enabled = false }\n");
    let store = rt.block_on(db.connect());
    let ips = addresses(ROWS, 0x5000);
    let t = Instant::now();
    rt.block_on(store.insert_blocks(
        &ips,
        "bench",
        "manual",
        sip_xdp::db::store::now(),
        None,
        "bench",
    ))
    .expect("inserting rows");
    let insert = t.elapsed();
    // The first load: a controller starting on a table that holds them.
    let t = Instant::now();
    let mut d = cli.start_controller_env(
        &["s1"],
        "bench-sync",
        "1s",
        &[("RUST_LOG", "sip_xdp=debug")],
    );
    let enforced =
        until(Duration::from_secs(60), || in_kernel(&cli).0 >= ROWS).map(|_| t.elapsed());
    // The next rounds change nothing: their times from the status file
    // (`last_sync_ms`, database and kernel), one per round.
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = BTreeSet::new();
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(3500) {
        let st = std::fs::read_to_string(cli.dir.join("status.json")).unwrap_or_default();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&st) {
            if let (Some(at), Some(ms)) = (v["last_sync_at"].as_str(), v["last_sync_ms"].as_u64()) {
                seen.insert((at.to_string(), ms));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let db_kernel = |l: &Line| {
        (
            l.field("db_ms").unwrap_or(0),
            l.field("kernel_ms").unwrap_or(0),
        )
    };
    let synced = lines(&d, "kernel synced");
    let first = synced
        .iter()
        .find(|l| l.field("installed") == Some(ROWS as u64))
        .map(db_kernel);
    let steady: Vec<u64> = seen.into_iter().skip(1).map(|(_, ms)| ms).collect();
    let writes_in_steady = synced.len().saturating_sub(1);
    let rss = rss_mb(d.child.id());

    let rows = rt
        .block_on(store.active_blocks_of_source("manual", sip_xdp::db::store::now()))
        .expect("reading rows");
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    rt.block_on(store.lift_ids(&ids, sip_xdp::db::store::now()))
        .expect("lifting rows");
    let lifted = until(Duration::from_secs(60), || in_kernel(&cli).0 == 0);
    std::thread::sleep(Duration::from_millis(200));
    let lift_sync = lines(&d, "kernel synced")
        .iter()
        .find(|l| l.field("removed") == Some(ROWS as u64))
        .map(db_kernel);
    d.stop();
    drop(cli);
    drop(db);
    Sync {
        db: label,
        insert,
        enforced,
        first,
        steady,
        writes_in_steady,
        rss,
        lifted,
        lift_sync,
    }
}

fn sync_report(rows: &[Sync]) {
    println!("## The database to the kernel\n");
    println!(
        "{ROWS} `blocked_ips` rows (IPv6 addresses, no expiry), written by another client in one transaction, then \
         `sip-xdp run` (sync interval 1 s, detection off) started on one lab interface. *Enforced after*: from \
         the controller's start (program load and attach included) until the kernel holds every entry (polled \
         every 10 ms). *Sync*: the controller's own figures for the round that loaded them (`kernel synced`: the \
         database part, then the kernel part). *No change*: the rounds after it, database and kernel together (`last_sync_ms` in the status file). Then the other \
         client lifts every row (one UPDATE transaction) and the kernel empties.\n"
    );
    println!("| database | rows written in | enforced after start | first sync: database + kernel | no-change syncs (each, database + kernel) | kernel writes in no-change syncs | all lifted: kernel empty after | lift sync: database + kernel | controller RSS (peak) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let pair = |p: Option<(u64, u64)>| p.map_or("?".into(), |(a, b)| format!("{a} + {b} ms"));
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} MB ({:.1} MB) |",
            r.db,
            ms(r.insert),
            r.enforced.map_or("never (60 s)".into(), ms),
            pair(r.first),
            r.steady
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
                + " ms",
            r.writes_in_steady,
            r.lifted.map_or("never (60 s)".into(), ms),
            pair(r.lift_sync),
            r.rss.0,
            r.rss.1
        );
    }
    println!("\n| target | figure | |\n|---|---|---|");
    for r in rows {
        let first = r.first.map(|(a, b)| a + b);
        let worst_steady = r.steady.iter().copied().max();
        println!(
            "| {ROWS} rows, first sync under 1 s ({}) | {} | {} |",
            r.db,
            first.map_or("?".into(), |t| format!("{t} ms")),
            met(first.is_some_and(|t| t < 1000))
        );
        println!(
            "| {ROWS} rows, a no-change sync under 1 s and writing nothing to the kernel ({}) | slowest {}, {} kernel writes | {} |",
            r.db,
            worst_steady.map_or("?".into(), |t| format!("{t} ms")),
            r.writes_in_steady,
            met(worst_steady.is_some_and(|t| t < 1000) && r.writes_in_steady == 0 && r.steady.len() >= 2)
        );
        println!(
            "| controller RSS ≤ 50 MB with {ROWS} active rows ({}) | {:.1} MB peak | {} |",
            r.db,
            r.rss.1,
            met(r.rss.1 <= 50.0)
        );
    }
    println!();
}

/// A 100k-line blocklist file replaces a one-line one; then three
/// refreshes with nothing new.
fn blocklist(lab: &Lab) {
    let db = TestDb::mariadb();
    let cli = Cli::with_db(&lab.server, db.url());
    let file = cli.dir.join("list.txt");
    std::fs::write(&file, "# nothing yet\n").unwrap();
    cli.add_config(&format!(
        "detect = {{ enabled = false }}\n[feeds.big]\nfile = \"{}\"\nrefresh = \"1s\"\nmax_entries = 200000\n",
        file.display()
    ));
    let mut d = start(&cli, "bench-list", "2s");
    let text: String = addresses(ROWS, 0x6000)
        .iter()
        .map(|a| format!("{a}\n"))
        .collect();
    let tmp = cli.dir.join("list.tmp");
    std::fs::write(&tmp, text).unwrap();
    let written = Utc::now();
    std::fs::rename(&tmp, &file).unwrap();
    let enforced = until(Duration::from_secs(60), || in_kernel(&cli).0 >= ROWS);
    std::thread::sleep(Duration::from_millis(4000));
    let refreshed = lines(&d, "feed refreshed")
        .into_iter()
        .find(|l| l.field("entries") == Some(ROWS as u64));
    let installed = installed_at(&d, ROWS);
    let stored = rows_written_at(&d, ROWS);
    let after_refreshes = lines(&d, "feed refreshed")
        .iter()
        .filter(|l| refreshed.as_ref().is_some_and(|r| l.at > r.at))
        .count();
    // Any kernel or row write after the list's own.
    let last_write = stored
        .as_ref()
        .map(|l| l.at)
        .max(installed.as_ref().map(|l| l.at));
    let later_syncs = [
        "kernel synced",
        "feed entries installed ahead",
        "feed rows written",
    ]
    .iter()
    .flat_map(|m| lines(&d, m))
    .filter(|l| last_write.is_some_and(|w| l.at > w))
    .count();
    let events = cli
        .json(&["events", "--type", "feed_updated", "--json"])
        .as_array()
        .map_or(0, Vec::len);
    let rss = rss_mb(d.child.id());
    d.stop();
    println!("## Threat feeds to the kernel\n");
    println!(
        "Each feed through `sip-xdp run` on MariaDB, detection off. *Applied*: from the controller's `feed refreshed` \
         line (the list read and checked) to the line saying its entries are in the kernel (`feed entries installed \
         ahead of their rows`), both stamped by the controller; *rows written*: from the same line to `feed rows \
         written` (the database's share, which does not delay enforcement); *enforced after*: from the outside \
         event (the file replaced, the page published, the decision added) until the pinned map holds it, polled \
         every 10 ms.\n"
    );
    println!("### A 100,000-line blocklist\n");
    let applied = refreshed
        .as_ref()
        .zip(installed.as_ref())
        .map(|(r, s)| since(r.at, s.at));
    let rows_after = refreshed
        .as_ref()
        .zip(stored.as_ref())
        .map(|(r, s)| since(r.at, s.at));
    let read_after = refreshed.as_ref().map(|r| since(written, r.at));
    println!(
        "A file feed (`refresh = \"1s\"`) goes from one comment line to {ROWS} IPv6 addresses (renamed into place). \
         Read by the feed {} after the rename; applied in {}; enforced {} after the rename; rows written {} after \
         the read. Then {after_refreshes} refreshes of the unchanged file: {later_syncs} kernel or row writes \
         and {} `feed_updated` event{} in all (the first list's). Controller RSS {:.1} MB (peak {:.1} MB).\n",
        read_after.map_or("?".into(), ms),
        applied.map_or("?".into(), ms),
        enforced.map_or("never (60 s)".into(), ms),
        rows_after.map_or("?".into(), ms),
        events,
        if events == 1 { "" } else { "s" },
        rss.0,
        rss.1,
    );
    println!("| target | figure | |\n|---|---|---|");
    println!(
        "| a {ROWS}-line blocklist applies in under 2 s | {} | {} |",
        applied.map_or("?".into(), ms),
        met(applied.is_some_and(|a| a < Duration::from_secs(2)))
    );
    println!(
        "| a refresh with no change writes nothing | {after_refreshes} refreshes: {later_syncs} kernel changes, {} new events | {} |\n",
        events.saturating_sub(1),
        met(after_refreshes >= 2 && later_syncs == 0 && events == 1)
    );
    println!("| target | figure | |\n|---|---|---|");
    println!(
        "| controller RSS ≤ 50 MB with {ROWS} active rows (from the list) | {:.1} MB once applied, {:.1} MB at the peak | {} once applied; {} at the peak |\n",
        rss.0,
        rss.1,
        met(rss.0 <= 50.0),
        met(rss.1 <= 50.0)
    );
}

/// APIBAN publishes a page of 10k addresses while the feed polls every
/// `refresh`.
fn apiban(lab: &Lab) {
    let db = TestDb::mariadb();
    let cli = Cli::with_db(&lab.server, db.url());
    let published = Arc::new(AtomicBool::new(false));
    let p = published.clone();
    let page =
        serde_json::json!({"ipaddress": addresses(APIBAN_PAGE, 0x7000), "ID": "200"}).to_string();
    let none = "{\"ipaddress\":[\"no new bans\"],\"ID\":\"none\"}";
    let api = Server::start(
        &lab.server,
        Duration::from_secs(120),
        Box::new(move |req| {
            if p.load(Ordering::SeqCst) && req.path == "/api/KEY/banned/100" {
                Response::new(200, page.clone())
            } else {
                Response::new(400, none)
            }
        }),
    );
    let refresh = Duration::from_secs(5);
    cli.add_config(&format!(
        "detect = {{ enabled = false }}\nstate_dir = \"{}\"\n\
         [feeds.apiban]\nkey = \"KEY\"\nurl = \"{}\"\nrefresh = \"{}s\"\nexpire = \"1h\"\n",
        cli.dir.join("state").display(),
        api.url("/api"),
        refresh.as_secs()
    ));
    let mut d = start(&cli, "bench-apiban", "2s");
    // Published halfway between two polls, the worst case is a whole interval.
    let _ = until(Duration::from_secs(15), || !api.requests().is_empty());
    std::thread::sleep(refresh / 2);
    published.store(true, Ordering::SeqCst);
    let enforced = until(Duration::from_secs(60), || in_kernel(&cli).0 >= APIBAN_PAGE);
    std::thread::sleep(Duration::from_millis(300));
    let asked = api
        .requests()
        .iter()
        .filter(|(r, s)| *s == 200 && r.path.ends_with("/100"))
        .count();
    let refreshed = lines(&d, "feed refreshed")
        .into_iter()
        .find(|l| l.field("entries") == Some(APIBAN_PAGE as u64));
    let applied = refreshed
        .as_ref()
        .zip(installed_at(&d, APIBAN_PAGE).as_ref())
        .map(|(r, s)| since(r.at, s.at));
    d.stop();
    println!("### An APIBAN page of 10,000 addresses\n");
    println!(
        "A local server answers APIBAN's documented format (apiban.org is out of reach here): \"no new bans\" \
         until the page is published, halfway between two polls of `refresh = \"{}s\"`. Page served {asked} \
         time{}; applied {} after the feed read it; enforced {} after it was published.\n",
        refresh.as_secs(),
        if asked == 1 { "" } else { "s" },
        applied.map_or("?".into(), ms),
        enforced.map_or("never (60 s)".into(), ms),
    );
    println!("| target | figure | |\n|---|---|---|");
    println!(
        "| an APIBAN page of {APIBAN_PAGE} addresses enforced within one refresh interval + 1 s ({} s) | {} | {} |\n",
        refresh.as_secs() + 1,
        enforced.map_or("never".into(), ms),
        met(enforced.is_some_and(|e| e <= refresh + Duration::from_secs(1)))
    );
}

/// One CrowdSec decision, added then deleted with `cscli`.
fn crowdsec(lab: &Lab) {
    let db = TestDb::mariadb();
    let cli = Cli::with_db(&lab.server, db.url());
    let mut lapi = Lapi::start(&lab.server);
    let key = lapi.key();
    let refresh = Duration::from_secs(5);
    cli.add_config(&format!(
        "detect = {{ enabled = false }}\n[feeds.crowdsec]\nkey = \"{key}\"\nurl = \"http://127.0.0.1:8080\"\nrefresh = \"{}s\"\n",
        refresh.as_secs()
    ));
    let mut d = start(&cli, "bench-cs", "2s");
    let _ = until(Duration::from_secs(15), || {
        d.log_text().contains("feed refreshed feed=crowdsec")
    });
    std::thread::sleep(refresh / 2);
    let ip = "2001:db8:8000::1";
    let held = |cli: &Cli| {
        Maps::open(&Pins::new(&cli.pins))
            .is_ok_and(|m| m.bans_raw().iter().any(|(a, _)| a.to_string() == ip))
    };
    lapi.add(&["--ip", ip, "--duration", "1h", "--reason", "sip-xdp bench"]);
    let added = until(Duration::from_secs(60), || held(&cli));
    std::thread::sleep(refresh / 2);
    lapi.cscli(&["decisions", "delete", "--ip", ip]);
    let deleted = until(Duration::from_secs(60), || !held(&cli));
    d.stop();
    drop(lapi);
    println!("### A CrowdSec decision\n");
    println!(
        "Debian's CrowdSec Local API (`crowdsec -no-cs`) with a bouncer key for sip-xdp, polled with \
         `refresh = \"{}s\"` (the decision stream: `startup=true`, then deltas). `cscli decisions add --ip` and, \
         later, `cscli decisions delete --ip`, each made halfway between two polls; timed from `cscli`'s return \
         until the ban is in, then out of, the kernel.\n",
        refresh.as_secs()
    );
    let limit = refresh + Duration::from_secs(1);
    println!("| target | figure | |\n|---|---|---|");
    println!(
        "| a CrowdSec decision enforced within one refresh interval + 1 s ({} s) | {} | {} |",
        limit.as_secs(),
        added.map_or("never".into(), ms),
        met(added.is_some_and(|a| a <= limit))
    );
    println!(
        "| its deletion lifted within one refresh interval + 1 s | {} | {} |\n",
        deleted.map_or("never".into(), ms),
        met(deleted.is_some_and(|a| a <= limit))
    );
}

/// A country policy from the GeoLite2 database: walked, written as rows
/// and installed as block-list prefixes.
fn country(lab: &Lab, path: &std::path::Path, code: &str) {
    let db_ = sip_xdp::feed::geo::Db::open(path).expect("country database");
    let set: BTreeSet<String> = [code.to_string()].into();
    let t = Instant::now();
    let nets = db_.policy(&set, false).expect("policy");
    let walk = t.elapsed();
    let db = TestDb::mariadb();
    let cli = Cli::with_db(&lab.server, db.url());
    cli.add_config(&format!(
        "detect = {{ enabled = false }}\nmax_block = 131072\n[geo]\ndatabase = \"{}\"\nblock = [\"{code}\"]\nmax_entries = 200000\n",
        path.display()
    ));
    let mut d = start(&cli, "bench-geo", "2s");
    let held = until(Duration::from_secs(60), || {
        let (b, r) = in_kernel(&cli);
        b + r >= nets.len()
    });
    // The rows follow the kernel: wait for them before stopping.
    let _ = until(Duration::from_secs(60), || {
        rows_written_at(&d, nets.len()).is_some()
    });
    let on = lines(&d, "feed on")
        .into_iter()
        .find(|l| l.text.contains("feed=geo"));
    let refreshed = lines(&d, "feed refreshed")
        .into_iter()
        .find(|l| l.text.contains("feed=geo"));
    let synced = installed_at(&d, nets.len());
    let stored = rows_written_at(&d, nets.len());
    d.stop();
    let loaded = on
        .as_ref()
        .zip(synced.as_ref())
        .map(|(o, s)| since(o.at, s.at));
    let read = on
        .as_ref()
        .zip(refreshed.as_ref())
        .map(|(o, r)| since(o.at, r.at));
    let v4 = nets
        .iter()
        .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
        .count();
    println!("### A country policy\n");
    println!(
        "`[geo] block = [\"{code}\"]` with ip-location-db's GeoLite2 country database: {} prefixes ({v4} IPv4, {} IPv6; \
         the database walk alone took {} here). From the feed's start (`feed on`) to the prefixes read: {}; to \
         every prefix in the kernel's block-list: {}; to their rows written: {}. Held in the kernel {} after the \
         controller started.\n",
        nets.len(),
        nets.len() - v4,
        ms(walk),
        read.map_or("?".into(), ms),
        loaded.map_or("?".into(), ms),
        on.as_ref()
            .zip(stored.as_ref())
            .map(|(o, s)| since(o.at, s.at))
            .map_or("?".into(), ms),
        held.map_or("never (60 s)".into(), ms),
    );
    println!("| target | figure | |\n|---|---|---|");
    println!(
        "| a country with thousands of prefixes loads in under 2 s | {} prefixes in {} | {} |\n",
        nets.len(),
        loaded.map_or("?".into(), ms),
        met(nets.len() >= 1000 && loaded.is_some_and(|l| l < Duration::from_secs(2)))
    );
}

/// The database's size in bytes, tables and indexes, as the engine counts
/// them (SQLite's pages, InnoDB's statistics after ANALYZE).
async fn db_bytes(db: &TestDb, store: &sip_xdp::db::Store) -> u64 {
    match db.mariadb_name() {
        Some(name) => {
            sip_xdp_tests::db::admin(&format!(
                "ANALYZE TABLE `{name}`.blocked_ips, `{name}`.security_events"
            ));
            sip_xdp_tests::db::admin_query(&format!(
                "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = '{name}'"
            ))
            .parse()
            .unwrap_or(0)
        }
        None => {
            let pages = store
                .count_literal("SELECT page_count FROM pragma_page_count")
                .await
                .unwrap();
            let free = store
                .count_literal("SELECT freelist_count FROM pragma_freelist_count")
                .await
                .unwrap();
            let size = store
                .count_literal("SELECT page_size FROM pragma_page_size")
                .await
                .unwrap();
            ((pages - free) * size) as u64
        }
    }
}

/// One hour at the ban cap written as the controller writes it: per ban a
/// `blocked_ips` row, the detection's event and `ip_blocked`, and at its
/// expiry the lift and `ip_unblocked`; with `retention`, one batch of it
/// per 2-s round, as the controller runs it. Returns the bytes after each
/// simulated ten minutes.
async fn one_hour_at_the_cap(
    db: &TestDb,
    retention: Option<&sip_xdp::db::retention::Settings>,
) -> Vec<u64> {
    use serde_json::json;
    use sip_xdp::db::store::{now, Event};
    let store = db.connect().await;
    let cap = sip_xdp::detect::Settings::default().max_bans_per_sec as i64;
    let start = now();
    let mut sizes = Vec::new();
    let mut n = 0u32;
    for round in 0..1800i64 {
        let at = start + chrono::Duration::seconds(round * 2);
        let mut events = Vec::new();
        for _ in 0..cap * 2 {
            n += 1;
            let ip = format!("100.{}.{}.{}", 64 + (n >> 16) % 64, (n >> 8) & 255, n & 255);
            let note = "flood: 61 over limit 30 in 2s";
            let expires = at + chrono::Duration::minutes(10);
            let id = store
                .insert_block(&ip, note, "flood", at, Some(expires), Some("sbc-1"))
                .await
                .unwrap();
            let ev = |t: &str, sev: &str, details| Event {
                event_type: t.into(),
                source_ip: Some(ip.clone()),
                severity: sev.into(),
                details,
                event_time: at,
                node: Some("sbc-1".into()),
            };
            events.push(ev("flood_detected", "warning", json!({"count": 61, "limit": 30, "window_s": 2.0, "class": "register", "action": "banned", "ban_s": 600, "offence": 1, "expires_at": expires.to_string()})));
            events.push(ev("ip_blocked", "info", json!({"reason": note, "source": "flood", "ban_s": 600, "expires_at": expires.to_string(), "offence": 1})));
            events.push(ev("ip_unblocked", "info", json!({"reason": "expired", "id": id, "source": "flood", "expires_at": expires.to_string()})));
            store.mark_lifted(id, expires).await.unwrap();
        }
        for chunk in events.chunks(500) {
            store.insert_events(chunk).await.unwrap();
        }
        if let Some(r) = retention {
            sip_xdp::db::retention::prune_batch(&store, r, at)
                .await
                .unwrap();
        }
        if (round + 1) % 300 == 0 {
            sizes.push(db_bytes(db, &store).await);
        }
    }
    sizes
}

/// The database's growth at the ban cap, with no retention and with caps
/// small enough to be reached within the hour.
fn growth(rt: &tokio::runtime::Runtime) {
    use sip_xdp::db::retention::Settings;
    let cap = sip_xdp::detect::Settings::default().max_bans_per_sec;
    let small = Settings {
        events: None,
        lifted_blocks: None,
        max_events: 100_000,
        max_lifted_blocks: 30_000,
    };
    println!(
        "## The database at the ban cap
"
    );
    println!(
        "One hour at the ban cap ({cap} bans/s) written through the store as the controller writes it: per ban a \
         `blocked_ips` row, the detection's event and `ip_blocked`, then the lift and `ip_unblocked` (3 events). \
         Without retention, and with caps of {} events and {} lifted blocks pruned one batch per 2-s round as \
         the controller does (the defaults are 5,000,000 and 1,000,000, reached later). Size: tables and \
         indexes as the engine counts them.\n",
        small.max_events, small.max_lifted_blocks
    );
    println!("| database | retention | after 10 min | 20 | 30 | 40 | 50 | 60 | per hour, last 30 min | bytes per ban (rows + events) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, with) in [("none", None), ("capped", Some(&small))] {
        for (name, db) in [("SQLite", TestDb::sqlite()), ("MariaDB", TestDb::mariadb())] {
            let sizes = rt.block_on(one_hour_at_the_cap(&db, with));
            let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
            let late = sizes[5].saturating_sub(sizes[2]) * 2;
            let per_ban = match with {
                None => format!("{:.0}", sizes[5] as f64 / (f64::from(cap) * 3600.0)),
                Some(_) => "-".into(),
            };
            println!(
                "| {name} | {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
                mb(sizes[0]),
                mb(sizes[1]),
                mb(sizes[2]),
                mb(sizes[3]),
                mb(sizes[4]),
                mb(sizes[5]),
                mb(late),
                per_ban
            );
        }
    }
    println!();
}

fn main() {
    sip_xdp_tests::require_root();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::args().nth(1);
    let want = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let lab = Lab::two_clients("bd");
    if want("sync") {
        let rows = vec![
            sync(&lab, TestDb::sqlite(), "SQLite", &rt),
            sync(&lab, TestDb::mariadb(), "MariaDB", &rt),
        ];
        sync_report(&rows);
    }
    if want("list") {
        blocklist(&lab);
    }
    if want("apiban") {
        apiban(&lab);
    }
    if want("crowdsec") {
        crowdsec(&lab);
    }
    if want("growth") {
        growth(&rt);
    }
    if want("geo") {
        match std::env::var_os("SIP_XDP_GEO_DB") {
            Some(p) => country(&lab, &PathBuf::from(p), "DE"),
            None => println!("### A country policy\n\nNot run: SIP_XDP_GEO_DB is not set (`cargo xtask bench` sets it).\n"),
        }
    }
}
