//! A new version of the programs taking over from the pinned one: the
//! object's stamp (kept in the pinned `META` map) tells whether the pinned
//! programs came from this binary; if not, and the pinned maps have the
//! layouts this object expects, the new programs are loaded on those maps
//! and swapped into every pinned link with `bpf_link_update`. No interface
//! is ever without its filter, and bans, lists and counters stay. Maps with
//! another layout cannot be shared: that is a clear error with the command
//! to run, never a program reading the wrong bytes.

use std::path::Path;

use aya::maps::{Array, Map, MapData};
use sip_xdp_common::{maps::*, KernelConfig};

use super::{capacities::Capacities, pins::Pins};
use crate::{Error, Result, EBPF_OBJECT};

/// The identity of the embedded object: FNV-1a over its bytes.
pub fn object_stamp() -> u64 {
    EBPF_OBJECT.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The stamp of the pinned programs; `None` when they predate stamps.
pub fn pinned_stamp(pins: &Pins) -> Option<u64> {
    let data = MapData::from_pin(pins.map(MAP_META)).ok()?;
    let meta: Array<MapData, u64> = Array::try_from(Map::Array(data)).ok()?;
    meta.get(&0, 0).ok().filter(|s| *s != 0)
}

/// Records that the pinned programs are this object's.
pub fn write_stamp(pins: &Pins) -> Result<()> {
    let data = MapData::from_pin(pins.map(MAP_META)).map_err(Error::map("opening the META map"))?;
    let mut meta: Array<MapData, u64> =
        Array::try_from(Map::Array(data)).map_err(Error::map("opening the META map"))?;
    meta.set(0, object_stamp(), 0)
        .map_err(Error::map("writing the program stamp"))
}

/// A choice made when the maps were created that the configuration now
/// asks otherwise: sizes (`max_*`) and the source table's LRU lists. The
/// pinned maps win until `detach --purge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub map: &'static str,
    pub kept: String,
    pub configured: String,
}

/// What the pinned maps keep that `caps` would choose otherwise.
pub fn kept_choices(pins: &Pins, caps: &Capacities) -> Vec<Kept> {
    use super::capacities::{LruLists, BPF_F_NO_COMMON_LRU};
    let lists = |per_cpu: bool| if per_cpu { "per-cpu" } else { "common" };
    // Per-CPU lists round the size up to a multiple of the CPU count.
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u32);
    let mut kept = Vec::new();
    for (map, configured) in caps.sized_maps() {
        let Ok(info) = MapData::from_pin(pins.map(map)).and_then(|d| d.info()) else {
            continue;
        };
        let rounded = configured.div_ceil(cpus) * cpus;
        if info.max_entries() != configured && info.max_entries() != rounded {
            kept.push(Kept {
                map,
                kept: format!("{} entries", info.max_entries()),
                configured: format!("{configured} entries"),
            });
        }
        if map == MAP_SOURCES {
            let pinned = info.map_flags() & BPF_F_NO_COMMON_LRU != 0;
            let wanted = caps.source_lists == LruLists::PerCpu;
            if pinned != wanted {
                kept.push(Kept {
                    map,
                    kept: format!("{} LRU lists", lists(pinned)),
                    configured: format!("{} LRU lists", lists(wanted)),
                });
            }
        }
    }
    kept
}

