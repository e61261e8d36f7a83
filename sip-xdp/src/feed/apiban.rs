//! APIBAN (apiban.org): addresses its honeypots saw sending unwanted SIP.
//! `GET {base}/{key}/banned/{ID}` answers a page of addresses and the ID of
//! the next page; an answer whose ID is `none` ("no new bans") ends the
//! walk. Pages come one second apart, as APIBAN asks. The last ID is kept
//! on disk, so a restart asks only for what is new.

use std::{path::Path, time::Duration};

use ipnet::IpNet;
use serde::Deserialize;

use crate::parse::parse_net;

/// Where a walk starts without a stored ID (APIBAN's own clients use 100).
pub const FIRST_ID: &str = "100";

/// Pages per refresh at most: a runaway server cannot keep us walking.
const MAX_PAGES: usize = 200;

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(rename = "ID", default)]
    id: serde_json::Value,
    #[serde(default)]
    ipaddress: serde_json::Value,
}

/// What one refresh brought: new addresses, the ID to start from next
/// time, and the lines that were not addresses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub nets: Vec<IpNet>,
    pub next_id: String,
    pub bad: usize,
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

/// Walks the pages from `start`. An error before the first page is an
/// error; one later keeps the pages already read (their ID is where the
/// next refresh resumes).
pub async fn walk(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    start: &str,
    pause: Duration,
) -> Result<Walk, String> {
    let mut w = Walk {
        next_id: start.to_string(),
        ..Walk::default()
    };
    for page in 0..MAX_PAGES {
        if page > 0 {
            tokio::time::sleep(pause).await;
        }
        let url = format!("{}/{key}/banned/{}", base.trim_end_matches('/'), w.next_id);
        let r = match client.get(&url).send().await {
            Ok(r) => r,
            Err(e) if page == 0 => return Err(super::http_error(e)),
            Err(_) => break,
        };
        let status = r.status();
        let body: Result<Page, _> = r.json().await;
        match (status.as_u16(), body) {
            (200, Ok(p)) => {
                let Some(id) = p.id.as_str().filter(|s| !s.is_empty()) else {
                    return Err("APIBAN answered without an ID".into());
                };
                for a in p.ipaddress.as_array().into_iter().flatten() {
                    match a.as_str().map(parse_net) {
                        Some(Ok(n)) => w.nets.push(n),
                        _ => w.bad += 1,
                    }
                }
                if id == "none" {
                    break;
                }
                w.next_id = id.to_string();
            }
            // "No new bans": the walk is over.
            (400, Ok(p)) if p.id == "none" => break,
            (_, Ok(p)) if p.id == "unauthorized" => {
                return Err("APIBAN refused the key (unauthorized): check feeds.apiban.key".into())
            }
            (_, Ok(p)) if p.ipaddress == "rate limit exceeded" => {
                return Err("APIBAN rate limit exceeded".into())
            }
            (200, Err(_)) if page == 0 => return Err("malformed answer (not APIBAN's JSON)".into()),
            (s, _) if page == 0 => return Err(format!("HTTP {s}")),
            _ => break,
        }
    }
    w.nets.sort();
    w.nets.dedup();
    Ok(w)
}
