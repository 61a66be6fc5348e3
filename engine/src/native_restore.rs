//! Native restore: a stub restores *itself* with mosix.ko's `MOSIX_IOC_RESTORE`, no ptrace.
//!
//! The caller stages the image (areas, context, and where the pages are in the checkpoint file:
//! they are not copied), then forks a stub that
//! runs a small position-independent program (the runner, [`RUNNER`]) from a scratch area placed
//! where neither the caller nor the image has memory. The runner loads the image's FPU state
//! (XRSTOR), then executes a list of system calls prepared by the caller: descriptors, working
//! directory, name, signal actions, alternate stack, limits, the mm fields (PR_SET_MM_MAP), its own
//! memory unmapped and its vDSO/vvar moved to the image's addresses, the FS/GS bases; the last is
//! the ioctl, in which the module maps the image's areas, fills them from the memory file, sets
//! the registers and the signal mask, and returns into the image (parked until the caller thaws it).
//! A call that fails stops the runner: it writes the failing entry to a pipe and exits, and the
//! caller reports which step failed and why. The module reads the pages from the file.
//!
//! Only the stop-and-copy part of a stream is taken (`Vmas`, `Pages`, `Context`): checkpoint
//! recovery and stop-and-copy moves. Pre-copy and post-copy receivers fill a live stub while the
//! process still runs at home, which this does not do (they use the portable engine).
#![allow(unsafe_code)]
use crate::checkpoint::{self, FdStep, Loaded};
use crate::native::{self, Parked, RawRestore, IOC_RESTORE};
use crate::{mem, procfs, Error};
use mos_proto::frame::{self, Kind};
use mos_proto::migration::*;
use mos_proto::pages;
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// The runner, entered with r14 = the call table, r12 = the XSAVE image (0: none), r13 = the
/// status pipe (assembled from):
/// ```text
///       test r12,r12; jz loop; mov eax,-1; mov edx,-1; xrstor64 [r12]
/// loop: mov rax,[r14]; mov rdi,[r14+8]; mov rsi,[r14+16]; mov rdx,[r14+24]
///       mov r10,[r14+32]; mov r8,[r14+40]; mov r9,[r14+48]; syscall
///       mov rcx,[r14+56]; cmp rcx,2; je next           ; check 2: any result
///       cmp rcx,1; je nonneg                          ; check 1: not an error
///       cmp rax,[r14+64]; jne fail; jmp next           ; check 0: exactly [r14+64]
/// nonneg: cmp rax,-4095; jae fail
/// next: add r14,72; jmp loop
/// fail: mov [r14+64],rax; write(r13, r14, 72); exit_group(125); ud2
/// ```
const RUNNER: [u8; 123] = [
    0x4d, 0x85, 0xe4, 0x74, 0x0f, 0xb8, 0xff, 0xff, 0xff, 0xff, 0xba, 0xff, 0xff, 0xff, 0xff, 0x49, 0x0f, 0xae, 0x2c, 0x24, 0x49, 0x8b,
    0x06, 0x49, 0x8b, 0x7e, 0x08, 0x49, 0x8b, 0x76, 0x10, 0x49, 0x8b, 0x56, 0x18, 0x4d, 0x8b, 0x56, 0x20, 0x4d, 0x8b, 0x46, 0x28, 0x4d,
    0x8b, 0x4e, 0x30, 0x0f, 0x05, 0x49, 0x8b, 0x4e, 0x38, 0x48, 0x83, 0xf9, 0x02, 0x74, 0x16, 0x48, 0x83, 0xf9, 0x01, 0x74, 0x08, 0x49,
    0x3b, 0x46, 0x40, 0x75, 0x10, 0xeb, 0x08, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73, 0x06, 0x49, 0x83, 0xc6, 0x48, 0xeb, 0xbd, 0x49,
    0x89, 0x46, 0x40, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x4c, 0x89, 0xef, 0x4c, 0x89, 0xf6, 0xba, 0x48, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8,
    0xe7, 0x00, 0x00, 0x00, 0xbf, 0x7d, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x0f, 0x0b,
];
/// Bytes of one call-table entry: nr, 6 arguments, check, expected value / result.
const ENTRY: usize = 72;
/// The runner's exit status after a failed call.
const FAILED_EXIT: i32 = 125;
/// The end of the x86-64 user address space (4-level paging).
const USER_TOP: u64 = 0x7fff_ffff_f000;
const PAGE: u64 = 4096;
/// glibc's rseq signature on x86.
const RSEQ_SIG: u64 = 0x5305_3053;
/// A value no system call returns: the restore ioctl "returns" only into the image.
const NEVER: u64 = 0x8000_0000_0000_0000;

/// What a call's result must be for the runner to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    Eq(u64),
    Ok,
    Any,
}

/// How a failed step is reported.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Plain(String),
    Reopen { fd: u32, path: String },
    Seek { fd: u32, path: String, offset: u64 },
    Chdir(String),
}

/// A call table and its data, laid out in a scratch area at `base`: the runner at `base`, the
/// table after it, the data after the table.
pub(crate) struct Program {
    base: u64,
    len: u64,
    table_at: u64,
    cap: usize,
    entries: Vec<[u64; 9]>,
    steps: Vec<Step>,
    data_at: u64,
    data: Vec<u8>,
    /// The stub's status pipe (the runner reports a failed step there).
    status_fd: u64,
}

