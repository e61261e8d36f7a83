//! Kernel memory of the hash maps, computed from their definitions, so the
//! cost on a machine with more CPUs can be known before it is met. The
//! formula is the one the kernel charges (`htab_map_mem_usage` in
//! kernel/bpf/hashtab.c, which `memlock` in a map's fdinfo reports); the
//! kernel tests check it against fdinfo on the machine they run on.
//!
//! Preallocated hash maps (all of ours) charge, whether full or empty:
//! one bucket head per power-of-two bucket, one element per entry (a
//! 48-byte header, the key, and the value or, for per-CPU maps, a pointer
//! to one value per possible CPU), plus, for a plain hash map, one spare
//! element per CPU.

/// The flavours of hash map the program uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    Hash,
    LruHash,
    LruPerCpuHash,
}

/// `struct htab_elem` before its key, on 64-bit kernels.
const ELEM_HEADER: u64 = 48;
/// `struct bucket`: a list head and its lock.
const BUCKET: u64 = 16;

const fn round8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Bytes the kernel charges for a preallocated hash map.
pub fn hash_map_bytes(
    kind: HashKind,
    max_entries: u32,
    key: usize,
    value: usize,
    cpus: u32,
) -> u64 {
    let (n, cpus) = (u64::from(max_entries), u64::from(cpus));
    let (key, value) = (round8(key as u64), round8(value as u64));
    let per_cpu = kind == HashKind::LruPerCpuHash;
    let elem = ELEM_HEADER + key + if per_cpu { 8 } else { value };
    let elems = if kind == HashKind::Hash { n + cpus } else { n };
    let mut bytes = BUCKET * n.next_power_of_two() + elem * elems;
    if per_cpu {
        bytes += value * cpus * n;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_grow_with_the_cpus_and_nothing_else_does() {
        let at = |cpus| hash_map_bytes(HashKind::LruPerCpuHash, 262_144, 16, 64, cpus);
        // 262,144 × 64 B more for each CPU.
        assert_eq!(at(3) - at(2), 262_144 * 64);
        assert_eq!(at(64) - at(2), 62 * 262_144 * 64);
        let plain = |cpus| hash_map_bytes(HashKind::LruHash, 262_144, 16, 16, cpus);
        assert_eq!(plain(2), plain(64));
        // A plain hash map keeps one spare element per CPU.
        let bans = |cpus| hash_map_bytes(HashKind::Hash, 131_072, 16, 24, cpus);
        assert_eq!(bans(3) - bans(2), 48 + 16 + 24);
    }
}
