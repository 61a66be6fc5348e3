//! Post-copy (lazy) migration out of home: the process resumes on the target at once, with its
//! large anonymous areas ([`crate::capture::lazy_areas`]) empty and registered with a userfaultfd
//! (MISSING mode); their pages follow on the migration connection, before it becomes the deputy
//! channel ("the lazy phase"):
//!
//! - the target's fault thread reads the userfaultfd and asks home for the 64 KiB around each
//!   fault (`PageRequest`); home answers requests before anything else;
//! - home pushes every other populated, non-zero page of those areas (`Pages`, 256 KiB frames),
//!   then `LazyEnd`; the target copies each page in with UFFDIO_COPY (never over a page the process
//!   already has), closes the userfaultfd at `LazyEnd` (the pages never sent are zero, which is what
//!   a fault then maps) and answers `LazyDone`; only then does home release its copy.
//!
//! Home keeps the process frozen (intact) during the lazy phase and the target serves none of its
//! forwarded calls before `LazyDone`: nothing the remote copy did is visible outside it. So a
//! failure of the link or of the target during the lazy phase costs nothing: home resumes the
//! process where it froze and the target kills its copy. A failure of home during the lazy phase
//! loses the process (the target lacks pages that exist nowhere else). The price of the design:
//! a forwarded call of the process waits until the lazy phase ends.
//!
//! The userfaultfd belongs to the target's stub, created while the stub was still root (so it takes
//! faults from kernel mode too: `vm.unprivileged_userfaultfd=0` limits an unprivileged one to user
//! mode) before it took the process's identity; the restore remaps its address space but keeps its
//! `mm`. mosd takes it with pidfd_getfd.
//!
//! Both sides receive and send at once from two threads; on a secure connection (a cluster with a
//! key) each direction's session state is lent to the other thread for the lazy phase
//! ([`Channel::split_off`]) and taken back before the connection becomes the deputy channel. The target also follows the process's own changes to the
//! lazy areas (userfaultfd events): pages it drops (MADV_DONTNEED) or unmaps are zero from then on
//! and never filled from home's copy; moving memory (mremap) during the lazy phase ends the move
//! (home resumes the process).
use crate::channel::Channel;
use crate::mem;
use crate::precopy::{normalize, SentMap};
use crate::sys::{self, UffdMsg};
use crate::Error;
use mos_proto::frame::{self, Kind};
use mos_proto::migration::*;
use mos_proto::pages::{self, PageRun};
use mos_proto::secure::Half;
use mos_proto::PAGE_SIZE;
use nix::errno::Errno;
use nix::unistd::Pid;
use std::collections::HashSet;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

const PAGE: u64 = PAGE_SIZE as u64;
/// Pages per pushed frame: a request waits for at most one such frame (256 KiB).
const PUSH_PAGES: u64 = 64;
/// Pages asked per fault (64 KiB; UFFDIO_COPY of 64 KiB costs 39 µs here, of 4 KiB 8.4 µs).
pub const FAULT_PAGES: u64 = 16;
/// How long home waits for `LazyDone` after `LazyEnd`.
const DONE_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------------------------
// Pure logic.

/// The block asked for a fault at `addr` inside the lazy area `[s, e)`: the aligned
/// `FAULT_PAGES` pages around it, clipped to the area.
pub fn fault_block(addr: u64, s: u64, e: u64) -> (u64, u64) {
    let span = FAULT_PAGES * PAGE;
    let a = addr & !(span - 1);
    (a.max(s), (a + span).min(e))
}

/// The area of `areas` (sorted, disjoint) holding `addr`.
pub fn area_of(areas: &[(u64, u64)], addr: u64) -> Option<(u64, u64)> {
    let i = areas.partition_point(|(_, e)| *e <= addr);
    areas.get(i).copied().filter(|(s, _)| *s <= addr)
}