impl Program {
    pub(crate) fn new(base: u64, len: u64, cap: usize) -> Program {
        let table_at = base + PAGE;
        let data_at = (table_at + (cap * ENTRY) as u64 + 63) & !63;
        Program { base, len, table_at, cap, entries: Vec::new(), steps: Vec::new(), data_at, data: Vec::new(), status_fd: 0 }
    }

    pub(crate) fn call(&mut self, step: Step, nr: i64, args: [u64; 6], check: Check) -> Result<(), Error> {
        if self.entries.len() == self.cap {
            return Err(Error::Restore("native restore: too many steps for the call table".into()));
        }
        let (kind, want) = match check {
            Check::Eq(v) => (0, v),
            Check::Ok => (1, 0),
            Check::Any => (2, 0),
        };
        let [a0, a1, a2, a3, a4, a5] = args;
        self.entries.push([nr as u64, a0, a1, a2, a3, a4, a5, kind, want]);
        self.steps.push(step);
        Ok(())
    }

    fn plain(&mut self, what: &str, nr: i64, args: [u64; 6], check: Check) -> Result<(), Error> {
        self.call(Step::Plain(what.into()), nr, args, check)
    }

    /// Copies `b` into the data area (aligned to `align`): its address in the scratch area.
    pub(crate) fn put(&mut self, b: &[u8], align: usize) -> Result<u64, Error> {
        while !self.data.len().is_multiple_of(align) {
            self.data.push(0);
        }
        let at = self.data_at + self.data.len() as u64;
        if at + b.len() as u64 > self.base + self.len {
            return Err(Error::Restore("native restore: the scratch area is too small".into()));
        }
        self.data.extend_from_slice(b);
        Ok(at)
    }

    fn cstr(&mut self, s: &str) -> Result<u64, Error> {
        if s.contains('\0') {
            return Err(Error::Restore(format!("path contains a NUL byte: {s}")));
        }
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(&b, 1)
    }

    fn words(&mut self, w: &[u64], align: usize) -> Result<u64, Error> {
        let b: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.put(&b, align)
    }

    /// The scratch area's bytes: runner, table, data.
    fn image(&self) -> Vec<u8> {
        let mut m = vec![0u8; self.len as usize];
        m[..RUNNER.len()].copy_from_slice(&RUNNER);
        let t = (self.table_at - self.base) as usize;
        for (i, e) in self.entries.iter().enumerate() {
            for (j, w) in e.iter().enumerate() {
                m[t + i * ENTRY + j * 8..t + i * ENTRY + j * 8 + 8].copy_from_slice(&w.to_le_bytes());
            }
        }
        let d = (self.data_at - self.base) as usize;
        m[d..d + self.data.len()].copy_from_slice(&self.data);
        m
    }

    /// The error for the failed entry the runner reported.
    fn failure(&self, rec: &[u8]) -> Error {
        let w: Vec<u64> = rec.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        let Some(i) = self.entries.iter().position(|e| e[..8] == w[..8]) else {
            return Error::Restore("native restore: the stub reported an unknown step".into());
        };
        let got = w[8] as i64;
        let errno = nix::errno::Errno::from_raw(if (-4095..0).contains(&got) { (-got) as i32 } else { 0 });
        match &self.steps[i] {
            Step::Reopen { fd, path } => checkpoint::reopen_failed(*fd, path, errno),
            Step::Seek { fd, path, offset } => checkpoint::seek_failed(*fd, path, *offset, errno),
            Step::Chdir(cwd) => checkpoint::chdir_failed(cwd, errno),
            Step::Plain(what) if got < 0 && got > -4096 => Error::Restore(format!("native restore: {what} failed: {errno}")),
            Step::Plain(what) => Error::Restore(format!("native restore: {what} returned {got:#x}, expected {:#x}", self.entries[i][8])),
        }
    }
}

/// An image staged for a native restore: its areas and context, and where its pages are in a
/// file (the checkpoint file itself: nothing is copied before the restore).
pub struct Staged {
    pub vmas: Vmas,
    pub ctx: Context,
    /// (address, length, offset in `pages`).
    runs: Vec<[u64; 3]>,
    pages: OwnedFd,
    pub bytes: u64,
}

/// Reads the memory map, the run tables of the `Pages` frames and the `Context` from a checkpoint
/// positioned at its memory map, skipping over the page bytes: the module reads them from the
/// file. The caller has verified the whole file (its SHA-256 trailer) before.
pub fn stage_file(r: &mut std::io::BufReader<std::fs::File>) -> Result<Staged, Error> {
    use std::io::{Seek, SeekFrom};
    let io = |e: std::io::Error| Error::Restore(format!("cannot read the checkpoint: {e}"));
    let vmas: Vmas = frame::read_frame(r)?.expect(Kind::Vmas)?;
    let mut runs = Vec::new();
    let mut bytes = 0u64;
    loop {
        let pos = r.stream_position().map_err(io)?;
        let mut h = [0u8; frame::HEADER_LEN];
        r.read_exact(&mut h).map_err(io)?;
        let hdr = frame::Header::decode(&h)?;
        if hdr.kind != Kind::Pages {
            r.seek(SeekFrom::Start(pos)).map_err(io)?;
            let f = frame::read_frame(r)?;
            return match f.kind {
                Kind::Context => {
                    let ctx: Context = f.decode()?;
                    let pages = r.get_ref().try_clone().map_err(io)?;
                    Ok(Staged { vmas, ctx, runs, pages: OwnedFd::from(pages), bytes })
                }
                other => Err(Error::Restore(format!("native restore takes a stop-and-copy image; got a {other:?} frame"))),
            };
        }
        let mut count = [0u8; 4];
        r.read_exact(&mut count).map_err(io)?;
        let n = (u32::from_le_bytes(count) as usize).min(pages::MAX_RUNS + 1);
        let mut table = vec![0u8; 4 + n * 12];
        table[..4].copy_from_slice(&count);
        r.read_exact(&mut table[4..]).map_err(io)?;
        let (rs, tlen) = pages::decode_table(&table)?;
        let data: u64 = rs.iter().map(|x| x.bytes() as u64).sum();
        if u64::from(hdr.len) != tlen as u64 + data {
            return Err(Error::Restore(format!("a Pages frame of {} bytes holds {tlen} + {data}", hdr.len)));
        }
        let mut at = pos + frame::HEADER_LEN as u64 + tlen as u64;
        for run in &rs {
            runs.push([run.addr, run.bytes() as u64, at]);
            at += run.bytes() as u64;
        }
        bytes += data;
        r.seek(SeekFrom::Current(data as i64)).map_err(io)?;
    }
}

