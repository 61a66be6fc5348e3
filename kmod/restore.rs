// SPDX-License-Identifier: GPL-2.0
//! The native engine's restore (feature bit RESTORE): a migration stream, staged by userspace,
//! becomes the calling task's address space and registers.
//!
//! The caller (a fresh stub forked by mosrun or mosd) has already set up, with ordinary system
//! calls of its own, everything that does not depend on its address space: descriptors, signal
//! actions, alternate stack, robust list, the mm fields (PR_SET_MM_MAP), the FPU state (XRSTOR)
//! and the FS/GS bases; and it has moved its kernel areas (vDSO, vvar) to where the image has
//! them. `MOSIX_IOC_RESTORE` then, in the caller's own context:
//! 1. checks the whole request (areas, page runs, registers) before changing anything;
//! 2. unmaps every area of the caller except the kept ranges (the kernel areas);
//! 3. maps the image's areas (anonymous, stack, or files by descriptor) with their protections;
//! 4. copies the pages from the staging file (`pages_fd`) into them, through the protections as
//!    ptrace's POKE does (FOLL_FORCE) where an area is not writable;
//! 5. registers the image's rseq area, sets its signal mask, closes the staging descriptors;
//! 6. writes the image's registers into the task's saved user registers and returns the
//!    image's `rax`, so that the system call "returns" into the restored context;
//! 7. parks the task on its way back to user mode, frozen through this descriptor exactly as
//!    after `MOSIX_IOC_FREEZE`: the driver (the descriptor's other holder) sees it with FREEZE,
//!    can capture or trace it, and lets it go with THAW (or by closing the descriptor).
//!
//! A failure in steps 1 returns an error and changes nothing. After step 2 the caller has no
//! code left to return to: a failure there kills it (SIGKILL) and returns the error.
use crate::freeze::FileState;
use crate::sys;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

/// Bounds: what one restore may name (a process has at most 65530 areas by default).
const MAX_AREAS: u32 = 1 << 16;
const MAX_RUNS: u32 = 1 << 20;
const MAX_KEEP: u32 = 8;
const MAX_CLOSE: u32 = 4096;
const PAGE: u64 = 4096;
/// Copy chunk between the staging file and the task.
const CHUNK: usize = 64 << 10;

/// Area kinds of `struct mosix_area`.
const KIND_ANON: u32 = 0;
const KIND_STACK: u32 = 1;
const KIND_FILE: u32 = 2;

/// x86-64 user segment selectors (__USER_CS, __USER_DS).
const USER_CS: u64 = 0x33;
const USER_SS: u64 = 0x2b;

/// mmap flags and protections (include/uapi/asm-generic/mman*.h).
const PROT_READ: u32 = 1;
const PROT_WRITE: u32 = 2;
const PROT_EXEC: u32 = 4;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_GROWSDOWN: u64 = 0x100;

/// Indices in `struct user_regs_struct`.
const R_AX: usize = 10;
const R_ORIG_AX: usize = 15;
const R_IP: usize = 16;
const R_CS: usize = 17;
const R_SS: usize = 20;
/// Errnos of an interrupted system call and `restart_syscall`'s number.
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;
const NR_RESTART_SYSCALL: u64 = 219;

/// Fixed part of the request (`struct mosix_restore`), as read from userspace: see abi.rs.
use crate::abi::{Restore, RESTORE_AREA_SIZE, RESTORE_RUN_SIZE};

struct Area {
    start: u64,
    end: u64,
    offset: u64,
    prot: u32,
    kind: u32,
    fd: i32,
}

/// A request, read and checked.
struct Checked {
    areas: KVVec<Area>,
    runs: KVVec<Run>,
    keep: KVec<(u64, u64)>,
    close: KVec<u32>,
}

