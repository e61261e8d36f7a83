//! Plain blocklists: a local file or a URL, in one of three formats, fetched
//! with the validators the server gave last time (`If-None-Match`,
//! `If-Modified-Since`) so an unchanged list costs a 304.

use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

use crate::parse::parse_net;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// One address or prefix per line; `#` and `;` start comments.
    #[default]
    Lines,
    /// Spamhaus DROP/EDROP: `prefix ; SBL id`, `;` comments.
    SpamhausDrop,
    /// The first comma-separated field; a header line is skipped.
    Csv,
}

/// What a list held: the entries, and how many lines were not addresses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub nets: Vec<IpNet>,
    pub bad: usize,
}

/// Reads a list's text. Lines that are not addresses are counted, not
/// fatal: one typo in a 50k-line list must not stop the other 49,999.
pub fn parse(text: &str, format: Format) -> Parsed {
    let mut out = Parsed::default();
    for line in text.lines() {
        let field = match format {
            Format::Lines => line.split(['#', ';']).next().unwrap_or(""),
            Format::SpamhausDrop => line.split(';').next().unwrap_or(""),
            Format::Csv => line.split(',').next().unwrap_or("").trim_matches('"'),
        };
        let field = field.split_whitespace().next().unwrap_or("");
        if field.is_empty() {
            continue;
        }
        match parse_net(field) {
            Ok(n) => out.nets.push(n),
            // A CSV header is not an error.
            Err(_) if format == Format::Csv && out.nets.is_empty() && out.bad == 0 => out.bad = 0,
            Err(_) => out.bad += 1,
        }
    }
    out.nets.sort();
    out.nets.dedup();
    out
}

pub fn read_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// The validators of the last good answer.
#[derive(Debug, Default, Clone)]
pub struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

/// `Ok(None)`: not modified since the last good answer. Otherwise the
/// text and its validators, which the caller keeps only if the text turns
/// out to be a list (a 304 must never stand for a page it refused).
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    v: &Validators,
) -> Result<Option<(String, Validators)>, String> {
    let mut req = client.get(url);
    if let Some(e) = &v.etag {
        req = req.header(reqwest::header::IF_NONE_MATCH, e);
    }
    if let Some(m) = &v.last_modified {
        req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
    }
    let r = req.send().await.map_err(super::http_error)?;
    if r.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    if !r.status().is_success() {
        return Err(format!("HTTP {}", r.status()));
    }
    let header = |h| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let next = Validators {
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
    };
    let text = r.text().await.map_err(super::http_error)?;
    Ok(Some((text, next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_formats() {
        let lines = "# blocklist\n198.51.100.7\n203.0.113.0/24 # a net\n\n2001:db8::/32\nnot-an-ip\n198.51.100.7\n";
        let p = parse(lines, Format::Lines);
        assert_eq!(p.nets.len(), 3);
        assert_eq!(p.bad, 1);
        let drop = "; Spamhaus DROP List 2026/11/25\n; Last-Modified: Wed, 25 Nov 2026\n1.10.16.0/20 ; SBL256894\n1.19.0.0/16 ; SBL434604\n";
        let p = parse(drop, Format::SpamhausDrop);
        assert_eq!(
            p.nets,
            vec![
                parse_net("1.10.16.0/20").unwrap(),
                parse_net("1.19.0.0/16").unwrap()
            ]
        );
        assert_eq!(p.bad, 0);
        let csv = "ip,first_seen,reason\n\"198.51.100.9\",2026-11-01,scanner\n203.0.113.5,2026-11-02,flood\n";
        let p = parse(csv, Format::Csv);
        assert_eq!(p.nets.len(), 2);
        assert_eq!(p.bad, 0);
    }
}
