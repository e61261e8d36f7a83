//! Loading the program (or reusing the pinned one) and attaching it to
//! interfaces through pinned bpf_links, so an attachment outlives the process
//! that made it and a restarted controller finds it in place.

use std::{fs, io};

use aya::{
    maps::{Array, Map, MapData, ProgramArray},
    programs::{
        links::FdLink, links::PinnedLink, tc, tc::SchedClassifierLink, xdp::XdpLink, ProgramInfo,
        SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    EbpfLoader,
};
use aya_obj::programs::XdpAttachType;
use sip_xdp_common::maps::{
    MAP_EXCHANGE_PROG, MAP_SIP_PORTS, MAP_TCP_PORTS, MAP_TRUST_PROG, SIP_PORT_WORDS,
};

pub use super::capacities::{Capacities, LruLists, BPF_F_NO_COMMON_LRU, PER_CPU_SLOTS};
use super::{pins::Pins, upgrade};
use crate::{
    Error, Result, DEFAULT_SIP_PORT, DEFAULT_TCP_PORTS, EBPF_OBJECT, EGRESS_PROGRAM_NAME,
    EXCHANGE_PROGRAM_NAME, PROGRAM_NAME, TRUST_PROGRAM_NAME,
};

/// How the operator asked to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works everywhere, costs an skb per packet.
    Skb,
}

/// Mode actually in use, as recorded in the link pin path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    Native,
    Skb,
}

impl Attached {
    pub const fn name(self) -> &'static str {
        match self {
            Attached::Native => "native",
            Attached::Skb => "skb",
        }
    }
    const fn xdp_mode(self) -> XdpMode {
        match self {
            Attached::Native => XdpMode::Driver,
            Attached::Skb => XdpMode::Skb,
        }
    }
}

/// The pinned program, loading and pinning it (and its maps) first if needed.
/// Returns the program and whether this call created it. Programs pinned by
/// another version are replaced in place (`upgrade`).
pub fn load_or_open(pins: &Pins, caps: Capacities) -> Result<(Xdp, bool)> {
    pins.prepare()?;
    let pinned = pins.prog().exists();
    if !pinned || upgrade::pinned_stamp(pins) != Some(upgrade::object_stamp()) {
        // Maps kept from an earlier load (detach without --purge) are
        // shared by the new programs too: their layouts must match.
        let carried = upgrade::retire_stale_index(pins)?;
        upgrade::check_compatible(pins)?;
        super::features::check()?;
        raise_memlock();
        let mut ebpf = load_object(pins, caps)?;
        // The new program trusts its index for IPv4: a fresh one (a first
        // load on kept maps, an upgrade) must hold the kept bans before
        // the program runs anywhere.
        let mut maps = super::Maps::open(pins)?;
        if let Some(c) = carried {
            maps.set_config(c)?;
            upgrade::carried(pins);
        }
        let (indexed, left_to_bans) = maps.rebuild_ban_index()?;
        if indexed + left_to_bans > 0 {
            tracing::info!(
                indexed,
                left_to_bans,
                "kept bans indexed for the new program"
            );
        }
        // Hints of a fresh map are not built, and the program then does
        // every lookup: built here, before it runs anywhere, so it skips
        // them from its first packet.
        maps.check_allow_hint()?;
        maps.build_proof_hint()?;
        if pinned {
            replace_pinned(pins, &mut ebpf)?;
        } else {
            pin_program::<Xdp>(&mut ebpf, PROGRAM_NAME, &pins.prog())?;
            pin_program::<SchedClassifier>(&mut ebpf, EGRESS_PROGRAM_NAME, &pins.egress_prog())?;
            tracing::info!(pin = %pins.root().display(), "loaded XDP program and pinned its maps");
        }
        upgrade::write_stamp(pins)?;
    }
    let prog =
        Xdp::from_pin(pins.prog(), XdpAttachType::Interface).map_err(|source| Error::Program {
            context: format!("opening pinned program {}", pins.prog().display()),
            source,
        })?;
    Ok((prog, !pinned))
}

