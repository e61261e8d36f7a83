//! Threat feeds: lists other tools keep of who the attackers are, turned
//! into `blocked_ips` rows of their own `source` (`feed:NAME`, `apiban`) by
//! the same path as `sip-xdp block`, so the allow-list and the safety rails
//! still win and every node sharing the database enforces them.
//!
//! Each feed runs as a task of its own on its refresh interval and reports
//! to the controller, which hands the result to its next database round
//! (`db::feeds`). A feed that fails keeps its last good list: nothing is
//! lifted because a server was down.
//!
//! May import the crate root (`guard`, the safety rails; `parse`); never
//! `kernel`, `db`, `detect`, `cli` or `controller`.

pub mod apiban;
pub mod crowdsec;
pub mod geo;
pub mod list;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use ipnet::IpNet;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::guard::Guard;
pub use list::Format;

/// One `[feeds.NAME]` section. `NAME = "apiban"` is APIBAN's protocol
/// (needs `key`); any other name is a plain list from `url` or `file`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FeedSettings {
    pub url: Option<String>,
    pub file: Option<PathBuf>,
    pub format: Format,
    /// How often it is read again (default 1h; APIBAN 5m).
    pub refresh: Option<String>,
    /// More entries than this and the list is refused as a whole (a feed
    /// gone wrong must not fill the ban map).
    pub max_entries: usize,
    /// Rows expire this long after the feed last listed them (default:
    /// never for lists, they go when the list drops them; APIBAN 7d).
    pub expire: Option<String>,
    /// APIBAN's API key.
    pub key: Option<String>,
    /// Per HTTP request (default 30s).
    pub timeout: Option<String>,
}

pub type FeedsSettings = BTreeMap<String, FeedSettings>;

/// `[geo]`: a country policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeoSettings {
    /// A MaxMind-format country database (GeoLite2-Country.mmdb, or
    /// ip-location-db's geolite2-country.mmdb).
    pub database: PathBuf,
    /// Countries (ISO 3166 alpha-2) whose prefixes are blocked.
    #[serde(default)]
    pub block: Vec<String>,
    /// Or: every public prefix outside these countries is blocked.
    #[serde(default)]
    pub allow_only: Vec<String>,
    /// How often the database is read again (default 24h).
    #[serde(default)]
    pub refresh: Option<String>,
    /// More prefixes than this and the policy is refused (default 200000;
    /// `max_block` must hold them).
    #[serde(default)]
    pub max_entries: usize,
}

impl GeoSettings {
    pub fn feed(&self) -> Result<Feed, (&'static str, String)> {
        let (list, allow_only) = match (self.block.is_empty(), self.allow_only.is_empty()) {
            (false, true) => (&self.block, false),
            (true, false) => (&self.allow_only, true),
            _ => return Err(("geo", "give exactly one of `block` and `allow_only`".into())),
        };
        let mut countries = std::collections::BTreeSet::new();
        for c in list {
            if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()) {
                return Err((
                    "geo",
                    format!("{c:?} is not a two-letter country code (ISO 3166-1 alpha-2)"),
                ));
            }
            countries.insert(c.to_ascii_uppercase());
        }
        let refresh = match &self.refresh {
            None => Duration::from_secs(86_400),
            Some(t) => crate::parse::parse_duration(t).map_err(|e| ("geo.refresh", e))?,
        };
        Ok(Feed {
            name: "geo".into(),
            origin: Origin::Geo {
                database: self.database.clone(),
                countries,
                allow_only,
            },
            format: Format::Lines,
            refresh,
            max_entries: if self.max_entries == 0 {
                200_000
            } else {
                self.max_entries
            },
            expire: None,
            timeout: Duration::from_secs(30),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Url(String),
    File(PathBuf),
    Apiban {
        base: String,
        key: String,
    },
    Crowdsec {
        base: String,
        key: String,
    },
    /// Country policy from a country database (`[geo]`).
    Geo {
        database: PathBuf,
        countries: std::collections::BTreeSet<String>,
        allow_only: bool,
    },
}

/// A feed ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    pub name: String,
    pub origin: Origin,
    pub format: Format,
    pub refresh: Duration,
    pub max_entries: usize,
    pub expire: Option<Duration>,
    pub timeout: Duration,
}

impl Feed {
    /// `blocked_ips.source` of its rows.
    pub fn source(&self) -> String {
        match self.origin {
            Origin::Apiban { .. } => "apiban".into(),
            Origin::Crowdsec { .. } => "crowdsec".into(),
            Origin::Geo { .. } => "geo".into(),
            _ => format!("feed:{}", self.name),
        }
    }