/// This node's CPU identity as the module-less check sees it: XSAVE size and features from CPUID
/// and XCR0, the vDSO of this process. `None` if it cannot be read.
fn local_cpu() -> Option<CpuInfo> {
    // SAFETY: CPUID leaf 0xD and XGETBV(0) exist on every x86-64 CPU with XSAVE, which the
    // portable engine already requires (it reads NT_X86_XSTATE); checked with leaf 1 first.
    let (len, feats) = unsafe {
        use std::arch::x86_64::__cpuid_count;
        if __cpuid_count(1, 0).ecx & (1 << 27) == 0 {
            return None; // no OSXSAVE
        }
        let mut lo: u32;
        let mut hi: u32;
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack));
        (__cpuid_count(0xd, 0).ebx, u64::from(lo) | (u64::from(hi) << 32))
    };
    let me = Pid::this();
    let maps = procfs::maps(me).ok()?;
    let vdso = maps.iter().find(|m| m.name == "[vdso]")?;
    let bytes = mem::read_mem(me, vdso.start, vdso.len() as usize).ok()?;
    Some(CpuInfo { xstate_len: len, xfeatures: feats, vdso_hash: fnv1a(&bytes), vdso_len: vdso.len() })
}

/// Whether this node can restore `offer` natively (else the portable engine does).
pub fn fits(offer: &Offer) -> Result<(), String> {
    let here = local_cpu().ok_or("cannot read this node's CPU state")?;
    // The image's features are the software-reserved word of its XSAVE image, which the kernel
    // may leave zero: compared when present (the length is always).
    if here.xstate_len != offer.cpu.xstate_len || (offer.cpu.xfeatures != 0 && here.xfeatures != offer.cpu.xfeatures) {
        return Err(format!(
            "CPU state differs: xstate {} bytes / features {:#x} here, {} / {:#x} in the image",
            here.xstate_len, here.xfeatures, offer.cpu.xstate_len, offer.cpu.xfeatures
        ));
    }
    if here.vdso_hash != offer.cpu.vdso_hash || here.vdso_len != offer.cpu.vdso_len {
        return Err("the vDSO differs: nodes must run the same kernel build".into());
    }
    Ok(())
}

/// Lowest address >= 4 GiB where `len` bytes are free of every range in `used`.
fn free_spot(used: &[(u64, u64)], len: u64) -> Result<u64, Error> {
    let mut a: u64 = 0x1_0000_0000;
    while a + len < 0x7ff0_0000_0000 {
        match used.iter().find(|(s, l)| a < s + l && *s < a + len) {
            None => return Ok(a),
            Some((s, l)) => a = (s + l + 0xffff) & !0xffff,
        }
    }
    Err(Error::Restore("no free address range for the native restore's scratch area".into()))
}

/// The lowest descriptor not in `used`.
fn lowest_free(used: &BTreeSet<u64>) -> u64 {
    (0..).find(|n| !used.contains(n)).expect("a free descriptor")
}

/// The descriptors the stub keeps while it runs (numbers in the stub).
struct Fds {
    /// Base: the stub's copy of mosrun's stdio goes to base+0..2, then the staging file, the
    /// module's descriptor and the status pipe.
    base: u64,
}
impl Fds {
    fn stdio(&self, of: usize) -> u64 {
        self.base + of as u64
    }
    fn pages(&self) -> u64 {
        self.base + 3
    }
    fn module(&self) -> u64 {
        self.base + 4
    }
    fn status(&self) -> u64 {
        self.base + 5
    }
}

/// The special areas of this process (the stub is its fork): name, start, length.
fn own_specials() -> Result<Vec<(String, u64, u64)>, Error> {
    Ok(procfs::maps(Pid::this())?
        .into_iter()
        .filter(|m| m.is_special() && m.name != "[vsyscall]")
        .map(|m| (m.name.clone(), m.start, m.len()))
        .collect())
}

fn special_name(k: SpecialKind) -> &'static str {
    match k {
        SpecialKind::Vdso => "[vdso]",
        SpecialKind::Vvar => "[vvar]",
        SpecialKind::VvarVclock => "[vvar_vclock]",
    }
}

/// The descriptors this process has open now: whether 0-2 are, and the highest.
fn own_fds() -> ([bool; 3], u64) {
    let mut open = [false; 3];
    let mut max = 2;
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        for e in d.flatten() {
            if let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                if n < 3 {
                    open[n as usize] = true;
                }
                max = max.max(n);
            }
        }
    }
    (open, max)
}

