//! Checkpoint to a file and recovery from it: the migration stream written to a file
//! (`mos_proto::checkpoint` describes the layout), with the process's open descriptors recorded by
//! path, offset and flags.
//!
//! * [`checkpoint`] freezes a process at home (the caller is its parent, as mosrun is), captures it
//!   with [`capture`] and writes `FILE.tmp`; then fsync and rename, so a failed checkpoint never
//!   leaves a partial `FILE`. On any failure (a full disk, an unsupported descriptor) the process
//!   continues exactly where it was.
//! * [`recover`] checks the whole file (SHA-256 trailer) before using a byte of it, forks a stub as
//!   the caller's child, reopens the descriptors in it, rebuilds the process with [`restore`] and
//!   lets it run: a normal process with a new pid.
//! * [`inspect`] describes a file (`mosrun -I`).
use crate::capture::{self, Held};
use crate::ptrace::{fixup_restart, Regs, Stopped, Tracee};
use crate::restore::{self, Options};
use crate::{mem, sys, Error};
use mos_proto::checkpoint::{self as ck, FdEntry, FdTarget, FileTable, Header};
use mos_proto::control::AfterCheckpoint;
use mos_proto::frame::{self, FrameError, Kind};
use mos_proto::migration::{Context, Offer, Reason, Stats, Vmas};
use mos_proto::pages;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn err(msg: impl Into<String>) -> Error {
    Error::Checkpoint(msg.into())
}

/// The plain reason of an error, without the stream wording for I/O errors ("No space left on
/// device" rather than "i/o error on the MOS stream").
fn reason(e: &Error) -> String {
    match e {
        Error::Proto(FrameError::Io(io)) => io.to_string(),
        other => other.to_string(),
    }
}

/// What cannot be checkpointed, for error messages and docs.
pub const LIMITS: &str = "a checkpoint keeps regular files, directories, devices, terminals and mosrun's own \
stdin/stdout/stderr (whatever they are); pipes, sockets, eventfd/epoll/signalfd/timerfd/inotify/pidfd descriptors, \
memfds and deleted files cannot be checkpointed";

// ---------------------------------------------------------------------------------------------
// Descriptors

/// File type of a descriptor's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Dir,
    Char,
    Block,
    Fifo,
    Socket,
    Other,
}

/// What /proc says about one open descriptor.
#[derive(Debug, Clone)]
pub struct FdFacts {
    pub fd: u32,
    /// The /proc/PID/fd link text (`/path`, `pipe:[123]`, `anon_inode:[eventfd]` ...).
    pub link: String,
    pub kind: FileKind,
    pub size: u64,
    /// (st_dev, st_ino) of the target.
    pub id: (u64, u64),
    pub flags: u32,
    pub pos: u64,
    /// The caller's descriptor (0, 1 or 2) that is the same open file, if any.
    pub stdio: Option<u8>,
}

/// The caller's descriptor 0, 1 or 2 that is the same open file as `fd` of `pid` (preferring the
/// same number). Where kcmp cannot tell, a pipe, socket or terminal with the same inode and
/// access mode counts as the same.
fn stdio_of(pid: Pid, fd: u32, id: (u64, u64), kind: FileKind, flags: u32) -> Option<u8> {
    let me = nix::unistd::getpid();
    let order: Vec<u32> = if fd < 3 { std::iter::once(fd).chain((0..3).filter(|n| *n != fd)).collect() } else { vec![0, 1, 2] };
    for n in order {
        match sys::same_open_file(me, n as i32, pid, fd as i32) {
            Ok(true) => return Some(n as u8),
            Ok(false) => {}
            Err(nix::errno::Errno::EBADF) => {}
            Err(_) => {
                let Ok(md) = std::fs::metadata(format!("/proc/self/fd/{n}")) else { continue };
                let Some(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")).ok().and_then(|t| parse_fdinfo(&t)) else {
                    continue;
                };
                let same_access = info.1 as i32 & libc::O_ACCMODE == flags as i32 & libc::O_ACCMODE;
                if (md.dev(), md.ino()) == id && same_access && matches!(kind, FileKind::Fifo | FileKind::Socket | FileKind::Char) {
                    return Some(n as u8);
                }
            }
        }
    }
    None
}

fn is_tty_path(p: &str) -> bool {
    p.starts_with("/dev/pts/") || p.starts_with("/dev/tty") || p == "/dev/console" || p == "/dev/ptmx"
}

