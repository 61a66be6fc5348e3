//! The remote component's seccomp filter, built as classic BPF from [`crate::policy`]: Local calls
//! are allowed, every other call raises a user notification that the guest loop in mosd answers.
//! A call made from the engine's injection gadget is always allowed (the gadget is a `syscall`
//! instruction inside the vDSO that the vDSO itself only uses for its time fall-backs).

/// One `struct sock_filter` instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
// Offsets in struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_IP_LO: u32 = 8;
const OFF_IP_HI: u32 = 12;
const OFF_ARG3_LO: u32 = 16 + 3 * 8;

fn ld(k: u32) -> Insn {
    Insn { code: BPF_LD_W_ABS, jt: 0, jf: 0, k }
}
fn jeq(k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code: BPF_JEQ_K, jt, jf, k }
}
fn jset(k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code: BPF_JSET_K, jt, jf, k }
}
fn ret(k: u32) -> Insn {
    Insn { code: BPF_RET_K, jt: 0, jf: 0, k }
}

/// Builds the filter. `gadget_ip` is the address *after* the injection gadget's `syscall`
/// instruction (what the kernel reports as instruction_pointer).
pub fn build(gadget_ip: u64, local: &[u32]) -> Vec<Insn> {
    let mut p = vec![
        ld(OFF_ARCH),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        ret(RET_USER_NOTIF),
        ld(OFF_IP_LO),
        jeq(gadget_ip as u32, 0, 3),
        ld(OFF_IP_HI),
        jeq((gadget_ip >> 32) as u32, 0, 1),
        ret(RET_ALLOW),
        ld(OFF_NR),
        jset(X32_SYSCALL_BIT, 0, 1),
        ret(RET_USER_NOTIF),
    ];
    // mmap: allowed only for MAP_ANONYMOUS without MAP_SHARED (arg 3, low word).
    let mmap = libc::SYS_mmap as u32;
    p.extend([
        jeq(mmap, 0, 5),
        ld(OFF_ARG3_LO),
        jset(libc::MAP_SHARED as u32, 2, 0),
        jset(libc::MAP_ANONYMOUS as u32, 0, 1),
        ret(RET_ALLOW),
        ret(RET_USER_NOTIF),
    ]);
    for &nr in local.iter().filter(|n| **n != mmap) {
        p.push(jeq(nr, 0, 1));
        p.push(ret(RET_ALLOW));
    }
    p.push(ret(RET_USER_NOTIF));
    p
}

/// The program as bytes in `struct sock_filter` layout (8 bytes per instruction, little-endian).
pub fn to_bytes(prog: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prog.len() * 8);
    for i in prog {
        out.extend_from_slice(&i.code.to_le_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_le_bytes());
    }
    out
}

/// Runs the program on a `seccomp_data` (a minimal classic-BPF interpreter for the instructions
/// `build` emits), so the filter's decisions are tested without a kernel.
pub fn run(prog: &[Insn], nr: u32, arch: u32, ip: u64, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            OFF_NR => nr,
            OFF_ARCH => arch,
            OFF_IP_LO => ip as u32,
            OFF_IP_HI => (ip >> 32) as u32,
            o if (16..64).contains(&o) => {
                let a = args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            _ => panic!("load outside seccomp_data"),
        }
    };
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            BPF_LD_W_ABS => acc = word(i.k),
            BPF_JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
            BPF_JSET_K => pc += usize::from(if acc & i.k != 0 { i.jt } else { i.jf }),
            BPF_RET_K => return i.k,
            c => panic!("unknown BPF code {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{self, Disposition};

    const GADGET: u64 = 0x7fff_1234_5678;

    #[test]
    fn every_number_gets_the_policy_decision() {
        let prog = build(GADGET, &policy::local_numbers());
        for nr in 0..crate::syscall_names::NAMES.len() as u32 + 10 {
            for flags in [libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, libc::MAP_PRIVATE, libc::MAP_SHARED | libc::MAP_ANONYMOUS] {
                let args = [0, 4096, 3, flags as u64, 0, 0];
                let want = match policy::classify(nr, &args) {
                    Disposition::Local(_) => RET_ALLOW,
                    _ => RET_USER_NOTIF,
                };
                assert_eq!(run(&prog, nr, AUDIT_ARCH_X86_64, 0x400000, args), want, "nr {nr} flags {flags:#x}");
            }
        }
    }

    #[test]
    fn gadget_calls_pass_and_foreign_abis_are_caught() {
        let prog = build(GADGET, &policy::local_numbers());
        assert_eq!(run(&prog, libc::SYS_openat as u32, AUDIT_ARCH_X86_64, GADGET, [0; 6]), RET_ALLOW);
        assert_eq!(run(&prog, libc::SYS_openat as u32, AUDIT_ARCH_X86_64, GADGET + (1 << 32), [0; 6]), RET_USER_NOTIF);
        assert_eq!(run(&prog, libc::SYS_brk as u32, 0x4000_0003, 0, [0; 6]), RET_USER_NOTIF);
        assert_eq!(run(&prog, libc::SYS_brk as u32 | X32_SYSCALL_BIT, AUDIT_ARCH_X86_64, 0, [0; 6]), RET_USER_NOTIF);
    }

    #[test]
    fn encoding_is_sock_filter_layout() {
        assert_eq!(to_bytes(&[ret(RET_ALLOW)]), vec![0x06, 0, 0, 0, 0, 0, 0xff, 0x7f]);
    }
}