/// The part of `[pos, end)` to copy next given the `dropped` ranges (normalized): `Err(next)`
/// when `pos` is dropped (skip to `next`), `Ok(piece_end)` otherwise.
pub fn next_piece(pos: u64, end: u64, dropped: &[(u64, u64)]) -> Result<u64, u64> {
    match area_of(dropped, pos) {
        Some((_, de)) => Err(de.min(end)),
        None => {
            let i = dropped.partition_point(|(_, e)| *e <= pos);
            Ok(dropped.get(i).map_or(end, |(ds, _)| (*ds).min(end)))
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Home side.

/// What home did in the lazy phase.
#[derive(Debug, Default, Clone)]
pub struct Served {
    /// From `Resumed` to `LazyDone`.
    pub lazy_us: u64,
    /// Requests answered.
    pub faults: u64,
    pub pages: u64,
    pub bytes: u64,
}

enum FromTarget {
    Request(PageRequest),
    Done,
    Gone(Error),
}

fn write_pages<W: Write>(w: &mut W, runs: &[PageRun], data: &[u8], st: &mut Served) -> Result<(), Error> {
    let table = pages::encode_runs(runs);
    frame::write_raw(w, Kind::Pages, &[&table, data])?;
    st.pages += data.len() as u64 / PAGE;
    st.bytes += (table.len() + data.len()) as u64;
    Ok(())
}

/// Home's half of the lazy phase, after `Resumed`: answers page requests and pushes the pages of
/// `lazy` from the frozen home task `pid` (which it does not change), sends `LazyEnd`, and waits
/// for `LazyDone`. On `Err` the remote copy must be given up (drop the connection) and the process
/// resumed at home.
pub fn serve_home(stream: &mut Channel, pid: Pid, lazy: &[(u64, u64)], resumed_at: Instant) -> Result<Served, Error> {
    let mut rd = stream.split_off(Half::Receiver)?;
    // The process may not fault for a long time: no read timeout (dead peers: `migrate::tune`).
    let _ = stream.set_read_timeout(None);
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || loop {
        let m = match frame::read_frame(&mut rd) {
            Ok(f) if f.kind == Kind::PageRequest => match f.decode::<PageRequest>() {
                Ok(r) => FromTarget::Request(r),
                Err(e) => FromTarget::Gone(e.into()),
            },
            Ok(f) if f.kind == Kind::LazyDone => match f.decode::<LazyDone>() {
                Ok(_) => FromTarget::Done,
                Err(e) => FromTarget::Gone(e.into()),
            },
            Ok(f) if f.kind == Kind::Failed => {
                FromTarget::Gone(f.decode::<Failed>().map_or_else(|e| e.into(), |x| Error::PeerFailed(x.reason)))
            }
            Ok(f) => FromTarget::Gone(frame::FrameError::Unexpected { expected: Kind::PageRequest, got: f.kind }.into()),
            Err(e) => FromTarget::Gone(e.into()),
        };
        let end = !matches!(m, FromTarget::Request(_));
        if tx.send(m).is_err() || end {
            return rd;
        }
    });
    let r = push_all(stream, pid, lazy, &rx, resumed_at);
    if r.is_err() {
        // Ends the reader (and the remote copy).
        stream.shutdown();
    }
    let rd = reader.join().map_err(|_| Error::Restore("the lazy phase's reader panicked".into()))?;
    let r = r?;
    // The deputy channel goes on over the whole connection.
    stream.rejoin(rd)?;
    Ok(r)
}

fn push_all(w: &mut Channel, pid: Pid, lazy: &[(u64, u64)], rx: &mpsc::Receiver<FromTarget>, resumed_at: Instant) -> Result<Served, Error> {
    let mut st = Served::default();
    let mut sent = SentMap::default();
    let mut buf = vec![0u8; (PUSH_PAGES.max(FAULT_PAGES) * PAGE) as usize];
    for &(s, e) in lazy {
        let mut a = s;
        while a < e {
            loop {
                match rx.try_recv() {
                    Ok(FromTarget::Request(r)) => answer(w, pid, lazy, r, &mut sent, &mut buf, &mut st)?,
                    Ok(FromTarget::Done) => return Err(Error::Restore("the target ended the lazy phase early".into())),
                    Ok(FromTarget::Gone(e)) => return Err(e),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return Err(Error::Restore("lost the target's requests".into())),
                }
            }
            let n = ((e - a) / PAGE).min(PUSH_PAGES);
            push_chunk(w, pid, a, n, &mut sent, &mut buf, &mut st)?;
            a += n * PAGE;
        }
    }
    frame::write_msg(w, Kind::LazyEnd, &LazyEnd { pushed: st.pages - st.faults })?;
    let deadline = Instant::now() + DONE_TIMEOUT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            // Asked before it read `LazyEnd`: the page is zero, or on its way.
            Ok(FromTarget::Request(_)) => {}
            Ok(FromTarget::Done) => break,
            Ok(FromTarget::Gone(e)) => return Err(e),
            Err(_) => return Err(Error::Restore("the target did not confirm it has every page".into())),
        }
    }
    st.lazy_us = resumed_at.elapsed().as_micros() as u64;
    Ok(st)
}