/// Loads the embedded object on the pinned maps (creating and pinning the
/// missing ones) and its programs into the kernel, and fills the trust
/// program's tail-call slot. Nothing is attached or pinned yet.
fn load_object(pins: &Pins, caps: Capacities) -> Result<aya::Ebpf> {
    use sip_xdp_common::maps::*;
    if caps.source_lists == LruLists::PerCpu {
        create_with_flags(pins, MAP_SOURCES, caps.sources, BPF_F_NO_COMMON_LRU)?;
    }
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pins.maps_dir());
    for (map, entries) in caps.sized_maps() {
        loader.map_max_entries(map, entries);
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| {
        if e.to_string().contains("Operation not permitted") {
            Error::Permission {
                what: "loading the XDP program".into(),
            }
        } else {
            Error::Load(e)
        }
    })?;
    init_ports(pins)?;
    load_program::<Xdp>(&mut ebpf, PROGRAM_NAME, "XDP")?;
    load_program::<SchedClassifier>(&mut ebpf, EGRESS_PROGRAM_NAME, "TC egress")?;
    install_tail::<SchedClassifier>(&mut ebpf, TRUST_PROGRAM_NAME, "TC", MAP_TRUST_PROG)?;
    install_tail::<Xdp>(&mut ebpf, EXCHANGE_PROGRAM_NAME, "XDP", MAP_EXCHANGE_PROG)?;
    Ok(ebpf)
}

/// Creates and pins the object's map `name` with extra creation flags,
/// unless it is pinned already. aya takes map flags from the object only;
/// it then reuses this pin as it reuses any map kept from an earlier load.
fn create_with_flags(pins: &Pins, name: &str, entries: u32, flags: u32) -> Result<()> {
    let path = pins.map(name);
    if path.exists() {
        return Ok(());
    }
    let io_err = |context: String| {
        move |e: String| Error::Io {
            context,
            source: io::Error::other(e),
        }
    };
    let obj = aya_obj::Object::parse(EBPF_OBJECT)
        .map_err(|e| io_err("parsing the embedded object".into())(e.to_string()))?;
    let Some(mut def) = obj.maps.get(name).cloned() else {
        return Err(io_err(format!("map {name}"))("not in the object".into()));
    };
    match &mut def {
        aya_obj::Map::Legacy(m) => m.def.map_flags |= flags,
        // aya-ebpf declares legacy maps; a BTF map's flags are not settable.
        aya_obj::Map::Btf(_) => {
            return Err(io_err(format!("map {name}"))(
                "a BTF map: its flags are fixed in the object".into(),
            ))
        }
    }
    def.set_max_entries(entries);
    let map = MapData::create(def, name, None)
        .map_err(|e| io_err(format!("creating map {name} with flags {flags:#x}"))(e.to_string()))?;
    map.pin(&path)
        .map_err(|e| io_err(format!("pinning {}", path.display()))(e.to_string()))
}

/// Swaps the new programs into every pinned link (`bpf_link_update`: the
/// interface never runs without a filter) and pins them in place of the
/// old ones.
fn replace_pinned(pins: &Pins, ebpf: &mut aya::Ebpf) -> Result<()> {
    let old = program_info(pins).map(|p| p.id());
    let update = |what: &str, iface: &str| {
        let context = format!("replacing the {what} program on {iface}");
        move |e: String| Error::Io {
            context,
            source: io::Error::other(e),
        }
    };
    let xdp: &mut Xdp = program(ebpf, PROGRAM_NAME, "XDP")?;
    let links = pins.links();
    for (iface, _, path) in &links {
        let link = PinnedLink::from_pin(path).map_err(|e| update("XDP", iface)(e.to_string()))?;
        let link = XdpLink::try_from(FdLink::from(link))
            .map_err(|e| update("XDP", iface)(e.to_string()))?;
        xdp.attach_to_link(link)
            .map_err(|e| update("XDP", iface)(e.to_string()))?;
    }
    repin(xdp, &pins.prog())?;
    let tc: &mut SchedClassifier = program(ebpf, EGRESS_PROGRAM_NAME, "TC egress")?;
    for (iface, _, _) in &links {
        let path = pins.egress_link(iface);
        let Ok(link) = PinnedLink::from_pin(&path) else {
            // A netlink egress filter (no TCX) has no link to update: it
            // keeps the old counter until the interface is attached again.
            continue;
        };
        let link = SchedClassifierLink::try_from(FdLink::from(link))
            .map_err(|e| update("egress", iface)(e.to_string()))?;
        tc.attach_to_link(link)
            .map_err(|e| update("egress", iface)(e.to_string()))?;
    }
    repin(tc, &pins.egress_prog())?;
    let new = program_info(pins).map(|p| p.id());
    tracing::info!(
        old_program = ?old,
        new_program = ?new,
        interfaces = links.len(),
        "replaced the pinned programs with this version's, without detaching"
    );
    Ok(())
}