struct Run {
    addr: u64,
    len: u64,
    off: u64,
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Reads `n` records of `size` bytes from user address `at`, a batch at a time, giving each to `f`.
fn each_record(at: u64, n: u32, size: usize, mut f: impl FnMut(&[u8]) -> Result) -> Result {
    const BATCH: usize = 1024;
    let len = (n as usize).checked_mul(size).ok_or(EINVAL)?;
    let mut reader = UserSlice::new(at as usize, len).reader();
    let mut buf = KVec::from_elem(0u8, BATCH * size, GFP_KERNEL)?;
    let mut left = n as usize;
    while left > 0 {
        let k = left.min(BATCH);
        reader.read_slice(&mut buf[..k * size])?;
        for rec in buf[..k * size].chunks_exact(size) {
            f(rec)?;
        }
        left -= k;
    }
    Ok(())
}

/// Whether `[s, e)` overlaps `[a, b)`.
fn overlaps(s: u64, e: u64, a: u64, b: u64) -> bool {
    s < b && a < e
}

/// The image's registers adjusted for a return from this system call: an interrupted call is set
/// up to be restarted (as the kernel does when no handler runs), and `orig_ax` is cleared so that
/// no restart logic applies on the way out.
fn registers_for_return(mut r: [u64; 27]) -> [u64; 27] {
    let ax = r[R_AX] as i64;
    if (r[R_ORIG_AX] as i64) >= 0 {
        match -ax {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                r[R_AX] = r[R_ORIG_AX];
                r[R_IP] = r[R_IP].wrapping_sub(2);
            }
            ERESTART_RESTARTBLOCK => {
                r[R_AX] = NR_RESTART_SYSCALL;
                r[R_IP] = r[R_IP].wrapping_sub(2);
            }
            _ => {}
        }
    }
    r[R_ORIG_AX] = u64::MAX;
    r
}

/// Checks the request; returns its areas, runs and kept ranges.
fn check(req: &Restore) -> Result<Checked> {
    if req.size as usize != core::mem::size_of::<Restore>() || req.flags != 0 || req.reserved != 0 || req.reserved0 != 0 {
        return Err(EINVAL);
    }
    if req.n_areas > MAX_AREAS || req.n_runs > MAX_RUNS || req.n_keep > MAX_KEEP || req.n_close > MAX_CLOSE {
        return Err(E2BIG);
    }
    if req.regs[R_CS] != USER_CS || req.regs[R_SS] != USER_SS {
        return Err(EINVAL);
    }
    let top = sys::user_top();
    // (vm.mmap_min_addr is not exported to modules: an area below it fails at its mapping, after
    // the point of no return; an image from a node with the same setting has none.)
    let low = PAGE;
    let ok_range = |s: u64, e: u64| s % PAGE == 0 && e % PAGE == 0 && s < e && s >= low && e <= top;

    let mut keep = KVec::with_capacity(req.n_keep as usize, GFP_KERNEL)?;
    each_record(req.keep, req.n_keep, 16, |k| {
        let (s, e) = (le64(k, 0), le64(k, 8));
        if !ok_range(s, e) {
            return Err(EINVAL);
        }
        keep.push((s, e), GFP_KERNEL)?;
        Ok(())
    })?;
    // Sorted, so that the unmapping walks the gaps in order.
    keep.sort_unstable_by_key(|k| k.0);
    if keep.windows(2).any(|w| w[0].1 > w[1].0) {
        return Err(EINVAL);
    }

    let mut areas = KVVec::with_capacity(req.n_areas as usize, GFP_KERNEL)?;
    let mut prev_end = 0;
    each_record(req.areas, req.n_areas, RESTORE_AREA_SIZE, |a| {
        let area = Area {
            start: le64(a, 0),
            end: le64(a, 8),
            offset: le64(a, 16),
            prot: le32(a, 24),
            kind: le32(a, 28),
            fd: le32(a, 32) as i32,
        };
        if le32(a, 36) != 0
            || !ok_range(area.start, area.end)
            || area.start < prev_end
            || area.prot & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0
            || area.kind > KIND_FILE
            || (area.kind == KIND_FILE) != (area.fd >= 0)
            || area.offset % PAGE != 0
            || keep.iter().any(|k| overlaps(area.start, area.end, k.0, k.1))
        {
            return Err(EINVAL);
        }
        prev_end = area.end;
        areas.push(area, GFP_KERNEL)?;
        Ok(())
    })?;

    let mut runs = KVVec::with_capacity(req.n_runs as usize, GFP_KERNEL)?;
    each_record(req.runs, req.n_runs, RESTORE_RUN_SIZE, |r| {
        let run = Run { addr: le64(r, 0), len: le64(r, 8), off: le64(r, 16) };
        let end = run.addr.checked_add(run.len).ok_or(EINVAL)?;
        if run.addr % PAGE != 0 || run.len % PAGE != 0 || run.len == 0 || run.off.checked_add(run.len).is_none() {
            return Err(EINVAL);
        }
        // Inside the map: a run may span adjacent areas, never a hole.
        let i = areas.partition_point(|a| a.end <= run.addr);
        let mut at = run.addr;
        let mut j = i;
        while at < end {
            match areas.get(j) {
                Some(a) if a.start <= at => at = a.end,
                _ => return Err(EINVAL),
            }
            j += 1;
        }
        runs.push(run, GFP_KERNEL)?;
        Ok(())
    })?;
    let mut close = KVec::with_capacity(req.n_close as usize, GFP_KERNEL)?;
    each_record(req.close, req.n_close, 4, |c| {
        close.push(le32(c, 0), GFP_KERNEL)?;
        Ok(())
    })?;
    Ok(Checked { areas, runs, keep, close })
}