/// Unpins the maps a new build may lay out otherwise and can do without
/// what they held: a ban index whose layout is not this object's (a build
/// from before its spill mark; it is derived from BANS, so the load creates
/// a fresh one and indexes the kept bans before the new programs take
/// over), a counter array of another length (a build with fewer
/// counters: the counts restart at zero), a source table whose counts are
/// laid out otherwise (a build with fewer SIP classes: the counts restart,
/// as they do when the controller restarts), and a scan scratch of another
/// size (it holds nothing between packets). The old programs keep the old
/// maps until then.
pub fn retire_stale_index(pins: &Pins) -> Result<Option<KernelConfig>> {
    let carried = carry_config(pins)?;
    let ours = std::mem::size_of::<sip_xdp_common::banindex::Bucket>() as u32;
    retire_if(
        pins,
        MAP_BAN_INDEX,
        |i| i.value_size() != ours,
        "the pinned ban index has another layout; a new one is built from BANS",
    )?;
    let counters = sip_xdp_common::stats::COUNTERS;
    retire_if(
        pins,
        MAP_STATS,
        |i| i.max_entries() != counters,
        "the pinned counters are another build's; they restart at zero",
    )?;
    let sources = std::mem::size_of::<SourceStats>() as u32;
    retire_if(
        pins,
        MAP_SOURCES,
        |i| i.value_size() != sources,
        "the pinned source counts are another build's; they restart at zero",
    )?;
    let shed = std::mem::size_of::<sip_xdp_common::maps::ShedWindow>() as u32;
    retire_if(
        pins,
        MAP_SHED,
        |i| i.value_size() != shed,
        "the pinned overload window is another build's; a new one is made",
    )?;
    let scratch = std::mem::size_of::<sip_xdp_common::maps::ScanScratch>() as u32;
    retire_if(
        pins,
        MAP_SCAN,
        |i| i.value_size() != scratch,
        "the pinned scan scratch is another build's; a new one is made",
    )?;
    Ok(carried)
}

/// The layout of `KernelConfig` before the admission fields: the same
/// fields up to `hot_at`, with the grey period where the strangers' share
/// is now.
const CONFIG_BEFORE_ADMISSION: usize = 56;

/// A pinned configuration of the layout before the admission fields, put
/// aside (pinned under another name, so a load that fails finds it again)
/// and read, so the new program starts from the operator's flags
/// (monitor mode above all) and limits, not from zeros. The controller
/// writes the admission fields; until then nothing is shed. Another
/// layout is left for `check_compatible` to refuse.
fn carry_config(pins: &Pins) -> Result<Option<KernelConfig>> {
    let path = pins.map(MAP_CONFIG);
    let aside = previous_config(pins);
    let old_layout = || {
        MapData::from_pin(&path)
            .and_then(|d| d.info())
            .is_ok_and(|i| i.value_size() as usize == CONFIG_BEFORE_ADMISSION)
    };
    if Path::new(&aside).exists() {
        // Put aside by a start that stopped before unpinning the old one.
        if old_layout() {
            std::fs::remove_file(&path).map_err(|source| Error::Io {
                context: format!("unpinning {}", path.display()),
                source,
            })?;
        }
    } else {
        let Ok(info) = MapData::from_pin(&path).and_then(|d| d.info()) else {
            return Ok(None);
        };
        if info.value_size() as usize != CONFIG_BEFORE_ADMISSION {
            return Ok(None);
        }
        tracing::info!(
            map = MAP_CONFIG,
            "the pinned configuration has the layout before overload admission; it is carried over"
        );
        // Pinned a second time, then unpinned by its old name: the bpf
        // filesystem renames nothing.
        let aside_err = |e: String| Error::Io {
            context: format!("putting {} aside", path.display()),
            source: std::io::Error::other(e),
        };
        MapData::from_pin(&path)
            .map_err(|e| aside_err(e.to_string()))?
            .pin(&aside)
            .map_err(|e| aside_err(e.to_string()))?;
        std::fs::remove_file(&path).map_err(|source| Error::Io {
            context: format!("unpinning {}", path.display()),
            source,
        })?;
    }
    let old = MapData::from_pin(&aside)
        .ok()
        .and_then(|d| Array::<_, [u8; CONFIG_BEFORE_ADMISSION]>::try_from(Map::Array(d)).ok())
        .and_then(|a| a.get(&0, 0).ok());
    Ok(old.map(|old| {
        let mut c = KernelConfig::default();
        // SAFETY: KernelConfig is plain old data with no padding, and the
        // old layout is its prefix.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                &mut c as *mut KernelConfig as *mut u8,
                CONFIG_BEFORE_ADMISSION,
            )
        };
        bytes.copy_from_slice(&old);
        c.shed_per_cpu = 0;
        c.strangers_per_cpu = 0;
        c
    }))
}

