//! Pre-copy live migration out of home: the pages stream while the process keeps running, in
//! rounds, then a short freeze sends what changed last, and the context.
//!
//! Dirty tracking uses userfaultfd write-protection in asynchronous mode (the kernel resolves a
//! write to a protected page itself, by clearing the page's protection; no handler runs) and the
//! PAGEMAP_SCAN ioctl on /proc/PID/pagemap, which lists the pages written since the last scan and
//! protects them again in the same walk. The userfaultfd is created inside the process (an
//! injected `userfaultfd()` while it is briefly stopped), taken with `pidfd_getfd` and closed in the
//! process at once: its fd table is as before, and when this side drops the descriptor the kernel
//! unregisters every area and removes every protection, so the process pays nothing afterwards.
//!
//! Areas mapped after an area was registered are not registered: each round finds them
//! (PAGEMAP_SCAN for pages not in `PAGE_IS_WPALLOWED` areas), registers them and sends them whole.
//! The receiver learns of every change of the map (new, removed, grown, moved areas) with a
//! [`MapUpdate`] before the pages that need it; both sides derive the same operations from it with
//! [`map_ops`].
//!
//! Each round: read the map; find and register unregistered areas; scan (and re-protect) written
//! pages; send the map changes and the pages. Rounds go on until [`StopRule`] says freeze.
use crate::capture::{self, thaw, Held, Image, Sent};
use crate::mem;
use crate::procfs::{self, MapEntry, PageInfo};
use crate::ptrace::{fixup_restart, Stopped, Tracee};
use crate::sys::{self, PageRegion, PmScanArg};
use crate::Error;
use mos_proto::frame::{self, Kind};
use mos_proto::migration::*;
use mos_proto::pages::{self, PageRun, MAX_PAGES_PER_FRAME};
use mos_proto::PAGE_SIZE;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

const PAGE: u64 = PAGE_SIZE as u64;

// ------------------------------------------------------------------------------------------------
// Pure logic: the stop rule, range arithmetic, the map difference.

/// When to stop the live rounds and freeze (p.haul's rule): at most `max_rounds` rounds in all
/// (the frozen one included); freeze when a round found at most `min_dirty` written pages, or more
/// than `max_growth_pct` % more than the round before (dirtying outpaces the copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRule {
    pub max_rounds: u32,
    pub min_dirty: u64,
    pub max_growth_pct: u64,
}

/// The rule of issue 6: 8 rounds, 64 pages, 10 %.
pub const STOP_RULE: StopRule = StopRule { max_rounds: 8, min_dirty: 64, max_growth_pct: 10 };

/// Why the live rounds ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Few pages left to send.
    Converged,
    /// The dirty set grew: more rounds would not shrink it.
    Growing,
    /// The round limit.
    MaxRounds,
}

impl StopRule {
    /// After `done` rounds were sent live (the last of them carried `prev` pages), a scan found
    /// `dirty` pages written since: freeze now (and send them frozen), or send them live?
    pub fn decide(&self, done: u32, prev: u64, dirty: u64) -> Option<Stop> {
        if dirty <= self.min_dirty {
            Some(Stop::Converged)
        } else if u128::from(dirty) * 100 > u128::from(prev) * u128::from(100 + self.max_growth_pct) {
            Some(Stop::Growing)
        } else if done + 1 >= self.max_rounds {
            Some(Stop::MaxRounds)
        } else {
            None
        }
    }
}

/// Sorted, disjoint half-open ranges `(start, end)`.
pub type Ranges = Vec<(u64, u64)>;