/// Sends the requested block (zero pages too: the process waits for them).
fn answer<W: Write>(
    w: &mut W,
    pid: Pid,
    lazy: &[(u64, u64)],
    r: PageRequest,
    sent: &mut SentMap,
    buf: &mut [u8],
    st: &mut Served,
) -> Result<(), Error> {
    let bad = || Error::Restore(format!("bad page request {:#x} +{} pages", r.addr, r.npages));
    if !r.addr.is_multiple_of(PAGE) || r.npages == 0 || u64::from(r.npages) > FAULT_PAGES {
        return Err(bad());
    }
    let end = r.addr + u64::from(r.npages) * PAGE;
    let (_, ae) = area_of(lazy, r.addr).ok_or_else(bad)?;
    if end > ae {
        return Err(bad());
    }
    let len = (end - r.addr) as usize;
    mem::readv(pid, &[(r.addr, len)], &mut buf[..len])?;
    write_pages(w, &[PageRun { addr: r.addr, npages: r.npages }], &buf[..len], st)?;
    let mut a = r.addr;
    while a < end {
        sent.set(a);
        a += PAGE;
    }
    st.faults += 1;
    Ok(())
}

/// Pushes the populated, non-zero, not yet sent pages of `[a, a + n pages)`.
fn push_chunk<W: Write>(w: &mut W, pid: Pid, a: u64, n: u64, sent: &mut SentMap, buf: &mut [u8], st: &mut Served) -> Result<(), Error> {
    let pm = mem::pagemap(pid, a, n as usize)?;
    let mut cand: Vec<(u64, usize)> = Vec::new();
    for (i, e) in pm.iter().enumerate() {
        let p = a + i as u64 * PAGE;
        if !e.populated() || sent.get(p) {
            continue;
        }
        match cand.last_mut() {
            Some((s, l)) if *s + *l as u64 == p => *l += PAGE_SIZE,
            _ => cand.push((p, PAGE_SIZE)),
        }
    }
    if cand.is_empty() {
        return Ok(());
    }
    let got = mem::readv(pid, &cand, buf)?;
    let (mut runs, mut out, mut src) = (Vec::<PageRun>::new(), 0usize, 0usize);
    for (s, l) in &cand {
        for k in 0..(*l / PAGE_SIZE) {
            let addr = s + (k * PAGE_SIZE) as u64;
            let page = src..src + PAGE_SIZE;
            src += PAGE_SIZE;
            if buf[page.clone()].iter().all(|b| *b == 0) {
                continue;
            }
            buf.copy_within(page, out);
            out += PAGE_SIZE;
            sent.set(addr);
            match runs.last_mut() {
                Some(r) if r.addr + u64::from(r.npages) * PAGE == addr => r.npages += 1,
                _ => runs.push(PageRun { addr, npages: 1 }),
            }
        }
    }
    debug_assert_eq!(src, got);
    if !runs.is_empty() {
        write_pages(w, &runs, &buf[..out], st)?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Target side.

const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFD_EVENT_REMAP: u8 = 0x14;
const UFFD_EVENT_REMOVE: u8 = 0x15;
const UFFD_EVENT_UNMAP: u8 = 0x16;
const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 1;
const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 4;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// Takes the stub's userfaultfd ([`sys::STUB_UFFD`]) and closes it in the stub; `None` if the stub
/// has none (the kernel has no userfaultfd).
pub fn take_stub_uffd(t: &mut crate::ptrace::Tracee<crate::ptrace::Stopped>) -> Option<OwnedFd> {
    let pid = t.pid();
    let fd = sys::pidfd_open(pid).and_then(|p| sys::pidfd_getfd(p.as_raw_fd(), sys::STUB_UFFD)).ok();
    if fd.is_some() {
        let _ = t.inject(libc::SYS_close, [sys::STUB_UFFD as u64, 0, 0, 0, 0, 0]);
    }
    fd
}

/// Enables the stub's userfaultfd (MISSING faults and the events of [`serve_guest`]) and registers
/// the lazy areas, once they are mapped and before the process runs.
pub fn arm_guest(uffd: &OwnedFd, pid: Pid, lazy: &[(u64, u64)]) -> Result<(), Error> {
    let fd = uffd.as_raw_fd();
    sys::uffd_api(fd, UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP).map_err(|e| Error::Sys {
        what: "UFFDIO_API(MISSING)",
        pid: pid.as_raw(),
        errno: e,
    })?;
    for &(s, e) in lazy {
        sys::uffd_register(fd, s, e - s, UFFDIO_REGISTER_MODE_MISSING).map_err(|e| Error::Sys {
            what: "UFFDIO_REGISTER(MISSING)",
            pid: pid.as_raw(),
            errno: e,
        })?;
    }
    Ok(())
}

/// Checks, before the lazy areas are registered, that every page present in them was written from
/// the stream (`filled`): a page something else touched during the restore would never fault, and
/// would keep the wrong data.
pub fn check_untouched(pid: Pid, lazy: &[(u64, u64)], filled: &[(u64, u64)]) -> Result<(), Error> {
    let filled = normalize(filled.to_vec());
    for &(s, e) in lazy {
        let mut a = s;
        while a < e {
            let n = ((e - a) / PAGE).min(4096);
            for (i, p) in mem::pagemap(pid, a, n as usize)?.iter().enumerate() {
                let addr = a + i as u64 * PAGE;
                if p.populated() && area_of(&filled, addr).is_none() {
                    return Err(Error::Restore(format!("page {addr:#x} of a lazy area was touched during the restore")));
                }
            }
            a += n * PAGE;
        }
    }
    Ok(())
}

/// What the target did in the lazy phase.
#[derive(Debug, Default, Clone)]
pub struct Filled {
    pub faults: u64,
    pub pages: u64,
    pub bytes: u64,
}

struct Shared {
    /// Dropped (MADV_DONTNEED) or unmapped by the process: zero from then on, never filled.
    dropped: Vec<(u64, u64)>,
    /// Why the lazy phase cannot go on.
    failed: Option<String>,
}

/// The target's half of the lazy phase, with the process running: serves its faults (asking home)
/// and copies in every page home sends until `LazyEnd`; then closes the userfaultfd and answers
/// `LazyDone`. On `Err` the process cannot go on (kill it).
pub fn serve_guest(stream: &mut Channel, uffd: OwnedFd, lazy: &[(u64, u64)]) -> Result<Filled, Error> {
    let shared = Mutex::new(Shared { dropped: Vec::new(), failed: None });
    let (stop_r, stop_w) = nix::unistd::pipe().map_err(|e| Error::Sys { what: "pipe", pid: 0, errno: e })?;
    let mut writer = stream.split_off(Half::Sender)?;
    let mut filled = Filled::default();
    let r = std::thread::scope(|sc| {
        let faults = sc.spawn(|| fault_loop(&uffd, &stop_r, &mut writer, lazy, &shared));
        let r = fill_loop(stream, &uffd, &shared, &mut filled);
        if r.is_err() {
            stream.shutdown();
        }
        let _ = nix::unistd::write(&stop_w, &[1]);
        let n = faults.join().unwrap_or(Ok(0));
        r.and(n)
    });
    if let Some(why) = shared.lock().map(|s| s.failed.clone()).unwrap_or(None) {
        return Err(Error::Restore(why));
    }
    filled.faults = r?;
    stream.rejoin(writer)?;
    // Every non-zero page is in: the pages still missing are zero, and faults map them so once no
    // userfaultfd is left (blocked faulting threads retry).
    drop(uffd);
    frame::write_msg(stream, Kind::LazyDone, &LazyDone { faults: filled.faults })?;
    Ok(filled)
}

fn fault_loop(uffd: &OwnedFd, stop: &OwnedFd, w: &mut Channel, lazy: &[(u64, u64)], shared: &Mutex<Shared>) -> Result<u64, Error> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut asked: HashSet<u64> = HashSet::new();
    let mut msgs: Vec<UffdMsg> = Vec::new();
    loop {
        let mut fds = [PollFd::new(uffd.as_fd(), PollFlags::POLLIN), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::Sys { what: "poll(userfaultfd)", pid: 0, errno: e }),
        }
        if fds[1].any().unwrap_or(false) {
            return Ok(asked.len() as u64);
        }
        let ev = fds[0].revents().unwrap_or(PollFlags::empty());
        if ev.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
            // The process is gone: wait for the end.
            let mut fds = [PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::NONE);
            return Ok(asked.len() as u64);
        }
        msgs.clear();
        let mut requests = Vec::new();
        {
            // Events are read under the lock: a page copy never lands after the process dropped it.
            let mut sh = shared.lock().map_err(|_| Error::Restore("lazy phase state poisoned".into()))?;
            sys::uffd_read(uffd.as_raw_fd(), &mut msgs).map_err(|e| Error::Sys { what: "read(userfaultfd)", pid: 0, errno: e })?;
            for m in &msgs {
                match m.event {
                    UFFD_EVENT_PAGEFAULT => {
                        let addr = m.args[1] & !(PAGE - 1);
                        let home = if area_of(&sh.dropped, addr).is_some() { None } else { area_of(lazy, addr) };
                        match home {
                            Some((s, e)) => {
                                let (b, be) = fault_block(addr, s, e);
                                if asked.insert(b) {
                                    requests.push(PageRequest { addr: b, npages: ((be - b) / PAGE) as u32 });
                                }
                            }
                            // Memory home never had (an area grown here) or the process dropped.
                            None => match sys::uffd_zeropage(uffd.as_raw_fd(), addr, PAGE) {
                                Ok(()) | Err(Errno::EEXIST) | Err(Errno::ENOENT) | Err(Errno::ESRCH) => {}
                                // Another event is pending: the thread then waits until the
                                // userfaultfd closes at `LazyEnd`, and maps a zero page.
                                Err(Errno::EAGAIN) => {}
                                Err(e) => return Err(Error::Sys { what: "UFFDIO_ZEROPAGE", pid: 0, errno: e }),
                            },
                        }
                    }
                    UFFD_EVENT_REMOVE | UFFD_EVENT_UNMAP => {
                        let mut d = std::mem::take(&mut sh.dropped);
                        d.push((m.args[0], m.args[1]));
                        sh.dropped = normalize(d);
                    }
                    UFFD_EVENT_REMAP => {
                        sh.failed = Some("the process moved lazily migrated memory (mremap) before it had all its pages".into());
                        w.shutdown();
                        return Ok(asked.len() as u64);
                    }
                    _ => {}
                }
            }
        }
        for r in requests {
            frame::write_msg(w, Kind::PageRequest, &r)?;
        }
    }
}

