//! `whitelisted_ips` and the SIP server's `address` table (trusted peers).

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AllowRow {
    pub id: i64,
    pub ip_address: String,
    pub comment: String,
    pub created_at: NaiveDateTime,
}

/// Whose `permissions` `address` table the trusted peers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressTable {
    Opensips,
    Kamailio,
}

impl AddressTable {
    pub const fn name(self) -> &'static str {
        match self {
            AddressTable::Opensips => "opensips",
            AddressTable::Kamailio => "kamailio",
        }
    }
}

impl AllowRow {
    /// The address or prefix this row allows, or why it cannot be used.
    pub fn net(&self) -> std::result::Result<ipnet::IpNet, crate::db::rows::BadRow> {
        crate::db::rows::allow_net(self.id, &self.ip_address)
    }
}

impl Store {
    /// Trusted peers from the SIP server's `permissions` table (OpenSIPS:
    /// `ip`, `mask`, `grp`; Kamailio: `ip_addr`, `mask`, `grp`) as allow
    /// rows `ip/mask`, only `groups` if any are given. Rows decode one at a
    /// time; `table` is checked to be a plain identifier by the caller.
    pub async fn address_rows(
        &self,
        kind: AddressTable,
        table: &str,
        groups: &[i64],
    ) -> Result<(Vec<AllowRow>, Vec<Undecoded>)> {
        let ip = match kind {
            AddressTable::Opensips => "ip",
            AddressTable::Kamailio => "ip_addr",
        };
        let sql = format!("SELECT id, {ip} AS ip, mask, grp FROM {table} ORDER BY id");
        let now = now();
        let (rows, bad) = with_pool!(self, p => {
            let rows = sqlx::query(safe(&sql)).fetch_all(p).await?;
            decode_each(
                rows,
                "address",
                |r| {
                    let ip: String = r.try_get("ip")?;
                    let mask = int_of(r, "mask")?;
                    let grp = int_of(r, "grp")?;
                    Ok((row_id!(r), ip, mask, grp))
                },
                |r| row_id!(r),
            )
        });
        let rows = rows
            .into_iter()
            .filter(|(_, _, _, g)| groups.is_empty() || groups.contains(g))
            .map(|(id, ip, mask, grp)| AllowRow {
                id,
                ip_address: format!("{}/{mask}", ip.trim()),
                comment: format!("{} address grp {grp}", kind.name()),
                created_at: now,
            })
            .collect();
        Ok((rows, bad))
    }

    pub async fn allows(&self) -> Result<Vec<AllowRow>> {
        let (rows, bad) = self.allows_checked().await?;
        for b in bad {
            tracing::warn!(table = b.table, id = b.id, reason = ?b.why, "skipping database row");
        }
        Ok(rows)
    }

    /// Allow-list rows, and the rows that did not decode.
    pub async fn allows_checked(&self) -> Result<(Vec<AllowRow>, Vec<Undecoded>)> {
        let sql = "SELECT id, ip_address, comment, created_at FROM whitelisted_ips ORDER BY id";
        Ok(with_pool!(self, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            decode_each(
                rows,
                "whitelisted_ips",
                |r| {
                    AllowRow::from_row(r).map(|mut a| {
                        a.created_at = self.ours(a.created_at);
                        a
                    })
                },
                |r| row_id!(r),
            )
        }))
    }

    pub async fn insert_allow(&self, ip_address: &str, comment: &str) -> Result<()> {
        let sql = "INSERT INTO whitelisted_ips (ip_address, comment, created_at) VALUES (?, ?, ?)";
        with_pool!(self, p => sqlx::query(sql).bind(ip_address).bind(comment).bind(self.theirs(now())).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn delete_allow_id(&self, id: i64) -> Result<bool> {
        let sql = "DELETE FROM whitelisted_ips WHERE id = ?";
        Ok(
            with_pool!(self, p => sqlx::query(sql).bind(id).execute(p).await.map(|r| r.rows_affected()))?
                > 0,
        )
    }

    /// Deletes allow entries of exactly `ip_address`. Returns how many.
    pub async fn delete_allow(&self, ip_address: &str) -> Result<u64> {
        let sql = "DELETE FROM whitelisted_ips WHERE ip_address = ?";
        Ok(
            with_pool!(self, p => sqlx::query(sql).bind(ip_address).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }
}