/// Where `carry_config` puts the old configuration aside.
fn previous_config(pins: &Pins) -> std::path::PathBuf {
    // No dot: the bpf filesystem refuses names with one.
    pins.map("CONFIG_PREVIOUS")
}

/// The carried configuration is in the new map: the old one goes. Left
/// behind, it would be carried again by the next upgrade.
pub fn carried(pins: &Pins) {
    let aside = previous_config(pins);
    match std::fs::remove_file(&aside) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::error!(path = %aside.display(), error = %e, "removing the configuration carried over failed; remove it by hand")
        }
        _ => {}
    }
}

fn retire_if(
    pins: &Pins,
    map: &str,
    stale: impl Fn(&aya::maps::MapInfo) -> bool,
    why: &str,
) -> Result<()> {
    let path = pins.map(map);
    let Ok(info) = MapData::from_pin(&path).and_then(|d| d.info()) else {
        return Ok(());
    };
    if !stale(&info) {
        return Ok(());
    }
    tracing::info!(map, "{why}");
    std::fs::remove_file(&path).map_err(|source| Error::Io {
        context: format!("unpinning {}", path.display()),
        source,
    })
}

/// Checks every pinned map this object also defines against the object's
/// definition: type, key and value sizes, flags, and the size of the maps
/// whose size is fixed.
pub fn check_compatible(pins: &Pins) -> Result<()> {
    let obj = aya_obj::Object::parse(EBPF_OBJECT).map_err(|e| Error::Io {
        context: "parsing the embedded object".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut why = Vec::new();
    for (name, def) in &obj.maps {
        let path = pins.map(name);
        if !Path::new(&path).exists() {
            continue;
        }
        let Ok(info) = MapData::from_pin(&path).and_then(|d| d.info()) else {
            why.push(format!("{name}: unreadable pin"));
            continue;
        };
        let pinned_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        let mut diff = Vec::new();
        if pinned_type != def.map_type() {
            diff.push(format!(
                "type {} pinned, {} now",
                pinned_type,
                def.map_type()
            ));
        }
        if info.key_size() != def.key_size() {
            diff.push(format!(
                "key {} B pinned, {} B now",
                info.key_size(),
                def.key_size()
            ));
        }
        if info.value_size() != def.value_size() {
            diff.push(format!(
                "value {} B pinned, {} B now",
                info.value_size(),
                def.value_size()
            ));
        }
        // The LRU list flavour is chosen at creation (`LruLists`); the
        // program is the same for both.
        let same_but_lru = |f: u32| f & !super::capacities::BPF_F_NO_COMMON_LRU;
        if same_but_lru(info.map_flags()) != same_but_lru(def.map_flags()) {
            diff.push(format!(
                "flags {:#x} pinned, {:#x} now",
                info.map_flags(),
                def.map_flags()
            ));
        }
        // A size the operator chose at first load (`max_*`) is theirs, not
        // an incompatibility.
        let sized = Capacities::default()
            .sized_maps()
            .iter()
            .any(|(m, _)| *m == name.as_str());
        if !sized && info.max_entries() != def.max_entries() {
            diff.push(format!(
                "{} entries pinned, {} now",
                info.max_entries(),
                def.max_entries()
            ));
        }
        if !diff.is_empty() {
            why.push(format!("{name}: {}", diff.join(", ")));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        why.sort();
        Err(Error::Incompatible {
            pins: pins.root().to_path_buf(),
            why: why.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stamp_is_stable_and_not_zero() {
        assert_eq!(super::object_stamp(), super::object_stamp());
        assert_ne!(super::object_stamp(), 0);
    }
}
