//! Receiver side of a migration: rebuild a process from the stream inside a stopped task (a fresh
//! stub on a remote node, or the deputy itself when the process comes home).
//!
//! All changes are made by system calls injected into that task through the vDSO gadget, with a
//! two-page scratch area at an address free in both the task's and the image's layouts.
use crate::capture::{cpu_info_of, file_ref, words_to_regs};
use crate::ptrace::{Stopped, Tracee};
use crate::{mem, procfs, seccomp, sys, Error};
use mos_proto::frame::{self, Kind};
use mos_proto::migration::*;
use mos_proto::pages;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

const SCRATCH_LEN: u64 = 8192;
const S_MM: u64 = 0;
const S_AUXV: u64 = 1024;
const S_SMALL: u64 = 2048;
const S_FPROG: u64 = 3072;
const S_BIG: u64 = 4096;
/// Anonymous VMAs at least this large get MADV_HUGEPAGE on the receiver.
const HUGE_MIN: u64 = 4 << 20;

/// `MOS_RESTORE_THP=0` turns huge pages for restored memory off (for comparison runs).
fn thp_enabled() -> bool {
    std::env::var("MOS_RESTORE_THP").map_or(true, |v| v != "0")
}

/// What the receiver does besides rebuilding memory and registers.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Point /proc/PID/exe at the offer's executable (a fresh stub; the deputy keeps its own).
    pub set_exe: bool,
    /// Install the remote component's seccomp filter and return its listener.
    pub install_filter: bool,
    /// Accept a post-copy (`LazyAreas`): only a guest, which has the stub's userfaultfd.
    pub lazy: bool,
}

/// Decides whether this node can take the offer, given the task it would restore into.
pub fn check_offer(t: &Tracee<Stopped>, offer: &Offer) -> Result<Accept, String> {
    let here = cpu_info_of(t).map_err(|e| format!("cannot inspect this node's CPU state: {e}"))?;
    if here.xstate_len != offer.cpu.xstate_len || here.xfeatures != offer.cpu.xfeatures {
        return Err(format!(
            "CPU state differs: xstate {} bytes / features {:#x} here, {} / {:#x} in the offer",
            here.xstate_len, here.xfeatures, offer.cpu.xstate_len, offer.cpu.xfeatures
        ));
    }
    if here.vdso_hash != offer.cpu.vdso_hash || here.vdso_len != offer.cpu.vdso_len {
        return Err("the vDSO differs: nodes must run the same kernel build".into());
    }
    Ok(Accept { files_present: files_present(offer) })
}

/// Whether each of the offer's mapped files is here, identical (size, time, first bytes).
pub fn files_present(offer: &Offer) -> Vec<bool> {
    offer
        .files
        .iter()
        .map(|f| {
            file_ref(&f.path, 0).is_some_and(|mine| mine.size == f.size && mine.mtime_ns == f.mtime_ns && mine.head_hash == f.head_hash)
        })
        .collect()
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b + blen && b < a + alen
}

/// Lowest address >= 4 GiB (so it never lands in a non-PIE program's low layout) where `len`
/// bytes are free of every range in `used`.
fn free_spot(used: &[(u64, u64)], len: u64) -> Result<u64, Error> {
    let mut a: u64 = 0x1_0000_0000;
    while a + len < 0x7ff0_0000_0000 {
        match used.iter().find(|(s, l)| overlaps(a, len, *s, *l)) {
            None => return Ok(a),
            Some((s, l)) => a = (s + l + 0xffff) & !0xffff,
        }
    }
    Err(Error::Restore("no free address range for the restorer's scratch area".into()))
}

struct Rebuild<'a> {
    t: &'a mut Tracee<Stopped>,
    scratch: u64,
}