fn fill_loop(stream: &mut Channel, uffd: &OwnedFd, shared: &Mutex<Shared>, filled: &mut Filled) -> Result<(), Error> {
    let mut frames = 0u64;
    loop {
        let f = frame::read_frame(stream)?;
        match f.kind {
            Kind::Pages => {
                frames += 1;
                crate::fault::lazy_frame(frames);
                let (runs, data) = pages::decode(&f.body)?;
                let mut off = 0usize;
                for r in &runs {
                    let bytes = &data[off..off + r.bytes()];
                    off += r.bytes();
                    copy_run(uffd, shared, r.addr, bytes)?;
                }
                filled.pages += data.len() as u64 / PAGE;
                filled.bytes += f.body.len() as u64;
            }
            Kind::LazyEnd => {
                let _: LazyEnd = f.decode()?;
                return Ok(());
            }
            Kind::Failed => return Err(Error::PeerFailed(f.decode::<Failed>()?.reason)),
            other => return Err(frame::FrameError::Unexpected { expected: Kind::Pages, got: other }.into()),
        }
    }
}

/// Copies a run in, skipping what the process dropped and pages it already has.
fn copy_run(uffd: &OwnedFd, shared: &Mutex<Shared>, addr: u64, data: &[u8]) -> Result<(), Error> {
    let end = addr + data.len() as u64;
    let mut pos = addr;
    while pos < end {
        let sh = shared.lock().map_err(|_| Error::Restore("lazy phase state poisoned".into()))?;
        if sh.failed.is_some() {
            return Ok(());
        }
        let piece_end = match next_piece(pos, end, &sh.dropped) {
            Err(next) => {
                pos = next;
                continue;
            }
            Ok(pe) => pe,
        };
        let src = &data[(pos - addr) as usize..(piece_end - addr) as usize];
        match sys::uffd_copy(uffd.as_raw_fd(), pos, src) {
            Ok(()) => pos = piece_end,
            Err((n, Errno::EEXIST)) => pos += n + PAGE,
            Err((n, Errno::EAGAIN)) => {
                // The process's map is changing: let the fault thread read the event first.
                pos += n;
                drop(sh);
                std::thread::sleep(Duration::from_micros(50));
            }
            // The area is gone (unmapped, replaced) or the process ended.
            Err((_, Errno::ENOENT | Errno::EINVAL | Errno::ESRCH)) => pos = piece_end,
            Err((_, e)) => return Err(Error::Sys { what: "UFFDIO_COPY", pid: 0, errno: e }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_blocks_are_aligned_and_clipped() {
        let s = 0x10_0000;
        let e = s + 40 * PAGE;
        assert_eq!(fault_block(s + 3 * PAGE + 5, s, e), (s, s + 16 * PAGE));
        assert_eq!(fault_block(s + 17 * PAGE, s, e), (s + 16 * PAGE, s + 32 * PAGE));
        assert_eq!(fault_block(s + 39 * PAGE, s, e), (s + 32 * PAGE, e));
        // An area that does not start on a block boundary.
        let s2 = s + 5 * PAGE;
        assert_eq!(fault_block(s2 + PAGE, s2, e), (s2, s + 16 * PAGE));
    }

    #[test]
    fn pieces_skip_dropped_ranges() {
        let d = vec![(0x3000, 0x5000), (0x8000, 0x9000)];
        assert_eq!(next_piece(0x1000, 0xa000, &d), Ok(0x3000));
        assert_eq!(next_piece(0x3000, 0xa000, &d), Err(0x5000));
        assert_eq!(next_piece(0x5000, 0xa000, &d), Ok(0x8000));
        assert_eq!(next_piece(0x9000, 0xa000, &d), Ok(0xa000));
        assert_eq!(next_piece(0x4000, 0x4800, &d), Err(0x4800));
        assert_eq!(area_of(&d, 0x2fff), None);
        assert_eq!(area_of(&d, 0x3000), Some((0x3000, 0x5000)));
        assert_eq!(area_of(&d, 0x5000), None);
    }
}
