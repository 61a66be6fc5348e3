//! Sender side of a migration: freeze a process under ptrace, capture its context and stream its
//! memory. Nothing here changes the process: on any failure [`thaw`] resumes it exactly where it was.
use crate::mem;
use crate::procfs::{self, MapEntry};
use crate::ptrace::{fixup_restart, Regs, Running, Stopped, Tracee};
use crate::Error;
use mos_proto::frame::{self, Kind};
use mos_proto::migration::*;
use mos_proto::pages::{self, PageRun, MAX_PAGES_PER_FRAME};
use mos_proto::PAGE_SIZE;
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

/// Refuses processes the portable engine cannot move yet, before touching them.
pub fn check_movable(pid: Pid) -> Result<(), Error> {
    let unsupported = |reason: String| Error::Unsupported { pid: pid.as_raw(), reason };
    let n = procfs::task_count(pid)?;
    if n != 1 {
        return Err(unsupported(format!("it has {n} threads; only single-threaded processes migrate yet")));
    }
    for m in procfs::maps(pid)? {
        if m.shared && m.write {
            return Err(unsupported(format!("shared writable mapping {:#x}-{:#x} {}", m.start, m.end, m.name)));
        }
        if m.shared && !m.is_file() {
            return Err(unsupported(format!("shared mapping {:#x}-{:#x} {}", m.start, m.end, m.name)));
        }
        if m.name.starts_with("/SYSV") {
            return Err(unsupported("System V shared memory".into()));
        }
    }
    Ok(())
}

/// Freezes `pid` (PTRACE_SEIZE + PTRACE_INTERRUPT).
pub fn freeze(pid: Pid) -> Result<Tracee<Stopped>, Error> {
    check_movable(pid)?;
    Tracee::<Running>::seize(pid)?.interrupt()
}

/// Everything about a frozen process except its pages.
#[derive(Debug)]
pub struct Image {
    pub offer: Offer,
    pub maps: Vec<MapEntry>,
    pub special: Vec<SpecialArea>,
    pub context: Context,
    /// Registers to resume with at home if the migration fails.
    pub home_regs: Regs,
}

/// XCR0 bits, from the software-reserved bytes of the FXSAVE area (`xfeatures` at offset 472).
pub fn xfeatures(xstate: &[u8]) -> u64 {
    xstate.get(472..480).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).unwrap_or(0)
}

/// The CPU and vDSO identity of a stopped task on this node (the stub or the deputy), compared
/// with an offer's: same xstate size and features, same vDSO image.
pub fn cpu_info_of(t: &Tracee<Stopped>) -> Result<CpuInfo, Error> {
    let pid = t.pid();
    let maps = procfs::maps(pid)?;
    let vdso = maps.iter().find(|m| m.name == "[vdso]").ok_or_else(|| Error::Restore("this node has no vDSO".into()))?;
    let bytes = mem::read_mem(pid, vdso.start, vdso.len() as usize)?;
    let x = t.xstate()?;
    Ok(CpuInfo { xstate_len: x.len() as u32, xfeatures: xfeatures(&x), vdso_hash: fnv1a(&bytes), vdso_len: vdso.len() })
}

/// Scratch bytes in the tracee used as output buffers of injected calls; saved and put back.
struct Scratch {
    addr: u64,
    saved: Vec<u8>,
}

const SCRATCH_LEN: usize = 256;

impl Scratch {
    fn take(pid: Pid, rsp: u64, maps: &[MapEntry]) -> Result<Scratch, Error> {
        let cand = (rsp.saturating_sub(4096 + SCRATCH_LEN as u64)) & !15;
        let ok = |a: u64| maps.iter().any(|m| m.write && !m.shared && m.start <= a && a + SCRATCH_LEN as u64 <= m.end);
        let addr = if ok(cand) {
            cand
        } else {
            maps.iter()
                .find(|m| m.write && m.read && !m.shared && m.len() >= SCRATCH_LEN as u64)
                .map(|m| m.start)
                .ok_or_else(|| Error::Unsupported { pid: pid.as_raw(), reason: "no writable memory for scratch".into() })?
        };
        Ok(Scratch { addr, saved: mem::read_mem(pid, addr, SCRATCH_LEN)? })
    }
    fn put_back(self, pid: Pid) -> Result<(), Error> {
        mem::write_mem(pid, self.addr, &self.saved)
    }
}