/// What the stub needs besides the image.
pub struct Setup<'a> {
    pub loaded: &'a Loaded,
    pub overrides: &'a [(u32, PathBuf)],
}

/// Adds the calls that unregister the stub's rseq area and unmap everything of the stub but the
/// scratch area and its kernel areas.
/// Returns those areas (name, start, length) and the kept ranges.
#[allow(clippy::type_complexity)]
fn unmap_stub(p: &mut Program) -> Result<(Vec<(String, u64, u64)>, Vec<(u64, u64)>), Error> {
    // This process's rseq area (the stub's, inherited) goes with its memory: unregister it first,
    // or the kernel's next write of the CPU number there (after a preemption) kills the stub. The
    // registered length is glibc's; one of the two forms matches, the other fails harmlessly.
    if let Some(area) = own_rseq() {
        for len in [32u64, own_rseq_size()] {
            p.plain("rseq(unregister)", libc::SYS_rseq, [area, len, 1, RSEQ_SIG, 0, 0], Check::Any)?;
        }
    }
    let mine = own_specials()?;
    let mut keep: Vec<(u64, u64)> = mine.iter().map(|(_, s, l)| (*s, s + l)).collect();
    keep.push((p.base, p.base + p.len));
    keep.sort_unstable();
    let mut at = 0;
    for &(s, e) in keep.iter().chain([(USER_TOP, USER_TOP)].iter()) {
        if s > at {
            p.plain("munmap(stub)", libc::SYS_munmap, [at, s - at, 0, 0, 0, 0], Check::Eq(0))?;
        }
        at = at.max(e);
    }
    Ok((mine, keep))
}

