//! Every FFI call of the engine lives here, each behind a small safe function.
//! Invariants are named in `SAFETY:` comments; callers never see raw pointers.
#![allow(unsafe_code)]

use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// Largest xstate buffer we accept (the kernel reports the real size back).
pub const XSTATE_MAX: usize = 16384;

fn check(r: libc::c_long) -> Result<libc::c_long, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// Reads the NT_X86_XSTATE regset of a ptrace-stopped tracee.
pub fn get_xstate(pid: Pid) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: iov points to `buf`, which is valid for writes of iov_len bytes for the whole call;
    // the kernel shrinks iov_len to the bytes written.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, pid.as_raw(), NT_X86_XSTATE, &mut iov as *mut libc::iovec) };
    check(r)?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Writes the NT_X86_XSTATE regset of a ptrace-stopped tracee.
pub fn set_xstate(pid: Pid, xstate: &[u8]) -> Result<(), Errno> {
    let mut iov = libc::iovec { iov_base: xstate.as_ptr() as *mut libc::c_void, iov_len: xstate.len() };
    // SAFETY: iov describes `xstate`, valid for reads of iov_len bytes; SETREGSET only reads it.
    let r = unsafe { libc::ptrace(libc::PTRACE_SETREGSET, pid.as_raw(), NT_X86_XSTATE, &mut iov as *mut libc::iovec) };
    check(r).map(drop)
}

/// PTRACE_GETSIGMASK.
pub fn get_sigmask(pid: Pid) -> Result<u64, Errno> {
    let mut mask: u64 = 0;
    // SAFETY: the kernel writes exactly `data`=8 bytes (size argument) into `mask`, a valid u64.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETSIGMASK, pid.as_raw(), 8usize, &mut mask as *mut u64) };
    check(r)?;
    Ok(mask)
}

/// PTRACE_SETSIGMASK.
pub fn set_sigmask(pid: Pid, mask: u64) -> Result<(), Errno> {
    // SAFETY: the kernel reads 8 bytes from `&mask`, a valid u64 that outlives the call.
    let r = unsafe { libc::ptrace(libc::PTRACE_SETSIGMASK, pid.as_raw(), 8usize, &mask as *const u64) };
    check(r).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct RseqConf {
    ptr: u64,
    len: u32,
    sig: u32,
    flags: u32,
    pad: u32,
}

/// PTRACE_GET_RSEQ_CONFIGURATION: `Some((ptr, len, sig))` when rseq is registered.
pub fn get_rseq(pid: Pid) -> Result<Option<(u64, u32, u32)>, Errno> {
    let mut c = RseqConf::default();
    // SAFETY: `c` is a repr(C) struct of the kernel's layout and size (24 bytes), passed with its size.
    let r =
        unsafe { libc::ptrace(PTRACE_GET_RSEQ_CONFIGURATION as _, pid.as_raw(), std::mem::size_of::<RseqConf>(), &mut c as *mut RseqConf) };
    check(r)?;
    Ok((c.ptr != 0).then_some((c.ptr, c.len, c.sig)))
}

/// get_robust_list(pid): the robust futex list head and length of another task.
pub fn get_robust_list(pid: Pid) -> Result<(u64, u64), Errno> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: both out-pointers point to valid, writable locals of the sizes the kernel writes.
    let r = unsafe { libc::syscall(libc::SYS_get_robust_list, pid.as_raw(), &mut head as *mut u64, &mut len as *mut usize) };
    check(r)?;
    Ok((head, len as u64))
}

/// pidfd_open(pid, 0).
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = check(r)? as RawFd;
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// tgkill(tgid, tid, sig): sends signal number `sig` (real-time ones included) to one thread.
pub fn tgkill(tgid: Pid, tid: Pid, sig: i32) -> Result<(), Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid.as_raw(), tid.as_raw(), sig) };
    check(r).map(drop)
}

/// pidfd_getfd: duplicates descriptor `fd` of the process behind `pidfd` into this process.
pub fn pidfd_getfd(pidfd: RawFd, fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    let nfd = check(r)? as RawFd;
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(nfd) })
}