/// Captures the context and the memory map of a frozen process. Injected calls (brk, tid address,
/// sigactions, sigaltstack) run in the process with its registers preserved.
/// What a freeze learns about a process besides /proc: the same from either engine.
struct Gathered {
    regs: Regs,
    xstate: Vec<u8>,
    sigmask: u64,
    rseq: Option<Rseq>,
    robust: Option<(u64, u64)>,
    brk: u64,
    tid_address: u64,
    sigactions: Vec<SigAction>,
    altstack: Option<AltStack>,
}

/// The alternate stack as `sigaltstack` reports it (sp, flags, size), if one is in use.
fn altstack_of(sp: u64, flags: i32, size: u64) -> Option<AltStack> {
    (flags & libc::SS_DISABLE == 0 && size != 0).then_some(AltStack { sp, flags: flags & !libc::SS_ONSTACK, size })
}

/// A frozen process: held by ptrace (portable engine) or parked by mosix.ko (native engine).
// One value per freeze, moved a handful of times: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Held {
    Traced(Tracee<Stopped>),
    Parked(crate::native::Parked),
}

impl Held {
    pub fn pid(&self) -> Pid {
        match self {
            Held::Traced(t) => t.pid(),
            Held::Parked(p) => p.pid(),
        }
    }

    /// Signals that arrived during the freeze, to deliver if the process goes on here.
    pub fn pending_signals(&mut self) -> &mut Vec<nix::sys::signal::Signal> {
        match self {
            Held::Traced(t) => &mut t.pending_signals,
            Held::Parked(p) => &mut p.pending_signals,
        }
    }

    /// Which engine froze it.
    pub fn engine(&self) -> &'static str {
        match self {
            Held::Traced(_) => "portable",
            Held::Parked(_) => "native",
        }
    }

    /// The process held by ptrace, without having let it run (for its deputy).
    pub fn into_traced(self) -> Result<Tracee<Stopped>, Error> {
        match self {
            Held::Traced(t) => Ok(t),
            Held::Parked(p) => p.into_traced(),
        }
    }
}

/// Freezes `pid` with the native engine when this node has it (falling back to ptrace if the
/// module refuses this process), else with ptrace.
pub fn freeze_held(pid: Pid) -> Result<Held, Error> {
    check_movable(pid)?;
    if crate::native::available() {
        match crate::native::Parked::freeze(pid) {
            Ok(p) => return Ok(Held::Parked(p)),
            Err(e) => tracing::info!(pid = pid.as_raw(), error = %e, "the native engine cannot freeze it: ptrace"),
        }
    }
    Ok(Held::Traced(Tracee::<Running>::seize(pid)?.interrupt()?))
}

/// [`capture`] for either kind of freeze.
pub fn capture_held(h: &mut Held, home_pid: u32, home_node: u32, reason: Reason) -> Result<Image, Error> {
    match h {
        Held::Traced(t) => capture(t, home_pid, home_node, reason),
        Held::Parked(p) => {
            let c = p.context()?;
            let mut sigactions = Vec::new();
            for &(sig, handler, flags, restorer, mask) in &c.sigactions {
                if sig == libc::SIGKILL as u8 || sig == libc::SIGSTOP as u8 || handler == libc::SIG_DFL as u64 {
                    continue;
                }
                sigactions.push(if handler == libc::SIG_IGN as u64 {
                    SigAction { sig, handler, flags: 0, restorer: 0, mask: 0 }
                } else {
                    SigAction { sig, handler, flags, restorer, mask }
                });
            }
            let g = Gathered {
                regs: c.regs,
                xstate: c.xstate,
                sigmask: c.sigmask,
                rseq: c.rseq.map(|(ptr, len, sig)| Rseq { ptr, len, sig }),
                robust: c.robust,
                brk: c.brk,
                tid_address: c.tid_address,
                sigactions,
                altstack: altstack_of(c.altstack.0, c.altstack.1, c.altstack.2),
            };
            let pid = p.pid();
            assemble(pid, g, procfs::status(pid)?, procfs::maps(pid)?, home_pid, home_node, reason)
        }
    }
}