/// Decides how descriptor `f` is kept; `Err` says why it cannot be.
pub fn classify(f: &FdFacts) -> Result<FdEntry, String> {
    let entry = |target| FdEntry { fd: f.fd, flags: f.flags, offset: f.pos, target };
    // The same open file as one of mosrun's stdio descriptors.
    if let Some(of) = f.stdio {
        return Ok(entry(FdTarget::Stdio { of, what: f.link.clone() }));
    }
    let what = match f.kind {
        FileKind::Fifo => "a pipe",
        FileKind::Socket => "a socket",
        _ => "a special descriptor",
    };
    if !f.link.starts_with('/') {
        return Err(format!("fd {} is {what} ({}) that is not mosrun's stdin, stdout or stderr", f.fd, f.link));
    }
    if f.link.ends_with(" (deleted)") || f.link.starts_with("/memfd:") {
        return Err(format!("fd {} is a deleted file or a memfd ({})", f.fd, f.link));
    }
    let path = f.link.clone();
    Ok(entry(match f.kind {
        FileKind::Regular => FdTarget::File { path, size: f.size },
        FileKind::Dir => FdTarget::Dir { path },
        FileKind::Char if is_tty_path(&path) => FdTarget::Tty { path },
        FileKind::Char | FileKind::Block => FdTarget::Device { path },
        FileKind::Fifo => return Err(format!("fd {} is a named pipe ({path}) that is not mosrun's stdin, stdout or stderr", f.fd)),
        FileKind::Socket => return Err(format!("fd {} is a socket ({path}) that is not mosrun's stdin, stdout or stderr", f.fd)),
        FileKind::Other => return Err(format!("fd {} is of an unsupported type ({path})", f.fd)),
    }))
}

/// Parses /proc/PID/fdinfo/N: (pos, flags).
pub fn parse_fdinfo(text: &str) -> Option<(u64, u32)> {
    let mut pos = None;
    let mut flags = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pos:") {
            pos = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("flags:") {
            flags = u32::from_str_radix(v.trim(), 8).ok();
        }
    }
    Some((pos?, flags?))
}

fn facts(pid: Pid, fd: u32) -> Result<FdFacts, Error> {
    let link_path = format!("/proc/{pid}/fd/{fd}");
    let link = std::fs::read_link(&link_path).map_err(|e| Error::Proc { path: link_path.clone(), source: e })?;
    let md = std::fs::metadata(&link_path).map_err(|e| Error::Proc { path: link_path.clone(), source: e })?;
    let ft = md.file_type();
    let kind = if ft.is_file() {
        FileKind::Regular
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_char_device() {
        FileKind::Char
    } else if ft.is_block_device() {
        FileKind::Block
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else {
        FileKind::Other
    };
    let info_path = format!("/proc/{pid}/fdinfo/{fd}");
    let info = std::fs::read_to_string(&info_path).map_err(|e| Error::Proc { path: info_path.clone(), source: e })?;
    let (pos, flags) = parse_fdinfo(&info).ok_or_else(|| err(format!("cannot parse {info_path}")))?;
    let id = (md.dev(), md.ino());
    let stdio = stdio_of(pid, fd, id, kind, flags);
    Ok(FdFacts { fd, link: link.to_string_lossy().into_owned(), kind, size: md.len(), id, flags, pos, stdio })
}

/// The open descriptors of `pid` (frozen), or why one of them cannot be checkpointed.
pub fn file_table(pid: Pid) -> Result<FileTable, Error> {
    let dir = format!("/proc/{pid}/fd");
    let mut nums: Vec<u32> = std::fs::read_dir(&dir)
        .map_err(|e| Error::Proc { path: dir.clone(), source: e })?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    nums.sort_unstable();
    let mut fds = Vec::new();
    let mut refused = Vec::new();
    for n in nums {
        let f = match facts(pid, n) {
            Ok(f) => f,
            // Closed meanwhile (it cannot be: the process is frozen) or unreadable.
            Err(e) => {
                refused.push(format!("fd {n}: {e}"));
                continue;
            }
        };
        match classify(&f) {
            Ok(e) => fds.push(e),
            Err(why) => refused.push(why),
        }
    }
    if !refused.is_empty() {
        return Err(err(format!("process {pid} cannot be checkpointed: {} ({LIMITS})", refused.join("; "))));
    }
    Ok(FileTable { fds })
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

/// A checkpoint written.
#[derive(Debug, Clone)]
pub struct Done {
    pub path: PathBuf,
    pub bytes: u64,
    /// How long the process was frozen.
    pub frozen_us: u64,
    /// From the call to the file being durable.
    pub total_us: u64,
    /// Page statistics of the stream.
    pub stats: Stats,
}

/// Who and what is being checkpointed, for the header.
#[derive(Debug, Clone)]
pub struct Meta {
    pub node: u32,
    pub command: Vec<String>,
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Lets a frozen process continue where it was (stopped by SIGSTOP if `stop`), and re-sends the
/// signals that arrived while it was frozen.
fn resume(h: Held, regs: Option<Regs>, stop: bool) -> Result<(), Error> {
    let mut t = match (h, regs) {
        (Held::Traced(t), Some(r)) => {
            let mut t = t;
            t.set_regs(r)?;
            t
        }
        (Held::Traced(_), None) => return Err(err("internal: no registers to resume a traced process with")),
        (Held::Parked(p), _) => {
            // The module restarts an interrupted call itself; signals stayed pending meanwhile.
            let pid = p.pid();
            p.thaw()?;
            if stop {
                let _ = nix::sys::signal::kill(pid, Signal::SIGSTOP);
            }
            return Ok(());
        }
    };
    let pid = t.pid();
    let pending = std::mem::take(&mut t.pending_signals);
    t.detach(stop.then_some(Signal::SIGSTOP))?;
    for s in pending {
        let _ = nix::sys::signal::kill(pid, s);
    }
    Ok(())
}

fn umask_of(pid: Pid) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok())))
        .unwrap_or(0o022)
}