/// prlimit(pid, resource, NULL, old): a limit of another process as (soft, hard).
pub fn get_rlimit(pid: Pid, resource: libc::__rlimit_resource_t) -> Result<(u64, u64), Errno> {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `old` is a valid, writable rlimit; the new-limit pointer is null (read only).
    let r = unsafe { libc::prlimit(pid.as_raw(), resource, std::ptr::null(), &mut old) };
    check(r as libc::c_long)?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// prlimit(pid, resource, new): sets a limit of another process.
pub fn set_rlimit(pid: Pid, resource: libc::__rlimit_resource_t, cur: u64, max: u64) -> Result<(), Errno> {
    let new = libc::rlimit { rlim_cur: cur, rlim_max: max };
    // SAFETY: `new` is a valid rlimit read by the kernel; the old-limit pointer is null (not wanted).
    let r = unsafe { libc::prlimit(pid.as_raw(), resource, &new, std::ptr::null_mut()) };
    check(r as libc::c_long).map(drop)
}

/// `struct seccomp_data` (64 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif` (80 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SeccompNotif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

#[repr(C)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;
const SECCOMP_IOCTL_NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;
/// Let the intercepted call run in the target as if it had not been intercepted.
pub const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;

/// Receives one seccomp notification (blocks until one is pending).
pub fn notif_recv(listener: RawFd) -> Result<SeccompNotif, Errno> {
    let mut n = SeccompNotif::default();
    // SAFETY: `n` is a zeroed repr(C) seccomp_notif of the size encoded in the ioctl number.
    let r = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &mut n as *mut SeccompNotif) };
    check(r as libc::c_long)?;
    Ok(n)
}

/// Answers notification `id`: `Ok(val)` returns val, `Err(errno)` fails the call, `continue_` runs it.
pub fn notif_send(listener: RawFd, id: u64, result: Result<i64, i32>, continue_: bool) -> Result<(), Errno> {
    let (val, error) = match result {
        Ok(v) => (v, 0),
        Err(e) => (0, -e.abs()),
    };
    let mut resp = SeccompNotifResp { id, val, error, flags: if continue_ { SECCOMP_USER_NOTIF_FLAG_CONTINUE } else { 0 } };
    if continue_ {
        resp.val = 0;
        resp.error = 0;
    }
    // SAFETY: `resp` is a repr(C) seccomp_notif_resp of the size encoded in the ioctl number.
    let r = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &mut resp as *mut SeccompNotifResp) };
    check(r as libc::c_long).map(drop)
}

/// Asks the kernel to wake the task and the listener on the waker's CPU (Linux >= 6.6,
/// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP): a notification and its answer are then handed over
/// like a synchronous call instead of waking another CPU. False when the kernel lacks it.
pub fn notif_sync_wake_up(listener: RawFd) -> bool {
    const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
    const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
    // SAFETY: the ioctl takes the flags by value (no pointer is dereferenced).
    let r = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) };
    r == 0
}

/// Is notification `id` still pending (the task still waits for it)?
pub fn notif_id_valid(listener: RawFd, id: u64) -> bool {
    let mut v = id;
    // SAFETY: the ioctl reads one u64 from a valid local.
    let r = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &mut v as *mut u64) };
    r == 0
}

/// Descriptor of the stub's userfaultfd (created while the stub is still root), if it has one.
pub const STUB_UFFD: RawFd = 0;

/// Identity the stub takes before it is traced.
#[derive(Debug, Clone, Copy)]
pub struct StubIdentity {
    pub uid: u32,
    pub gid: u32,
}

/// Forks a stub child that drops every descriptor, creates a userfaultfd at descriptor 0 (see
/// [`STUB_UFFD`]), takes `id`, asks to die with its parent thread,
/// gets no core files,
/// sets no_new_privs (so an unprivileged stub may install a seccomp filter), asks to be traced and
/// stops itself. Returns the child's pid; the caller waits for its SIGSTOP.
///
/// Only raw system calls run in the child: the caller may be multi-threaded.
pub fn fork_stub(id: StubIdentity) -> Result<Pid, Errno> {
    fork_stopped_child(|| {
        // SAFETY: raw syscalls with integer arguments, plus prlimit64 given a pointer to a local
        // `rlimit` that lives for the call (and a null old-limit pointer); on any failure the
        // child exits at once with a distinct code.
        unsafe {
            libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
            // While still privileged: a userfaultfd for this address space that also takes faults
            // from kernel mode (an unprivileged one cannot), at descriptor 0. The caller takes it
            // (post-copy) and closes it here; if the kernel has none, descriptor 0 stays free.
            libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK);
            libc::syscall(libc::SYS_setsid);
            if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) < 0 && id.uid != 0 {
                libc::_exit(120);
            }
            if libc::syscall(libc::SYS_setresgid, id.gid, id.gid, id.gid) < 0 {
                libc::_exit(121);
            }
            if libc::syscall(libc::SYS_setresuid, id.uid, id.uid, id.uid) < 0 {
                libc::_exit(122);
            }
            libc::syscall(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // A guest never leaves a core file on the node that hosts it.
            let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::syscall(libc::SYS_prlimit64, 0, libc::RLIMIT_CORE, &no_core as *const libc::rlimit, std::ptr::null_mut::<libc::rlimit>());
            libc::syscall(libc::SYS_prctl, libc::PR_SET_DUMPABLE, 1);
            libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        }
    })
}