/// Lets a frozen process go on as it was when nothing was captured or changed (a call the freeze
/// interrupted is restarted).
pub fn resume_held(h: Held) -> Result<(), Error> {
    match h {
        Held::Traced(t) => {
            let mut r = t.regs()?;
            fixup_restart(&mut r, true);
            thaw(t, r)
        }
        // The native thaw lets the kernel restart an interrupted call itself.
        Held::Parked(p) => p.thaw(),
    }
}

/// Ends a frozen process whose copy lives on elsewhere (SIGKILL, then reaped: it is our child
/// or tracee).
pub fn end_held(h: Held) {
    match h {
        Held::Traced(t) => t.kill(),
        Held::Parked(p) => {
            let pid = p.pid();
            // Killed while parked (SIGKILL ends the park), before its descriptor closes.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            drop(p);
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL));
        }
    }
}

/// The siginfo of every signal queued on a frozen process (to carry along when it moves).
pub fn held_siginfo(h: &Held) -> Result<Vec<[u8; crate::sys::SIGINFO_LEN]>, Error> {
    match h {
        Held::Traced(t) => {
            crate::sys::pending_siginfo(t.pid()).map_err(|e| Error::Sys { what: "PTRACE_PEEKSIGINFO", pid: t.pid().as_raw(), errno: e })
        }
        Held::Parked(p) => p.pending_siginfo(),
    }
}

/// Lets a frozen process go on where it was (after a failed migration).
pub fn thaw_held(h: Held, home_regs: Regs) -> Result<(), Error> {
    match h {
        Held::Traced(t) => thaw(t, home_regs),
        Held::Parked(p) => p.thaw(),
    }
}

pub fn capture(t: &mut Tracee<Stopped>, home_pid: u32, home_node: u32, reason: Reason) -> Result<Image, Error> {
    let pid = t.pid();
    let regs = t.regs()?;
    let xstate = t.xstate()?;
    let sigmask = t.sigmask()?;
    let rseq = t.rseq()?.map(|(ptr, len, sig)| Rseq { ptr, len, sig });
    let robust = crate::sys::get_robust_list(pid).ok().filter(|(h, _)| *h != 0);
    let status = procfs::status(pid)?;
    let maps = procfs::maps(pid)?;

    let scratch = Scratch::take(pid, regs.rsp, &maps)?;
    let s = scratch.addr;
    let brk = t.inject_ok("brk(0)", libc::SYS_brk, [0; 6])?;
    let tid_address = match t.inject(libc::SYS_prctl, [libc::PR_GET_TID_ADDRESS as u64, s, 0, 0, 0, 0])? {
        0 => u64::from_le_bytes(mem::read_mem(pid, s, 8)?.try_into().expect("8 bytes")),
        _ => 0,
    };
    let mut sigactions = Vec::new();
    for sig in 1..=64u8 {
        let bit = 1u64 << (sig - 1);
        if sig == libc::SIGKILL as u8 || sig == libc::SIGSTOP as u8 {
            continue;
        }
        if status.sig_cgt & bit != 0 {
            t.inject_ok("rt_sigaction(get)", libc::SYS_rt_sigaction, [u64::from(sig), 0, s, 8, 0, 0])?;
            let b = mem::read_mem(pid, s, 32)?;
            let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            sigactions.push(SigAction { sig, handler: w(0), flags: w(1), restorer: w(2), mask: w(3) });
        } else if status.sig_ign & bit != 0 {
            sigactions.push(SigAction { sig, handler: libc::SIG_IGN as u64, flags: 0, restorer: 0, mask: 0 });
        }
    }
    t.inject_ok("sigaltstack(get)", libc::SYS_sigaltstack, [0, s, 0, 0, 0, 0])?;
    let b = mem::read_mem(pid, s, 24)?;
    let ss_sp = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
    let ss_flags = i32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    let ss_size = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
    let altstack = altstack_of(ss_sp, ss_flags, ss_size);
    scratch.put_back(pid)?;
    let g = Gathered { regs, xstate, sigmask, rseq, robust, brk, tid_address, sigactions, altstack };
    assemble(pid, g, status, maps, home_pid, home_node, reason)
}

