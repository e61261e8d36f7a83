//! Whole-map reads with `BPF_MAP_LOOKUP_BATCH`: one system call per few
//! thousand entries instead of two per entry, which is what makes a
//! sampling pass over a million tracked sources affordable. aya has no
//! batch operations yet; the attribute layout is aya-obj's generated one.

use std::{
    io,
    mem::{size_of, MaybeUninit},
    os::fd::{AsFd, AsRawFd},
};

use aya::{maps::MapData, Pod};
use aya_obj::generated::{bpf_attr, bpf_cmd};

/// Entries asked for per call. A hash bucket larger than this returns
/// ENOSPC; the chunk then doubles.
const CHUNK: usize = 8192;

/// Calls `f` with every key and its per-CPU values of a per-CPU hash map
/// (possible CPUs, in order). Returns how many entries were read. Entries
/// inserted or evicted during the walk may be missed or seen once more,
/// as with any walk of a live map.
pub fn for_each_per_cpu<K: Pod, V: Pod>(
    map: &MapData,
    f: impl FnMut(&K, &[V]),
) -> io::Result<usize> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    // The kernel rounds each CPU's value up to 8 bytes.
    assert_eq!(size_of::<V>() % 8, 0, "per-CPU values must be 8-byte sized");
    walk(map, cpus, bpf_cmd::BPF_MAP_LOOKUP_BATCH, f)
}

/// Where a walk of a hash map stopped: the kernel's batch position (a
/// bucket index), good for resuming later, while the map changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(u64);

/// Part of a walk of a per-CPU hash map: from `from` (the start when
/// `None`), calls `f` with entries until at least `at_most` were read or
/// the map ends. Returns how many were read and where to go on, `None`
/// once the walk reached the end. Whole buckets are read, so a call may
/// read a bucket's worth more than `at_most`.
pub fn per_cpu_part<K: Pod, V: Pod>(
    map: &MapData,
    from: Option<Cursor>,
    at_most: usize,
    f: impl FnMut(&K, &[V]),
) -> io::Result<(usize, Option<Cursor>)> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    assert_eq!(size_of::<V>() % 8, 0, "per-CPU values must be 8-byte sized");
    walk_part(map, cpus, bpf_cmd::BPF_MAP_LOOKUP_BATCH, from, at_most, f)
}

/// Calls `f` with every key and value of a plain (not per-CPU) hash map.
pub fn for_each<K: Pod, V: Pod>(map: &MapData, mut f: impl FnMut(&K, &V)) -> io::Result<usize> {
    walk::<K, V>(map, 1, bpf_cmd::BPF_MAP_LOOKUP_BATCH, |k, v| f(k, &v[0]))
}

/// Empties a plain hash map, returning its keys: one
/// `BPF_MAP_LOOKUP_AND_DELETE_BATCH` walk. Keys the program adds during
/// the walk may stay for the next one.
pub fn take_keys<K: Pod, V: Pod>(map: &MapData) -> io::Result<Vec<K>> {
    let mut keys = Vec::new();
    walk::<K, V>(map, 1, bpf_cmd::BPF_MAP_LOOKUP_AND_DELETE_BATCH, |k, _| {
        keys.push(*k)
    })?;
    Ok(keys)
}

fn walk<K: Pod, V: Pod>(
    map: &MapData,
    cpus: usize,
    cmd: bpf_cmd,
    f: impl FnMut(&K, &[V]),
) -> io::Result<usize> {
    walk_part(map, cpus, cmd, None, usize::MAX, f).map(|(n, _)| n)
}