/// Builds the call table for restoring `img` in a fork of this process, the scratch area at
/// `base` (`len` bytes). `inherited` = (staging file, module, status pipe) in this process.
fn build(img: &Staged, setup: &Setup, base: u64, len: u64, inherited: (i32, i32, i32)) -> Result<Program, Error> {
    let l = setup.loaded;
    let ctx = &img.ctx;
    let steps = checkpoint::fd_steps(l, setup.overrides);
    let (stdio_open, own_max) = own_fds();
    for s in &steps {
        if let FdStep::Stdio { fd, of, .. } = s {
            if !stdio_open[*of] {
                return Err(checkpoint::stdio_closed(*fd, *of));
            }
        }
    }
    let fds = Fds { base: checkpoint::stdio_base(l).max(own_max + 1) };
    let cap = 256 + steps.len() * 4 + img.vmas.vmas.len() + ctx.rlimits.len();
    let mut p = Program::new(base, len, cap);
    p.status_fd = fds.status();

    // Signals off while the stub is neither itself nor the image; the module sets the image's.
    let all = p.words(&[u64::MAX], 8)?;
    p.plain("block signals", libc::SYS_rt_sigprocmask, [libc::SIG_SETMASK as u64, all, 0, 8, 0, 0], Check::Eq(0))?;
    // Descriptors: the status pipe first (failures are reported through it), then the others.
    let (pages_fd, module_fd, status_fd) = inherited;
    let dup = |p: &mut Program, what: &str, from: u64, to: u64| {
        p.plain(what, libc::SYS_dup3, [from, to, libc::O_CLOEXEC as u64, 0, 0, 0], Check::Eq(to))
    };
    dup(&mut p, "dup3(status pipe)", status_fd as u64, fds.status())?;
    dup(&mut p, "dup3(staging file)", pages_fd as u64, fds.pages())?;
    dup(&mut p, "dup3(/dev/mosix)", module_fd as u64, fds.module())?;
    for (of, open) in stdio_open.iter().enumerate() {
        if *open {
            dup(&mut p, "dup3(stdio)", of as u64, fds.stdio(of))?;
        }
    }
    p.plain("close_range(low)", libc::SYS_close_range, [0, fds.base - 1, 0, 0, 0, 0], Check::Eq(0))?;
    p.plain("close_range(high)", libc::SYS_close_range, [fds.base + 6, u64::from(u32::MAX), 0, 0, 0, 0], Check::Eq(0))?;
    let mut used: BTreeSet<u64> = (0..6).map(|i| fds.base + i).collect();
    for s in &steps {
        match s {
            FdStep::Stdio { fd, of, cloexec } => {
                let flags = if *cloexec { libc::O_CLOEXEC as u64 } else { 0 };
                p.plain("dup3(stdio)", libc::SYS_dup3, [fds.stdio(*of), u64::from(*fd), flags, 0, 0, 0], Check::Eq(u64::from(*fd)))?;
                used.insert(u64::from(*fd));
            }
            FdStep::Open { fd, path, flags, cloexec, seek } => {
                let at = p.cstr(path)?;
                let got = lowest_free(&used);
                p.call(
                    Step::Reopen { fd: *fd, path: path.clone() },
                    libc::SYS_open,
                    [at, u64::from(*flags), 0o666, 0, 0, 0],
                    Check::Eq(got),
                )?;
                let fd64 = u64::from(*fd);
                if got != fd64 {
                    let f = if *cloexec { libc::O_CLOEXEC as u64 } else { 0 };
                    p.plain("dup3", libc::SYS_dup3, [got, fd64, f, 0, 0, 0], Check::Eq(fd64))?;
                    p.plain("close", libc::SYS_close, [got, 0, 0, 0, 0, 0], Check::Eq(0))?;
                } else if !cloexec {
                    p.plain("fcntl(F_SETFD)", libc::SYS_fcntl, [fd64, libc::F_SETFD as u64, 0, 0, 0, 0], Check::Eq(0))?;
                }
                used.insert(fd64);
                if let Some(off) = seek {
                    p.call(
                        Step::Seek { fd: *fd, path: path.clone(), offset: *off },
                        libc::SYS_lseek,
                        [fd64, *off, libc::SEEK_SET as u64, 0, 0, 0],
                        Check::Eq(*off),
                    )?;
                }
            }
        }
    }
    for of in 0..3 {
        p.plain("close(stdio)", libc::SYS_close, [fds.stdio(of), 0, 0, 0, 0, 0], Check::Any)?;
        used.remove(&fds.stdio(of));
    }
    let cwd = p.cstr(&l.header.cwd)?;
    p.call(Step::Chdir(l.header.cwd.clone()), libc::SYS_chdir, [cwd, 0, 0, 0, 0, 0], Check::Eq(0))?;
    p.plain("umask", libc::SYS_umask, [u64::from(l.header.umask & 0o777), 0, 0, 0, 0, 0], Check::Any)?;

    // Task state that does not depend on the address space.
    let mut comm = ctx.comm.as_bytes()[..ctx.comm.len().min(15)].to_vec();
    comm.push(0);
    let comm = p.put(&comm, 1)?;
    p.plain("prctl(PR_SET_NAME)", libc::SYS_prctl, [libc::PR_SET_NAME as u64, comm, 0, 0, 0, 0], Check::Eq(0))?;
    p.plain("personality", libc::SYS_personality, [u64::from(ctx.personality), 0, 0, 0, 0, 0], Check::Ok)?;
    if let Some((head, len)) = ctx.robust_list {
        p.plain("set_robust_list", libc::SYS_set_robust_list, [head, len, 0, 0, 0, 0], Check::Eq(0))?;
    }
    p.plain("set_tid_address", libc::SYS_set_tid_address, [ctx.tid_address, 0, 0, 0, 0, 0], Check::Any)?;
    for sig in (1..=64u8).filter(|s| *s != 9 && *s != 19) {
        let a = ctx.sigactions.iter().find(|a| a.sig == sig);
        let w = a.map_or([0; 4], |a| [a.handler, a.flags, a.restorer, a.mask]);
        let at = p.words(&w, 8)?;
        p.plain("rt_sigaction", libc::SYS_rt_sigaction, [u64::from(sig), at, 0, 8, 0, 0], Check::Eq(0))?;
    }
    let (sp, flags, size) = match &ctx.altstack {
        Some(a) => (a.sp, a.flags, a.size),
        None => (0, libc::SS_DISABLE, 0),
    };
    let ss = p.words(&[sp, u64::from(flags as u32), size], 8)?;
    p.plain("sigaltstack", libc::SYS_sigaltstack, [ss, 0, 0, 0, 0, 0], Check::Eq(0))?;
    for &(r, cur, max) in &ctx.rlimits {
        if u32::from(r) != libc::RLIMIT_CORE {
            let lim = p.words(&[cur, max], 8)?;
            p.plain("prlimit64", libc::SYS_prlimit64, [0, u64::from(r), lim, 0, 0, 0], Check::Any)?;
        }
    }

    let (mine, keep) = unmap_stub(&mut p)?;
    // The kernel areas to the image's addresses, through free places (one may sit where another goes).
    let mut used_ranges: Vec<(u64, u64)> = keep.iter().map(|(s, e)| (*s, e - s)).collect();
    used_ranges.extend(img.vmas.special.iter().map(|s| (s.start, s.len)));
    used_ranges.extend(img.vmas.vmas.iter().map(|v| (v.start, v.end - v.start)));
    let mut moves = Vec::new();
    for s in &img.vmas.special {
        let name = special_name(s.kind);
        let (_, from, len) =
            mine.iter().find(|(n, _, _)| n == name).ok_or_else(|| Error::Restore(format!("this node has no {name} area")))?;
        if *len != s.len {
            return Err(Error::Restore(format!("{name} is {len} bytes here, {} in the image", s.len)));
        }
        if *from != s.start {
            let tmp = free_spot(&used_ranges, s.len)?;
            used_ranges.push((tmp, s.len));
            moves.push((*from, tmp, s.start, s.len));
        }
    }
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    for pass in 0..2 {
        for &(from, tmp, to, len) in &moves {
            let (a, b) = if pass == 0 { (from, tmp) } else { (tmp, to) };
            p.plain("mremap(kernel area)", libc::SYS_mremap, [a, len, len, flags, b, 0], Check::Eq(b))?;
        }
    }
    // The mm fields, and /proc/PID/exe where allowed (the old one is no longer mapped).
    let exe = p.cstr(&l.offer.exe)?;
    let exe_fd = lowest_free(&used);
    p.plain("open(exe)", libc::SYS_open, [exe, (libc::O_RDONLY | libc::O_CLOEXEC) as u64, 0, 0, 0, 0], Check::Any)?;
    if ctx.auxv.len() > 4096 {
        return Err(Error::Restore(format!("auxv of {} bytes is too large", ctx.auxv.len())));
    }
    let auxv = p.put(&ctx.auxv, 8)?;
    let map = |exe: u32| crate::restore::prctl_mm_map(ctx, auxv, exe);
    let with_exe = p.put(&map(exe_fd as u32), 8)?;
    let without = p.put(&map(u32::MAX), 8)?;
    let set_mm = [libc::PR_SET_MM as u64, libc::PR_SET_MM_MAP as u64];
    p.plain("prctl(PR_SET_MM_MAP, exe)", libc::SYS_prctl, [set_mm[0], set_mm[1], with_exe, 104, 0, 0], Check::Any)?;
    p.plain("prctl(PR_SET_MM_MAP)", libc::SYS_prctl, [set_mm[0], set_mm[1], without, 104, 0, 0], Check::Eq(0))?;
    p.plain("close(exe)", libc::SYS_close, [exe_fd, 0, 0, 0, 0, 0], Check::Any)?;
    // FS and GS bases (the module leaves segment state alone).
    let regs = &ctx.regs;
    if regs.len() != NREGS {
        return Err(Error::Restore(format!("context has {} registers", regs.len())));
    }
    p.plain("arch_prctl(ARCH_SET_FS)", libc::SYS_arch_prctl, [0x1002, regs[21], 0, 0, 0, 0], Check::Eq(0))?;
    p.plain("arch_prctl(ARCH_SET_GS)", libc::SYS_arch_prctl, [0x1001, regs[22], 0, 0, 0, 0], Check::Eq(0))?;

    // The module's part: areas, pages, registers.
    let mut files: Vec<Option<u64>> = vec![None; l.offer.files.len()];
    let mut close = vec![fds.pages() as u32, fds.module() as u32, fds.status() as u32];
    let mut areas = Vec::with_capacity(img.vmas.vmas.len() * 40);
    for v in &img.vmas.vmas {
        let prot = crate::restore::prot_flags(v.prot) as u32;
        let (kind, fd, offset) = match &v.backing {
            Backing::Anon => (0u32, -1i32, 0u64),
            Backing::Stack => (1, -1, 0),
            Backing::File { file, offset } => {
                let i = *file as usize;
                let f =
                    l.offer.files.get(i).ok_or_else(|| Error::Restore(format!("VMA names file {i}, offer has {}", l.offer.files.len())))?;
                let fd = match files[i] {
                    Some(fd) => fd,
                    None => {
                        let got = lowest_free(&used);
                        let path = p.cstr(&f.path)?;
                        p.call(
                            Step::Plain(format!("open(mapped file {})", f.path)),
                            libc::SYS_open,
                            [path, (libc::O_RDONLY | libc::O_CLOEXEC) as u64, 0, 0, 0, 0],
                            Check::Eq(got),
                        )?;
                        used.insert(got);
                        files[i] = Some(got);
                        close.push(got as u32);
                        got
                    }
                };
                (2, fd as i32, *offset)
            }
        };
        for w in [v.start, v.end, offset] {
            areas.extend_from_slice(&w.to_le_bytes());
        }
        for w in [prot, kind, fd as u32, 0] {
            areas.extend_from_slice(&w.to_le_bytes());
        }
    }
    let areas_at = p.put(&areas, 8)?;
    let runs: Vec<u64> = img.runs.iter().flatten().copied().collect();
    let runs_at = p.words(&runs, 8)?;
    let keep_img: Vec<u64> = img.vmas.special.iter().flat_map(|s| [s.start, s.start + s.len]).collect();
    let keep_at = p.words(&keep_img, 8)?;
    let close_b: Vec<u8> = close.iter().flat_map(|c| c.to_le_bytes()).collect();
    let close_at = p.put(&close_b, 4)?;
    let mut rr = [0u64; 27];
    rr.copy_from_slice(regs);
    let req = RawRestore {
        size: std::mem::size_of::<RawRestore>() as u32,
        flags: 0,
        pages_fd: fds.pages() as i32,
        n_areas: img.vmas.vmas.len() as u32,
        areas: areas_at,
        runs: runs_at,
        n_runs: img.runs.len() as u32,
        n_keep: img.vmas.special.len() as u32,
        keep: keep_at,
        regs: rr,
        sigmask: ctx.sigmask,
        rseq: ctx.rseq.as_ref().map_or(0, |r| r.ptr),
        rseq_len: ctx.rseq.as_ref().map_or(0, |r| r.len),
        rseq_sig: ctx.rseq.as_ref().map_or(0, |r| r.sig),
        close: close_at,
        n_close: close.len() as u32,
        reserved0: 0,
        reserved: 0,
    };
    // SAFETY: `RawRestore` is `#[repr(C)]` integers without padding (size asserted in native.rs):
    // viewing it as bytes reads only initialized memory.
    let req_b = unsafe { std::slice::from_raw_parts((&req as *const RawRestore).cast::<u8>(), std::mem::size_of::<RawRestore>()) };
    let req_at = p.put(req_b, 8)?;
    p.plain("MOSIX_IOC_RESTORE", libc::SYS_ioctl, [fds.module(), IOC_RESTORE, req_at, 0, 0, 0], Check::Eq(NEVER))?;
    Ok(p)
}