/// The [`Image`] of a frozen process from what its engine gathered and /proc.
fn assemble(
    pid: Pid,
    g: Gathered,
    status: procfs::Status,
    maps: Vec<MapEntry>,
    home_pid: u32,
    home_node: u32,
    reason: Reason,
) -> Result<Image, Error> {
    let Gathered { regs, xstate, sigmask, rseq, robust, brk, tid_address, sigactions, altstack } = g;
    let mut mm = procfs::mm_fields(&procfs::stat(pid)?).map_err(|d| Error::Restore(format!("stat of {pid}: {d}")))?;
    mm.brk = brk;
    let mut ctx_regs = regs;
    fixup_restart(&mut ctx_regs, false);
    let mut home_regs = regs;
    fixup_restart(&mut home_regs, true);

    let mut special = Vec::new();
    let mut files: Vec<FileRef> = Vec::new();
    let mut vm_bytes = 0;
    let mut vdso = None;
    for m in &maps {
        vm_bytes += m.len();
        let kind = match m.name.as_str() {
            "[vdso]" => Some(SpecialKind::Vdso),
            "[vvar]" => Some(SpecialKind::Vvar),
            "[vvar_vclock]" => Some(SpecialKind::VvarVclock),
            _ => None,
        };
        if let Some(kind) = kind {
            special.push(SpecialArea { kind, start: m.start, len: m.len() });
            if kind == SpecialKind::Vdso {
                vdso = Some(mem::read_mem(pid, m.start, m.len() as usize)?);
            }
        } else if m.is_file() && !files.iter().any(|f| f.path == m.name) {
            if let Some(f) = file_ref(&m.name, m.inode) {
                files.push(f);
            }
        }
    }
    let vdso = vdso.ok_or_else(|| Error::Unsupported { pid: pid.as_raw(), reason: "the process has no vDSO".into() })?;
    let offer = Offer {
        reason,
        home_pid,
        home_node,
        uid: status.uid,
        gid: status.gid,
        comm: procfs::comm(pid)?,
        exe: procfs::exe(pid)?,
        vm_bytes,
        cpu: CpuInfo {
            xstate_len: xstate.len() as u32,
            xfeatures: xfeatures(&xstate),
            vdso_hash: fnv1a(&vdso),
            vdso_len: vdso.len() as u64,
        },
        files,
    };
    let context = Context {
        regs: regs_to_words(&ctx_regs),
        xstate,
        sigmask,
        rseq,
        mm,
        auxv: procfs::auxv(pid)?,
        personality: procfs::personality(pid)?,
        comm: offer.comm.clone(),
        robust_list: robust,
        tid_address,
        sigactions,
        altstack,
        rlimits: (0..16u8) // RLIMIT_CPU (0) ..= RLIMIT_RTTIME (15) on Linux
            .filter(|r| u32::from(*r) != libc::RLIMIT_CORE)
            .filter_map(|r| crate::sys::get_rlimit(pid, r.into()).ok().map(|(cur, max)| (r, cur, max)))
            .collect(),
    };
    Ok(Image { offer, maps, special, context, home_regs })
}

/// Identity of a mapped file as seen here, if it is a regular file still matching the mapping.
pub fn file_ref(path: &str, inode: u64) -> Option<FileRef> {
    let md = std::fs::metadata(path).ok()?;
    if !md.is_file() || (inode != 0 && md.ino() != inode) {
        return None;
    }
    Some(FileRef { path: path.to_string(), size: md.size(), mtime_ns: mtime_ns(&md), head_hash: head_hash(path)? })
}

pub fn mtime_ns(md: &std::fs::Metadata) -> i128 {
    i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec())
}

pub fn head_hash(path: &str) -> Option<u64> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    Some(fnv1a(&buf[..n]))
}

pub fn regs_to_words(r: &Regs) -> Vec<u64> {
    vec![
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx, r.rsi, r.rdi, r.orig_rax, r.rip, r.cs,
        r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds, r.es, r.fs, r.gs,
    ]
}