/// Pins a loaded program at `pin`, replacing what was pinned there.
fn repin<P: LoadPinned>(prog: &mut P, pin: &std::path::Path) -> Result<()> {
    match fs::remove_file(pin) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("removing {}", pin.display()))(e)),
    }
    prog.pin_it(pin).map_err(|e| Error::Io {
        context: format!("pinning {}", pin.display()),
        source: io::Error::other(e),
    })
}

/// Loads a tail-called program and puts it in the slot of its caller's
/// program array. The pinned slot keeps it alive: it needs no pin of its
/// own.
fn install_tail<P>(ebpf: &mut aya::Ebpf, name: &str, what: &str, slot_map: &str) -> Result<()>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    P: LoadPinned + TailFd,
{
    let prog = program::<P>(ebpf, name, what)?;
    prog.load_it().map_err(|source| Error::Program {
        context: format!("the kernel verifier rejected {name}"),
        source,
    })?;
    let fd = prog.tail_fd().map_err(|source| Error::Program {
        context: format!("{name} has no fd"),
        source,
    })?;
    let fd = fd
        .try_clone()
        .map_err(Error::io(format!("duplicating {name}'s fd")))?;
    let map = ebpf.map_mut(slot_map).ok_or_else(|| Error::Io {
        context: "the embedded object".into(),
        source: io::Error::other(format!("has no map named {slot_map}")),
    })?;
    let mut slots =
        ProgramArray::try_from(map).map_err(Error::map(format!("opening {slot_map}")))?;
    slots
        .set(0, &fd, 0)
        .map_err(Error::map(format!("installing {name}")))
}

/// A loaded program's descriptor, for a tail-call slot.
trait TailFd {
    fn tail_fd(
        &self,
    ) -> std::result::Result<&aya::programs::ProgramFd, aya::programs::ProgramError>;
}

impl TailFd for Xdp {
    fn tail_fd(
        &self,
    ) -> std::result::Result<&aya::programs::ProgramFd, aya::programs::ProgramError> {
        self.fd()
    }
}

impl TailFd for SchedClassifier {
    fn tail_fd(
        &self,
    ) -> std::result::Result<&aya::programs::ProgramFd, aya::programs::ProgramError> {
        self.fd()
    }
}

/// Empties the tail-call slots so the tail-called programs go with the
/// others.
fn remove_tails(pins: &Pins) {
    for map in [MAP_TRUST_PROG, MAP_EXCHANGE_PROG] {
        if let Ok(data) = MapData::from_pin(pins.map(map)) {
            if let Ok(mut slots) = ProgramArray::try_from(Map::ProgramArray(data)) {
                let _ = slots.clear_index(&0);
            }
        }
    }
}

/// Program `name` of the object, as type `P`.
fn program<'a, P>(ebpf: &'a mut aya::Ebpf, name: &str, what: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Io {
            context: "the embedded object".into(),
            source: io::Error::other(format!("has no program named {name}")),
        })?
        .try_into()
        .map_err(|source| Error::Program {
            context: format!("the embedded program {name} is not {what}"),
            source,
        })
}

/// Loads program `name` of the object into the kernel (the verifier runs).
fn load_program<P>(ebpf: &mut aya::Ebpf, name: &str, what: &str) -> Result<()>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    P: LoadPinned,
{
    program::<P>(ebpf, name, what)?
        .load_it()
        .map_err(|source| Error::Program {
            context: format!("the kernel verifier rejected the {what} program"),
            source,
        })
}

/// Pins loaded program `name` at `pin`.
fn pin_program<P>(ebpf: &mut aya::Ebpf, name: &str, pin: &std::path::Path) -> Result<()>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    P: LoadPinned,
{
    program::<P>(ebpf, name, name)?
        .pin_it(pin)
        .map_err(|e| Error::Io {
            context: format!("pinning {name} at {}", pin.display()),
            source: io::Error::other(e),
        })
}

/// The two program types this object holds, loaded and pinned alike.
trait LoadPinned {
    fn load_it(&mut self) -> std::result::Result<(), aya::programs::ProgramError>;
    fn pin_it(&mut self, p: &std::path::Path) -> std::result::Result<(), String>;
}

impl LoadPinned for Xdp {
    fn load_it(&mut self) -> std::result::Result<(), aya::programs::ProgramError> {
        self.load()
    }
    fn pin_it(&mut self, p: &std::path::Path) -> std::result::Result<(), String> {
        self.pin(p).map_err(|e| e.to_string())
    }
}

