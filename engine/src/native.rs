//! The native engine: mosix.ko's `/dev/mosix` (kmod/, ABI version 2), used when the device is
//! there and answers with the features it needs; the portable engine (ptrace) otherwise.
//!
//! What it does now: freeze a process without ptrace (the process parks in the kernel) and
//! capture its whole user context in one call, where the portable engine injects a dozen system
//! calls into it (brk, prctl, rt_sigaction per caught signal, sigaltstack). Its pages are read
//! with process_vm_readv as before. A process that moved away is then handed to ptrace for its
//! deputy ([`Parked::into_traced`]); restoring on the receiving node is portable. With the
//! kernel lane the module also serves that deputy ([`serve_deputy`]) and carries a guest's
//! register-only calls to it ([`set_lane`]). On that node the module intercepts the guest's system calls
//! ([`intercept`]) and freezes it when it goes home, with its queued signals
//! ([`Parked::pending_siginfo`]) (docs/NATIVE.md).
//!
//! Each freeze opens its own descriptor, and closing it thaws: a mosrun that dies never leaves
//! its process frozen.
#![allow(unsafe_code)]
use crate::ptrace::{Regs, Running, Stopped, Tracee};
use crate::Error;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::fs::File;
use std::os::fd::AsRawFd;

/// The module's ABI version this code speaks.
const ABI_VERSION: u32 = 2;
const FEATURE_FREEZE: u32 = 1 << 0;
const FEATURE_CAPTURE: u32 = 1 << 1;
const FEATURE_RESTORE: u32 = 1 << 2;
const FEATURE_INTERCEPT: u32 = 1 << 3;
const FEATURE_SIGINFO: u32 = 1 << 4;
const FEATURE_LANE: u32 = 1 << 5;
const DEVICE: &str = "/dev/mosix";
/// XSAVE buffer given to the module (its own bound is 16 KiB).
const XSTATE_BUF: usize = 16 << 10;
/// How long a freeze waits for the process to park (a stopped process never does).
const FREEZE_TIMEOUT_MS: u32 = 10_000;

#[repr(C)]
#[derive(Default)]
struct Version {
    abi: u32,
    features: u32,
}

#[repr(C)]
#[derive(Default)]
struct Target {
    pid: i32,
    timeout_ms: u32,
    reserved: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
struct RawSigAction {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

/// `struct mosix_context` (kmod/include/mosix.h).
#[repr(C)]
struct RawContext {
    pid: i32,
    xstate_len: u32,
    xstate: u64,
    regs: [u64; 27],
    sigmask: u64,
    brk: u64,
    tid_address: u64,
    robust_list: u64,
    robust_len: u64,
    rseq: u64,
    rseq_len: u32,
    rseq_sig: u32,
    altstack_sp: u64,
    altstack_size: u64,
    altstack_flags: i32,
    reserved0: u32,
    sigactions: [RawSigAction; 64],
    reserved: u64,
}
const _: () = assert!(std::mem::size_of::<RawContext>() == 2368);
const _: () = assert!(std::mem::size_of::<Target>() == 16);

const MAGIC: u32 = 0xB7;
const fn ioc(dir: u32, nr: u32, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u32) << 16) | (MAGIC << 8) | nr) as libc::c_ulong
}
const IOC_VERSION: libc::c_ulong = ioc(2, 0, std::mem::size_of::<Version>());
const IOC_FREEZE: libc::c_ulong = ioc(1, 2, std::mem::size_of::<Target>());
const IOC_THAW: libc::c_ulong = ioc(1, 3, std::mem::size_of::<Target>());
const IOC_CONTEXT: libc::c_ulong = ioc(3, 4, std::mem::size_of::<RawContext>());
/// `MOSIX_IOC_RESTORE` (`_IOW(0xB7, 5, struct mosix_restore)`).
pub(crate) const IOC_RESTORE: libc::c_ulong = ioc(1, 5, std::mem::size_of::<RawRestore>());

/// `struct mosix_intercept` (kmod/abi.rs `Intercept`).
#[repr(C)]
struct RawIntercept {
    pid: i32,
    reserved0: u32,
    local: [u64; 8],
    pass_ip: u64,
    reserved: u64,
}
const _: () = assert!(std::mem::size_of::<RawIntercept>() == 88);
const IOC_INTERCEPT: libc::c_ulong = ioc(1, 6, std::mem::size_of::<RawIntercept>());

