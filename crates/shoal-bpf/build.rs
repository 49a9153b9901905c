//! Compiles bpf/sock_lb.c with clang into an eBPF object (with BTF) that the crate embeds.
//!
//! Without clang or the libbpf headers the crate still builds: the object is left empty and
//! the reason is embedded instead, so that loading fails with that reason at run time and
//! shoald falls back to the nftables balancer (or, with `--vip-balancer ebpf`, says what to
//! install). A workspace that cannot build eBPF must still build everything else.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/sock_lb.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("sock_lb.o");
    let err_file = out.join("sock_lb.err");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // <asm/types.h> lives under the multiarch directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let result = Command::new(&clang)
        .args([
            "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
        ])
        .arg(format!("-I{multiarch}"))
        .args(["-c", src, "-o"])
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