pub fn words_to_regs(w: &[u64]) -> Option<Regs> {
    if w.len() != NREGS {
        return None;
    }
    Some(Regs {
        r15: w[0],
        r14: w[1],
        r13: w[2],
        r12: w[3],
        rbp: w[4],
        rbx: w[5],
        r11: w[6],
        r10: w[7],
        r9: w[8],
        r8: w[9],
        rax: w[10],
        rcx: w[11],
        rdx: w[12],
        rsi: w[13],
        rdi: w[14],
        orig_rax: w[15],
        rip: w[16],
        cs: w[17],
        eflags: w[18],
        rsp: w[19],
        ss: w[20],
        fs_base: w[21],
        gs_base: w[22],
        ds: w[23],
        es: w[24],
        fs: w[25],
        gs: w[26],
    })
}

fn prot_of(m: &MapEntry) -> u8 {
    (if m.read { PROT_R } else { 0 }) | (if m.write { PROT_W } else { 0 }) | (if m.exec { PROT_X } else { 0 })
}

/// The memory map as the receiver will rebuild it, given which files it has.
pub fn vmas_for(img: &Image, files_present: &[bool]) -> Vmas {
    let mut vmas = Vec::new();
    for m in img.maps.iter().filter(|m| !m.is_special()) {
        let file_idx = img.offer.files.iter().position(|f| f.path == m.name).filter(|i| files_present.get(*i).copied().unwrap_or(false));
        let backing = match (m.name.as_str(), file_idx) {
            ("[stack]", _) => Backing::Stack,
            (_, Some(i)) => Backing::File { file: i as u32, offset: m.offset },
            _ => Backing::Anon,
        };
        vmas.push(Vma { start: m.start, end: m.end, prot: prot_of(m), backing });
    }
    Vmas { vmas, special: img.special.clone() }
}

/// Streams the pages of every VMA. Never-touched pages, zero pages and pages still equal to the
/// receiver's copy of the backing file are skipped.
pub fn send_pages<W: Write>(w: &mut W, pid: Pid, img: &Image, vmas: &Vmas, stats: &mut Stats) -> Result<(), Error> {
    send_pages_except(w, pid, img, vmas, stats, &[])
}

/// [`send_pages`] for every area but those starting at an address in `lazy` (post-copy).
pub fn send_pages_except<W: Write>(
    w: &mut W,
    pid: Pid,
    img: &Image,
    vmas: &Vmas,
    stats: &mut Stats,
    lazy: &[(u64, u64)],
) -> Result<(), Error> {
    let mut buf = vec![0u8; MAX_PAGES_PER_FRAME * PAGE_SIZE];
    for (m, v) in img.maps.iter().filter(|m| !m.is_special()).zip(&vmas.vmas) {
        if !m.read || lazy.iter().any(|(s, _)| *s == m.start) {
            continue;
        }
        // A file the receiver lacks travels by value: every page inside the file, present or not.
        let by_value_file = m.is_file() && v.backing == Backing::Anon;
        let file_pages = if by_value_file {
            let size = std::fs::metadata(&m.name).map(|md| md.len()).unwrap_or(0);
            (size.saturating_sub(m.offset)).div_ceil(PAGE_SIZE as u64) as usize
        } else {
            usize::MAX
        };
        let total = (m.len() as usize) / PAGE_SIZE;
        let mut first = 0usize;
        while first < total {
            let n = (total - first).min(MAX_PAGES_PER_FRAME);
            let base = m.start + (first * PAGE_SIZE) as u64;
            let pm = mem::pagemap(pid, base, n)?;
            stats.pages_scanned += n as u64;
            // Candidate runs: (first page index, count).
            let mut cand: Vec<(usize, usize)> = Vec::new();
            for (i, e) in pm.iter().enumerate() {
                let take = if by_value_file {
                    first + i < file_pages
                } else if matches!(v.backing, Backing::File { .. }) {
                    if e.populated() && e.file_or_shared() {
                        stats.pages_skipped_file += 1;
                    }
                    e.populated() && !e.file_or_shared()
                } else {
                    e.populated()
                };
                if !take {
                    if !e.populated() {
                        stats.pages_skipped_absent += 1;
                    }
                    continue;
                }
                match cand.last_mut() {
                    Some((s, c)) if *s + *c == i => *c += 1,
                    _ => cand.push((i, 1)),
                }
            }
            if !cand.is_empty() {
                let ranges: Vec<(u64, usize)> = cand.iter().map(|(s, c)| (base + (*s * PAGE_SIZE) as u64, c * PAGE_SIZE)).collect();
                let got = mem::readv(pid, &ranges, &mut buf)?;
                // Drop zero pages, compacting the buffer and building the runs.
                let mut runs: Vec<PageRun> = Vec::new();
                let mut out = 0usize;
                let mut src = 0usize;
                for (s, c) in &cand {
                    for k in 0..*c {
                        let page = &buf[src..src + PAGE_SIZE];
                        let addr = base + ((s + k) * PAGE_SIZE) as u64;
                        src += PAGE_SIZE;
                        if page.iter().all(|b| *b == 0) {
                            stats.pages_skipped_zero += 1;
                            continue;
                        }
                        if out != src - PAGE_SIZE {
                            buf.copy_within(src - PAGE_SIZE..src, out);
                        }
                        out += PAGE_SIZE;
                        match runs.last_mut() {
                            Some(r) if r.addr + u64::from(r.npages) * PAGE_SIZE as u64 == addr => r.npages += 1,
                            _ => runs.push(PageRun { addr, npages: 1 }),
                        }
                    }
                }
                debug_assert_eq!(src, got);
                if !runs.is_empty() {
                    let table = pages::encode_runs(&runs);
                    frame::write_raw(w, Kind::Pages, &[&table, &buf[..out]])?;
                    stats.pages_sent += (out / PAGE_SIZE) as u64;
                    stats.bytes_sent += (out + table.len()) as u64;
                }
            }
            first += n;
        }
    }
    Ok(())
}