/// Forks a child that runs `prepare`, asks to be traced (PTRACE_TRACEME) and stops itself with
/// SIGSTOP; returns its pid to the parent. `prepare` runs in the child of a possibly
/// multi-threaded process: it must only issue raw, async-signal-safe system calls (or `_exit`),
/// never allocate or take a lock.
fn fork_stopped_child(prepare: impl FnOnce()) -> Result<Pid, Errno> {
    // SAFETY: the child branch below only runs `prepare` (raw system calls, by this function's
    // contract) and raw system calls and `_exit`, which are async-signal-safe, so forking a
    // multi-threaded process is sound; the parent branch returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid > 0 {
        return Ok(Pid::from_raw(pid));
    }
    prepare();
    // SAFETY: raw syscalls with integer arguments only; on failure the child exits at once.
    unsafe {
        if libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
            libc::_exit(123);
        }
        libc::syscall(libc::SYS_kill, libc::syscall(libc::SYS_getpid), libc::SIGSTOP);
        libc::_exit(124);
    }
}

/// Runs `f` in a new process that is not the caller's child (forked twice: the middle process
/// exits at once and is reaped here), with every descriptor but 0-2 closed first; the process
/// exits with what `f` returns. Returns once the middle process is reaped (an error if it could
/// not fork). The new process inherits the caller's signal mask and memory.
///
/// `f` runs arbitrary Rust code after fork, which is sound only in a single-threaded process: a
/// caller with more than one thread gets `EBUSY` and nothing is forked.
pub fn spawn_detached(f: impl FnOnce() -> i32) -> Result<(), Errno> {
    let threads = std::fs::read_dir("/proc/self/task").map_err(|_| Errno::ENOENT)?.count();
    if threads != 1 {
        return Err(Errno::EBUSY);
    }
    // SAFETY: the caller is single-threaded (checked above; it cannot start a thread before this
    // call returns), so the child may run any code; the parent branch only waits.
    let mid = unsafe { libc::fork() };
    if mid < 0 {
        return Err(Errno::last());
    }
    if mid > 0 {
        loop {
            match nix::sys::wait::waitpid(Pid::from_raw(mid), None) {
                Err(Errno::EINTR) => continue,
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => return Ok(()),
                Ok(_) => return Err(Errno::EAGAIN),
                Err(e) => return Err(e),
            }
        }
    }
    // SAFETY: the middle process is single-threaded (a fork of a single-threaded caller); it
    // forks once more and exits with `_exit`, running no destructors of the caller's state.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        // SAFETY: `_exit` ends the middle process at once.
        unsafe { libc::_exit(if pid < 0 { 1 } else { 0 }) };
    }
    // SAFETY: close_range takes integers only; the descriptors closed are the caller's copies,
    // which this process must not keep open (connections of the caller would outlive it).
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let code = f();
    // SAFETY: ends this process without unwinding into the caller's stack it was forked from.
    unsafe { libc::_exit(code) }
}

/// Whether descriptor `fd1` of `pid1` and `fd2` of `pid2` are the same open file description
/// (kcmp KCMP_FILE). `Err` when the kernel cannot tell (no kcmp, no ptrace access).
pub fn same_open_file(pid1: Pid, fd1: i32, pid2: Pid, fd2: i32) -> Result<bool, Errno> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp takes integers only.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1.as_raw(), pid2.as_raw(), KCMP_FILE, fd1 as libc::c_long, fd2 as libc::c_long) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(r == 0)
}

/// Forks a stub for recovering a checkpoint at home, as the caller's child: it keeps the caller's
/// descriptors 0-2 (the recovered process's stdio may be bound to them) and closes every other,
/// keeps the caller's identity and session, asks to be traced and stops itself. Returns its pid;
/// the caller waits for its SIGSTOP.
///
/// Only raw system calls run in the child: the caller may be multi-threaded.
pub fn fork_home_stub() -> Result<Pid, Errno> {
    fork_stopped_child(|| {
        // SAFETY: one raw syscall with integer arguments.
        unsafe {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        }
    })
}