extern "C" {
    /// glibc (>= 2.35): offset of the thread's rseq area from the thread pointer, and its size.
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// This thread's rseq area, if glibc registered one.
fn own_rseq() -> Option<u64> {
    // SAFETY: glibc's exported constants, written once at startup.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return None;
    }
    let tp: u64;
    // SAFETY: reads the thread pointer (the TCB's self pointer at fs:0, as glibc sets it up).
    unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
    Some(tp.wrapping_add(off as u64))
}

fn own_rseq_size() -> u64 {
    // SAFETY: as in `own_rseq`.
    u64::from(unsafe { __rseq_size })
}

/// The scratch area's size for `img`: runner page, table, data (paths, signal actions, areas,
/// runs, XSAVE image, request), rounded to pages.
fn scratch_len(img: &Staged, setup: &Setup) -> u64 {
    let paths: usize = setup.loaded.files.fds.len() * 4096 + setup.loaded.offer.files.iter().map(|f| f.path.len() + 1).sum::<usize>();
    let cap = 256 + setup.loaded.files.fds.len() * 4 + img.vmas.vmas.len() + img.ctx.rlimits.len();
    let n = PAGE as usize
        + cap * ENTRY
        + 64 * 1024
        + paths
        + img.vmas.vmas.len() * 40
        + img.runs.len() * 24
        + img.ctx.xstate.len()
        + setup.loaded.offer.exe.len()
        + setup.loaded.header.cwd.len();
    ((n as u64) + PAGE - 1) & !(PAGE - 1)
}