impl LoadPinned for SchedClassifier {
    fn load_it(&mut self) -> std::result::Result<(), aya::programs::ProgramError> {
        self.load()
    }
    fn pin_it(&mut self, p: &std::path::Path) -> std::result::Result<(), String> {
        self.pin(p).map_err(|e| e.to_string())
    }
}

/// Kernels since 5.11 charge BPF memory to the cgroup; older ones need a
/// raised RLIMIT_MEMLOCK. Without CAP_SYS_RESOURCE the raise may fail, which
/// only matters on old kernels, so it is a debug note, not an error.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK");
    }
}

/// A new port map is all zero; enable the default ports once, never
/// overwriting a port set an operator chose before a reload.
fn init_ports(pins: &Pins) -> Result<()> {
    init_port_map(pins, MAP_SIP_PORTS, &[DEFAULT_SIP_PORT])?;
    init_port_map(pins, MAP_TCP_PORTS, &DEFAULT_TCP_PORTS)
}

fn init_port_map(pins: &Pins, name: &str, defaults: &[u16]) -> Result<()> {
    let data = MapData::from_pin(pins.map(name)).map_err(Error::map("opening a port map"))?;
    let mut ports: Array<MapData, u64> =
        Array::try_from(Map::Array(data)).map_err(Error::map("opening a port map"))?;
    for i in 0..SIP_PORT_WORDS {
        if ports.get(&i, 0).map_err(Error::map("reading ports"))? != 0 {
            return Ok(());
        }
    }
    for p in defaults {
        let w = u32::from(p >> 6);
        let old = ports.get(&w, 0).map_err(Error::map("reading ports"))?;
        ports
            .set(w, old | 1u64 << (p & 63), 0)
            .map_err(Error::map("setting the default ports"))?;
    }
    Ok(())
}

/// Attaches to `iface` and pins the link. Returns the mode in use.
pub fn attach(pins: &Pins, iface: &str, mode: AttachMode, caps: Capacities) -> Result<Attached> {
    if let Some((mode, _)) = pins.link_of(iface) {
        return Err(Error::AlreadyAttached {
            iface: iface.into(),
            mode,
        });
    }
    if nix::net::if_::if_nametoindex(iface).is_err() {
        return Err(Error::UnknownInterface(iface.into()));
    }
    let (mut prog, fresh) = load_or_open(pins, caps)?;
    let tries: &[Attached] = match mode {
        AttachMode::Auto => &[Attached::Native, Attached::Skb],
        AttachMode::Native => &[Attached::Native],
        AttachMode::Skb => &[Attached::Skb],
    };
    let mut last = None;
    for &m in tries {
        match prog.attach(iface, m.xdp_mode()) {
            Ok(id) => {
                let link = prog.take_link(id).map_err(|source| Error::Program {
                    context: "taking the XDP link".into(),
                    source,
                })?;
                let link: FdLink = link.try_into().map_err(|e| Error::Io {
                    context: "converting the XDP link".into(),
                    source: io::Error::other(format!("{e}")),
                })?;
                let path = pins.link(m.name(), iface);
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir)
                        .map_err(Error::io(format!("creating {}", dir.display())))?;
                }
                link.pin(&path).map_err(|e| Error::Io {
                    context: format!("pinning the link at {}", path.display()),
                    source: io::Error::other(e.to_string()),
                })?;
                if mode == AttachMode::Auto && m == Attached::Skb {
                    tracing::warn!(
                        iface,
                        "native XDP is not available on this interface; attached in generic \
                         (skb) mode, which filters after the kernel has built an skb"
                    );
                }
                tracing::info!(iface, mode = m.name(), "attached");
                attach_egress(pins, iface);
                return Ok(m);
            }
            Err(e) => {
                if is_busy(&e) {
                    cleanup_unused(pins, fresh);
                    return Err(Error::InterfaceBusy(iface.into()));
                }
                if mode == AttachMode::Auto && m == Attached::Native {
                    tracing::warn!(iface, error = %e, "native XDP attach failed, trying generic mode");
                }
                last = Some(e);
            }
        }
    }
    cleanup_unused(pins, fresh);
    Err(Error::Program {
        context: format!("attaching to {iface}"),
        source: last.expect("at least one attach attempt"),
    })
}

