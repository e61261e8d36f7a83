//! `remembered_clients`: the memory of good clients every node shares
//! (see `detect::admission`).

use std::net::IpAddr;

use super::*;

/// An address that proved itself, and when it last did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proven {
    pub ip: IpAddr,
    /// How: `registered`, `invited` or `peer` (`Trust`).
    pub how: String,
    pub at: NaiveDateTime,
}

impl Store {
    /// Records each proof, keeping the latest per address. Idempotent: a
    /// round given up on and run again writes nothing new.
    pub async fn remember_clients(&self, proven: &[Proven], node: &str) -> Result<()> {
        if proven.is_empty() {
            return Ok(());
        }
        // Assignments run left to right on MySQL: `how` and `node` are
        // judged against the old time before it moves.
        let sql = match self.pool {
            Pool::Mysql(_) => {
                "INSERT INTO remembered_clients (ip_address, how, first_proven_at, last_proven_at, node) \
                 VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
                 how = IF(VALUES(last_proven_at) > last_proven_at, VALUES(how), how), \
                 node = IF(VALUES(last_proven_at) > last_proven_at, VALUES(node), node), \
                 last_proven_at = GREATEST(last_proven_at, VALUES(last_proven_at))"
            }
            Pool::Sqlite(_) => {
                "INSERT INTO remembered_clients (ip_address, how, first_proven_at, last_proven_at, node) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT(ip_address) DO UPDATE SET \
                 how = excluded.how, node = excluded.node, last_proven_at = excluded.last_proven_at \
                 WHERE julianday(excluded.last_proven_at) > julianday(remembered_clients.last_proven_at)"
            }
        };
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            for r in proven {
                let at = self.theirs(r.at);
                sqlx::query(sql)
                    .bind(r.ip.to_string())
                    .bind(&r.how)
                    .bind(at)
                    .bind(at)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Addresses proven at or after `since`, newest first, at most
    /// `limit`, each with its latest proof; a row that does not decode (an
    /// address that is not one, a time the driver refuses) is skipped and
    /// logged, never the read.
    pub async fn remembered_since(&self, since: NaiveDateTime, limit: i64) -> Result<Vec<Proven>> {
        let sql = format!(
            "SELECT ip_address, how, last_proven_at FROM remembered_clients WHERE {} \
             ORDER BY last_proven_at DESC LIMIT ?",
            self.not_before("last_proven_at")
        );
        let (good, bad) = with_pool!(self, p => {
            let rows = sqlx::query(safe(&sql))
                .bind(self.theirs(since))
                .bind(limit)
                .fetch_all(p)
                .await?;
            let mut good = Vec::with_capacity(rows.len());
            let mut bad = 0usize;
            for r in rows {
                let row = (|| -> std::result::Result<Proven, String> {
                    let ip: String = r.try_get("ip_address").map_err(|e| e.to_string())?;
                    let how: String = r.try_get("how").map_err(|e| e.to_string())?;
                    let at: NaiveDateTime =
                        r.try_get("last_proven_at").map_err(|e| e.to_string())?;
                    let ip = ip
                        .parse::<IpAddr>()
                        .map_err(|_| format!("not an address: {ip:?}"))?;
                    Ok(Proven { ip, how, at: self.ours(at) })
                })();
                match row {
                    Ok(p) => good.push(p),
                    Err(why) => {
                        bad += 1;
                        tracing::warn!(reason = %why, "skipping a remembered_clients row");
                    }
                }
            }
            (good, bad)
        });
        if bad > 0 {
            tracing::warn!(rows = bad, "remembered_clients rows skipped");
        }
        Ok(good)
    }

    /// Deletes the proofs older than `before`, and those dated after
    /// `after` (a clock or a hand gone wrong: they would hold a place in
    /// every read), at most `limit` rows; returns how many went.
    pub async fn forget_clients_before(
        &self,
        before: NaiveDateTime,
        after: NaiveDateTime,
        limit: i64,
    ) -> Result<u64> {
        let sql = match self.pool {
            Pool::Mysql(_) => {
                "DELETE FROM remembered_clients WHERE last_proven_at < ? OR last_proven_at > ? LIMIT ?"
                    .to_string()
            }
            Pool::Sqlite(_) => "DELETE FROM remembered_clients WHERE rowid IN (SELECT rowid FROM \
                 remembered_clients WHERE julianday(last_proven_at) < julianday(?) \
                 OR julianday(last_proven_at) > julianday(?) LIMIT ?)"
                .to_string(),
        };
        let n = with_pool!(self, p => {
            sqlx::query(safe(&sql))
                .bind(self.theirs(before))
                .bind(self.theirs(after))
                .bind(limit)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n)
    }
}