/// A `MAP_SHARED` mapping of a memory file in this process, shared with another process (the
/// deputy maps the same file). The other process may write any byte at any time, so the memory is
/// only ever accessed through atomics and raw copies, never through references to plain data;
/// which side may touch which bytes when is the protocol of its user (engine::deputy).
#[derive(Debug)]
pub struct SharedMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access goes through
// atomics or raw copies, which are valid from any thread.
unsafe impl Send for SharedMem {}

impl SharedMem {
    /// Maps `len` bytes of the memory file `fd` read-write and shared.
    pub fn map(fd: &OwnedFd, len: usize) -> Result<SharedMem, Errno> {
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL) over a descriptor we own; it
        // aliases no Rust object.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(SharedMem { ptr: NonNull::new(p.cast()).ok_or(Errno::EINVAL)?, len })
    }

    fn at(&self, off: usize, n: usize, align: usize) -> *mut u8 {
        assert!(off.checked_add(n).is_some_and(|e| e <= self.len) && off.is_multiple_of(align), "shared memory access out of bounds");
        // SAFETY: off + n <= len, so the result stays inside the mapping.
        unsafe { self.ptr.as_ptr().add(off) }
    }

    /// The u32 at `off` (4-aligned), as an atomic.
    pub fn u32_at(&self, off: usize) -> &AtomicU32 {
        // SAFETY: in bounds and aligned (checked by `at`); the mapping lives as long as `self`;
        // AtomicU32 has the layout of u32 and tolerates concurrent writes by the other process.
        unsafe { AtomicU32::from_ptr(self.at(off, 4, 4).cast()) }
    }

    /// The u64 at `off` (8-aligned), as an atomic.
    pub fn u64_at(&self, off: usize) -> &AtomicU64 {
        // SAFETY: as for `u32_at`, with 8 bytes and 8-alignment.
        unsafe { AtomicU64::from_ptr(self.at(off, 8, 8).cast()) }
    }

    /// Copies `data` to `off`. The caller's protocol guarantees the other process does not use
    /// these bytes meanwhile.
    pub fn write(&self, off: usize, data: &[u8]) {
        let dst = self.at(off, data.len(), 1);
        // SAFETY: dst is valid for data.len() bytes (checked by `at`) and cannot overlap `data`,
        // which is Rust memory outside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) }
    }

    /// Copies `out.len()` bytes from `off`. The caller's protocol guarantees the other process
    /// does not write these bytes meanwhile.
    pub fn read(&self, off: usize, out: &mut [u8]) {
        let src = self.at(off, out.len(), 1);
        // SAFETY: src is valid for out.len() bytes (checked by `at`) and cannot overlap `out`.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) }
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping made in `map`; no reference into it outlives
        // `self` (the accessors borrow `self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Involuntary context switches of the calling thread so far (getrusage(RUSAGE_THREAD)): they
/// grow when the thread is preempted, i.e. when another task wanted its CPU.
pub fn involuntary_switches() -> i64 {
    // SAFETY: rusage is plain data; zeroed is a valid value and the kernel fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if r == 0 {
        ru.ru_nivcsw
    } else {
        0
    }
}

/// FUTEX_WAIT on a word of shared memory (not process-private): sleeps while it holds `val`, at
/// most `timeout`. Returns when woken, on timeout, on a signal, or at once if the value differs.
pub fn futex_wait(word: &AtomicU32, val: u32, timeout: Duration) {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: `word` is a valid, aligned u32 for the call; `ts` is a valid timespec read by the
    // kernel; the remaining arguments are unused by FUTEX_WAIT.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, val, &ts as *const libc::timespec, 0usize, 0u32) };
}

/// FUTEX_WAKE of one waiter on a word of shared memory (not process-private).
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE reads no other pointer.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1, 0usize, 0usize, 0u32) };
}

/// Makes the program `cmd` will run stop at its first instruction, traced by the spawning thread
/// (PTRACE_TRACEME before execve: the kernel stops it with SIGTRAP once the new image is loaded).
/// The caller must then drive it, e.g. with [`crate::ptrace::run_to_entry`].
pub fn trace_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before execve and only issues one raw,
    // async-signal-safe system call with integer arguments; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Size of `siginfo_t`.
pub const SIGINFO_LEN: usize = 128;