/// `struct mosix_siginfo` (kmod/abi.rs `SigInfo`).
#[repr(C)]
struct RawSigInfo {
    pid: i32,
    count: u32,
    buf: u64,
    skip: u32,
    total: u32,
    reserved: u64,
}
const _: () = assert!(std::mem::size_of::<RawSigInfo>() == 32);
const IOC_SIGINFO: libc::c_ulong = ioc(3, 7, std::mem::size_of::<RawSigInfo>());
/// siginfo slots asked for in one `MOSIX_IOC_SIGINFO` (the module's bound).
const SIGINFO_STEP: usize = 64;

/// `struct mosix_restore` (kmod/abi.rs `Restore`): an image staged by the calling task.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRestore {
    pub size: u32,
    pub flags: u32,
    pub pages_fd: i32,
    pub n_areas: u32,
    pub areas: u64,
    pub runs: u64,
    pub n_runs: u32,
    pub n_keep: u32,
    pub keep: u64,
    pub regs: [u64; 27],
    pub sigmask: u64,
    pub rseq: u64,
    pub rseq_len: u32,
    pub rseq_sig: u32,
    pub close: u64,
    pub n_close: u32,
    pub reserved0: u32,
    pub reserved: u64,
}
const _: () = assert!(std::mem::size_of::<RawRestore>() == 312);

/// `ioctl(fd, req, arg)` with a pointer to a `#[repr(C)]` value of the size encoded in `req`.
fn ioctl<T>(f: &impl AsRawFd, req: libc::c_ulong, arg: &mut T) -> Result<(), nix::errno::Errno> {
    // SAFETY: `arg` is a valid, writable `T` for the whole call, and `req` encodes
    // `size_of::<T>()` (the constants above are built that way), so the module reads and writes
    // at most that many bytes of it.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req, arg as *mut T) };
    if r < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

pub(crate) fn open() -> Result<File, std::io::Error> {
    std::fs::OpenOptions::new().read(true).write(true).open(DEVICE)
}

/// Whether the native engine can be used here: `/dev/mosix` opens (root), speaks ABI version 2
/// with freeze and capture, and `MOS_ENGINE` is not `portable`. Probed once per process.
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        if std::env::var("MOS_ENGINE").is_ok_and(|v| v == "portable") {
            return false;
        }
        let Ok(f) = open() else { return false };
        let mut v = Version::default();
        ioctl(&f, IOC_VERSION, &mut v).is_ok()
            && v.abi == ABI_VERSION
            && v.features & (FEATURE_FREEZE | FEATURE_CAPTURE) == (FEATURE_FREEZE | FEATURE_CAPTURE)
    })
}

/// The module's feature bits (0 when the native engine is off or absent). Probed once.
fn features() -> u32 {
    static F: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *F.get_or_init(|| {
        if !available() {
            return 0;
        }
        let Ok(f) = open() else { return 0 };
        let mut v = Version::default();
        if ioctl(&f, IOC_VERSION, &mut v).is_ok() {
            v.features
        } else {
            0
        }
    })
}

/// Whether the native engine can intercept a guest's system calls here (feature INTERCEPT).
pub fn intercept_available() -> bool {
    features() & FEATURE_INTERCEPT != 0
}

