//! APIBAN (apiban.org): addresses its honeypots saw sending unwanted SIP.
//! `GET {base}/{key}/banned/{ID}` answers a page of addresses and the ID of
//! the next page; an answer whose ID is `none` ("no new bans") ends the
//! walk. Pages come one second apart, as APIBAN asks. The last ID is kept
//! on disk, so a restart asks only for what is new.

use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

use crate::parse::parse_net;

/// Where a walk starts without a stored ID (APIBAN's own clients use 100).
pub const FIRST_ID: &str = "100";

/// Pages walked back to back at most before waiting a whole refresh
/// interval: a runaway server cannot keep us walking.
pub const MAX_PAGES: usize = 200;

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(rename = "ID", default)]
    id: serde_json::Value,
    #[serde(default)]
    ipaddress: serde_json::Value,
}

/// One page: its addresses, the ID to ask for next, the entries that were
/// not addresses, and whether another page may follow.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub nets: Vec<IpNet>,
    pub next_id: String,
    pub bad: usize,
    pub more: bool,
}

pub fn load_id(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| FIRST_ID.to_string())
}

pub fn store_id(path: &Path, id: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, id)?;
    std::fs::rename(tmp, path)
}

/// Asks for the page at `id`. Each page is applied as soon as it comes
/// (a walk of many pages one second apart would otherwise hold back the
/// first ones); the caller waits a second before the next.
pub async fn step(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
) -> Result<Step, String> {
    let url = format!("{}/{key}/banned/{id}", base.trim_end_matches('/'));
    let r = client.get(&url).send().await.map_err(super::http_error)?;
    let status = r.status();
    let body: Result<Page, _> = r.json().await;
    let mut s = Step {
        next_id: id.to_string(),
        ..Step::default()
    };
    match (status.as_u16(), body) {
        (200, Ok(p)) => {
            let Some(next) = p.id.as_str().filter(|s| !s.is_empty()) else {
                return Err("APIBAN answered without an ID".into());
            };
            for a in p.ipaddress.as_array().into_iter().flatten() {
                match a.as_str().map(parse_net) {
                    Some(Ok(n)) => s.nets.push(n),
                    _ => s.bad += 1,
                }
            }
            if next != "none" {
                s.next_id = next.to_string();
                s.more = true;
            }
        }
        // "No new bans": the walk is over.
        (400, Ok(p)) if p.id == "none" => {}
        (_, Ok(p)) if p.id == "unauthorized" => {
            return Err("APIBAN refused the key (unauthorized): check feeds.apiban.key".into())
        }
        (_, Ok(p)) if p.ipaddress == "rate limit exceeded" => {
            return Err("APIBAN rate limit exceeded".into())
        }
        (200, Err(_)) => return Err("malformed answer (not APIBAN's JSON)".into()),
        (s, _) => return Err(format!("HTTP {s}")),
    }
    s.nets.sort();
    s.nets.dedup();
    Ok(s)
}
