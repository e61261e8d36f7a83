//! What the kernel must offer before the program is loaded, checked up
//! front so a missing feature is one line naming it and its fix, not a
//! verifier log. `doctor` prints the same checks.

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, is_program_supported},
    util::KernelVersion,
};

/// The oldest kernel with every helper the program calls
/// (`bpf_xdp_load_bytes` came in 5.18).
pub const MIN_KERNEL: (u8, u8) = (5, 18);

/// One feature, and whether this kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    /// What this kernel has, in words.
    pub have: String,
    /// `None`: present. `Some(fix)`: missing, and what to do.
    pub missing: Option<String>,
}

/// The kernel version rule alone, for a given version.
pub fn version_rule(v: KernelVersion) -> Feature {
    let (maj, min) = MIN_KERNEL;
    Feature {
        name: "kernel version",
        have: v.to_string(),
        missing: (v < KernelVersion::new(maj, min, 0)).then(|| {
            format!(
                "Linux {maj}.{min} or later is needed (bpf_xdp_load_bytes); this is {v}: \
                 upgrade the kernel (Debian 12: bookworm-backports)"
            )
        }),
    }
}

/// Every check, in the order an operator would fix them. Probes need
/// CAP_BPF: without it they report nothing missing and the load itself
/// reports the permission.
pub fn probe() -> Vec<Feature> {
    let mut out = Vec::new();
    if let Ok(v) = KernelVersion::current() {
        out.push(version_rule(v));
    }
    let prog = |name, t, fix: &str| Feature {
        name,
        have: "present".into(),
        missing: (is_program_supported(t).is_ok_and(|ok| !ok)).then(|| fix.to_string()),
    };
    out.push(prog(
        "XDP programs",
        ProgramType::Xdp,
        "this kernel was built without XDP (CONFIG_BPF_SYSCALL, CONFIG_XDP_SOCKETS)",
    ));
    out.push(prog(
        "TC programs",
        ProgramType::SchedClassifier,
        "this kernel was built without CONFIG_NET_CLS_BPF / CONFIG_NET_SCH_INGRESS",
    ));
    let map = |name, t, fix: &str| Feature {
        name,
        have: "present".into(),
        missing: (is_map_supported(t).is_ok_and(|ok| !ok)).then(|| fix.to_string()),
    };
    out.push(map(
        "ring buffer maps",
        MapType::RingBuf,
        "needs Linux 5.8 or later",
    ));
    out.push(map(
        "per-CPU LRU hash maps",
        MapType::LruPerCpuHash,
        "needs Linux 4.10 or later",
    ));
    out.push(map(
        "LPM trie maps",
        MapType::LpmTrie,
        "needs Linux 4.11 or later",
    ));
    out.push(Feature {
        name: "bpf_xdp_load_bytes",
        have: "present".into(),
        missing: (is_helper_supported(
            ProgramType::Xdp,
            aya_obj::generated::bpf_func_id::BPF_FUNC_xdp_load_bytes,
        )
        .is_ok_and(|ok| !ok))
        .then(|| "needs Linux 5.18 or later".to_string()),
    });
    out
}

/// The missing features, one line each, or `Ok` when there are none.
pub fn check() -> crate::Result<()> {
    let missing: Vec<String> = probe()
        .into_iter()
        .filter_map(|f| f.missing.map(|fix| format!("{}: {fix}", f.name)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(crate::Error::Unsupported(missing.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_rule_names_the_helper_and_the_version() {
        let old = version_rule(KernelVersion::new(5, 15, 0));
        let msg = old.missing.unwrap();
        assert!(msg.contains("5.18") && msg.contains("5.15.0"), "{msg}");
        assert_eq!(version_rule(KernelVersion::new(5, 18, 0)).missing, None);
        assert_eq!(version_rule(KernelVersion::new(6, 1, 0)).missing, None);
    }

    #[test]
    fn this_kernel_has_everything() {
        // The test machines run a kernel the program loads on.
        for f in probe() {
            assert_eq!(f.missing, None, "{}", f.name);
        }
    }
}