/// Writes the frozen process as a checkpoint stream into `w`.
fn write_image<W: Write>(w: &mut W, h: &mut Held, meta: &Meta, table: &FileTable) -> Result<Stats, Error> {
    let pid = h.pid();
    let img = capture::capture_held(h, pid.as_raw() as u32, meta.node, Reason::Manual)?;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| "/".into());
    let header = Header {
        format: ck::FORMAT,
        created_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        node: meta.node,
        pid: pid.as_raw() as u32,
        uid: img.offer.uid,
        gid: img.offer.gid,
        command: meta.command.clone(),
        cwd,
        umask: umask_of(pid),
    };
    let mut stats = Stats { rounds: 1, ..Stats::default() };
    frame::write_msg(w, Kind::CheckpointHeader, &header)?;
    frame::write_msg(w, Kind::Offer, &img.offer)?;
    frame::write_msg(w, Kind::FileTable, table)?;
    // Mapped files travel by reference; recovery checks they are unchanged.
    let vmas = capture::vmas_for(&img, &vec![true; img.offer.files.len()]);
    frame::write_msg(w, Kind::Vmas, &vmas)?;
    capture::send_pages(w, pid, &img, &vmas, &mut stats)?;
    frame::write_msg(w, Kind::Context, &img.context)?;
    Ok(stats)
}