/// Restores `img` into a new child of this process (no ptrace): returns it parked (thaw it, or
/// hand it to ptrace). On `Err` nothing is left behind. The caller has checked [`fits`].
pub fn restore_child(img: &Staged, setup: &Setup) -> Result<Parked, Error> {
    let module = native::open().map_err(|e| Error::Restore(format!("cannot open /dev/mosix: {e}")))?;
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Sys { what: "pipe2", pid: 0, errno: e })?;
    let len = scratch_len(img, setup);
    let mut used: Vec<(u64, u64)> = procfs::maps(Pid::this())?.iter().map(|m| (m.start, m.len())).collect();
    used.extend(img.vmas.vmas.iter().map(|v| (v.start, v.end - v.start)));
    used.extend(img.vmas.special.iter().map(|s| (s.start, s.len)));
    // The scratch area, mapped here at a place free in both layouts (a thread may take a place
    // meanwhile: then the next one).
    let (base, map) = loop {
        let base = free_spot(&used, len)?;
        // SAFETY: a fresh private anonymous mapping at a free address (MAP_FIXED_NOREPLACE never
        // replaces anything); it aliases no Rust object.
        let m = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if m == libc::MAP_FAILED {
            if nix::errno::Errno::last() == nix::errno::Errno::EEXIST {
                used.push((base, len));
                continue;
            }
            return Err(Error::Sys { what: "mmap(scratch)", pid: 0, errno: nix::errno::Errno::last() });
        }
        break (base, m);
    };
    let unmap = || {
        // SAFETY: the mapping made above, not referenced after this.
        unsafe { libc::munmap(map, len as usize) };
    };
    let prog = match build(img, setup, base, len, (img.pages.as_raw_fd(), module.as_raw_fd(), status_w.as_raw_fd())) {
        Ok(p) => p,
        Err(e) => {
            unmap();
            return Err(e);
        }
    };
    let bytes = prog.image();
    // The XSAVE image, 64-byte aligned, at the end of the data.
    let xsave = base + len - ((img.ctx.xstate.len() as u64 + 63) & !63) - 64;
    let xsave = xsave & !63;
    if xsave < prog.data_at + prog.data.len() as u64 {
        unmap();
        return Err(Error::Restore("native restore: the scratch area is too small for the XSAVE image".into()));
    }
    // SAFETY: `map` is `len` bytes, writable, owned here; `bytes` is `len` long and the XSAVE image
    // lies inside the mapping (checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.cast::<u8>(), bytes.len());
        std::ptr::copy_nonoverlapping(img.ctx.xstate.as_ptr(), (xsave as *mut u8).cast(), img.ctx.xstate.len());
    }
    let (table, status_fd) = (prog.table_at, prog.status_fd);
    let xsave_arg = if img.ctx.xstate.is_empty() { 0 } else { xsave };
    // SAFETY: the child runs only the runner (no allocation, no lock: async-signal-safe after a
    // fork of a threaded process); it never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: jumps to the runner in the scratch area (mapped executable), with the stack
        // pointer in that area too; the runner never returns.
        unsafe {
            std::arch::asm!(
                "mov rsp, {sp}",
                "jmp {entry}",
                sp = in(reg) base + PAGE - 64,
                entry = in(reg) base,
                in("r14") table,
                in("r12") xsave_arg,
                in("r13") status_fd,
                options(noreturn)
            )
        }
    }
    unmap();
    drop(status_w);
    if pid < 0 {
        return Err(Error::Sys { what: "fork", pid: 0, errno: nix::errno::Errno::last() });
    }
    let pid = Pid::from_raw(pid);
    let reap = || {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        nix::sys::wait::waitpid(pid, None)
    };
    // Until the stub closes the pipe (restored, or dead) or reports a failed step.
    let mut rec = Vec::new();
    let mut f = std::fs::File::from(status_r);
    if let Err(e) = f.read_to_end(&mut rec) {
        let _ = reap();
        return Err(Error::Restore(format!("native restore: reading the stub's status: {e}")));
    }
    if rec.len() >= ENTRY {
        let _ = reap();
        return Err(prog.failure(&rec[..ENTRY]));
    }
    match Parked::adopt(module, pid) {
        Ok(p) => Ok(p),
        Err(_) => {
            let how = match reap() {
                Ok(nix::sys::wait::WaitStatus::Exited(_, c)) if c == FAILED_EXIT => "exited".to_string(),
                Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => format!("was killed by {s}"),
                Ok(other) => format!("ended ({other:?})"),
                Err(e) => format!("is lost ({e})"),
            };
            Err(Error::Restore(format!("native restore: the stub {how} while restoring itself")))
        }
    }
}