/// Attaches the response counter to `iface`'s egress (TCX on 6.6+, a
/// clsact filter before) and pins the link where it has one. Responses are
/// an extra signal: failing here is a warning, the filter stays attached.
pub fn attach_egress(pins: &Pins, iface: &str) {
    if let Err(e) = try_attach_egress(pins, iface) {
        tracing::warn!(iface, error = %e, "egress response counting not attached: brute force and enumeration are then seen only through the database");
    }
}

fn try_attach_egress(pins: &Pins, iface: &str) -> Result<()> {
    let path = pins.egress_link(iface);
    if path.exists() {
        return Ok(());
    }
    let mut prog = SchedClassifier::from_pin(pins.egress_prog()).map_err(|source| {
        Error::Program {
            context: format!(
                "opening the pinned egress program {} (loaded by an older version? detach all interfaces and attach again)",
                pins.egress_prog().display()
            ),
            source,
        }
    })?;
    // Only the netlink fallback (kernels before 6.6) needs the qdisc.
    if let Err(e) = tc::qdisc_add_clsact(iface) {
        tracing::debug!(iface, error = %e, "clsact qdisc not added (exists, or TCX in use)");
    }
    let id = prog
        .attach(iface, TcAttachType::Egress)
        .map_err(|source| Error::Program {
            context: format!("attaching the egress program to {iface}"),
            source,
        })?;
    let link = prog.take_link(id).map_err(|source| Error::Program {
        context: "taking the egress link".into(),
        source,
    })?;
    match FdLink::try_from(link) {
        Ok(fd) => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)
                    .map_err(Error::io(format!("creating {}", dir.display())))?;
            }
            fd.pin(&path).map_err(|e| Error::Io {
                context: format!("pinning the egress link at {}", path.display()),
                source: io::Error::other(e.to_string()),
            })?;
        }
        Err(_) => {
            // A netlink filter is not a bpf_link: it stays attached on its
            // own once this process lets go of it.
            tracing::info!(
                iface,
                "egress attached as a clsact filter (kernel without TCX)"
            );
        }
    }
    tracing::info!(iface, "egress response counting attached");
    Ok(())
}

fn detach_egress(pins: &Pins, iface: &str) {
    let path = pins.egress_link(iface);
    if let Ok(link) = PinnedLink::from_pin(&path) {
        match link.unpin() {
            Ok(fd) => drop(fd),
            Err(e) => tracing::warn!(iface, error = %e, "could not unpin the egress link"),
        }
    }
}

fn is_busy(e: &aya::programs::ProgramError) -> bool {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)) {
                return true;
            }
        }
        let msg = s.to_string();
        if msg.contains("Device or resource busy") || msg.contains("File exists") {
            return true;
        }
        src = s.source();
    }
    false
}

/// A program loaded by a failed attach would sit pinned with no interface.
fn cleanup_unused(pins: &Pins, fresh: bool) {
    if fresh && pins.links().is_empty() {
        let _ = fs::remove_file(pins.prog());
        let _ = fs::remove_file(pins.egress_prog());
        remove_tails(pins);
    }
}

/// Removes the attachment from `iface`. When no interface is left, the
/// program pin goes too (the maps stay, so bans survive a re-attach, unless
/// `purge`).
pub fn detach(pins: &Pins, iface: &str, purge: bool) -> Result<Attached> {
    let (mode, path) = pins
        .link_of(iface)
        .ok_or_else(|| Error::NotAttached(iface.into()))?;
    let link = PinnedLink::from_pin(&path).map_err(|e| Error::Io {
        context: format!("opening link pin {}", path.display()),
        source: io::Error::other(e.to_string()),
    })?;
    // Unpinning drops the last reference: the kernel detaches the program.
    let fd = link
        .unpin()
        .map_err(Error::io(format!("unpinning {}", path.display())))?;
    drop(fd);
    detach_egress(pins, iface);
    if pins.links().is_empty() {
        let _ = fs::remove_file(pins.prog());
        let _ = fs::remove_file(pins.egress_prog());
        remove_tails(pins);
        if purge {
            let _ = fs::remove_dir_all(pins.root());
        }
    }
    tracing::info!(iface, mode = %mode, "detached");
    Ok(if mode == "skb" {
        Attached::Skb
    } else {
        Attached::Native
    })
}

/// Facts about the pinned program for `status`.
pub fn program_info(pins: &Pins) -> Option<ProgramInfo> {
    ProgramInfo::from_pin(pins.prog()).ok()
}
