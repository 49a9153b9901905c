//! Compiles the eBPF programs in bpf/ with clang into objects (with BTF) that the crate embeds:
//! `sock_lb.c` (the VIP balancer) and `tc_mesh.c` (the routing mesh).
//!
//! Without clang or the libbpf headers the crate still builds: an object that cannot be built
//! is left empty and the reason is embedded instead, so that loading fails with that reason at
//! run time and shoald falls back to nftables (or, with `--vip-balancer ebpf`, says what to
//! install). A workspace that cannot build eBPF must still build everything else.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in ["sock_lb", "tc_mesh"] {
        compile(name, &out);
    }
}

fn compile(name: &str, out: &Path) {
    let src = format!("bpf/{name}.c");
    println!("cargo:rerun-if-changed={src}");
    let obj = out.join(format!("{name}.o"));
    let err_file = out.join(format!("{name}.err"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // <asm/types.h> lives under the multiarch directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let result = Command::new(&clang)
        .args([
            "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
        ])
        .arg(format!("-I{multiarch}"))
        .args(["-c", &src, "-o"])
        .arg(&obj)
        .output();
    let error = match result {
        Ok(o) if o.status.success() => String::new(),
        Ok(o) => format!(
            "{clang} failed to compile {src} (needs clang and libbpf-dev): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!(
            "cannot run {clang} to compile {src}: {e}; install clang and libbpf-dev and rebuild"
        ),
    };
    if !error.is_empty() {
        println!("cargo:warning=shoal-bpf: {error}");
        std::fs::write(&obj, b"").expect("write empty object");
    }
    std::fs::write(&err_file, error).expect("write build error");
}