/// Sorts and merges overlapping or touching ranges; drops empty ones.
pub fn normalize(mut r: Ranges) -> Ranges {
    r.retain(|(s, e)| s < e);
    r.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(r.len());
    for (s, e) in r {
        match out.last_mut() {
            Some((_, le)) if s <= *le => *le = (*le).max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `a` minus `b` (both normalized).
pub fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let mut out = Vec::new();
    let mut j = 0;
    for &(s, e) in a {
        let mut cur = s;
        while j < b.len() && b[j].1 <= cur {
            j += 1;
        }
        let mut k = j;
        while cur < e && k < b.len() && b[k].0 < e {
            if b[k].0 > cur {
                out.push((cur, b[k].0));
            }
            cur = cur.max(b[k].1);
            k += 1;
        }
        if cur < e {
            out.push((cur, e));
        }
    }
    out
}

/// `a` ∩ `b` (both normalized).
pub fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn cover(vmas: &[Vma]) -> Ranges {
    normalize(vmas.iter().map(|v| (v.start, v.end)).collect())
}

/// Two areas hold the same data at a common address: same kind of backing, and for a file the
/// same file at the same offset for that address.
fn same_backing(a: &Vma, b: &Vma) -> bool {
    match (&a.backing, &b.backing) {
        (Backing::Anon, Backing::Anon) | (Backing::Stack, Backing::Stack) => true,
        (Backing::File { file: fa, offset: oa }, Backing::File { file: fb, offset: ob }) => {
            fa == fb && i128::from(*oa) - i128::from(a.start) == i128::from(*ob) - i128::from(b.start)
        }
        _ => false,
    }
}

/// What a receiver does to go from map `old` to map `new`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapOps {
    /// Ranges to unmap (covered before, not now).
    pub unmap: Ranges,
    /// Areas to map afresh (MAP_FIXED, replacing what is there): newly covered, covered with
    /// another backing, or named `fresh`. Their pages at the receiver start over.
    pub map: Vec<Vma>,
}

/// The operations that turn the receiver's map `old` into `new`, keeping the pages of every range
/// whose backing did not change and that is not in `fresh` (normalized).
pub fn map_ops(old: &[Vma], new: &[Vma], fresh: &[(u64, u64)]) -> MapOps {
    let unmap = subtract(&cover(old), &cover(new));
    let mut kept = Vec::new();
    for v in new {
        for o in old.iter().filter(|o| o.start < v.end && v.start < o.end) {
            if same_backing(o, v) {
                kept.push((o.start.max(v.start), o.end.min(v.end)));
            }
        }
    }
    let kept = subtract(&normalize(kept), fresh);
    let mut map = Vec::new();
    for v in new {
        for (s, e) in subtract(&[(v.start, v.end)], &kept) {
            let backing = match v.backing {
                Backing::File { file, offset } => Backing::File { file, offset: offset + (s - v.start) },
                ref b => b.clone(),
            };
            map.push(Vma { start: s, end: e, prot: v.prot, backing });
        }
    }
    MapOps { unmap, map }
}

/// Checks a map from the wire: page aligned, non-empty, sorted, disjoint, inside user space.
pub fn check_map(vmas: &[Vma]) -> Result<(), String> {
    let mut prev = 0u64;
    for v in vmas {
        if v.start % PAGE != 0 || v.end % PAGE != 0 || v.start >= v.end || v.start < prev || v.end > USER_END {
            return Err(format!("bad VMA {:#x}-{:#x} in the map", v.start, v.end));
        }
        prev = v.end;
    }
    Ok(())
}

/// End of the x86-64 user address space (4-level paging).
pub const USER_END: u64 = 0x7fff_ffff_f000;

/// Pages already sent, one bit per page, in 2 MiB chunks.
#[derive(Debug, Default)]
pub struct SentMap {
    chunks: HashMap<u64, [u64; 8]>,
}

impl SentMap {
    fn at(addr: u64) -> (u64, usize, u64) {
        let page = addr / PAGE;
        (page / 512, (page % 512 / 64) as usize, 1u64 << (page % 64))
    }
    pub fn set(&mut self, addr: u64) {
        let (c, w, b) = Self::at(addr);
        self.chunks.entry(c).or_insert([0; 8])[w] |= b;
    }
    pub fn get(&self, addr: u64) -> bool {
        let (c, w, b) = Self::at(addr);
        self.chunks.get(&c).is_some_and(|x| x[w] & b != 0)
    }
    /// The sent pages inside `[s, e)`, as ranges.
    pub fn ranges_in(&self, s: u64, e: u64) -> Ranges {
        let mut out: Ranges = Vec::new();
        let mut a = s;
        while a < e {
            let (c, _, _) = Self::at(a);
            let chunk_end = ((c + 1) * 512 * PAGE).min(e);
            if let Some(x) = self.chunks.get(&c) {
                while a < chunk_end {
                    let (_, w, b) = Self::at(a);
                    if x[w] & b != 0 {
                        match out.last_mut() {
                            Some((_, le)) if *le == a => *le += PAGE,
                            _ => out.push((a, a + PAGE)),
                        }
                    }
                    a += PAGE;
                }
            }
            a = chunk_end;
        }
        out
    }
    pub fn any_in(&self, s: u64, e: u64) -> bool {
        !self.ranges_in(s, e).is_empty()
    }
    pub fn clear(&mut self, s: u64, e: u64) {
        let mut a = s;
        while a < e {
            let (c, w, b) = Self::at(a);
            if let Some(x) = self.chunks.get_mut(&c) {
                x[w] &= !b;
            } else {
                a = (c + 1) * 512 * PAGE;
                continue;
            }
            a += PAGE;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The kernel interfaces: userfaultfd and PAGEMAP_SCAN.

const UFFD_USER_MODE_ONLY: u64 = 1;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const PM_SCAN_WP_MATCHING: u64 = 1;
const PAGE_IS_WPALLOWED: u64 = 1 << 0;
const PAGE_IS_WRITTEN: u64 = 1 << 1;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// A region of pages with the same categories, as PAGEMAP_SCAN reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// PAGEMAP_SCAN over `ranges` (normalized), at most [`SCAN_CHUNK`] bytes of address space per
/// call: the kernel holds the process's mmap lock for a call, and a long walk would stall the
/// process's own mmap/munmap/brk meanwhile.
fn scan(pagemap: &std::fs::File, pid: Pid, ranges: &[(u64, u64)], proto: PmScanArg) -> Result<Vec<Region>, Error> {
    const VEC: usize = 4096;
    let mut vec = vec![PageRegion::default(); VEC];
    let mut out: Vec<Region> = Vec::new();
    for &(rs, re) in ranges {
        let mut s = rs;
        while s < re {
            let end = re.min(s + SCAN_CHUNK);
            let mut arg = PmScanArg { start: s, end, ..proto };
            loop {
                arg.walk_end = 0;
                let n = sys::pagemap_scan(pagemap.as_raw_fd(), &mut arg, &mut vec).map_err(|e| Error::Sys {
                    what: "PAGEMAP_SCAN",
                    pid: pid.as_raw(),
                    errno: e,
                })?;
                for r in &vec[..n] {
                    match out.last_mut() {
                        Some(l) if l.end == r.start && l.categories == r.categories => l.end = r.end,
                        _ => out.push(Region { start: r.start, end: r.end, categories: r.categories }),
                    }
                }
                if arg.walk_end >= end || arg.walk_end <= arg.start {
                    break;
                }
                arg.start = arg.walk_end;
            }
            s = end;
        }
    }
    Ok(out)
}

/// Address space walked by one PAGEMAP_SCAN call (32 MiB: 8192 page-table entries).
const SCAN_CHUNK: u64 = 32 << 20;

/// The process's userfaultfd, held here only.
struct Uffd(OwnedFd);

/// Creates a write-protect (async) userfaultfd in the stopped process and takes it. The
/// process's own descriptor is closed before this returns, whatever happens.
fn arm(t: &mut Tracee<Stopped>) -> Result<Uffd, Error> {
    let pid = t.pid();
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | UFFD_USER_MODE_ONLY;
    let fd = t.inject_ok("userfaultfd", libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
    let taken = sys::pidfd_open(pid).and_then(|pidfd| sys::pidfd_getfd(pidfd.as_raw_fd(), fd as i32)).map_err(|e| Error::Sys {
        what: "pidfd_getfd(userfaultfd)",
        pid: pid.as_raw(),
        errno: e,
    });
    let closed = t.inject_ok("close(userfaultfd)", libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
    let uffd = Uffd(taken?);
    closed?;
    sys::uffd_api(uffd.0.as_raw_fd(), UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED).map_err(|e| Error::Sys {
        what: "UFFDIO_API(WP_ASYNC)",
        pid: pid.as_raw(),
        errno: e,
    })?;
    Ok(uffd)
}

impl Uffd {
    /// Registers `[s, e)` for write-protection. Fails if part of it is not mapped (any more).
    fn register(&self, pid: Pid, s: u64, e: u64) -> Result<(), Error> {
        sys::uffd_register(self.0.as_raw_fd(), s, e - s, UFFDIO_REGISTER_MODE_WP).map_err(|e| Error::Sys {
            what: "UFFDIO_REGISTER",
            pid: pid.as_raw(),
            errno: e,
        })
    }
}

// ------------------------------------------------------------------------------------------------
// The sender.

/// One area of the map now, with the backing the receiver gives it.
#[derive(Debug, Clone)]
struct Area {
    m: MapEntry,
    v: Vma,
    /// A file the receiver lacks, sent by value: every page inside the file travels.
    by_value: bool,
}

/// The map of `maps` as the receiver rebuilds it, given the offer's files and which it has.
pub fn vmas_of(maps: &[MapEntry], files: &[FileRef], files_present: &[bool]) -> Vec<Vma> {
    areas_of(maps, files, files_present).into_iter().map(|a| a.v).collect()
}

fn areas_of(maps: &[MapEntry], files: &[FileRef], files_present: &[bool]) -> Vec<Area> {
    let prot = |m: &MapEntry| (if m.read { PROT_R } else { 0 }) | (if m.write { PROT_W } else { 0 }) | (if m.exec { PROT_X } else { 0 });
    maps.iter()
        .filter(|m| !m.is_special())
        .map(|m| {
            let file_idx = files.iter().position(|f| f.path == m.name).filter(|i| files_present.get(*i).copied().unwrap_or(false));
            let backing = match (m.name.as_str(), file_idx) {
                ("[stack]", _) => Backing::Stack,
                (_, Some(i)) => Backing::File { file: i as u32, offset: m.offset },
                _ => Backing::Anon,
            };
            let by_value = m.is_file() && backing == Backing::Anon;
            Area { v: Vma { start: m.start, end: m.end, prot: prot(m), backing }, m: m.clone(), by_value }
        })
        .collect()
}

/// Pages to send: `(addr, npages, skip_zero)`: a zero page is not sent when `skip_zero` and the
/// receiver never got that page (its copy is zero already).
type Plan = Vec<(u64, u64, bool)>;

/// Dirty tracking and the receiver's view, across rounds.
struct Tracker {
    pid: Pid,
    uffd: Uffd,
    files: Vec<FileRef>,
    files_present: Vec<bool>,
    /// The map the receiver has now.
    sent_vmas: Vec<Vma>,
    special: Vec<SpecialArea>,
    sent: SentMap,
    /// Ranges a live round could not read (unmapped meanwhile): looked at again next round.
    retry: Ranges,
    file_sizes: HashMap<String, u64>,
    buf: Vec<u8>,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy)]
struct RoundOut {
    /// Pages found written (or new) this round.
    dirty: u64,
}

fn open_pagemap(pid: Pid) -> Result<std::fs::File, Error> {
    let path = format!("/proc/{pid}/pagemap");
    std::fs::File::open(&path).map_err(|e| Error::Proc { path, source: e })
}

impl Tracker {
    fn area_at(areas: &[Area], addr: u64) -> Option<&Area> {
        let i = areas.partition_point(|a| a.m.end <= addr);
        areas.get(i).filter(|a| a.m.start <= addr)
    }

    fn file_pages(&mut self, a: &Area) -> u64 {
        let size = *self.file_sizes.entry(a.m.name.clone()).or_insert_with(|| std::fs::metadata(&a.m.name).map(|md| md.len()).unwrap_or(0));
        size.saturating_sub(a.m.offset).div_ceil(PAGE)
    }

    /// Plans whole ranges (new areas, areas mapped afresh, retries) from /proc/PID/pagemap.
    fn plan_whole(&mut self, areas: &[Area], ranges: &[(u64, u64)], plan: &mut Plan, stats: &mut Stats) -> Result<u64, Error> {
        let mut n = 0;
        for &(s, e) in ranges {
            let mut a = s;
            while a < e {
                let Some(area) = Self::area_at(areas, a).cloned() else {
                    // Not mapped: skip to the next area.
                    let i = areas.partition_point(|x| x.m.end <= a);
                    a = areas.get(i).map_or(e, |x| x.m.start).min(e).max(a + PAGE);
                    continue;
                };
                let stop = area.m.end.min(e);
                if !area.m.read {
                    a = stop;
                    continue;
                }
                let in_file = if area.by_value { area.m.start + self.file_pages(&area) * PAGE } else { 0 };
                while a < stop {
                    let cnt = ((stop - a) / PAGE).min(MAX_PAGES_PER_FRAME as u64);
                    let pm = mem::pagemap(self.pid, a, cnt as usize)?;
                    stats.pages_scanned += cnt;
                    for (i, e) in pm.iter().enumerate() {
                        let p = a + i as u64 * PAGE;
                        let take = if area.by_value {
                            p < in_file
                        } else if matches!(area.v.backing, Backing::File { .. }) {
                            if e.populated() && e.file_or_shared() {
                                stats.pages_skipped_file += 1;
                            }
                            e.populated() && !e.file_or_shared()
                        } else {
                            e.populated()
                        };
                        if take {
                            push(plan, p, !matches!(area.v.backing, Backing::File { .. }));
                            n += 1;
                        } else if !PageInfo::populated(*e) {
                            stats.pages_skipped_absent += 1;
                        }
                    }
                    a += cnt * PAGE;
                }
            }
        }
        Ok(n)
    }

    /// One round. `frozen`: the process is stopped (last round; every error is final).
    fn round<W: Write>(&mut self, w: &mut W, frozen: bool, stats: &mut Stats) -> Result<RoundOut, Error> {
        let pid = self.pid;
        let maps = procfs::maps(pid)?;
        if frozen {
            let special: Vec<(u64, u64)> =
                maps.iter().filter(|m| m.is_special() && m.name != "[vsyscall]").map(|m| (m.start, m.len())).collect();
            let want: Vec<(u64, u64)> = self.special.iter().map(|s| (s.start, s.len)).collect();
            if special != want {
                return Err(Error::Unsupported { pid: pid.as_raw(), reason: "its vDSO or vvar area moved during the migration".into() });
            }
        }
        let areas = areas_of(&maps, &self.files, &self.files_present);
        let now: Vec<Vma> = areas.iter().map(|a| a.v.clone()).collect();
        let mapped = cover(&now);
        let pagemap = open_pagemap(pid)?;
        // Areas not registered (new since the last round, or never): register them.
        let unreg = scan(
            &pagemap,
            pid,
            &mapped,
            PmScanArg {
                category_inverted: PAGE_IS_WPALLOWED,
                category_mask: PAGE_IS_WPALLOWED,
                return_mask: PAGE_IS_WPALLOWED,
                ..Default::default()
            },
        )?;
        let unreg = intersect(&normalize(unreg.iter().map(|r| (r.start, r.end)).collect()), &mapped);
        for &(s, e) in &unreg {
            // Best effort: an area that cannot be registered is sent whole every round.
            if let Err(err) = self.uffd.register(pid, s, e) {
                tracing::debug!(pid = pid.as_raw(), start = s, end = e, error = %err, "area not tracked");
            }
        }
        // Written pages, protected again in the same walk.
        let dirty = scan(
            &pagemap,
            pid,
            &mapped,
            PmScanArg {
                flags: PM_SCAN_WP_MATCHING,
                category_mask: PAGE_IS_WRITTEN,
                return_mask: PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE,
                ..Default::default()
            },
        )?;
        // The receiver must drop its copy only where it has one.
        let fresh: Ranges = unreg.iter().copied().filter(|(s, e)| self.sent.any_in(*s, *e)).collect();
        let ops = map_ops(&self.sent_vmas, &now, &fresh);
        for &(s, e) in &ops.unmap {
            self.sent.clear(s, e);
        }
        let remapped = normalize(ops.map.iter().map(|v| (v.start, v.end)).collect());
        for &(s, e) in &remapped {
            self.sent.clear(s, e);
        }
        // Sent whole: unregistered and remapped areas, and what a live round could not read.
        let whole = normalize(unreg.iter().chain(&remapped).chain(&self.retry).copied().collect());
        self.retry.clear();
        let mut plan: Plan = Vec::new();
        let mut discard: Ranges = Vec::new();
        let mut out = RoundOut { dirty: self.plan_whole(&areas, &whole, &mut plan, stats)? };
        stats.pages_scanned += mapped.iter().map(|(s, e)| (e - s) / PAGE).sum::<u64>();
        for r in subtract_regions(&dirty, &whole) {
            let mut a = r.start;
            while a < r.end {
                let Some(area) = Self::area_at(&areas, a) else {
                    a += PAGE;
                    continue;
                };
                let stop = area.m.end.min(r.end);
                let populated = r.categories & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED) != 0;
                let file_backed = matches!(area.v.backing, Backing::File { .. });
                let file_page = r.categories & PAGE_IS_FILE != 0;
                if !area.m.read {
                    // Never sent; see capture::send_pages.
                } else if !area.by_value && (!populated || (file_backed && file_page)) {
                    // Back to what the backing holds: the receiver drops its copy, if it has one.
                    // (A file sent by value is sent again instead: its data is not zero.)
                    for (s, e) in self.sent.ranges_in(a, stop) {
                        discard.push((s, e));
                        self.sent.clear(s, e);
                    }
                    if populated {
                        stats.pages_skipped_file += (stop - a) / PAGE;
                    }
                } else {
                    let mut p = a;
                    while p < stop {
                        push(&mut plan, p, !file_backed);
                        p += PAGE;
                    }
                    out.dirty += (stop - a) / PAGE;
                }
                a = stop;
            }
        }
        if frozen {
            // Pages sent earlier that are gone now (dropped, their page tables reclaimed) read as
            // their backing's: the receiver drops them too.
            let absent = scan(
                &pagemap,
                pid,
                &mapped,
                PmScanArg {
                    category_inverted: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                    category_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                    return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                    ..Default::default()
                },
            )?;
            for r in absent {
                let by_value = Self::area_at(&areas, r.start).is_some_and(|a| a.by_value);
                for (s, e) in self.sent.ranges_in(r.start, r.end) {
                    if by_value {
                        // The file's data, not zero: send it again.
                        let mut p = s;
                        while p < e {
                            push(&mut plan, p, false);
                            p += PAGE;
                        }
                    } else {
                        discard.push((s, e));
                        self.sent.clear(s, e);
                    }
                }
            }
        }
        let discard = normalize(discard);
        tracing::debug!(
            pid = pid.as_raw(),
            frozen,
            new_areas = unreg.len(),
            fresh = fresh.len(),
            unmapped = ops.unmap.len(),
            mapped = ops.map.len(),
            dropped = discard.len(),
            "pre-copy map changes"
        );
        if now != self.sent_vmas || !fresh.is_empty() || !discard.is_empty() {
            send_map_update(w, &now, &fresh, &discard)?;
            self.sent_vmas = now;
        }
        plan.sort_unstable_by_key(|p| p.0);
        plan.dedup_by_key(|p| p.0);
        self.send_plan(w, &plan, frozen, stats)?;
        Ok(out)
    }

    /// Reads and sends planned pages, at most a frame's worth at a time.
    fn send_plan<W: Write>(&mut self, w: &mut W, plan: &Plan, frozen: bool, stats: &mut Stats) -> Result<(), Error> {
        let mut i = 0;
        while i < plan.len() {
            let mut j = i;
            let mut n = 0u64;
            while j < plan.len() && n + plan[j].1 <= MAX_PAGES_PER_FRAME as u64 {
                n += plan[j].1;
                j += 1;
            }
            if j == i {
                j = i + 1;
            }
            self.send_batch(w, &plan[i..j], frozen, stats)?;
            i = j;
        }
        Ok(())
    }

    fn send_batch<W: Write>(&mut self, w: &mut W, batch: &[(u64, u64, bool)], frozen: bool, stats: &mut Stats) -> Result<(), Error> {
        let pid = self.pid;
        let total: usize = batch.iter().map(|b| b.1 as usize * PAGE_SIZE).sum();
        if self.buf.len() < total {
            self.buf.resize(total, 0);
        }
        let ranges: Vec<(u64, usize)> = batch.iter().map(|(a, n, _)| (*a, *n as usize * PAGE_SIZE)).collect();
        // Which batch entries were read (a live process may unmap memory meanwhile).
        let mut ok = vec![true; batch.len()];
        if mem::readv(pid, &ranges, &mut self.buf[..total]).is_err() {
            let mut off = 0;
            for (k, (a, len)) in ranges.iter().enumerate() {
                let got = mem::readv(pid, &[(*a, *len)], &mut self.buf[off..off + len])
                    .or_else(|_| mem::read_mem(pid, *a, *len).map(|v| self.buf[off..off + len].copy_from_slice(&v)).map(|_| *len));
                if let Err(e) = got {
                    if frozen {
                        return Err(e);
                    }
                    ok[k] = false;
                    self.retry.push((*a, *a + *len as u64));
                }
                off += len;
            }
        }
        let mut runs: Vec<PageRun> = Vec::new();
        let mut out = 0usize;
        let mut src = 0usize;
        for (k, (a, n, skip_zero)) in batch.iter().enumerate() {
            for q in 0..*n {
                let addr = a + q * PAGE;
                let at = src;
                src += PAGE_SIZE;
                if !ok[k] {
                    continue;
                }
                let zero = self.buf[at..at + PAGE_SIZE].iter().all(|b| *b == 0);
                if zero && *skip_zero && !self.sent.get(addr) {
                    stats.pages_skipped_zero += 1;
                    continue;
                }
                if out != at {
                    self.buf.copy_within(at..at + PAGE_SIZE, out);
                }
                out += PAGE_SIZE;
                self.sent.set(addr);
                match runs.last_mut() {
                    Some(r) if r.addr + u64::from(r.npages) * PAGE == addr => r.npages += 1,
                    _ => runs.push(PageRun { addr, npages: 1 }),
                }
            }
        }
        if !runs.is_empty() {
            let table = pages::encode_runs(&runs);
            frame::write_raw(w, Kind::Pages, &[&table, &self.buf[..out]])?;
            stats.pages_sent += (out / PAGE_SIZE) as u64;
            stats.bytes_sent += (out + table.len()) as u64;
        }
        Ok(())
    }
}

/// Adds one page to a plan, extending the last entry when contiguous and alike.
fn push(plan: &mut Plan, addr: u64, skip_zero: bool) {
    match plan.last_mut() {
        Some((a, n, z)) if *a + *n * PAGE == addr && *z == skip_zero && *n < MAX_PAGES_PER_FRAME as u64 => *n += 1,
        _ => plan.push((addr, 1, skip_zero)),
    }
}

/// The parts of sorted `regions` outside `minus` (normalized), categories kept.
fn subtract_regions(regions: &[Region], minus: &[(u64, u64)]) -> Vec<Region> {
    let mut out = Vec::new();
    for r in regions {
        for (s, e) in subtract(&[(r.start, r.end)], minus) {
            out.push(Region { start: s, end: e, categories: r.categories });
        }
    }
    out
}

/// Sends a map update, in several frames when its lists are long.
fn send_map_update<W: Write>(w: &mut W, vmas: &[Vma], fresh: &[(u64, u64)], discard: &[(u64, u64)]) -> Result<(), Error> {
    const PER_FRAME: usize = 32 * 1024;
    let conv = |r: &[(u64, u64)]| r.iter().map(|(s, e)| Range { start: *s, end: *e }).collect::<Vec<_>>();
    let mut f = 0;
    let mut d = 0;
    loop {
        let fe = (f + PER_FRAME).min(fresh.len());
        let de = (d + PER_FRAME).min(discard.len());
        let mu = MapUpdate { vmas: vmas.to_vec(), fresh: conv(&fresh[f..fe]), discard: conv(&discard[d..de]) };
        frame::write_msg(w, Kind::MapUpdate, &mu)?;
        f = fe;
        d = de;
        if f == fresh.len() && d == discard.len() {
            return Ok(());
        }
    }
}

/// What a pre-copy send leaves for the caller: the process frozen and captured, the receiver's
/// answer, and the userfaultfd (drop it once the process's memory is released: the kernel then
/// has nothing left to unprotect).
pub struct Done {
    pub tracee: Tracee<Stopped>,
    pub image: Image,
    pub sent: Sent,
    uffd: Uffd,
}

/// Holds the process's userfaultfd; dropping it closes it, which unregisters every area.
#[derive(Debug)]
pub struct Armed(#[allow(dead_code)] OwnedFd);

impl Done {
    /// The parts; drop the [`Armed`] after the process's memory is released.
    pub fn into_parts(self) -> (Tracee<Stopped>, Image, Sent, Armed) {
        (self.tracee, self.image, self.sent, Armed(self.uffd.0))
    }
}

/// Migrates `pid` out over `stream` with pre-copy. On `Err` the process runs at home as before
/// (`at_home` false only if even resuming it failed).
/// A pre-copy that did not happen.
#[derive(Debug)]
pub struct NotSent {
    pub error: Error,
    /// The process runs at home as before.
    pub at_home: bool,
    /// Dirty tracking could not be set up in the process; nothing was sent yet, so the caller may
    /// move it with stop-and-copy over the same stream.
    pub untracked: bool,
}

impl From<(Error, bool)> for NotSent {
    fn from((error, at_home): (Error, bool)) -> Self {
        NotSent { error, at_home, untracked: false }
    }
}

/// Whether this kernel offers what pre-copy needs (userfaultfd write-protect in async mode, which
/// comes with PAGEMAP_SCAN in Linux 6.7). Probed once, with a userfaultfd of this process.
pub fn supported() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        sys::userfaultfd((libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | UFFD_USER_MODE_ONLY)
            .is_ok_and(|fd| sys::uffd_api(fd.as_raw_fd(), UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED).is_ok())
    })
}

pub fn send<S: Read + Write>(stream: &mut S, pid: Pid, home_node: u32, rule: StopRule) -> Result<Done, NotSent> {
    send_inner(stream, pid, home_node, rule)
}

fn send_inner<S: Read + Write>(stream: &mut S, pid: Pid, home_node: u32, rule: StopRule) -> Result<Done, NotSent> {
    let start = Instant::now();
    let mut t = capture::freeze(pid).map_err(|e| NotSent::from((e, true)))?;
    let resume_as_was = |t: Tracee<Stopped>, e: Error| -> (Error, bool) {
        let r = t.regs().map(|mut r| {
            fixup_restart(&mut r, true);
            r
        });
        match r.and_then(|r| thaw(t, r)) {
            Ok(()) => (e, true),
            Err(te) => (te, false),
        }
    };
    let img0 = match capture::capture(&mut t, pid.as_raw() as u32, home_node, Reason::Manual) {
        Ok(i) => i,
        Err(e) => return Err(resume_as_was(t, e).into()),
    };
    let uffd = match arm(&mut t) {
        Ok(u) => u,
        Err(e) => {
            let (error, at_home) = resume_as_was(t, e);
            return Err(NotSent { error, at_home, untracked: at_home });
        }
    };
    thaw(t, img0.home_regs).map_err(|e| NotSent::from((e, false)))?;
    let live = |e: Error| NotSent::from((e, true));
    // From here the process runs; an error only ends the migration (dropping the uffd).
    frame::write_msg(stream, Kind::Offer, &img0.offer).map_err(|e| live(e.into()))?;
    let reply = frame::read_frame(stream).map_err(|e| live(e.into()))?;
    let accept: Accept = match reply.kind {
        Kind::Accept => reply.decode().map_err(|e| live(e.into()))?,
        Kind::Refuse => return Err(live(Error::Refused(reply.decode::<Refuse>().map(|r| r.reason).unwrap_or_default()))),
        Kind::Failed => return Err(live(Error::PeerFailed(reply.decode::<Failed>().map(|r| r.reason).unwrap_or_default()))),
        other => return Err(live(frame::FrameError::Unexpected { expected: Kind::Accept, got: other }.into())),
    };
    let maps = procfs::maps(pid).map_err(live)?;
    let vmas = Vmas { vmas: vmas_of(&maps, &img0.offer.files, &accept.files_present), special: img0.special.clone() };
    frame::write_msg(stream, Kind::Vmas, &vmas).map_err(|e| live(e.into()))?;
    let mut tr = Tracker {
        pid,
        uffd,
        files: img0.offer.files.clone(),
        files_present: accept.files_present.clone(),
        sent_vmas: vmas.vmas,
        special: img0.special.clone(),
        sent: SentMap::default(),
        retry: Vec::new(),
        file_sizes: HashMap::new(),
        buf: Vec::new(),
    };
    let mut stats = Stats::default();
    let fail_live = |stream: &mut S, e: Error| {
        let _ = frame::write_msg(stream, Kind::Failed, &Failed { reason: e.to_string() });
        NotSent::from((e, true))
    };
    let mut prev = u64::MAX;
    let mut stop = None;
    while stop.is_none() {
        let r = match tr.round(stream, false, &mut stats) {
            Ok(r) => r,
            Err(e) => return Err(fail_live(stream, e)),
        };
        stats.rounds += 1;
        if stats.rounds > 1 {
            stop = rule.decide(stats.rounds - 1, prev, r.dirty);
        }
        prev = r.dirty;
        tracing::debug!(pid = pid.as_raw(), round = stats.rounds, pages = r.dirty, "pre-copy round");
        if stats.rounds + 1 >= rule.max_rounds && stop.is_none() {
            stop = Some(Stop::MaxRounds);
        }
    }
    // Freeze (by the native engine if this node has one): the last changes, the last pages, the
    // context.
    let mut h = match capture::freeze_held(pid) {
        Ok(h) => h,
        Err(e) => return Err(fail_live(stream, e)),
    };
    let frozen_at = Instant::now();
    let img = match capture::capture_held(&mut h, pid.as_raw() as u32, home_node, Reason::Manual) {
        Ok(i) => i,
        Err(e) => {
            let _ = frame::write_msg(stream, Kind::Failed, &Failed { reason: e.to_string() });
            return Err(match h {
                Held::Traced(t) => resume_as_was(t, e).into(),
                Held::Parked(p) => match p.thaw() {
                    Ok(()) => (e, true).into(),
                    Err(te) => (te, false).into(),
                },
            });
        }
    };
    let engine = h.engine();
    let fin = tr.round(stream, true, &mut stats).and_then(|r| {
        stats.rounds += 1;
        tracing::debug!(pid = pid.as_raw(), round = stats.rounds, pages = r.dirty, ?stop, "pre-copy frozen round");
        frame::write_msg(stream, Kind::Context, &img.context)?;
        stream.flush()?;
        let reply = frame::read_frame(stream)?;
        match reply.kind {
            Kind::Resumed => Ok(reply.decode::<Resumed>()?),
            Kind::Failed => Err(Error::PeerFailed(reply.decode::<Failed>()?.reason)),
            Kind::Refuse => Err(Error::Refused(reply.decode::<Refuse>()?.reason)),
            other => Err(frame::FrameError::Unexpected { expected: Kind::Resumed, got: other }.into()),
        }
    });
    match fin {
        Ok(r) => {
            stats.frozen_us = frozen_at.elapsed().as_micros() as u64;
            stats.total_us = start.elapsed().as_micros() as u64;
            tracing::info!(pid = pid.as_raw(), engine, frozen_us = stats.frozen_us, rounds = stats.rounds, "moved by pre-copy");
            // The remote copy runs: the home task becomes the deputy, held by ptrace.
            let t = h.into_traced().map_err(|e| NotSent::from((e, false)))?;
            Ok(Done { tracee: t, image: img, sent: Sent { remote_pid: r.remote_pid, stats, frozen_at }, uffd: tr.uffd })
        }
        Err(e) => {
            let _ = frame::write_msg(stream, Kind::Failed, &Failed { reason: e.to_string() });
            let home_regs = img.home_regs;
            match capture::thaw_held(h, home_regs) {
                Ok(()) => Err((e, true).into()),
                Err(te) => Err((te, false).into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_rule_converges_grows_and_caps() {
        let r = STOP_RULE;
        // Few pages left: freeze.
        assert_eq!(r.decide(1, 262_144, 64), Some(Stop::Converged));
        assert_eq!(r.decide(1, 262_144, 0), Some(Stop::Converged));
        // Shrinking well: go on.
        assert_eq!(r.decide(1, 262_144, 20_000), None);
        assert_eq!(r.decide(2, 20_000, 2_000), None);
        // Growth up to 10 % is tolerated, more is not.
        assert_eq!(r.decide(3, 1_000, 1_100), None);
        assert_eq!(r.decide(3, 1_000, 1_101), Some(Stop::Growing));
        // The 8th round is the frozen one: after 7 live rounds, freeze whatever the count.
        assert_eq!(r.decide(6, 10_000, 9_000), None);
        assert_eq!(r.decide(7, 10_000, 9_000), Some(Stop::MaxRounds));
        // Converged wins over the other two.
        assert_eq!(r.decide(7, 10, 60), Some(Stop::Converged));
    }

    #[test]
    fn range_arithmetic() {
        assert_eq!(normalize(vec![(5, 9), (0, 2), (2, 3), (8, 12), (20, 20)]), vec![(0, 3), (5, 12)]);
        assert_eq!(subtract(&[(0, 10), (20, 30)], &[(2, 4), (8, 22), (29, 40)]), vec![(0, 2), (4, 8), (22, 29)]);
        assert_eq!(subtract(&[(0, 10)], &[]), vec![(0, 10)]);
        assert_eq!(subtract(&[(0, 10)], &[(0, 10)]), Vec::<(u64, u64)>::new());
        assert_eq!(intersect(&[(0, 10), (20, 30)], &[(5, 25)]), vec![(5, 10), (20, 25)]);
    }

    fn anon(s: u64, e: u64) -> Vma {
        Vma { start: s * PAGE, end: e * PAGE, prot: PROT_R | PROT_W, backing: Backing::Anon }
    }

    #[test]
    fn map_ops_keeps_grows_unmaps_and_refreshes() {
        let file = |s: u64, e: u64, off: u64| Vma {
            start: s * PAGE,
            end: e * PAGE,
            prot: PROT_R,
            backing: Backing::File { file: 0, offset: off },
        };
        let old = vec![file(0, 4, 0), anon(10, 20), anon(30, 40), anon(50, 60)];
        // The heap grew (10-20 -> 10-25), 30-40 was unmapped, 50-60 was mapped afresh, 70-72 is new,
        // the file is now mapped one page further into the file at the same place.
        let new = vec![file(0, 4, PAGE), anon(10, 25), anon(50, 60), anon(70, 72)];
        let ops = map_ops(&old, &new, &[(50 * PAGE, 60 * PAGE)]);
        assert_eq!(ops.unmap, vec![(30 * PAGE, 40 * PAGE)]);
        assert_eq!(ops.map, vec![file(0, 4, PAGE), anon(20, 25), anon(50, 60), anon(70, 72)]);
        // Same map, nothing fresh: nothing to do; a protection change alone keeps the pages.
        let ro = Vma { prot: PROT_R, ..anon(10, 20) };
        assert_eq!(map_ops(&old, &old, &[]), MapOps::default());
        assert_eq!(map_ops(&[anon(10, 20)], &[ro], &[]), MapOps::default());
        // A split area keeps its pages; a file piece gets the right offset.
        let ops = map_ops(&[file(0, 4, 0)], &[file(0, 2, 0), anon(2, 4)], &[]);
        assert_eq!(ops.map, vec![anon(2, 4)]);
        let ops = map_ops(&[anon(0, 4)], &[file(0, 4, 0)], &[(3 * PAGE, 4 * PAGE)]);
        assert_eq!(ops.map, vec![file(0, 4, 0)]);
        let ops = map_ops(&[file(0, 2, 0)], &[file(0, 4, 0)], &[]);
        assert_eq!(ops.map, vec![file(2, 4, 2 * PAGE)]);
        assert!(check_map(&new).is_ok());
        assert!(check_map(&[anon(10, 20), anon(15, 30)]).is_err());
    }

    #[test]
    fn sent_map_ranges() {
        let mut s = SentMap::default();
        for p in [1u64, 2, 3, 511, 512, 513, 2000] {
            s.set(p * PAGE);
        }
        assert!(s.get(2 * PAGE) && !s.get(4 * PAGE));
        assert_eq!(s.ranges_in(0, 4000 * PAGE), vec![(PAGE, 4 * PAGE), (511 * PAGE, 514 * PAGE), (2000 * PAGE, 2001 * PAGE)]);
        s.clear(2 * PAGE, 512 * PAGE);
        assert_eq!(s.ranges_in(0, 600 * PAGE), vec![(PAGE, 2 * PAGE), (512 * PAGE, 514 * PAGE)]);
        assert!(!s.any_in(3000 * PAGE, 1 << 40));
    }
}
