use which::which;

/// Rebuild the object when bpf-linker changes (a new linker may emit
/// different code), the same way aya-template does.
fn main() {
    let bpf_linker = which("bpf-linker").unwrap();
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
