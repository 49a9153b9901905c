//! Turning a placeholder helper call in the compiled object into a kfunc call. Pure.
//!
//! aya 0.14 cannot link a call to an extern kfunc (it knows helper calls and calls between
//! the object's own functions only), and `bpf_sock_destroy()` is a kfunc. So `bpf/sock_lb.c`
//! calls it as a helper numbered [`KFUNC_PLACEHOLDER`], and before aya parses the object the
//! one instruction `call KFUNC_PLACEHOLDER` becomes what libbpf would have written: a call
//! with `src_reg = BPF_PSEUDO_KFUNC_CALL`, `off = 0` (the kernel's own BTF) and
//! `imm` = the kfunc's BTF id in the running kernel. Hand-written because no loader crate the
//! workspace can use (aya 0.15+ needs a newer rustc, CRATES.md) does it.

/// The helper number `sock_destroy` is declared with in bpf/sock_lb.c.
pub const KFUNC_PLACEHOLDER: u32 = 0x5d0c_7e57;

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `BPF_PSEUDO_KFUNC_CALL`, in the source-register nibble of the registers byte.
const PSEUDO_KFUNC_CALL: u8 = 2;
const INSN: usize = 8;

/// The eBPF instruction `call KFUNC_PLACEHOLDER` (helper call, no registers, no offset).
fn placeholder() -> [u8; INSN] {
    let mut insn = [CALL, 0, 0, 0, 0, 0, 0, 0];
    insn[4..].copy_from_slice(&KFUNC_PLACEHOLDER.to_le_bytes());
    insn
}

/// Rewrites every placeholder call in `object` (an ELF with little-endian eBPF code, whose
/// code sections start at 8-byte aligned offsets, as clang writes them) into a call to the
/// kfunc with BTF id `btf_id`; returns how many it rewrote.
pub fn patch(object: &mut [u8], btf_id: u32) -> usize {
    let from = placeholder();
    let mut to = [CALL, PSEUDO_KFUNC_CALL << 4, 0, 0, 0, 0, 0, 0];
    to[4..].copy_from_slice(&btf_id.to_le_bytes());
    let mut n = 0;
    for insn in object.chunks_exact_mut(INSN) {
        if insn == from {
            insn.copy_from_slice(&to);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_call_becomes_a_kfunc_call() {
        // r1 = r7; call 0x5d0c7e57; exit
        let mut code = vec![0xbf, 0x71, 0, 0, 0, 0, 0, 0];
        code.extend_from_slice(&placeholder());
        code.extend_from_slice(&[0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(patch(&mut code, 65672), 1);
        assert_eq!(&code[8..16], &[0x85, 0x20, 0, 0, 0x88, 0x00, 0x01, 0x00]);
        assert_eq!(code[0], 0xbf, "other instructions are left alone");
        assert_eq!(patch(&mut code, 65672), 0, "nothing left to rewrite");
    }

    #[test]
    fn the_compiled_object_has_exactly_one_placeholder() {
        let mut object = crate::loader::OBJECT.to_vec();
        assert!(!object.is_empty(), "{}", crate::loader::BUILD_ERROR);
        assert_eq!(patch(&mut object, 1), 1);
    }
}