impl Rebuild<'_> {
    fn put(&self, off: u64, data: &[u8]) -> Result<(), Error> {
        mem::write_mem(self.t.pid(), self.scratch + off, data)
    }
    fn put_cstr(&self, off: u64, s: &str) -> Result<u64, Error> {
        let mut b = s.as_bytes().to_vec();
        if b.len() >= 4095 || b.contains(&0) {
            return Err(Error::Restore(format!("path too long or invalid: {s}")));
        }
        b.push(0);
        self.put(off, &b)?;
        Ok(self.scratch + off)
    }
    fn sys(&mut self, what: &'static str, nr: libc::c_long, args: [u64; 6]) -> Result<u64, Error> {
        self.t.inject_ok(what, nr, args)
    }
}

/// `struct prctl_mm_map` (104 bytes) for PR_SET_MM_MAP: the context's mm fields, its auxv at
/// `auxv_at` in the task, and `exe_fd` (`u32::MAX`: /proc/PID/exe unchanged).
pub(crate) fn prctl_mm_map(ctx: &Context, auxv_at: u64, exe_fd: u32) -> Vec<u8> {
    let mm = &ctx.mm;
    let mut b = Vec::with_capacity(104);
    for w in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_at,
    ] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    b.extend_from_slice(&(ctx.auxv.len() as u32).to_le_bytes());
    b.extend_from_slice(&exe_fd.to_le_bytes());
    b
}

/// The mmap/mprotect protection bits of a VMA's `prot`.
pub(crate) fn prot_flags(prot: u8) -> i32 {
    (if prot & PROT_R != 0 { libc::PROT_READ } else { 0 })
        | (if prot & PROT_W != 0 { libc::PROT_WRITE } else { 0 })
        | (if prot & PROT_X != 0 { libc::PROT_EXEC } else { 0 })
}