fn walk_part<K: Pod, V: Pod>(
    map: &MapData,
    cpus: usize,
    cmd: bpf_cmd,
    from: Option<Cursor>,
    at_most: usize,
    mut f: impl FnMut(&K, &[V]),
) -> io::Result<(usize, Option<Cursor>)> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut chunk = CHUNK.min(at_most.max(1));
    let mut keys: Vec<MaybeUninit<K>> = Vec::new();
    let mut values: Vec<MaybeUninit<V>> = Vec::new();
    let mut token: u64 = from.map_or(0, |c| c.0);
    let mut first = from.is_none();
    let mut total = 0;
    loop {
        if total >= at_most {
            return Ok((total, Some(Cursor(token))));
        }
        keys.resize_with(chunk, MaybeUninit::uninit);
        values.resize_with(chunk * cpus, MaybeUninit::uninit);
        let mut next: u64 = 0;
        // SAFETY: an all-zero bpf_attr is valid; the fields set below are
        // the batch arguments the kernel reads.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.batch.in_batch = if first {
            0
        } else {
            &token as *const u64 as u64
        };
        attr.batch.out_batch = &mut next as *mut u64 as u64;
        attr.batch.keys = keys.as_mut_ptr() as u64;
        attr.batch.values = values.as_mut_ptr() as u64;
        attr.batch.count = chunk as u32;
        attr.batch.map_fd = fd as u32;
        // SAFETY: attr points to a properly initialised bpf_attr whose
        // buffers hold `chunk` keys and `chunk * cpus` values.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_long,
                &mut attr as *mut bpf_attr,
                size_of::<bpf_attr>() as libc::c_long,
            )
        };
        let err = (r < 0).then(io::Error::last_os_error);
        let got = unsafe { attr.batch.count } as usize;
        if let Some(e) = &err {
            if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 {
                chunk *= 2;
                continue;
            }
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(io::Error::new(e.kind(), format!("{cmd:?}: {e}")));
            }
        }
        for (i, key) in keys.iter().take(got.min(chunk)).enumerate() {
            // SAFETY: the kernel wrote `got` keys and `got * cpus` values.
            let k = unsafe { key.assume_init_ref() };
            let v = unsafe {
                std::slice::from_raw_parts(values.as_ptr().add(i * cpus) as *const V, cpus)
            };
            f(k, v);
        }
        total += got;
        if err.is_some() {
            // ENOENT: the walk is complete.
            return Ok((total, None));
        }
        token = next;
        first = false;
    }
}

/// Deletes many keys with `BPF_MAP_DELETE_BATCH`, a few thousand per system
/// call. A key the map does not hold stops a batch with ENOENT; it is
/// skipped and the rest go on. Returns how many were deleted.
pub fn delete<K: Pod>(map: &MapData, keys: &[K]) -> io::Result<usize> {
    let fd = map.fd().as_fd().as_raw_fd();
    let (mut at, mut deleted) = (0, 0);
    while at < keys.len() {
        let n = (keys.len() - at).min(CHUNK);
        // SAFETY: an all-zero bpf_attr is valid; the fields set below are
        // the batch arguments the kernel reads.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.batch.keys = keys[at..].as_ptr() as u64;
        attr.batch.count = n as u32;
        attr.batch.map_fd = fd as u32;
        // SAFETY: the buffer holds `n` keys of the map's key size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                bpf_cmd::BPF_MAP_DELETE_BATCH as libc::c_long,
                &mut attr as *mut bpf_attr,
                size_of::<bpf_attr>() as libc::c_long,
            )
        };
        let done = (unsafe { attr.batch.count } as usize).min(n);
        deleted += done;
        at += done;
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("BPF_MAP_DELETE_BATCH after {deleted} entries: {e}"),
                ));
            }
            // Gone already (expired and swept, or lifted by the CLI).
            at += 1;
        }
    }
    Ok(deleted)
}

/// A batch write that stopped part-way: the first `written` entries are
/// in the map, the rest are not. `error` is the kernel's own, so its
/// `raw_os_error()` still tells a full map (E2BIG) from anything else.
#[derive(Debug)]
pub struct Partial {
    pub written: usize,
    pub error: io::Error,
}

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BPF_MAP_UPDATE_BATCH stopped after {} entries: {}",
            self.written, self.error
        )
    }
}

/// Writes many entries with `BPF_MAP_UPDATE_BATCH`, a few thousand per
/// system call instead of one call each. Hash maps only (the kernel has no
/// batch operations for LPM tries). Returns how many were written; on an
/// error, how many were written before it.
pub fn update<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> Result<usize, Partial> {
    assert_eq!(keys.len(), values.len());
    let fd = map.fd().as_fd().as_raw_fd();
    let mut done = 0;
    while done < keys.len() {
        let n = (keys.len() - done).min(CHUNK);
        // SAFETY: an all-zero bpf_attr is valid; the fields set below are
        // the batch arguments the kernel reads.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.batch.keys = keys[done..].as_ptr() as u64;
        attr.batch.values = values[done..].as_ptr() as u64;
        attr.batch.count = n as u32;
        attr.batch.map_fd = fd as u32;
        // SAFETY: the buffers hold `n` keys and `n` values of the map's sizes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                bpf_cmd::BPF_MAP_UPDATE_BATCH as libc::c_long,
                &mut attr as *mut bpf_attr,
                size_of::<bpf_attr>() as libc::c_long,
            )
        };
        let error = (r < 0).then(io::Error::last_os_error);
        // SAFETY: the kernel wrote the count back, on success and on error.
        let wrote = unsafe { attr.batch.count } as usize;
        done += wrote.min(n);
        if let Some(error) = error {
            return Err(Partial {
                written: done,
                error,
            });
        }
    }
    Ok(done)
}