/// Outcome of a successful send.
#[derive(Debug)]
pub struct Sent {
    pub remote_pid: u32,
    pub stats: Stats,
    /// When the process was frozen (for the caller's frozen-time accounting).
    pub frozen_at: Instant,
}

/// The next migration frame from the receiver. A process going home is sent over its deputy
/// channel, on which home may have sent deputy messages before it read the `Offer`: a `Signal`
/// (e.g. a tick of an interval timer), a `Recall`. They are skipped (a migration home failed on
/// them, and the process was lost); a signal is recorded in `pending_signals`, so that [`thaw`]
/// delivers it if the migration fails. (If it succeeds, such a signal is lost: the context does
/// not carry pending signals yet.)
pub(crate) fn read_reply<S: Read>(stream: &mut S, pending: &mut Vec<nix::sys::signal::Signal>) -> Result<frame::Frame, Error> {
    loop {
        let f = frame::read_frame(stream)?;
        if f.kind != Kind::Deputy {
            return Ok(f);
        }
        if let mos_proto::deputy::DeputyMsg::Signal { sig } = f.decode()? {
            if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
                pending.push(s);
            }
        }
    }
}

/// Runs the sender's half of the protocol over `stream` for a frozen process.
/// On `Err`, the process is untouched: call [`thaw`] to let it continue.
pub fn send<S: Read + Write>(stream: &mut S, t: &mut Tracee<Stopped>, img: &Image, frozen_at: Instant) -> Result<Sent, Error> {
    let pid = t.pid();
    send_mode(stream, pid, &mut t.pending_signals, img, frozen_at, false).map(|(s, _)| s)
}

/// Post-copy candidates: private anonymous, readable and writable areas of at least this size.
pub const LAZY_MIN: u64 = 64 << 10;

/// The areas a post-copy leaves for after `Resumed` (see [`LAZY_MIN`]).
pub fn lazy_areas(img: &Image, vmas: &Vmas) -> Vec<(u64, u64)> {
    img.maps
        .iter()
        .filter(|m| !m.is_special())
        .zip(&vmas.vmas)
        .filter(|(m, v)| v.backing == Backing::Anon && !m.is_file() && !m.shared && m.read && m.write && m.len() >= LAZY_MIN)
        .map(|(m, _)| (m.start, m.end))
        .collect()
}