/// The signals queued on stopped tracee `pid` (PTRACE_PEEKSIGINFO, which leaves them queued): its
/// own queue, then the process's shared one; one `siginfo_t` each.
pub fn pending_siginfo(pid: Pid) -> Result<Vec<[u8; SIGINFO_LEN]>, Errno> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
    const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
    let mut out = Vec::new();
    for flags in [0, PTRACE_PEEKSIGINFO_SHARED] {
        let mut off = 0u64;
        loop {
            let mut buf = [[0u8; SIGINFO_LEN]; 32];
            let args = PeekArgs { off, flags, nr: buf.len() as i32 };
            // SAFETY: `args` is a valid ptrace_peeksiginfo_args read by the kernel; `buf` has room
            // for `args.nr` siginfo_t, which the kernel writes.
            let r = unsafe { libc::ptrace(PTRACE_PEEKSIGINFO, pid.as_raw(), &args as *const PeekArgs, buf.as_mut_ptr()) };
            let n = (check(r)? as usize).min(buf.len());
            off += n as u64;
            out.extend_from_slice(&buf[..n]);
            if n < buf.len() {
                break;
            }
        }
    }
    Ok(out)
}

/// Queues the signal `info` (a `siginfo_t`) describes on process `pid`. The kernel takes a siginfo
/// from another process only with a negative si_code other than SI_TKILL (sigqueue, timers, message
/// queues, AIO): those keep their siginfo; any other signal is sent with kill(), so its si_pid and
/// si_uid become the caller's and its si_code SI_USER.
pub fn queue_signal(pid: Pid, info: &[u8]) -> Result<(), Errno> {
    if info.len() < 12 {
        return Err(Errno::EINVAL);
    }
    let signo = i32::from_le_bytes(info[0..4].try_into().expect("4 bytes"));
    let code = i32::from_le_bytes(info[8..12].try_into().expect("4 bytes"));
    if !(1..=64).contains(&signo) {
        return Err(Errno::EINVAL);
    }
    if code < 0 && code != libc::SI_TKILL {
        let mut si = [0u8; SIGINFO_LEN];
        let n = info.len().min(SIGINFO_LEN);
        si[..n].copy_from_slice(&info[..n]);
        // SAFETY: `si` is a full, initialised siginfo_t the kernel reads for the call.
        let r = unsafe { libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid.as_raw(), pid.as_raw(), signo, si.as_ptr()) };
        return check(r).map(drop);
    }
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_kill, pid.as_raw(), signo) };
    check(r).map(drop)
}

/// The siginfo of the signal tracee `pid` is stopped for (PTRACE_GETSIGINFO, in a
/// signal-delivery-stop).
pub fn get_siginfo(pid: Pid) -> Result<[u8; SIGINFO_LEN], Errno> {
    let mut buf = [0u8; SIGINFO_LEN];
    // SAFETY: `buf` has room for one siginfo_t, which the kernel writes.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, pid.as_raw(), 0usize, buf.as_mut_ptr()) };
    check(r)?;
    Ok(buf)
}

/// `struct pm_scan_arg` of the PAGEMAP_SCAN ioctl (linux/fs.h). `size`, `vec` and `vec_len` are
/// filled by [`pagemap_scan`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

/// `struct page_region` (linux/fs.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// PAGEMAP_SCAN on an open /proc/PID/pagemap: fills `out` with at most `out.len()` regions and
/// returns how many; `arg.walk_end` says where the walk stopped.
pub fn pagemap_scan(pagemap: RawFd, arg: &mut PmScanArg, out: &mut [PageRegion]) -> Result<usize, Errno> {
    /// _IOWR('f', 16, struct pm_scan_arg) (96 bytes).
    const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
    arg.size = std::mem::size_of::<PmScanArg>() as u64;
    arg.vec = out.as_mut_ptr() as u64;
    arg.vec_len = out.len() as u64;
    // SAFETY: the kernel reads `arg` (a pm_scan_arg whose `size` is its own size) and writes at
    // most `vec_len` page_region entries at `vec`, which is `out`, borrowed mutably for the call.
    let n = unsafe { libc::ioctl(pagemap, PAGEMAP_SCAN, arg as *mut PmScanArg) };
    if n < 0 {
        return Err(Errno::last());
    }
    Ok(n as usize)
}

