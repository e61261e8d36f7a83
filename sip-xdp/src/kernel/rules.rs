//! The deny lists' table in the kernel (`RULES`) and the switches that
//! make the program read it (`CONFIG_MATCH`: one per kind of list).

use sip_xdp_common::{rules::RuleTable, CONFIG_MATCH};

use super::Maps;
use crate::{Error, Result};

/// Writes `table` and turns on the lists in `reads` (the `RuleLists::reads`
/// of the lists it was compiled from); none turns matching off. The
/// switches are off while the rows change, so no request is judged by half
/// an old table and half a new one.
pub fn install(maps: &mut Maps, table: &RuleTable, reads: u32) -> Result<()> {
    let mut config = maps.config()?;
    if config.flags & CONFIG_MATCH != 0 {
        config.flags &= !CONFIG_MATCH;
        maps.set_config(config)?;
    }
    if reads & CONFIG_MATCH == 0 {
        return Ok(());
    }
    let rows = maps.rules_table()?;
    for (i, row) in table.rows.iter().enumerate() {
        rows.set(i as u32, row, 0)
            .map_err(Error::map("writing the deny lists' table"))?;
    }
    config.flags |= reads & CONFIG_MATCH;
    maps.set_config(config)
}
