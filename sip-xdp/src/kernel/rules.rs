//! The deny lists' table in the kernel (`RULES`) and the switches that
//! make the program read it (`CONFIG_MATCH`: one per kind of list).

use aya::maps::{Array, Map, MapData};
use sip_xdp_common::{
    maps::MAP_RULES,
    rules::{RuleRow, RuleTable},
    CONFIG_MATCH,
};

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
    let data = MapData::from_pin(maps.pins().map(MAP_RULES))
        .map_err(Error::map(format!("opening pinned map {MAP_RULES}")))?;
    let mut rows: Array<MapData, RuleRow> =
        Array::try_from(Map::Array(data)).map_err(Error::map("opening the deny lists' table"))?;
    for (i, row) in table.rows.iter().enumerate() {
        rows.set(i as u32, row, 0)
            .map_err(Error::map("writing the deny lists' table"))?;
    }
    config.flags |= reads & CONFIG_MATCH;
    maps.set_config(config)
}