/// Makes a new /dev/mosix descriptor the listener of `pid`'s system calls (our single-threaded
/// child): calls in `local` (numbers below 512) and those made from `pass_ip` run untouched;
/// every other one waits for an answer through the returned descriptor, which speaks the seccomp
/// user-notification ioctls (so it is used exactly like a seccomp listener).
pub fn intercept(pid: Pid, local: &[u32], pass_ip: u64) -> Result<std::os::fd::OwnedFd, Error> {
    let sys = |what, e: nix::errno::Errno| Error::Sys { what, pid: pid.as_raw(), errno: e };
    let file = open().map_err(|e| sys("open /dev/mosix", nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    let mut req = RawIntercept { pid: pid.as_raw(), reserved0: 0, local: [0; 8], pass_ip, reserved: 0 };
    for &nr in local.iter().filter(|n| **n < 512) {
        req.local[(nr / 64) as usize] |= 1u64 << (nr % 64);
    }
    ioctl(&file, IOC_INTERCEPT, &mut req).map_err(|e| sys("MOSIX_IOC_INTERCEPT", e))?;
    Ok(file.into())
}

/// `struct mosix_lane` (kmod/abi.rs `Lane`).
#[repr(C)]
struct RawLane {
    fd: i32,
    reserved0: u32,
    calls: [u64; 8],
    reserved: u64,
}
const IOC_LANE: libc::c_ulong = ioc(1, 8, std::mem::size_of::<RawLane>());

/// `struct mosix_deputy` (kmod/abi.rs `DeputyReg`).
#[repr(C)]
struct RawDeputy {
    pid: i32,
    fd: i32,
    marker_ip: u64,
    calls: [u64; 8],
    reserved: u64,
}
const IOC_DEPUTY: libc::c_ulong = ioc(1, 9, std::mem::size_of::<RawDeputy>());

/// `struct mosix_deputy_call` (kmod/abi.rs `DeputyCall`).
#[repr(C)]
struct RawDeputyCall {
    nr: i64,
    args: [u64; 6],
    ret: i64,
    timeout_ms: u32,
    done: u32,
    reserved: u64,
}
const IOC_DEPUTY_CALL: libc::c_ulong = ioc(3, 10, std::mem::size_of::<RawDeputyCall>());

fn bitmap(calls: &[u32]) -> [u64; 8] {
    let mut m = [0u64; 8];
    for &nr in calls.iter().filter(|n| **n < 512) {
        m[(nr / 64) as usize] |= 1u64 << (nr % 64);
    }
    m
}

/// Whether the module offers the kernel lane here (feature LANE; not with `MOS_ENGINE=portable`
/// nor `MOS_LANE=off`).
pub fn lane_available() -> bool {
    features() & FEATURE_LANE != 0 && !std::env::var("MOS_LANE").is_ok_and(|v| v == "off")
}

/// On the module's listener `listener` (from [`intercept`]): the calls in `calls` go on the
/// stream socket `sock` (the lane to the deputy's module) from now on. The module keeps its
/// own reference to the socket.
pub fn set_lane(listener: std::os::fd::BorrowedFd<'_>, sock: std::os::fd::BorrowedFd<'_>, calls: &[u32]) -> Result<(), nix::errno::Errno> {
    let mut req = RawLane { fd: sock.as_raw_fd(), reserved0: 0, calls: bitmap(calls), reserved: 0 };
    ioctl(&listener, IOC_LANE, &mut req)
}

/// A deputy served by the module ([`serve_deputy`]): posted calls go through it, lane calls
/// reach the deputy without us. Dropping it stops the service (the deputy must first be moved
/// out of its lane loop).
#[derive(Debug)]
pub struct ServedDeputy {
    dev: File,
}

/// Registers `pid` (our single-threaded child, running the lane loop whose marker `syscall`
/// ends at `marker_ip`) as a deputy served by the module, with the lane socket `sock` (a copy is
/// kept by the module) whose calls may be those in `calls`.
pub fn serve_deputy(pid: Pid, sock: Option<std::os::fd::BorrowedFd<'_>>, marker_ip: u64, calls: &[u32]) -> Result<ServedDeputy, Error> {
    let sys = |what, e: nix::errno::Errno| Error::Sys { what, pid: pid.as_raw(), errno: e };
    let dev = open().map_err(|e| sys("open /dev/mosix", nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    let mut req = RawDeputy { pid: pid.as_raw(), fd: sock.map_or(-1, |s| s.as_raw_fd()), marker_ip, calls: bitmap(calls), reserved: 0 };
    ioctl(&dev, IOC_DEPUTY, &mut req).map_err(|e| sys("MOSIX_IOC_DEPUTY", e))?;
    Ok(ServedDeputy { dev })
}

impl ServedDeputy {
    /// Posts call `nr` (or, with `None`, waits on for the one posted before) and waits at most
    /// `wait` for its result: Ok(Some(result)) or Ok(None) while it still runs.
    pub fn call(&self, nr: Option<u32>, args: [u64; 6], wait: std::time::Duration) -> Result<Option<i64>, nix::errno::Errno> {
        let mut c = RawDeputyCall {
            nr: nr.map_or(-1, i64::from),
            args,
            ret: 0,
            timeout_ms: wait.as_millis().clamp(1, 60_000) as u32,
            done: 0,
            reserved: 0,
        };
        loop {
            match ioctl(&self.dev, IOC_DEPUTY_CALL, &mut c) {
                Err(nix::errno::Errno::EINTR) if nr.is_none() => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok((c.done == 1).then_some(c.ret)),
            }
        }
    }
}

/// Whether the native engine can freeze a guest to send it on (its queued signals go with it:
/// feature SIGINFO) and `fd` is the module's listener of that guest (a guest the module
/// intercepts: a call it holds can be answered "restart" before the freeze).
pub fn can_freeze_guest(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    features() & (FEATURE_SIGINFO | FEATURE_INTERCEPT) == (FEATURE_SIGINFO | FEATURE_INTERCEPT) && is_device(fd)
}

/// Whether `fd` is a descriptor of `/dev/mosix` (a guest's listener from [`intercept`], not a
/// seccomp listener).
pub fn is_device(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let (Ok(dev), Ok(st)) = (nix::sys::stat::stat(DEVICE), nix::sys::stat::fstat(fd)) else { return false };
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == dev.st_rdev
}

/// Whether the native engine can also restore here (feature RESTORE; `MOS_ENGINE=portable` says
/// no). Probed once per process.
pub fn restore_available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| features() & FEATURE_RESTORE != 0)
}

/// The name of the engine that moves processes out of this node.
pub fn engine_name() -> &'static str {
    if available() {
        "native"
    } else {
        "portable"
    }
}

/// The user context of a parked process, as the module reports it.
#[derive(Debug)]
pub struct NativeContext {
    pub regs: Regs,
    pub xstate: Vec<u8>,
    pub sigmask: u64,
    pub brk: u64,
    pub tid_address: u64,
    /// Robust list head and length, if one is registered.
    pub robust: Option<(u64, u64)>,
    /// rseq area, length and signature, if one is registered.
    pub rseq: Option<(u64, u32, u32)>,
    /// Alternate stack: sp, flags (as sigaltstack reports them), size.
    pub altstack: (u64, i32, u64),
    /// (handler, flags, restorer, mask) of signals 1..=64.
    pub sigactions: Vec<(u8, u64, u64, u64, u64)>,
}

/// A process frozen by the module. Dropping it thaws the process (its descriptor closes).
#[derive(Debug)]
pub struct Parked {
    file: File,
    pid: Pid,
    /// Signals to deliver if the process goes on here (none: they stay pending in its kernel
    /// state while it is parked; kept for the same interface as a ptrace freeze).
    pub pending_signals: Vec<Signal>,
}

impl Parked {
    /// Freezes `pid` (which must be a child of this process).
    pub fn freeze(pid: Pid) -> Result<Parked, Error> {
        let sys = |what, e: nix::errno::Errno| Error::Sys { what, pid: pid.as_raw(), errno: e };
        // A stopped process never parks: the freeze would only time out (ptrace takes it).
        if crate::procfs::status(pid).is_ok_and(|st| matches!(st.state, 'T' | 't')) {
            return Err(sys("MOSIX_IOC_FREEZE: the process is stopped", nix::errno::Errno::EAGAIN));
        }
        let file = open().map_err(|e| sys("open /dev/mosix", nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
        let mut t = Target { pid: pid.as_raw(), timeout_ms: FREEZE_TIMEOUT_MS, reserved: 0 };
        ioctl(&file, IOC_FREEZE, &mut t).map_err(|e| sys("MOSIX_IOC_FREEZE", e))?;
        Ok(Parked { file, pid, pending_signals: Vec::new() })
    }

    /// Takes over a process that restored itself through `file` (`MOSIX_IOC_RESTORE`): waits
    /// until it has parked, as after a freeze.
    pub(crate) fn adopt(file: File, pid: Pid) -> Result<Parked, Error> {
        let mut t = Target { pid: pid.as_raw(), timeout_ms: FREEZE_TIMEOUT_MS, reserved: 0 };
        ioctl(&file, IOC_FREEZE, &mut t).map_err(|e| Error::Sys { what: "MOSIX_IOC_FREEZE (restored)", pid: pid.as_raw(), errno: e })?;
        Ok(Parked { file, pid, pending_signals: Vec::new() })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The siginfo of every signal queued on it (its own queue, then its process's), as
    /// PTRACE_PEEKSIGINFO gives a tracer.
    pub fn pending_siginfo(&self) -> Result<Vec<[u8; crate::sys::SIGINFO_LEN]>, Error> {
        let mut out = Vec::new();
        loop {
            let mut buf = vec![[0u8; crate::sys::SIGINFO_LEN]; SIGINFO_STEP];
            let mut q = RawSigInfo {
                pid: self.pid.as_raw(),
                count: SIGINFO_STEP as u32,
                buf: buf.as_mut_ptr() as u64,
                skip: out.len() as u32,
                total: 0,
                reserved: 0,
            };
            // `q.buf` has room for `q.count` slots of SIGINFO_LEN (128) bytes, all the module writes.
            ioctl(&self.file, IOC_SIGINFO, &mut q).map_err(|e| Error::Sys {
                what: "MOSIX_IOC_SIGINFO",
                pid: self.pid.as_raw(),
                errno: e,
            })?;
            buf.truncate(q.count as usize);
            out.extend_from_slice(&buf);
            if q.count == 0 || out.len() >= q.total as usize {
                return Ok(out);
            }
        }
    }

    /// Its registers, XSAVE image, signal state and the rest of its context.
    pub fn context(&self) -> Result<NativeContext, Error> {
        let mut xs = vec![0u8; XSTATE_BUF];
        let mut c = Box::new(RawContext {
            pid: self.pid.as_raw(),
            xstate_len: xs.len() as u32,
            xstate: xs.as_mut_ptr() as u64,
            regs: [0; 27],
            sigmask: 0,
            brk: 0,
            tid_address: 0,
            robust_list: 0,
            robust_len: 0,
            rseq: 0,
            rseq_len: 0,
            rseq_sig: 0,
            altstack_sp: 0,
            altstack_size: 0,
            altstack_flags: 0,
            reserved0: 0,
            sigactions: [RawSigAction::default(); 64],
            reserved: 0,
        });
        ioctl(&self.file, IOC_CONTEXT, &mut *c).map_err(|e| Error::Sys { what: "MOSIX_IOC_CONTEXT", pid: self.pid.as_raw(), errno: e })?;
        xs.truncate(c.xstate_len as usize);
        let regs = crate::capture::words_to_regs(&c.regs).expect("27 words");
        let sigactions = c.sigactions.iter().enumerate().map(|(i, a)| ((i + 1) as u8, a.handler, a.flags, a.restorer, a.mask)).collect();
        Ok(NativeContext {
            regs,
            xstate: xs,
            sigmask: c.sigmask,
            brk: c.brk,
            tid_address: c.tid_address,
            robust: (c.robust_list != 0).then_some((c.robust_list, c.robust_len)),
            rseq: (c.rseq != 0).then_some((c.rseq, c.rseq_len, c.rseq_sig)),
            altstack: (c.altstack_sp, c.altstack_flags, c.altstack_size),
            sigactions,
        })
    }

    fn thaw_ioctl(&self) -> Result<(), Error> {
        let mut t = Target { pid: self.pid.as_raw(), timeout_ms: 0, reserved: 0 };
        ioctl(&self.file, IOC_THAW, &mut t).map_err(|e| match e {
            nix::errno::Errno::ESRCH => Error::TraceeGone { pid: self.pid.as_raw(), how: "killed while frozen".into(), code: None },
            e => Error::Sys { what: "MOSIX_IOC_THAW", pid: self.pid.as_raw(), errno: e },
        })
    }

    /// Lets it go on where it was (an interrupted call is restarted by its kernel).
    pub fn thaw(self) -> Result<(), Error> {
        self.thaw_ioctl()
    }

    /// Hands the process to ptrace without letting it run: seize, interrupt, thaw; it stops in
    /// the ptrace interrupt-stop before any user instruction. For its deputy after a move.
    pub fn into_traced(self) -> Result<Tracee<Stopped>, Error> {
        let t = Tracee::<Running>::seize(self.pid)?;
        let mut thawed = Ok(());
        let t = t.interrupt_with(|| thawed = self.thaw_ioctl())?;
        thawed?;
        Ok(t)
    }
}
