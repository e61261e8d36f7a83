//! A CrowdSec bouncer: decisions from the Local API's stream
//! (`GET /v1/decisions/stream`, `startup=true` first for the whole set,
//! then only what changed), scopes `Ip` and `Range`, type `ban`. The set is
//! kept here with each decision's end (its duration from when it was
//! seen), and every refresh hands the whole set on, so the database is
//! brought to it by difference and a deleted decision is lifted.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::Deserialize;

use crate::parse::parse_net;

#[derive(Debug, Deserialize)]
struct Decision {
    #[serde(default)]
    scope: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    duration: String,
}

#[derive(Debug, Deserialize)]
struct Stream {
    #[serde(default)]
    new: Option<Vec<Decision>>,
    #[serde(default)]
    deleted: Option<Vec<Decision>>,
}

/// The bouncer's view: each banned net and when its decision ends.
#[derive(Debug, Default)]
pub struct Bouncer {
    started: bool,
    pub bans: BTreeMap<IpNet, Instant>,
    /// Decisions skipped (other scopes or types, values that are not
    /// addresses).
    pub skipped: usize,
}

/// A Go duration as CrowdSec writes it (`59m59.27s`, `3h`, `-1.5s`).
pub fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.starts_with('-') {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if matches!(c, 'm' | 'u' | 'µ' | 'n') && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        total += v * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

impl Bouncer {
    /// One poll of the stream; returns the whole set as it now stands.
    pub async fn poll(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        key: &str,
    ) -> Result<(), String> {
        let url = format!(
            "{}/v1/decisions/stream?startup={}",
            base.trim_end_matches('/'),
            !self.started
        );
        let r = client
            .get(&url)
            .header("X-Api-Key", key)
            .send()
            .await
            .map_err(super::http_error)?;
        match r.status().as_u16() {
            200 => {}
            403 | 401 => return Err(
                "the Local API refused the key: check feeds.crowdsec.key (`cscli bouncers add`)"
                    .into(),
            ),
            s => return Err(format!("HTTP {s}")),
        }
        let s: Stream = r.json().await.map_err(super::http_error)?;
        if !self.started {
            // The startup answer is the whole set.
            self.bans.clear();
            self.started = true;
        }
        let now = Instant::now();
        for d in s.deleted.into_iter().flatten() {
            if let Some(n) = self.net(&d) {
                self.bans.remove(&n);
            }
        }
        for d in s.new.into_iter().flatten() {
            let Some(n) = self.net(&d) else {
                self.skipped += 1;
                continue;
            };
            let Some(left) = go_duration(&d.duration) else {
                self.skipped += 1;
                continue;
            };
            let end = now + left;
            let e = self.bans.entry(n).or_insert(end);
            *e = (*e).max(end);
        }
        self.bans.retain(|_, end| *end > now);
        Ok(())
    }

    fn net(&self, d: &Decision) -> Option<IpNet> {
        let scope_ok = d.scope.eq_ignore_ascii_case("ip") || d.scope.eq_ignore_ascii_case("range");
        if !scope_ok || !d.kind.eq_ignore_ascii_case("ban") {
            return None;
        }
        parse_net(&d.value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("3h"), Some(Duration::from_secs(10_800)));
        assert_eq!(
            go_duration("59m59.5s"),
            Some(Duration::from_secs_f64(3599.5))
        );
        assert_eq!(go_duration("1h0m30s"), Some(Duration::from_secs(3630)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("-2s"), Some(Duration::ZERO));
        assert_eq!(go_duration("12"), None);
        assert_eq!(go_duration("3d"), None);
    }
}
