//! Bans the kernel enforces before their `blocked_ips` rows exist: a
//! detector bans at once and the row follows with the next database round
//! (or after an outage), written here.

use chrono::NaiveDateTime;
use ipnet::IpNet;
use sip_xdp_common::Reason;

use super::{Store, StoreError};
use crate::parse::spelling;

/// A detector ban whose `blocked_ips` row is not written yet (the database
/// was down). The sync treats it as a row, so the kernel keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingBlock {
    /// An address, or the prefix of a source counted by prefix.
    pub net: IpNet,
    /// Written to `blocked_ips.source`.
    pub reason: Reason,
    /// Written to `blocked_ips.reason`: the figures, for a human.
    pub note: String,
    pub blocked_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

/// Writes a pending ban's row; returns its id.
pub async fn write_block(store: &Store, p: &PendingBlock, node: &str) -> Result<i64, StoreError> {
    store
        .insert_block(
            &spelling(&p.net),
            &p.note,
            p.reason.name(),
            p.blocked_at,
            Some(p.expires_at),
            Some(node),
        )
        .await
}