/// Recovers the checkpoint read by `r` (positioned at its memory map) natively, parked; see
/// [`restore_child`].
pub fn recover_checkpoint(r: &mut std::io::BufReader<std::fs::File>, setup: &Setup) -> Result<Parked, Error> {
    let img = stage_file(r)?;
    let end = frame::read_frame(r)?;
    if end.kind != Kind::CheckpointEnd {
        return Err(Error::Restore(format!("malformed checkpoint: a {:?} frame after the context", end.kind)));
    }
    restore_child(&img, setup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// Runs `prog` (built at `base`) in a forked child, as `restore_child` does, with no XSAVE
    /// image: returns its wait status and what it reported.
    fn run(prog: &Program, map: *mut libc::c_void, status_fd: u64) -> (nix::sys::wait::WaitStatus, Vec<u8>, OwnedFd) {
        let bytes = prog.image();
        // SAFETY: `map` is the program's scratch area, `bytes.len()` long and writable.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.cast::<u8>(), bytes.len()) };
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // SAFETY: as in `restore_child`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as in `restore_child`; the write end is duplicated to `status_fd` first.
            unsafe {
                libc::dup2(w.as_raw_fd(), status_fd as i32);
                std::arch::asm!("mov rsp, {sp}", "jmp {entry}", sp = in(reg) prog.base + PAGE - 64, entry = in(reg) prog.base,
                    in("r14") prog.table_at, in("r12") 0u64, in("r13") status_fd, options(noreturn))
            }
        }
        drop(w);
        let mut rec = Vec::new();
        let mut f = std::fs::File::from(r);
        f.read_to_end(&mut rec).unwrap();
        let st = nix::sys::wait::waitpid(Pid::from_raw(pid), None).unwrap();
        // SAFETY: a fresh descriptor of /dev/null for the caller to own.
        let keep = unsafe { OwnedFd::from_raw_fd(libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY)) };
        (st, rec, keep)
    }

    fn scratch(len: u64) -> (u64, *mut libc::c_void) {
        // Tests run in parallel threads: another may take the same place first; then the next.
        let mut used: Vec<(u64, u64)> = procfs::maps(Pid::this()).unwrap().iter().map(|m| (m.start, m.len())).collect();
        loop {
            let base = free_spot(&used, len).unwrap();
            // SAFETY: a fresh anonymous mapping at a free place (MAP_FIXED_NOREPLACE replaces
            // nothing); unmapped by the test.
            let m = unsafe {
                libc::mmap(
                    base as *mut _,
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if m != libc::MAP_FAILED {
                return (base, m);
            }
            used.push((base, len));
        }
    }

    #[test]
    fn the_runner_unmaps_the_stub_moves_its_vdso_and_runs_to_the_end() {
        let len = 64 * 1024;
        let (base, map) = scratch(len);
        let mut p = Program::new(base, len, 64);
        let all = p.words(&[u64::MAX], 8).unwrap();
        p.plain("block", libc::SYS_rt_sigprocmask, [libc::SIG_SETMASK as u64, all, 0, 8, 0, 0], Check::Eq(0)).unwrap();
        // Everything but the scratch area and the kernel areas goes, as in a restore.
        let (mine, keep) = unmap_stub(&mut p).unwrap();
        let (_, vdso, vlen) = mine.iter().find(|(n, _, _)| n == "[vdso]").cloned().unwrap();
        let to = free_spot(&keep.iter().map(|(s, e)| (*s, e - s)).collect::<Vec<_>>(), vlen).unwrap();
        let fl = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        p.plain("mremap", libc::SYS_mremap, [vdso, vlen, vlen, fl, to, 0], Check::Eq(to)).unwrap();
        p.plain("exit", libc::SYS_exit_group, [42, 0, 0, 0, 0, 0], Check::Any).unwrap();
        let (st, rec, _) = run(&p, map, 900);
        // SAFETY: the test's own mapping.
        unsafe { libc::munmap(map, len as usize) };
        assert!(rec.is_empty(), "a step failed: {:?}", p.failure(&rec));
        assert!(matches!(st, nix::sys::wait::WaitStatus::Exited(_, 42)), "{st:?}");
    }

    #[test]
    fn a_failing_step_is_reported_with_its_errno() {
        let len = 64 * 1024;
        let (base, map) = scratch(len);
        let mut p = Program::new(base, len, 8);
        p.plain("getpid", libc::SYS_getpid, [0; 6], Check::Ok).unwrap();
        let path = p.cstr("/nonexistent/mos-native-restore").unwrap();
        p.call(Step::Reopen { fd: 7, path: "/nonexistent/mos-native-restore".into() }, libc::SYS_open, [path, 0, 0, 0, 0, 0], Check::Eq(7))
            .unwrap();
        p.plain("exit", libc::SYS_exit_group, [0, 0, 0, 0, 0, 0], Check::Any).unwrap();
        let (st, rec, _) = run(&p, map, 901);
        // SAFETY: the test's own mapping.
        unsafe { libc::munmap(map, len as usize) };
        assert!(matches!(st, nix::sys::wait::WaitStatus::Exited(_, FAILED_EXIT)), "{st:?}");
        assert_eq!(rec.len(), ENTRY);
        let e = p.failure(&rec).to_string();
        assert!(e.contains("cannot reopen fd 7 on /nonexistent/mos-native-restore") && e.contains("ENOENT"), "{e}");
    }

    #[test]
    fn lowest_free_descriptor_is_predicted() {
        let used: BTreeSet<u64> = [0, 1, 2, 4, 10].into_iter().collect();
        assert_eq!(lowest_free(&used), 3);
    }
}