/// UFFDIO_API on a fresh userfaultfd, asking for `features`.
pub fn uffd_api(uffd: RawFd, features: u64) -> Result<(), Errno> {
    /// _IOWR(0xAA, 0x3F, struct uffdio_api) (24 bytes).
    const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
    let mut api: [u64; 3] = [0xAA, features, 0];
    // SAFETY: UFFDIO_API reads and writes one struct uffdio_api {api, features, ioctls}: three
    // u64, which `api` is.
    if unsafe { libc::ioctl(uffd, UFFDIO_API, api.as_mut_ptr()) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// UFFDIO_REGISTER of `[start, start+len)` with `mode`.
pub fn uffd_register(uffd: RawFd, start: u64, len: u64, mode: u64) -> Result<(), Errno> {
    /// _IOWR(0xAA, 0x00, struct uffdio_register) (32 bytes).
    const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
    let mut r: [u64; 4] = [start, len, mode, 0];
    // SAFETY: UFFDIO_REGISTER reads and writes one struct uffdio_register {range {start, len},
    // mode, ioctls}: four u64, which `r` is.
    if unsafe { libc::ioctl(uffd, UFFDIO_REGISTER, r.as_mut_ptr()) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// userfaultfd(2) for this process.
pub fn userfaultfd(flags: u64) -> Result<OwnedFd, Errno> {
    // SAFETY: userfaultfd takes one integer argument and returns a new descriptor or -1; the
    // descriptor is owned by nobody else.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just returned by the kernel and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// UFFDIO_COPY of `len` bytes from `src` (this process) to `dst` (the userfaultfd's process),
/// waking the faulting threads. Returns the bytes copied before an error, with the error.
pub fn uffd_copy(uffd: RawFd, dst: u64, src: &[u8]) -> Result<(), (u64, Errno)> {
    /// _IOWR(0xAA, 0x03, struct uffdio_copy) (40 bytes).
    const UFFDIO_COPY: libc::c_ulong = 0xC028_AA03;
    let mut c: [u64; 5] = [dst, src.as_ptr() as u64, src.len() as u64, 0, 0];
    // SAFETY: UFFDIO_COPY reads one struct uffdio_copy {dst, src, len, mode} and writes its `copy`
    // field: five u64, which `c` is; the kernel reads `len` bytes at `src`, which `src` holds.
    if unsafe { libc::ioctl(uffd, UFFDIO_COPY, c.as_mut_ptr()) } < 0 {
        let e = Errno::last();
        return Err((if (c[4] as i64) > 0 { c[4] } else { 0 }, e));
    }
    Ok(())
}

/// UFFDIO_ZEROPAGE of `[start, start+len)`, waking the faulting threads.
pub fn uffd_zeropage(uffd: RawFd, start: u64, len: u64) -> Result<(), Errno> {
    /// _IOWR(0xAA, 0x04, struct uffdio_zeropage) (32 bytes).
    const UFFDIO_ZEROPAGE: libc::c_ulong = 0xC020_AA04;
    let mut z: [u64; 4] = [start, len, 0, 0];
    // SAFETY: UFFDIO_ZEROPAGE reads one struct uffdio_zeropage {range {start, len}, mode} and
    // writes its `zeropage` field: four u64, which `z` is.
    if unsafe { libc::ioctl(uffd, UFFDIO_ZEROPAGE, z.as_mut_ptr()) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// One `struct uffd_msg` (32 bytes): the event and its first three 64-bit arguments.
#[derive(Debug, Clone, Copy)]
pub struct UffdMsg {
    pub event: u8,
    pub args: [u64; 3],
}

/// Reads the pending messages of a non-blocking userfaultfd into `out` (none: `Ok(0)`).
pub fn uffd_read(uffd: RawFd, out: &mut Vec<UffdMsg>) -> Result<usize, Errno> {
    let mut buf = [0u8; 32 * 64];
    // SAFETY: read(2) into a local buffer of the length given.
    let n = unsafe { libc::read(uffd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = Errno::last();
        return if e == Errno::EAGAIN { Ok(0) } else { Err(e) };
    }
    let n = n as usize / 32;
    for m in buf.chunks_exact(32).take(n) {
        let w = |i: usize| u64::from_le_bytes(m[i..i + 8].try_into().expect("8 bytes"));
        out.push(UffdMsg { event: m[0], args: [w(8), w(16), w(24)] });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_detached_refuses_a_multi_threaded_caller() {
        // A second thread that lives until the check is done (the test harness may also run this
        // on a thread of its own beside the main thread).
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = wait.recv();
        });
        assert_eq!(spawn_detached(|| 0), Err(Errno::EBUSY));
        drop(done);
        other.join().unwrap();
    }
}