fn sync_dir(path: &Path) {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Checkpoints process `pid` (running at home, traceable by the caller) to `path`, then lets it
/// continue, stops it or ends it (`then`). The file is written as `path.tmp`, fsynced and renamed:
/// `path` is either the previous file or the complete new one. On `Err` the process continues
/// where it was (whatever `then` asked) and no `.tmp` file is left.
pub fn checkpoint(pid: Pid, path: &Path, meta: &Meta, then: AfterCheckpoint) -> Result<Done, Error> {
    let start = Instant::now();
    let tmp = tmp_path(path);
    let failed = |why: String| err(format!("checkpoint of process {pid} to {} failed: {why}; the process keeps running", path.display()));
    // Create the file first: a directory that cannot take it costs the process no freeze.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| failed(format!("cannot create {}: {e}", tmp.display())))?;
    let cleanup = |e: Error| {
        let _ = std::fs::remove_file(&tmp);
        e
    };
    // Frozen by the native engine when this node has one, else by ptrace.
    let mut t = match capture::freeze_held(pid) {
        Ok(t) => t,
        Err(Error::Unsupported { reason, .. }) => {
            return Err(cleanup(err(format!("process {pid} cannot be checkpointed: {reason}; it keeps running"))))
        }
        Err(e) => return Err(cleanup(failed(e.to_string()))),
    };
    let frozen_at = Instant::now();
    let home = match &t {
        Held::Traced(tr) => match tr.regs() {
            Ok(mut r) => {
                fixup_restart(&mut r, true);
                Some(r)
            }
            Err(e) => {
                if let Held::Traced(tr) = t {
                    let _ = tr.detach(None);
                }
                return Err(cleanup(failed(e.to_string())));
            }
        },
        Held::Parked(_) => None,
    };
    let table = match file_table(pid) {
        Ok(ft) => ft,
        Err(e) => {
            resume(t, home, false).map_err(cleanup)?;
            return Err(cleanup(match e {
                Error::Checkpoint(m) => err(format!("{m}; it keeps running")),
                e => failed(e.to_string()),
            }));
        }
    };
    // Hashing waits until the process runs again (`seal`, reading the file back from the page cache).
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let written = write_image(&mut w, &mut t, meta, &table).and_then(|stats| {
        let file = w.into_inner().map_err(|e| Error::from(e.into_error()))?;
        Ok((stats, file))
    });
    let (stats, file) = match written {
        Ok(x) => x,
        Err(e) => {
            resume(t, home, false).map_err(cleanup)?;
            return Err(cleanup(failed(format!("cannot write {}: {}", tmp.display(), reason(&e)))));
        }
    };
    let durable = |mut file: File| -> Result<u64, Error> {
        let bytes = ck::seal(&mut file).map_err(|e| failed(format!("cannot write {}: {e}", tmp.display())))?;
        file.sync_all().map_err(|e| failed(format!("cannot sync {}: {e}", tmp.display())))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| failed(format!("cannot rename {} to {}: {e}", tmp.display(), path.display())))?;
        sync_dir(path);
        Ok(bytes)
    };
    let frozen_us;
    let bytes;
    match then {
        AfterCheckpoint::Continue => {
            // Every byte is in the page cache: the process need not wait for the hash or the disk.
            resume(t, home, false)?;
            frozen_us = frozen_at.elapsed().as_micros() as u64;
            bytes = durable(file).map_err(cleanup)?;
        }
        AfterCheckpoint::Stop | AfterCheckpoint::Exit => {
            // Durable first: if the file cannot be made so, the process must go on as it was.
            bytes = match durable(file) {
                Ok(b) => b,
                Err(e) => {
                    resume(t, home, false).map_err(cleanup)?;
                    return Err(cleanup(e));
                }
            };
            frozen_us = frozen_at.elapsed().as_micros() as u64;
            if then == AfterCheckpoint::Stop {
                resume(t, home, true)?;
            } else {
                match t {
                    Held::Traced(t) => t.kill(),
                    Held::Parked(p) => {
                        // SIGKILL ends the park; the process dies without running again.
                        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                        let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL));
                        drop(p);
                    }
                }
            }
        }
    }
    Ok(Done { path: path.to_owned(), bytes, frozen_us, total_us: start.elapsed().as_micros() as u64, stats })
}

// ---------------------------------------------------------------------------------------------
// Reading

/// The parts of a checked checkpoint file that come before its memory.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub len: u64,
    pub header: Header,
    pub offer: Offer,
    pub files: FileTable,
}

/// Opens `path`, checks the whole file (refusing a truncated or corrupted one), and reads its
/// header, offer and file table. The reader is left at the memory map.
pub fn open(path: &Path) -> Result<(BufReader<File>, Loaded), Error> {
    let name = path.display();
    let f = File::open(path).map_err(|e| err(format!("cannot open the checkpoint {name}: {e}")))?;
    let len = f.metadata().map_err(|e| err(format!("cannot stat the checkpoint {name}: {e}")))?.len();
    let mut r = BufReader::with_capacity(1 << 20, f);
    ck::verify(&mut r, len).map_err(|e| match e {
        ck::CheckError::Io(io) => err(format!("cannot read the checkpoint {name}: {io}")),
        e => err(format!("the checkpoint {name} is {e}")),
    })?;
    r.rewind().map_err(|e| err(format!("cannot read the checkpoint {name}: {e}")))?;
    let bad = |e: FrameError| err(format!("the checkpoint {name} is malformed: {e}"));
    let header: Header = frame::read_frame(&mut r).and_then(|f| f.expect(Kind::CheckpointHeader)).map_err(bad)?;
    if header.format != ck::FORMAT {
        return Err(err(format!("the checkpoint {name} has format {}; this build reads format {}", header.format, ck::FORMAT)));
    }
    let offer: Offer = frame::read_frame(&mut r).and_then(|f| f.expect(Kind::Offer)).map_err(bad)?;
    let files: FileTable = frame::read_frame(&mut r).and_then(|f| f.expect(Kind::FileTable)).map_err(bad)?;
    Ok((r, Loaded { path: path.to_owned(), len, header, offer, files }))
}

/// What a checkpoint file holds (`mosrun -I`).
#[derive(Debug, Clone)]
pub struct Summary {
    pub loaded: Loaded,
    pub vmas: Vmas,
    pub pages: u64,
    pub context: Context,
}