    /// Whether each refresh is the whole list (rows it drops are lifted) or
    /// only what is new (rows age out by `expire`).
    pub fn is_complete(&self) -> bool {
        !matches!(self.origin, Origin::Apiban { .. })
    }

    pub fn from_settings(name: &str, s: &FeedSettings) -> Result<Self, (&'static str, String)> {
        let ok_name = !name.is_empty()
            && name.len() <= 24
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok_name {
            return Err((
                "feeds",
                format!("{name:?}: a feed name is 1-24 of a-z, 0-9, - and _"),
            ));
        }
        let dur = |v: &Option<String>, default: Option<Duration>| match v {
            None => Ok(default),
            Some(t) if t.trim() == "0s" || t.trim() == "0" => Ok(None),
            Some(t) => crate::parse::parse_duration(t)
                .map(Some)
                .map_err(|e| ("feeds", format!("{name}: {e}"))),
        };
        let origin = origin_of(name, s)?;
        let apiban = name == "apiban";
        let default_refresh = Duration::from_secs(match name {
            "apiban" => 300,
            "crowdsec" => 10,
            _ => 3600,
        });
        let refresh = dur(&s.refresh, Some(default_refresh))?.unwrap_or(default_refresh);
        if refresh < Duration::from_secs(1) {
            return Err(("feeds", format!("{name}: refresh must be at least 1s")));
        }
        let default_expire = apiban.then(|| Duration::from_secs(7 * 86_400));
        Ok(Self {
            name: name.to_string(),
            origin,
            format: s.format,
            refresh,
            max_entries: if s.max_entries == 0 {
                100_000
            } else {
                s.max_entries
            },
            expire: dur(&s.expire, default_expire)?,
            timeout: dur(&s.timeout, Some(Duration::from_secs(30)))?
                .unwrap_or(Duration::from_secs(30)),
        })
    }
}

/// Where a feed's entries come from: its name picks a protocol (`apiban`,
/// `crowdsec`), any other name is a plain list.
fn origin_of(name: &str, s: &FeedSettings) -> Result<Origin, (&'static str, String)> {
    let key = s.key.clone().filter(|k| !k.is_empty());
    match (name, &s.url, &s.file, key) {
        ("apiban", url, None, Some(key)) => Ok(Origin::Apiban {
            base: url
                .clone()
                .unwrap_or_else(|| "https://apiban.org/api".into()),
            key,
        }),
        ("crowdsec", url, None, Some(key)) => Ok(Origin::Crowdsec {
            base: url
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            key,
        }),
        ("apiban" | "crowdsec", _, _, _) => {
            Err(("feeds", format!("{name}: needs `key` (and no `file`)")))
        }
        (_, _, _, Some(_)) => Err((
            "feeds",
            format!("{name}: `key` is for [feeds.apiban] and [feeds.crowdsec] only"),
        )),
        (_, Some(u), None, None) => {
            let ok = reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if ok {
                Ok(Origin::Url(u.clone()))
            } else {
                Err(("feeds", format!("{name}: {u:?} is not an http(s) URL")))
            }
        }
        (_, None, Some(f), None) => Ok(Origin::File(f.clone())),
        _ => Err((
            "feeds",
            format!("{name}: give exactly one of `url` and `file`"),
        )),
    }
}

pub fn from_settings(all: &FeedsSettings) -> Result<Vec<Feed>, (&'static str, String)> {
    all.iter().map(|(n, s)| Feed::from_settings(n, s)).collect()
}

/// What a refresh produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The entries to hold (complete lists) or to add (APIBAN), each with
    /// the time it has left where the feed says so (CrowdSec's durations);
    /// otherwise the feed's `expire` applies.
    List {
        nets: Vec<(IpNet, Option<Duration>)>,
        refused: usize,
        /// Entries wider than the rails allow, with why; the rest of the
        /// list is taken.
        too_wide: Vec<(IpNet, String)>,
        bad: usize,
    },
    /// Not modified since the last good answer.
    Unchanged,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub feed: String,
    pub outcome: Outcome,
}