/// Replaces the task's address space with the image's map (no page data yet).
fn prepare(t: &mut Tracee<Stopped>, offer: &Offer, vmas: &Vmas) -> Result<u64, Error> {
    let pid = t.pid();
    let current = procfs::maps(pid)?;
    let mut used: Vec<(u64, u64)> = current.iter().map(|m| (m.start, m.len())).collect();
    used.extend(vmas.vmas.iter().map(|v| (v.start, v.end - v.start)));
    used.extend(vmas.special.iter().map(|s| (s.start, s.len)));
    let scratch = free_spot(&used, SCRATCH_LEN)?;
    used.push((scratch, SCRATCH_LEN));
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    t.inject_ok("mmap(scratch)", libc::SYS_mmap, [scratch, SCRATCH_LEN, prot, anon | libc::MAP_FIXED_NOREPLACE as u64, u64::MAX, 0])?;
    // The task's own rseq area is about to disappear: unregister it first.
    if let Some((ptr, len, sig)) = t.rseq()? {
        t.inject_ok("rseq(unregister)", libc::SYS_rseq, [ptr, u64::from(len), 1, u64::from(sig), 0, 0])?;
    }
    for m in current.iter().filter(|m| !m.is_special() && m.start != scratch) {
        t.inject_ok("munmap(old)", libc::SYS_munmap, [m.start, m.len(), 0, 0, 0, 0])?;
    }
    // Move the kernel's areas to where the process had them (glibc caches vDSO pointers).
    let names = |k: SpecialKind| match k {
        SpecialKind::Vdso => "[vdso]",
        SpecialKind::Vvar => "[vvar]",
        SpecialKind::VvarVclock => "[vvar_vclock]",
    };
    let mut moves = Vec::new();
    for s in &vmas.special {
        let cur = current
            .iter()
            .find(|m| m.name == names(s.kind))
            .ok_or_else(|| Error::Restore(format!("this node has no {} area", names(s.kind))))?;
        if cur.len() != s.len {
            return Err(Error::Restore(format!("{} is {} bytes here, {} in the image", names(s.kind), cur.len(), s.len)));
        }
        if cur.start != s.start {
            moves.push((s.kind, cur.start, s.start, s.len));
        }
    }
    let mremap = |t: &mut Tracee<Stopped>, from: u64, to: u64, len: u64| {
        t.inject_ok("mremap(special)", libc::SYS_mremap, [from, len, len, (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64, to, 0])
    };
    let mut temps = Vec::new();
    for (kind, from, _, len) in &moves {
        let tmp = free_spot(&used, *len)?;
        used.push((tmp, *len));
        mremap(t, *from, tmp, *len)?;
        if *kind == SpecialKind::Vdso {
            t.vdso_moved(*from, tmp);
        }
        temps.push(tmp);
    }
    for ((kind, _, to, len), tmp) in moves.iter().zip(temps) {
        mremap(t, tmp, *to, *len)?;
        if *kind == SpecialKind::Vdso {
            t.vdso_moved(tmp, *to);
        }
    }
    // Rebuild the map, writable for filling; final protections come with the context.
    let mut rb = Rebuild { t, scratch };
    map_areas(&mut rb, offer, &vmas.vmas)?;
    Ok(scratch)
}

/// Maps `areas` (MAP_FIXED, writable for filling), replacing whatever is there.
fn map_areas(rb: &mut Rebuild, offer: &Offer, areas: &[Vma]) -> Result<(), Error> {
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let mut fds: Vec<Option<u64>> = vec![None; offer.files.len()];
    for v in areas {
        let len = v.end.checked_sub(v.start).filter(|l| *l > 0 && l % 4096 == 0 && v.start % 4096 == 0);
        let len = len.ok_or_else(|| Error::Restore(format!("bad VMA {:#x}-{:#x}", v.start, v.end)))?;
        let fixed = libc::MAP_FIXED as u64;
        match &v.backing {
            Backing::Anon => {
                let a = rb.sys("mmap(anon)", libc::SYS_mmap, [v.start, len, prot, anon | fixed, u64::MAX, 0])?;
                // Filling fresh memory is bounded by page faults: huge pages cut them 512-fold.
                if len >= HUGE_MIN && thp_enabled() {
                    let _ = rb.t.inject(libc::SYS_madvise, [v.start, len, libc::MADV_HUGEPAGE as u64, 0, 0, 0]);
                }
                a
            }
            Backing::Stack => {
                rb.sys("mmap(stack)", libc::SYS_mmap, [v.start, len, prot, anon | fixed | libc::MAP_GROWSDOWN as u64, u64::MAX, 0])?
            }
            Backing::File { file, offset } => {
                let i = *file as usize;
                let f = offer.files.get(i).ok_or_else(|| Error::Restore(format!("VMA names file {i}, offer has {}", offer.files.len())))?;
                let fd = match fds[i] {
                    Some(fd) => fd,
                    None => {
                        let p = rb.put_cstr(S_BIG, &f.path)?;
                        let fd = rb.sys("open(mapped file)", libc::SYS_open, [p, (libc::O_RDONLY | libc::O_CLOEXEC) as u64, 0, 0, 0, 0])?;
                        fds[i] = Some(fd);
                        fd
                    }
                };
                rb.sys("mmap(file)", libc::SYS_mmap, [v.start, len, prot, libc::MAP_PRIVATE as u64 | fixed, fd, *offset])?
            }
        };
    }
    for fd in fds.into_iter().flatten() {
        rb.sys("close(mapped file)", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    }
    Ok(())
}

/// Pre-copy: applies a [`MapUpdate`] to the task (unmaps, fresh maps, dropped pages) and makes it
/// the current map. Moves the scratch area first if the new map needs its place. Returns the
/// scratch address.
fn apply_update(t: &mut Tracee<Stopped>, offer: &Offer, vmas: &mut Vmas, scratch: u64, mu: &MapUpdate) -> Result<u64, Error> {
    use crate::precopy::{check_map, map_ops, normalize};
    check_map(&mu.vmas).map_err(Error::Restore)?;
    let ranges = |r: &[Range]| normalize(r.iter().map(|r| (r.start, r.end)).collect());
    let fresh = ranges(&mu.fresh);
    let discard = ranges(&mu.discard);
    if fresh.iter().chain(&discard).any(|(s, e)| s % 4096 != 0 || e % 4096 != 0 || *e > crate::precopy::USER_END) {
        return Err(Error::Restore("a map update names unaligned ranges".into()));
    }
    for v in &mu.vmas {
        if vmas.special.iter().any(|s| overlaps(v.start, v.end - v.start, s.start, s.len)) {
            return Err(Error::Restore(format!("VMA {:#x}-{:#x} overlaps a kernel area", v.start, v.end)));
        }
    }
    let pid = t.pid();
    let mut scratch = scratch;
    if mu.vmas.iter().any(|v| overlaps(v.start, v.end - v.start, scratch, SCRATCH_LEN)) {
        let mut used: Vec<(u64, u64)> = procfs::maps(pid)?.iter().map(|m| (m.start, m.len())).collect();
        used.extend(mu.vmas.iter().map(|v| (v.start, v.end - v.start)));
        let to = free_spot(&used, SCRATCH_LEN)?;
        let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        t.inject_ok("mremap(scratch)", libc::SYS_mremap, [scratch, SCRATCH_LEN, SCRATCH_LEN, flags, to, 0])?;
        scratch = to;
    }
    let ops = map_ops(&vmas.vmas, &mu.vmas, &fresh);
    let mut rb = Rebuild { t, scratch };
    for (s, e) in &ops.unmap {
        rb.sys("munmap(update)", libc::SYS_munmap, [*s, e - s, 0, 0, 0, 0])?;
    }
    map_areas(&mut rb, offer, &ops.map)?;
    let mapped = normalize(mu.vmas.iter().map(|v| (v.start, v.end)).collect());
    if let Some((s, e)) = crate::precopy::subtract(&discard, &mapped).first() {
        return Err(Error::Restore(format!("dropped pages {s:#x}-{e:#x} lie outside the memory map")));
    }
    for (s, e) in &discard {
        rb.sys("madvise(DONTNEED)", libc::SYS_madvise, [*s, e - s, libc::MADV_DONTNEED as u64, 0, 0, 0])?;
    }
    vmas.vmas = mu.vmas.clone();
    Ok(scratch)
}

/// Writes one `Pages` frame into the task, checking every run lies inside the image's map.
fn fill(pid: nix::unistd::Pid, vmas: &Vmas, body: &[u8]) -> Result<u64, Error> {
    fill_noting(pid, vmas, body, &mut Vec::new())
}

/// [`fill`], adding the runs written to `filled`.
fn fill_noting(pid: nix::unistd::Pid, vmas: &Vmas, body: &[u8], filled: &mut Vec<(u64, u64)>) -> Result<u64, Error> {
    let (runs, data) = pages::decode(body)?;
    let mut ranges = Vec::with_capacity(runs.len());
    // A run may span adjacent VMAs.
    let mapped = crate::precopy::normalize(vmas.vmas.iter().map(|v| (v.start, v.end)).collect());
    for r in &runs {
        let end = r.addr + r.bytes() as u64;
        let i = mapped.partition_point(|(_, e)| *e <= r.addr);
        if !mapped.get(i).is_some_and(|(s, e)| *s <= r.addr && end <= *e) {
            return Err(Error::Restore(format!("page run {:#x}-{end:#x} lies outside the memory map", r.addr)));
        }
        ranges.push((r.addr, r.bytes()));
        filled.push((r.addr, end));
    }
    mem::writev(pid, &ranges, data)?;
    Ok(data.len() as u64)
}

/// Applies the context: protections, mm fields, name, personality, futex lists, signal state,
/// rseq, the seccomp filter (optional), then registers.
fn finish(
    t: &mut Tracee<Stopped>,
    scratch: u64,
    offer: &Offer,
    vmas: &Vmas,
    ctx: &Context,
    opts: Options,
) -> Result<Option<OwnedFd>, Error> {
    let regs = words_to_regs(&ctx.regs).ok_or_else(|| Error::Restore(format!("context has {} registers", ctx.regs.len())))?;
    let pid = t.pid();
    let before = procfs::status(pid)?;
    let mut rb = Rebuild { t, scratch };
    for v in &vmas.vmas {
        let p = prot_flags(v.prot);
        if p != libc::PROT_READ | libc::PROT_WRITE {
            rb.sys("mprotect", libc::SYS_mprotect, [v.start, v.end - v.start, p as u64, 0, 0, 0])?;
        }
    }
    // PR_SET_MM_MAP (the only PR_SET_MM form that needs no CAP_SYS_RESOURCE).
    if ctx.auxv.len() > (S_SMALL - S_AUXV) as usize {
        return Err(Error::Restore(format!("auxv of {} bytes is too large", ctx.auxv.len())));
    }
    rb.put(S_AUXV, &ctx.auxv)?;
    // The kernel refuses to replace an exe that is still mapped; when the task already runs the
    // offered executable (the stub is a fork of the same binary), there is nothing to change.
    let same_exe = procfs::exe(pid).is_ok_and(|e| e == offer.exe);
    let exe_fd = if opts.set_exe && !same_exe {
        let p = rb.put_cstr(S_BIG, &offer.exe)?;
        rb.t.inject(libc::SYS_open, [p, (libc::O_RDONLY | libc::O_CLOEXEC) as u64, 0, 0, 0, 0])?
    } else {
        -1
    };
    let b = prctl_mm_map(ctx, scratch + S_AUXV, if exe_fd >= 0 { exe_fd as u32 } else { u32::MAX });
    rb.put(S_MM, &b)?;
    let set_mm_map = |rb: &mut Rebuild| {
        rb.sys(
            "prctl(PR_SET_MM_MAP)",
            libc::SYS_prctl,
            [libc::PR_SET_MM as u64, libc::PR_SET_MM_MAP as u64, scratch + S_MM, b.len() as u64, 0, 0],
        )
    };
    match set_mm_map(&mut rb) {
        // Replacing /proc/PID/exe needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN): without it the
        // link keeps naming the stub's binary, and everything else is restored.
        Err(Error::Injected { errno: nix::errno::Errno::EPERM, .. }) if exe_fd >= 0 => {
            rb.put(S_MM + 100, &u32::MAX.to_le_bytes())?;
            set_mm_map(&mut rb)?;
        }
        r => {
            r?;
        }
    }
    if exe_fd >= 0 {
        rb.sys("close(exe)", libc::SYS_close, [exe_fd as u64, 0, 0, 0, 0, 0])?;
    }
    let mut comm = ctx.comm.as_bytes()[..ctx.comm.len().min(15)].to_vec();
    comm.push(0);
    rb.put(S_SMALL, &comm)?;
    rb.sys("prctl(PR_SET_NAME)", libc::SYS_prctl, [libc::PR_SET_NAME as u64, scratch + S_SMALL, 0, 0, 0, 0])?;
    rb.sys("personality", libc::SYS_personality, [u64::from(ctx.personality), 0, 0, 0, 0, 0])?;
    if let Some((head, len)) = ctx.robust_list {
        rb.sys("set_robust_list", libc::SYS_set_robust_list, [head, len, 0, 0, 0, 0])?;
    }
    rb.sys("set_tid_address", libc::SYS_set_tid_address, [ctx.tid_address, 0, 0, 0, 0, 0])?;
    // Signal dispositions: reset what the task has that the image does not, then apply the image's.
    for sig in 1..=64u8 {
        let bit = 1u64 << (sig - 1);
        let has = (before.sig_cgt | before.sig_ign) & bit != 0;
        if has && !ctx.sigactions.iter().any(|a| a.sig == sig) {
            rb.put(S_SMALL, &[0u8; 32])?;
            rb.sys("rt_sigaction(default)", libc::SYS_rt_sigaction, [u64::from(sig), scratch + S_SMALL, 0, 8, 0, 0])?;
        }
    }
    for a in &ctx.sigactions {
        let mut b = Vec::with_capacity(32);
        for w in [a.handler, a.flags, a.restorer, a.mask] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        rb.put(S_SMALL, &b)?;
        rb.sys("rt_sigaction(set)", libc::SYS_rt_sigaction, [u64::from(a.sig), scratch + S_SMALL, 0, 8, 0, 0])?;
    }
    let (sp, flags, size) = match &ctx.altstack {
        Some(a) => (a.sp, a.flags, a.size),
        None => (0, libc::SS_DISABLE, 0),
    };
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&sp.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&[0u8; 4]);
    b.extend_from_slice(&size.to_le_bytes());
    rb.put(S_SMALL, &b)?;
    rb.sys("sigaltstack", libc::SYS_sigaltstack, [scratch + S_SMALL, 0, 0, 0, 0, 0])?;
    if let Some(r) = &ctx.rseq {
        rb.sys("rseq(register)", libc::SYS_rseq, [r.ptr, u64::from(r.len), 0, u64::from(r.sig), 0, 0])?;
    }
    let listener = if opts.install_filter && crate::native::intercept_available() {
        // The module intercepts the calls: no seccomp filter, the same listener protocol.
        let mut local = crate::policy::local_numbers();
        // mmap is local only for anonymous private memory: the guest decides each one.
        local.retain(|n| *n != libc::SYS_mmap as u32);
        let l = crate::native::intercept(pid, &local, rb.t.gadget() + 2)?;
        tracing::info!(pid = pid.as_raw(), engine = "native", "system calls intercepted by the module");
        Some(l)
    } else if opts.install_filter {
        let prog = seccomp::build(rb.t.gadget() + 2, &crate::policy::local_numbers());
        let bytes = seccomp::to_bytes(&prog);
        if bytes.len() > (SCRATCH_LEN - S_BIG) as usize {
            return Err(Error::Restore("seccomp program too large".into()));
        }
        rb.put(S_BIG, &bytes)?;
        let mut fprog = Vec::with_capacity(16);
        fprog.extend_from_slice(&(prog.len() as u16).to_le_bytes());
        fprog.extend_from_slice(&[0u8; 6]);
        fprog.extend_from_slice(&(scratch + S_BIG).to_le_bytes());
        rb.put(S_FPROG, &fprog)?;
        const SECCOMP_SET_MODE_FILTER: u64 = 1;
        const SECCOMP_FILTER_FLAG_NEW_LISTENER: u64 = 1 << 3;
        // Once the guest has received a notification, only a fatal signal interrupts the task's
        // wait (Linux >= 5.19): a call forwarded home then always gets its answer (an interrupted
        // wait would withdraw it after it ran at home, and the restarted call would run twice),
        // and a signal the guest queues on the task before answering (one it sends itself) is
        // delivered when the call returns. Older kernels refuse the flag: plain listener there.
        const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: u64 = 1 << 5;
        let mut install =
            |flags: u64| rb.sys("seccomp(filter)", libc::SYS_seccomp, [SECCOMP_SET_MODE_FILTER, flags, scratch + S_FPROG, 0, 0, 0]);
        let fd = match install(SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) {
            Err(Error::Injected { errno: nix::errno::Errno::EINVAL, .. }) => install(SECCOMP_FILTER_FLAG_NEW_LISTENER)?,
            r => r?,
        };
        let pidfd = sys::pidfd_open(pid).map_err(|e| Error::Sys { what: "pidfd_open", pid: pid.as_raw(), errno: e })?;
        let l =
            sys::pidfd_getfd(pidfd.as_raw_fd(), fd as i32).map_err(|e| Error::Sys { what: "pidfd_getfd", pid: pid.as_raw(), errno: e })?;
        rb.sys("close(listener)", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
        Some(l)
    } else {
        None
    };
    rb.sys("munmap(scratch)", libc::SYS_munmap, [scratch, SCRATCH_LEN, 0, 0, 0, 0])?;
    if opts.set_exe {
        // A fresh stub has this daemon's limits: hold it to the process's own. Raising a hard
        // limit above the daemon's needs CAP_SYS_RESOURCE; such a limit stays the daemon's.
        for &(r, cur, max) in &ctx.rlimits {
            if u32::from(r) == libc::RLIMIT_CORE {
                continue;
            }
            if let Err(e) = sys::set_rlimit(pid, r.into(), cur, max) {
                tracing::debug!(resource = r, cur, max, error = %e, "resource limit not applied");
            }
        }
    }
    t.set_regs(regs)?;
    t.set_xstate(&ctx.xstate)?;
    t.set_sigmask(ctx.sigmask)?;
    Ok(listener)
}

/// Statistics of a receive.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub frames: u64,
    pub pages: u64,
    pub bytes: u64,
    /// Post-copy: the areas left for after `Resumed` (`LazyAreas`), each one whole anonymous VMA.
    pub lazy: Vec<(u64, u64)>,
    /// In a post-copy: the ranges written from `Pages` frames.
    pub filled: Vec<(u64, u64)>,
}

/// Receives `Vmas`, `Pages`* and `Context` after this side sent `Accept`, rebuilding the process in
/// `t`. Leaves `t` stopped with the process's registers; the caller sends `Resumed` and detaches.
/// Returns the seccomp listener when `opts.install_filter`.
pub fn receive<R: Read>(
    stream: &mut R,
    offer: &Offer,
    t: &mut Tracee<Stopped>,
    opts: Options,
) -> Result<(Option<OwnedFd>, Received), Error> {
    let mut vmas: Vmas = frame::read_frame(stream)?.expect(Kind::Vmas)?;
    let mut scratch = prepare(t, offer, &vmas)?;
    let mut got = Received::default();
    loop {
        let f = frame::read_frame(stream)?;
        match f.kind {
            Kind::Pages => {
                let n = if !got.lazy.is_empty() {
                    fill_noting(t.pid(), &vmas, &f.body, &mut got.filled)?
                } else {
                    fill(t.pid(), &vmas, &f.body)?
                };
                got.frames += 1;
                crate::fault::page_frame(got.frames);
                got.pages += n / 4096;
                got.bytes += f.body.len() as u64;
            }
            Kind::LazyAreas if opts.lazy && got.lazy.is_empty() => {
                let la: LazyAreas = f.decode()?;
                for &(s, e) in &la.ranges {
                    if !vmas.vmas.iter().any(|v| v.start == s && v.end == e && v.backing == Backing::Anon) {
                        return Err(Error::Restore(format!("lazy area {s:#x}-{e:#x} is not an anonymous area of the map")));
                    }
                }
                got.lazy = la.ranges;
            }
            Kind::MapUpdate => {
                let mu: MapUpdate = f.decode()?;
                scratch = apply_update(t, offer, &mut vmas, scratch, &mu)?;
            }
            Kind::Context => {
                let ctx: Context = f.decode()?;
                let l = finish(t, scratch, offer, &vmas, &ctx, opts)?;
                return Ok((l, got));
            }
            Kind::Failed => return Err(Error::PeerFailed(f.decode::<Failed>()?.reason)),
            other => return Err(frame::FrameError::Unexpected { expected: Kind::Pages, got: other }.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_spot_skips_used_ranges() {
        let used = [(0x1_0000_0000, 0x2000), (0x1_0001_0000, 0x10000)];
        assert_eq!(free_spot(&used, 0x2000).unwrap(), 0x1_0002_0000);
        assert_eq!(free_spot(&[], 0x2000).unwrap(), 0x1_0000_0000);
    }
}