/// `MOSIX_IOC_RESTORE`: returns the restored context's `rax` (the value the call returns into it).
pub(crate) fn restore(file: &FileState, arg: usize) -> Result<i64> {
    let req: KBox<Restore> = KBox::new(UserSlice::new(arg, core::mem::size_of::<Restore>()).reader().read()?, GFP_KERNEL)?;
    let held = file.lock()?;
    if file.has_frozen(&held) {
        return Err(EBUSY);
    }
    if sys::current_nr_threads() != 1 {
        return Err(EINVAL);
    }
    let c = check(&req)?;
    let regs = registers_for_return(req.regs);
    let mut buf = KVVec::from_elem(0u8, CHUNK, GFP_KERNEL)?;

    // The point of no return: the caller's own memory goes.
    if let Err(e) = rebuild(&req, &c.areas, &c.runs, &c.keep, &mut buf) {
        sys::kill_current();
        return Err(e);
    }
    sys::set_blocked(req.sigmask);
    sys::set_user_regs(&regs);
    if let Err(e) = file.park_current(&held) {
        sys::kill_current();
        return Err(e);
    }
    drop(held);
    // Last, so that a driver waiting for these to close finds the descriptor free.
    for &fd in c.close.iter() {
        sys::close_fd(fd);
    }
    Ok(regs[R_AX] as i64)
}

/// Steps 2-5: the caller's areas out, the image's in, its pages and its rseq area.
fn rebuild(req: &Restore, areas: &[Area], runs: &[Run], keep: &[(u64, u64)], buf: &mut [u8]) -> Result {
    // Its rseq area is about to go: unregister it before anything can write to it.
    sys::set_rseq(0, 0, 0);
    let mut at = 0;
    for &(s, e) in keep {
        if s > at {
            sys::vm_munmap(at, s - at)?;
        }
        at = e;
    }
    if sys::user_top() > at {
        sys::vm_munmap(at, sys::user_top() - at)?;
    }
    for a in areas {
        let mut flags = MAP_PRIVATE | MAP_FIXED;
        match a.kind {
            KIND_ANON => flags |= MAP_ANONYMOUS,
            KIND_STACK => flags |= MAP_ANONYMOUS | MAP_GROWSDOWN,
            _ => {}
        }
        let got = sys::vm_mmap(a.start, a.end - a.start, a.prot, flags, if a.kind == KIND_FILE { a.fd } else { -1 }, a.offset)?;
        if got != a.start {
            return Err(EFAULT);
        }
    }
    for r in runs {
        let mut done = 0;
        while done < r.len {
            let n = ((r.len - done) as usize).min(buf.len());
            let chunk = &mut buf[..n];
            if sys::pread(req.pages_fd, chunk, r.off + done)? != n {
                return Err(EIO);
            }
            let to = r.addr + done;
            // Writable areas take a plain copy; others (code, read-only data) are written through
            // their protections, as ptrace's POKEDATA does.
            if UserSlice::new(to as usize, n).writer().write_slice(chunk).is_err() && sys::poke(to, chunk)? != n {
                return Err(EFAULT);
            }
            done += n as u64;
        }
    }
    if req.rseq != 0 {
        // As the rseq system call does on registration: no critical section left pending.
        UserSlice::new((req.rseq + 8) as usize, 8).writer().write_slice(&[0u8; 8])?;
    }
    sys::set_rseq(req.rseq, req.rseq_len, req.rseq_sig);
    Ok(())
}