/// Starts one task per feed; each sends its reports to `tx`.
pub fn spawn(
    feeds: &[Feed],
    state_dir: PathBuf,
    guard: Guard,
    tx: mpsc::Sender<Report>,
) -> Vec<tokio::task::JoinHandle<()>> {
    feeds
        .iter()
        .cloned()
        .map(|f| {
            let (tx, guard, state) = (tx.clone(), guard.clone(), state_dir.clone());
            tokio::spawn(async move { run(f, state, guard, tx).await })
        })
        .collect()
}

/// What a feed's task keeps between refreshes.
struct Memory {
    validators: list::Validators,
    bouncer: crowdsec::Bouncer,
    id_file: PathBuf,
    /// APIBAN: another page may follow, and pages walked in a row.
    more: bool,
    pages: usize,
    /// Plain lists: a fingerprint of the last text taken, and of the one
    /// being checked. The same text again is `Unchanged`, as a 304 is: a
    /// 100k-line file re-read every second must not cost the controller a
    /// 100k-entry comparison with the kernel and the database each time.
    taken: Option<u64>,
    checking: Option<u64>,
}

fn fingerprint(text: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

async fn run(feed: Feed, state_dir: PathBuf, guard: Guard, tx: mpsc::Sender<Report>) {
    let client = match reqwest::Client::builder()
        .timeout(feed.timeout)
        .user_agent(concat!("sip-xdp/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(feed = %feed.name, error = %e, "feed off: no HTTP client");
            return;
        }
    };
    let mut mem = Memory {
        validators: list::Validators::default(),
        bouncer: crowdsec::Bouncer::default(),
        id_file: state_dir.join(format!("{}.id", feed.name)),
        more: false,
        pages: 0,
        taken: None,
        checking: None,
    };
    loop {
        let outcome = match fetch(&feed, &client, &mut mem).await {
            Ok(Some((nets, bad))) => checked(&feed, nets, bad, &guard),
            Ok(None) => Outcome::Unchanged,
            Err(e) => Outcome::Failed(e),
        };
        // Only a text that became a list counts as taken: one refused (too
        // many entries) is checked again, and refused again, next time.
        let checking = mem.checking.take();
        if matches!(outcome, Outcome::List { .. }) && checking.is_some() {
            mem.taken = checking;
        }
        let report = Report {
            feed: feed.name.clone(),
            outcome,
        };
        if tx.send(report).await.is_err() {
            return;
        }
        // An APIBAN walk goes on a second later, as APIBAN asks, up to
        // MAX_PAGES pages in a row.
        let wait = if mem.more && mem.pages < apiban::MAX_PAGES {
            Duration::from_secs(1)
        } else {
            mem.pages = 0;
            feed.refresh
        };
        tokio::time::sleep(wait).await;
    }
}

type Entries = Vec<(IpNet, Option<Duration>)>;

/// One refresh's entries and how many were not addresses; `None` when the
/// source says nothing changed.
async fn fetch(
    feed: &Feed,
    client: &reqwest::Client,
    mem: &mut Memory,
) -> Result<Option<(Entries, usize)>, String> {
    let plain = |text: String, mem: &mut Memory| {
        let print = fingerprint(&text);
        if mem.taken == Some(print) {
            return Ok(None);
        }
        mem.checking = Some(print);
        let p = list::parse(&text, feed.format);
        // A login page or an error page served with 200 is not an empty
        // list: taken as one, it would lift every entry.
        if p.bad > p.nets.len() {
            return Err(format!(
                "malformed answer: {} of {} lines are not addresses: refused, the last good list stays",
                p.bad,
                p.bad + p.nets.len()
            ));
        }
        Ok(Some((
            p.nets.into_iter().map(|n| (n, None)).collect(),
            p.bad,
        )))
    };
    match &feed.origin {
        Origin::File(path) => plain(list::read_file(path)?, mem),
        Origin::Url(url) => {
            let Some((text, validators)) = list::fetch(client, url, &mem.validators).await? else {
                return Ok(None);
            };
            let list = plain(text, mem)?;
            mem.validators = validators;
            Ok(list)
        }
        Origin::Apiban { base, key } => {
            mem.more = false;
            let id = apiban::load_id(&mem.id_file);
            let page = apiban::step(client, base, key, &id).await?;
            if let Err(e) = apiban::store_id(&mem.id_file, &page.next_id) {
                tracing::warn!(feed = %feed.name, path = %mem.id_file.display(), error = %e, "could not keep APIBAN's last ID");
            }
            (mem.more, mem.pages) = (page.more, mem.pages + 1);
            Ok(Some((
                page.nets.into_iter().map(|n| (n, None)).collect(),
                page.bad,
            )))
        }
        Origin::Geo {
            database,
            countries,
            allow_only,
        } => {
            let (path, countries, only) = (database.clone(), countries.clone(), *allow_only);
            // Walking a whole country database is a second of CPU: off the
            // runtime's threads.
            let nets =
                tokio::task::spawn_blocking(move || geo::Db::open(&path)?.policy(&countries, only))
                    .await
                    .map_err(|e| e.to_string())??;
            Ok(Some((nets.into_iter().map(|n| (n, None)).collect(), 0)))
        }
        Origin::Crowdsec { base, key } => {
            mem.bouncer.poll(client, base, key).await?;
            let now = std::time::Instant::now();
            let nets = mem
                .bouncer
                .bans
                .iter()
                .map(|(n, end)| (*n, Some(end.saturating_duration_since(now))))
                .collect();
            Ok(Some((nets, mem.bouncer.skipped)))
        }
    }
}

/// The entries a refresh may write: not too many, none the safety rails
/// refuse, none wider than they allow. The country policy's entries come
/// from the database the operator chose, which holds networks as wide as a
/// /7, and `allow_only` blocks the whole world but some countries: they
/// are split into prefixes of the widest length taken, not refused.
fn checked(feed: &Feed, nets: Entries, bad: usize, guard: &Guard) -> Outcome {
    if nets.len() > feed.max_entries {
        return Outcome::Failed(format!(
            "{} entries, more than max_entries = {}: refused, the last good list stays",
            nets.len(),
            feed.max_entries
        ));
    }
    let geo = matches!(feed.origin, Origin::Geo { .. });
    let mut too_wide = Vec::new();
    let mut refused = 0;
    let mut out: Entries = Vec::with_capacity(nets.len());
    for (n, left) in nets {
        if guard.refusal(&n).is_some() {
            refused += 1;
            continue;
        }
        match guard.too_wide(&n) {
            None => out.push((n, left)),
            Some(_) if geo => out.extend(guard.split(&n).into_iter().map(|p| (p, left))),
            Some(why) => too_wide.push((n, why)),
        }
    }
    let nets = out;
    Outcome::List {
        refused,
        too_wide,
        nets,
        bad,
    }
}

/// A failed request in words an operator can act on (a timeout says so;
/// the URL, which may hold a key, is left out).
pub fn http_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// The state of a feed, for `status`, `doctor` and the metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct State {
    pub entries: usize,
    /// Entries of the last list refused as wider than the rails allow.
    pub too_wide: usize,
    pub last_ok: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    pub failures: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(toml_text: &str) -> FeedsSettings {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn a_too_wide_entry_is_refused_and_the_rest_of_the_list_taken() {
        let feed = from_settings(&s("[drop]\nfile = \"/f\"\n"))
            .unwrap()
            .remove(0);
        let guard = Guard::with_addresses(vec!["198.51.100.1".parse().unwrap()]);
        let nets = [
            "32.0.0.0/3",
            "203.0.113.0/24",
            "2000::/3",
            "198.51.100.0/24",
            "2001:db8::1",
        ]
        .iter()
        .map(|n| (crate::parse::parse_net(n).unwrap(), None))
        .collect();
        let Outcome::List {
            nets,
            refused,
            too_wide,
            bad,
        } = checked(&feed, nets, 0, &guard)
        else {
            panic!("not a list");
        };
        let kept: Vec<String> = nets.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(kept, ["203.0.113.0/24", "2001:db8::1/128"]);
        assert_eq!((refused, bad), (1, 0), "198.51.100.0/24 holds this host");
        let wide: Vec<String> = too_wide.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(wide, ["32.0.0.0/3", "2000::/3"]);
        assert!(too_wide[0].1.contains("wider than /8"), "{too_wide:?}");
        // The country policy's wide entries are split, not refused.
        let geo = GeoSettings {
            database: "/x.mmdb".into(),
            block: vec![],
            allow_only: vec!["US".into()],
            refresh: None,
            max_entries: 0,
        }
        .feed()
        .unwrap();
        let world = vec![(crate::parse::parse_net("32.0.0.0/3").unwrap(), None)];
        let Outcome::List { nets, too_wide, .. } = checked(&geo, world, 0, &guard) else {
            panic!("not a list");
        };
        assert_eq!((nets.len(), too_wide.len()), (32, 0), "split into /8s");
        assert!(nets.iter().all(|(n, _)| n.prefix_len() == 8));
        assert_eq!(nets[0].0.to_string(), "32.0.0.0/8");
    }

    #[test]
    fn settings_name_what_is_wrong() {
        let ok = from_settings(&s("[drop]\nurl = \"https://www.spamhaus.org/drop/drop.txt\"\nformat = \"spamhaus-drop\"\n[apiban]\nkey = \"k\"\n")).unwrap();
        assert_eq!(ok[0].source(), "apiban");
        assert_eq!(ok[0].expire, Some(Duration::from_secs(7 * 86_400)));
        assert!(!ok[0].is_complete());
        assert_eq!(ok[1].source(), "feed:drop");
        assert_eq!(
            (ok[1].refresh, ok[1].expire),
            (Duration::from_secs(3600), None)
        );
        for (bad, why) in [
            ("[x]\nurl = \"ftp://a\"\n", "http"),
            ("[x]\nurl = \"https://a\"\nfile = \"/f\"\n", "exactly one"),
            ("[x]\n", "exactly one"),
            ("[apiban]\nurl = \"https://a\"\n", "needs `key`"),
            ("[x]\nfile = \"/f\"\nkey = \"k\"\n", "[feeds.crowdsec] only"),
            ("[\"Bad Name\"]\nfile = \"/f\"\n", "feed name"),
            ("[x]\nfile = \"/f\"\nrefresh = \"0.5s\"\n", "refresh"),
        ] {
            let e = from_settings(&s(bad)).unwrap_err();
            assert!(e.1.contains(why), "{bad}: {e:?}");
        }
        assert!(toml::from_str::<FeedsSettings>("[x]\nfile = \"/f\"\nformat = \"xml\"\n").is_err());
    }
}