/// Checks and reads a whole checkpoint file.
pub fn inspect(path: &Path) -> Result<Summary, Error> {
    let (mut r, loaded) = open(path)?;
    let bad = |e: FrameError| err(format!("the checkpoint {} is malformed: {e}", path.display()));
    let vmas: Vmas = frame::read_frame(&mut r).and_then(|f| f.expect(Kind::Vmas)).map_err(bad)?;
    let mut pages = 0u64;
    loop {
        let f = frame::read_frame(&mut r).map_err(bad)?;
        match f.kind {
            Kind::Pages => pages += pages::decode(&f.body).map_err(bad)?.0.iter().map(|r| u64::from(r.npages)).sum::<u64>(),
            Kind::Context => {
                let context: Context = f.decode().map_err(bad)?;
                return Ok(Summary { loaded, vmas, pages, context });
            }
            other => return Err(bad(FrameError::Unexpected { expected: Kind::Context, got: other })),
        }
    }
}

fn describe_target(t: &FdTarget) -> String {
    match t {
        FdTarget::File { path, size } => format!("file {path} ({size} bytes then)"),
        FdTarget::Dir { path } => format!("directory {path}"),
        FdTarget::Device { path } => format!("device {path}"),
        FdTarget::Stdio { of, what } => {
            format!("mosrun's {} ({what}): re-bound to the recovering mosrun's", ["stdin", "stdout", "stderr"][*of as usize % 3])
        }
        FdTarget::Tty { path } => format!("terminal {path}: re-bound to the recovering mosrun's stdin or stdout"),
    }
}

fn access(flags: u32) -> &'static str {
    match flags as i32 & libc::O_ACCMODE {
        libc::O_RDONLY => "r",
        libc::O_WRONLY => "w",
        _ => "rw",
    }
}

/// `secs` since the Unix epoch as `YYYY-MM-DD hh:mm:ss UTC` (civil-from-days, proleptic Gregorian).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