/// Post-copy: the pages of the lazy areas that the receiver's kernel writes while it restores the
/// process (the rseq area: registering it makes the kernel store the CPU number there), sent now
/// whatever they hold: a page present before the areas are registered never faults, so it must
/// hold the process's data.
fn send_restore_touched<W: Write>(w: &mut W, pid: Pid, img: &Image, lazy: &[(u64, u64)], stats: &mut Stats) -> Result<(), Error> {
    let Some(r) = img.context.rseq.as_ref() else { return Ok(()) };
    let page = PAGE_SIZE as u64;
    let (s, e) = (r.ptr & !(page - 1), (r.ptr + u64::from(r.len.max(1))).div_ceil(page) * page);
    if !lazy.iter().any(|(ls, le)| *ls <= s && e <= *le) {
        return Ok(());
    }
    let mut buf = vec![0u8; (e - s) as usize];
    mem::readv(pid, &[(s, buf.len())], &mut buf)?;
    let table = pages::encode_runs(&[PageRun { addr: s, npages: ((e - s) / page) as u32 }]);
    frame::write_raw(w, Kind::Pages, &[&table, &buf])?;
    stats.pages_sent += (e - s) / page;
    stats.bytes_sent += (table.len() + buf.len()) as u64;
    Ok(())
}

/// [`send`]; with `lazy`, a post-copy: `LazyAreas` follows `Vmas` and the pages of those areas
/// are left out (they follow `Resumed`, [`crate::postcopy`]). Returns the lazy areas.
pub fn send_mode<S: Read + Write>(
    stream: &mut S,
    pid: Pid,
    pending: &mut Vec<nix::sys::signal::Signal>,
    img: &Image,
    frozen_at: Instant,
    lazy: bool,
) -> Result<(Sent, Vec<(u64, u64)>), Error> {
    let mut stats = Stats { rounds: 1, ..Stats::default() };
    frame::write_msg(stream, Kind::Offer, &img.offer)?;
    let reply = read_reply(stream, pending)?;
    let accept: Accept = match reply.kind {
        Kind::Accept => reply.decode()?,
        Kind::Refuse => return Err(Error::Refused(reply.decode::<Refuse>()?.reason)),
        Kind::Failed => return Err(Error::PeerFailed(reply.decode::<Failed>()?.reason)),
        other => return Err(frame::FrameError::Unexpected { expected: Kind::Accept, got: other }.into()),
    };
    let vmas = vmas_for(img, &accept.files_present);
    frame::write_msg(stream, Kind::Vmas, &vmas)?;
    let lazy = if lazy { lazy_areas(img, &vmas) } else { Vec::new() };
    if !lazy.is_empty() {
        frame::write_msg(stream, Kind::LazyAreas, &LazyAreas { ranges: lazy.clone() })?;
    }
    send_pages_except(stream, pid, img, &vmas, &mut stats, &lazy)?;
    send_restore_touched(stream, pid, img, &lazy, &mut stats)?;
    frame::write_msg(stream, Kind::Context, &img.context)?;
    stream.flush()?;
    let reply = read_reply(stream, pending)?;
    match reply.kind {
        Kind::Resumed => {
            let r: Resumed = reply.decode()?;
            stats.frozen_us = frozen_at.elapsed().as_micros() as u64;
            Ok((Sent { remote_pid: r.remote_pid, stats, frozen_at }, lazy))
        }
        Kind::Failed => Err(Error::PeerFailed(reply.decode::<Failed>()?.reason)),
        Kind::Refuse => Err(Error::Refused(reply.decode::<Refuse>()?.reason)),
        other => Err(frame::FrameError::Unexpected { expected: Kind::Resumed, got: other }.into()),
    }
}

/// Lets a frozen process continue where it was (after a failed migration): registers with the
/// interrupted call restarted, then detach, then re-deliver signals that arrived meanwhile.
pub fn thaw(mut t: Tracee<Stopped>, home_regs: Regs) -> Result<(), Error> {
    t.set_regs(home_regs)?;
    let pid = t.pid();
    let pending = std::mem::take(&mut t.pending_signals);
    t.detach(None)?;
    for s in pending {
        let _ = nix::sys::signal::kill(pid, s);
    }
    Ok(())
}