/// A human description of a checkpoint (`mosrun -I`).
pub fn describe(s: &Summary) -> String {
    use std::fmt::Write as _;
    let l = &s.loaded;
    let h = &l.header;
    let mut o = String::new();
    let when = utc(h.created_unix);
    let _ = writeln!(o, "checkpoint:  {} ({} bytes, SHA-256 verified, format {})", l.path.display(), l.len, h.format);
    let _ = writeln!(o, "program:     {}", l.offer.exe);
    let _ = writeln!(o, "command:     {}", h.command.join(" "));
    let _ = writeln!(o, "pid:         {} on node {} (a recovered process gets a new pid)", h.pid, h.node);
    let _ = writeln!(o, "user:        uid {} gid {}", h.uid, h.gid);
    let _ = writeln!(o, "taken:       {when}");
    let _ = writeln!(o, "cwd:         {}", h.cwd);
    let mem: u64 = s.vmas.vmas.iter().map(|v| v.end - v.start).sum();
    let _ = writeln!(o, "memory:      {} KiB mapped in {} areas, {} KiB of pages saved", mem / 1024, s.vmas.vmas.len(), s.pages * 4);
    let _ = writeln!(o, "mapped files (must be unchanged at recovery):");
    for f in &l.offer.files {
        let _ = writeln!(o, "  {} ({} bytes)", f.path, f.size);
    }
    let _ = writeln!(o, "open files:");
    for e in &l.files.fds {
        let flags: String = [(libc::O_APPEND, ", append"), (libc::O_NONBLOCK, ", nonblock"), (libc::O_CLOEXEC, ", cloexec")]
            .iter()
            .filter(|(f, _)| e.flags & *f as u32 != 0)
            .map(|(_, n)| *n)
            .collect();
        let _ = writeln!(o, "  fd {:<3} {:<2} offset {:<10} {}{flags}", e.fd, access(e.flags), e.offset, describe_target(&e.target));
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Recovery

/// One step of rebuilding the recorded descriptors in a fresh stub (whose 0-2 are the recovering
/// mosrun's stdio, moved out of the way first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FdStep {
    /// `fd` becomes a duplicate of mosrun's own descriptor `of` (0-2).
    Stdio { fd: u32, of: usize, cloexec: bool },
    /// `fd` is opened on `path` with `flags` (O_CLOEXEC always set; cleared after when `!cloexec`),
    /// then set to offset `seek`.
    Open { fd: u32, path: String, flags: u32, cloexec: bool, seek: Option<u64> },
}

/// The steps that rebuild the descriptors of `l` (`overrides` give other files for some).
pub(crate) fn fd_steps(l: &Loaded, overrides: &[(u32, PathBuf)]) -> Vec<FdStep> {
    let mut steps = Vec::new();
    for e in &l.files.fds {
        let cloexec = e.flags & libc::O_CLOEXEC as u32 != 0;
        let over = overrides.iter().find(|(n, _)| *n == e.fd).map(|(_, p)| p.to_string_lossy().into_owned());
        let (path, mut flags, seek) = match (&over, &e.target) {
            (Some(p), _) => {
                // A substitute: same access and status flags, created if missing, from offset 0.
                let create = if e.flags as i32 & libc::O_ACCMODE != libc::O_RDONLY { libc::O_CREAT as u32 } else { 0 };
                (p.clone(), e.flags | create, None)
            }
            (None, FdTarget::Stdio { of, .. }) => {
                steps.push(FdStep::Stdio { fd: e.fd, of: *of as usize % 3, cloexec });
                continue;
            }
            (None, FdTarget::Tty { .. }) => {
                let of = if e.flags as i32 & libc::O_ACCMODE == libc::O_RDONLY {
                    0
                } else if e.fd == 2 {
                    2
                } else {
                    1
                };
                steps.push(FdStep::Stdio { fd: e.fd, of, cloexec });
                continue;
            }
            (None, FdTarget::File { path, .. }) => (path.clone(), e.flags, Some(e.offset)),
            (None, FdTarget::Dir { path }) | (None, FdTarget::Device { path }) => (path.clone(), e.flags, None),
        };
        if over.is_none() {
            flags &= !((libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) as u32);
        }
        flags &= !(libc::O_NOCTTY as u32);
        flags |= libc::O_CLOEXEC as u32;
        steps.push(FdStep::Open { fd: e.fd, path, flags, cloexec, seek });
    }
    steps
}

/// The error for a descriptor bound to mosrun's closed stdio descriptor `of`.
pub(crate) fn stdio_closed(fd: u32, of: usize) -> Error {
    let names = ["stdin", "stdout", "stderr"];
    err(format!("fd {fd} was bound to mosrun's {}, but this mosrun's {} is closed", names[of], names[of]))
}

/// The error for a descriptor that cannot be reopened.
pub(crate) fn reopen_failed(fd: u32, path: &str, errno: nix::errno::Errno) -> Error {
    err(format!("cannot reopen fd {fd} on {path}: {errno} (give another file with -O {fd}=PATH)"))
}

/// The error for a descriptor whose offset cannot be set.
pub(crate) fn seek_failed(fd: u32, path: &str, offset: u64, errno: nix::errno::Errno) -> Error {
    err(format!("cannot set fd {fd} on {path} to offset {offset}: {errno}"))
}

/// The error for a working directory that cannot be entered.
pub(crate) fn chdir_failed(cwd: &str, errno: nix::errno::Errno) -> Error {
    err(format!("cannot return to the working directory {cwd}: {errno}"))
}

/// The lowest descriptor above every recorded one (and above 2): where the caller's stdio waits.
pub(crate) fn stdio_base(l: &Loaded) -> u64 {
    l.files.fds.iter().map(|e| e.fd).max().unwrap_or(2).max(2) as u64 + 1
}

/// Reopens the recorded descriptors inside the stub (still the caller's fork, with the caller's
/// stdio as 0-2), returns it to its working directory and umask.
fn install_fds(t: &mut Tracee<Stopped>, l: &Loaded, overrides: &[(u32, PathBuf)]) -> Result<(), Error> {
    const LEN: u64 = 8192;
    let pid = t.pid();
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let scratch =
        t.inject_ok("mmap(scratch)", libc::SYS_mmap, [0, LEN, prot, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0])?;
    let put = |path: &str| -> Result<u64, Error> {
        let mut b = path.as_bytes().to_vec();
        if b.len() >= LEN as usize || b.contains(&0) {
            return Err(err(format!("path too long or invalid: {path}")));
        }
        b.push(0);
        mem::write_mem(pid, scratch, &b)?;
        Ok(scratch)
    };
    let base = stdio_base(l);
    // The caller's stdio, moved out of the way of the descriptors to rebuild.
    let mut hi = [None; 3];
    for (n, h) in hi.iter_mut().enumerate() {
        let r = t.inject(libc::SYS_fcntl, [n as u64, libc::F_DUPFD_CLOEXEC as u64, base, 0, 0, 0])?;
        if r >= 0 {
            *h = Some(r as u64);
        }
        t.inject(libc::SYS_close, [n as u64, 0, 0, 0, 0, 0])?;
    }
    for step in fd_steps(l, overrides) {
        match step {
            FdStep::Stdio { fd, of, cloexec } => {
                let from = hi[of].ok_or_else(|| stdio_closed(fd, of))?;
                t.inject_ok("dup3", libc::SYS_dup3, [from, u64::from(fd), if cloexec { libc::O_CLOEXEC as u64 } else { 0 }, 0, 0, 0])?;
            }
            FdStep::Open { fd, path, flags, cloexec, seek } => {
                let p = put(&path)?;
                let r = t.inject(libc::SYS_open, [p, u64::from(flags), 0o666, 0, 0, 0])?;
                if r < 0 {
                    return Err(reopen_failed(fd, &path, nix::errno::Errno::from_raw((-r) as i32)));
                }
                let got = r as u64;
                let fd = u64::from(fd);
                if got != fd {
                    t.inject_ok("dup3", libc::SYS_dup3, [got, fd, if cloexec { libc::O_CLOEXEC as u64 } else { 0 }, 0, 0, 0])?;
                    t.inject_ok("close", libc::SYS_close, [got, 0, 0, 0, 0, 0])?;
                } else if !cloexec {
                    t.inject_ok("fcntl(F_SETFD)", libc::SYS_fcntl, [fd, libc::F_SETFD as u64, 0, 0, 0, 0])?;
                }
                if let Some(offset) = seek {
                    let r = t.inject(libc::SYS_lseek, [fd, offset, libc::SEEK_SET as u64, 0, 0, 0])?;
                    if r < 0 {
                        return Err(seek_failed(fd as u32, &path, offset, nix::errno::Errno::from_raw((-r) as i32)));
                    }
                }
            }
        }
    }
    for h in hi.into_iter().flatten() {
        t.inject(libc::SYS_close, [h, 0, 0, 0, 0, 0])?;
    }
    let p = put(&l.header.cwd)?;
    let r = t.inject(libc::SYS_chdir, [p, 0, 0, 0, 0, 0])?;
    if r < 0 {
        return Err(chdir_failed(&l.header.cwd, nix::errno::Errno::from_raw((-r) as i32)));
    }
    t.inject(libc::SYS_umask, [u64::from(l.header.umask & 0o777), 0, 0, 0, 0, 0])?;
    t.inject_ok("munmap(scratch)", libc::SYS_munmap, [scratch, LEN, 0, 0, 0, 0])?;
    Ok(())
}

/// A recovered process, running.
#[derive(Debug)]
pub struct Recovered {
    pub pid: Pid,
    pub loaded: Loaded,
    pub restore_us: u64,
    /// Of that, the rebuild itself: after the file was opened and verified.
    pub rebuild_us: u64,
}

/// Recovers the process in checkpoint `path` as a child of the caller: its descriptors reopened
/// (`overrides` give other files for some, MOSIX `-O fd=PATH`), its memory and context rebuilt.
/// It runs when this returns (with a new pid). Nothing is left behind on `Err`.
pub fn recover(path: &Path, overrides: &[(u32, PathBuf)]) -> Result<Recovered, Error> {
    let start = Instant::now();
    let (mut r, loaded) = open(path)?;
    let name = path.display();
    let me = nix::unistd::getuid().as_raw();
    if loaded.header.uid != me {
        return Err(err(format!(
            "the checkpoint {name} belongs to uid {}; only that user may recover it (you are uid {me})",
            loaded.header.uid
        )));
    }
    for (fd, _) in overrides {
        if !loaded.files.fds.iter().any(|e| e.fd == *fd) {
            let open: Vec<String> = loaded.files.fds.iter().map(|e| e.fd.to_string()).collect();
            return Err(err(format!("-O {fd}=...: fd {fd} was not open in the checkpoint (open: {})", open.join(", "))));
        }
    }
    let missing = |i: usize| {
        err(format!(
            "the checkpoint {name} cannot be recovered: the mapped file {} is missing or changed since the checkpoint (size, time or contents differ)",
            loaded.offer.files[i].path
        ))
    };
    let rebuild = Instant::now();
    // The native engine restores when the module can and the image fits this node.
    if crate::native::restore_available() {
        match crate::native_restore::fits(&loaded.offer) {
            Ok(()) => {
                if let Some(i) = restore::files_present(&loaded.offer).iter().position(|p| !p) {
                    return Err(missing(i));
                }
                let setup = crate::native_restore::Setup { loaded: &loaded, overrides };
                let parked = crate::native_restore::recover_checkpoint(&mut r, &setup).map_err(|e| match e {
                    Error::Checkpoint(m) => err(m),
                    e => err(format!("cannot recover from {name}: {e}")),
                })?;
                let pid = parked.pid();
                parked.thaw()?;
                tracing::info!(pid = pid.as_raw(), engine = "native", "recovered {name}");
                return Ok(Recovered {
                    pid,
                    loaded,
                    restore_us: start.elapsed().as_micros() as u64,
                    rebuild_us: rebuild.elapsed().as_micros() as u64,
                });
            }
            Err(why) => tracing::info!(%why, "the native engine cannot restore this checkpoint here; the portable engine does"),
        }
    }
    let child = sys::fork_home_stub().map_err(|e| Error::Sys { what: "fork", pid: 0, errno: e })?;
    let mut t = Tracee::<Stopped>::from_traceme_child(child)?;
    let rebuilt = (|| -> Result<(), Error> {
        let accept = restore::check_offer(&t, &loaded.offer)
            .map_err(|why| err(format!("the checkpoint {name} cannot be recovered on this node: {why}")))?;
        if let Some(i) = accept.files_present.iter().position(|p| !p) {
            return Err(missing(i));
        }
        install_fds(&mut t, &loaded, overrides)?;
        restore::receive(&mut r, &loaded.offer, &mut t, Options { set_exe: true, install_filter: false, lazy: false })?;
        let end = frame::read_frame(&mut r)?;
        if end.kind != Kind::CheckpointEnd {
            return Err(err(format!("the checkpoint {name} is malformed: a {:?} frame after the context", end.kind)));
        }
        Ok(())
    })();
    if let Err(e) = rebuilt {
        t.kill();
        return Err(match e {
            Error::Checkpoint(m) => err(m),
            e => err(format!("cannot recover from {name}: {e}")),
        });
    }
    let pid = t.pid();
    let pending = std::mem::take(&mut t.pending_signals);
    t.detach(None)?;
    for s in pending {
        let _ = nix::sys::signal::kill(pid, s);
    }
    Ok(Recovered { pid, loaded, restore_us: start.elapsed().as_micros() as u64, rebuild_us: rebuild.elapsed().as_micros() as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(fd: u32, link: &str, kind: FileKind, stdio: Option<u8>) -> FdFacts {
        FdFacts { fd, link: link.into(), kind, size: 10, id: (1, 2), flags: 0o2, pos: 5, stdio }
    }

    #[test]
    fn stdio_pipes_are_rebound_and_other_pipes_refused() {
        let e = classify(&f(1, "pipe:[11]", FileKind::Fifo, Some(1))).unwrap();
        assert_eq!(e.target, FdTarget::Stdio { of: 1, what: "pipe:[11]".into() });
        let e = classify(&f(2, "/dev/pts/4", FileKind::Char, Some(2))).unwrap();
        assert_eq!(e.target, FdTarget::Stdio { of: 2, what: "/dev/pts/4".into() });
        let why = classify(&f(4, "pipe:[99]", FileKind::Fifo, None)).unwrap_err();
        assert!(why.contains("fd 4 is a pipe"), "{why}");
        let why = classify(&f(5, "socket:[7]", FileKind::Socket, None)).unwrap_err();
        assert!(why.contains("socket"), "{why}");
        let why = classify(&f(6, "anon_inode:[eventfd]", FileKind::Other, None)).unwrap_err();
        assert!(why.contains("anon_inode:[eventfd]"), "{why}");
    }

    #[test]
    fn files_devices_and_ttys() {
        let e = classify(&f(3, "/tmp/data", FileKind::Regular, None)).unwrap();
        assert_eq!(e.target, FdTarget::File { path: "/tmp/data".into(), size: 10 });
        assert_eq!((e.offset, e.flags), (5, 0o2));
        assert!(classify(&f(3, "/tmp/data (deleted)", FileKind::Regular, None)).is_err());
        assert_eq!(classify(&f(0, "/dev/null", FileKind::Char, None)).unwrap().target, FdTarget::Device { path: "/dev/null".into() });
        assert_eq!(classify(&f(0, "/dev/pts/3", FileKind::Char, None)).unwrap().target, FdTarget::Tty { path: "/dev/pts/3".into() });
        assert_eq!(classify(&f(7, "/", FileKind::Dir, None)).unwrap().target, FdTarget::Dir { path: "/".into() });
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_487_445), "2026-11-24 02:30:45 UTC");
    }

    #[test]
    fn fdinfo_parses() {
        assert_eq!(parse_fdinfo("pos:\t42\nflags:\t02100001\nmnt_id:\t25\nino:\t7\n"), Some((42, 0o2100001)));
        assert_eq!(parse_fdinfo("flags:\t0\n"), None);
    }
}
