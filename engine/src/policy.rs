//! What a remote component may do with each system call: policy as data, apart from the mechanism
//! (seccomp + the guest loop in mosd) that applies it.
//!
//! * `Local` calls are allowed by the seccomp filter and run natively on the remote node.
//! * `Forward` calls are executed by the deputy at home; the row says how each pointer argument moves.
//! * `Answer` calls are answered by the remote node from what it knows of home (no round trip).
//! * Every other call brings the process home before it runs (MOSIX's default for calls the remote
//!   side does not support): the call then executes natively at home, so nothing misbehaves.
use crate::syscall_names;

/// How one pointer argument of a forwarded call moves between the remote task and the deputy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// `args[i]` is a NUL-terminated path (at most PATH_MAX bytes) read by the call.
    Path(u8),
    /// `args[buf]` points to `args[len]` bytes read by the call (write-like).
    In { buf: u8, len: u8 },
    /// `args[buf]` points to `args[len]` bytes the call fills; the result says how many (read-like).
    Out { buf: u8, len: u8 },
    /// `args[buf]` points to a struct of `size` bytes the call fills (valid when it succeeds).
    OutFixed { buf: u8, size: u32 },
    /// `args[buf]` points to a struct of `size` bytes the call reads.
    InFixed { buf: u8, size: u32 },
    /// `args[buf]` points to a struct of `size` bytes the call reads and may change.
    InOutFixed { buf: u8, size: u32 },
    /// `args[buf]` points to `args[cnt]` elements of `size` bytes the call reads and changes (poll).
    InOutElems { buf: u8, cnt: u8, size: u32 },
    /// `args[buf]` is an fd_set for `args[nfds]` descriptors, read and changed (select).
    InOutBits { buf: u8, nfds: u8 },
    /// `args[buf]` points to room for `args[cnt]` elements of `size` bytes; the result says how
    /// many the call filled (epoll_wait).
    OutElems { buf: u8, cnt: u8, size: u32 },
    /// `args[iov]` is an iovec array of `args[cnt]` entries read by the call (writev: sent as write).
    InIov { iov: u8, cnt: u8 },
    /// `args[iov]` is an iovec array of `args[cnt]` entries the call fills (readv: sent as read).
    OutIov { iov: u8, cnt: u8 },
    /// `args[buf]` points to as many bytes as the `socklen_t` at `args[lenp]` says; the call reads
    /// them (or not) and may fill them, and stores the length it wanted at `args[lenp]`
    /// (getsockopt, getsockname, accept's peer address ...). A null `args[buf]` is passed on.
    InOutSized { buf: u8, lenp: u8 },
    /// `args[buf]` points to `args[cnt]` elements of `size` bytes the call reads (setgroups).
    InElems { buf: u8, cnt: u8, size: u32 },
    /// `args[msg]` is a `struct msghdr` (sendmsg with `send`, recvmsg without): its name, iovecs
    /// and control buffer move with it (the iovecs gathered into one buffer).
    MsgHdr { msg: u8, send: bool },
}

/// Answers the remote side gives itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The pid at home (getpid; gettid of the single thread).
    HomePid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Local(&'static str),
    /// Executed by the deputy; the pointer arguments, in order.
    Forward(&'static [Arg]),
    Answer(Answer),
    Home,
}

/// One row of the table: a call, what happens to it, and why.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub nr: libc::c_long,
    pub disposition: Disposition,
}

const fn local(nr: libc::c_long, why: &'static str) -> Row {
    Row { nr, disposition: Disposition::Local(why) }
}
const fn fwd(nr: libc::c_long, args: &'static [Arg]) -> Row {
    Row { nr, disposition: Disposition::Forward(args) }
}

use Arg::*;
/// `struct stat` on x86-64.
const STAT: u32 = 144;
/// `struct statx`.
const STATX: u32 = 256;
/// `struct utsname`.
const UTSNAME: u32 = 390;
/// `struct rlimit` / `struct rlimit64`.
const RLIMIT: u32 = 16;
/// `struct timespec[2]`.
const TIMES: u32 = 32;
/// `struct termios` (kernel, TCGETS).
const TERMIOS: u32 = 36;
/// `struct winsize`.
const WINSIZE: u32 = 8;
/// `struct rusage`.
const RUSAGE: u32 = 144;
/// `siginfo_t`.
const SIGINFO: u32 = 128;
/// `struct timespec` / `struct timeval`.
const TIMESPEC: u32 = 16;
/// `struct epoll_event` (packed on x86-64).
const EPOLL_EVENT: u32 = 12;
/// `struct flock`.
const FLOCK: u32 = 32;
/// `struct __user_cap_header_struct`.
const CAP_HEADER: u32 = 8;
/// Two `struct __user_cap_data_struct` (capability version 3).
const CAP_DATA: u32 = 24;

/// The rows this build knows. Numbers absent from it bring the process home.
pub const TABLE: &[Row] = &[
    // Memory management on private memory: node-independent.
    local(libc::SYS_brk, "private heap"),
    local(libc::SYS_mmap, "anonymous private memory only (file mappings go home; checked on arg 3)"),
    local(libc::SYS_munmap, "own address space"),
    local(libc::SYS_mremap, "own address space"),
    local(libc::SYS_mprotect, "own address space"),
    local(libc::SYS_madvise, "own address space"),
    local(libc::SYS_mincore, "own address space"),
    local(libc::SYS_mlock, "own address space"),
    local(libc::SYS_munlock, "own address space"),
    // Time: clocks are node-local but synchronised; sleeping is local.
    local(libc::SYS_clock_gettime, "time"),
    local(libc::SYS_clock_getres, "time"),
    local(libc::SYS_gettimeofday, "time"),
    local(libc::SYS_time, "time"),
    local(libc::SYS_nanosleep, "sleep"),
    local(libc::SYS_clock_nanosleep, "sleep"),
    local(libc::SYS_restart_syscall, "restart of a local sleep"),
    local(libc::SYS_pause, "waits for a signal, which is forwarded from home"),
    // Synchronisation on private memory of a single-threaded process.
    local(libc::SYS_futex, "private memory"),
    local(libc::SYS_sched_yield, "scheduler hint"),
    local(libc::SYS_getrandom, "entropy is node-independent"),
    // Thread/CPU state captured and restored with the process context.
    local(libc::SYS_arch_prctl, "fs/gs base travel with the registers"),
    local(libc::SYS_rseq, "restartable sequences area travels with the context"),
    local(libc::SYS_set_tid_address, "travels with the context"),
    local(libc::SYS_set_robust_list, "travels with the context"),
    local(libc::SYS_get_robust_list, "travels with the context"),
    // Signal state: dispositions, mask and alternate stack travel with the context, so keeping them
    // local keeps them consistent with the deputy when the process comes home.
    local(libc::SYS_rt_sigaction, "dispositions travel with the context"),
    local(libc::SYS_rt_sigprocmask, "mask travels with the context"),
    local(libc::SYS_rt_sigreturn, "returns from a handler run remotely"),
    local(libc::SYS_sigaltstack, "travels with the context"),
    // Signals for the home pid are forwarded to the remote task and pend there, so waiting for
    // them and looking at the pending set are local. (At home, rt_sigpending would also lose a
    // signal pending remotely: such signals do not travel with the context yet.)
    local(libc::SYS_rt_sigpending, "signals for the home pid pend on the remote task"),
    local(libc::SYS_rt_sigsuspend, "waits for a signal, which is forwarded from home"),
    local(libc::SYS_rt_sigtimedwait, "waits for a signal, which is forwarded from home"),
    // Ending: the exit status is sent home by the remote side when the task is reaped.
    local(libc::SYS_exit, "status forwarded home on reaping"),
    local(libc::SYS_exit_group, "status forwarded home on reaping"),
    // Identity: the home pid; everything else from the deputy.
    Row { nr: libc::SYS_getpid, disposition: Disposition::Answer(Answer::HomePid) },
    Row { nr: libc::SYS_gettid, disposition: Disposition::Answer(Answer::HomePid) },
    fwd(libc::SYS_getppid, &[]),
    fwd(libc::SYS_getuid, &[]),
    fwd(libc::SYS_geteuid, &[]),
    fwd(libc::SYS_getgid, &[]),
    fwd(libc::SYS_getegid, &[]),
    fwd(libc::SYS_getpgrp, &[]),
    fwd(libc::SYS_getpgid, &[]),
    fwd(libc::SYS_getsid, &[]),
    fwd(libc::SYS_uname, &[OutFixed { buf: 0, size: UTSNAME }]),
    fwd(libc::SYS_umask, &[]),
    fwd(libc::SYS_getrlimit, &[OutFixed { buf: 1, size: RLIMIT }]),
    fwd(libc::SYS_prlimit64, &[InFixed { buf: 2, size: RLIMIT }, OutFixed { buf: 3, size: RLIMIT }]),
    // Descriptors: they live at home.
    fwd(libc::SYS_read, &[Out { buf: 1, len: 2 }]),
    fwd(libc::SYS_write, &[In { buf: 1, len: 2 }]),
    fwd(libc::SYS_pread64, &[Out { buf: 1, len: 2 }]),
    fwd(libc::SYS_pwrite64, &[In { buf: 1, len: 2 }]),
    fwd(libc::SYS_readv, &[OutIov { iov: 1, cnt: 2 }]),
    fwd(libc::SYS_writev, &[InIov { iov: 1, cnt: 2 }]),
    fwd(libc::SYS_close, &[]),
    fwd(libc::SYS_lseek, &[]),
    fwd(libc::SYS_dup, &[]),
    fwd(libc::SYS_dup2, &[]),
    fwd(libc::SYS_dup3, &[]),
    fwd(libc::SYS_fsync, &[]),
    fwd(libc::SYS_fdatasync, &[]),
    fwd(libc::SYS_ftruncate, &[]),
    fwd(libc::SYS_fchmod, &[]),
    fwd(libc::SYS_fchown, &[]),
    fwd(libc::SYS_fchdir, &[]),
    fwd(libc::SYS_fstat, &[OutFixed { buf: 1, size: STAT }]),
    fwd(libc::SYS_getdents64, &[Out { buf: 1, len: 2 }]),
    fwd(libc::SYS_pipe, &[OutFixed { buf: 0, size: 8 }]),
    fwd(libc::SYS_pipe2, &[OutFixed { buf: 0, size: 8 }]),
    // Paths resolve at home (cwd and root are the deputy's).
    fwd(libc::SYS_open, &[Path(0)]),
    fwd(libc::SYS_openat, &[Path(1)]),
    fwd(libc::SYS_creat, &[Path(0)]),
    fwd(libc::SYS_stat, &[Path(0), OutFixed { buf: 1, size: STAT }]),
    fwd(libc::SYS_lstat, &[Path(0), OutFixed { buf: 1, size: STAT }]),
    fwd(libc::SYS_newfstatat, &[Path(1), OutFixed { buf: 2, size: STAT }]),
    fwd(libc::SYS_statx, &[Path(1), OutFixed { buf: 4, size: STATX }]),
    fwd(libc::SYS_access, &[Path(0)]),
    fwd(libc::SYS_faccessat, &[Path(1)]),
    fwd(libc::SYS_faccessat2, &[Path(1)]),
    fwd(libc::SYS_mkdir, &[Path(0)]),
    fwd(libc::SYS_mkdirat, &[Path(1)]),
    fwd(libc::SYS_rmdir, &[Path(0)]),
    fwd(libc::SYS_unlink, &[Path(0)]),
    fwd(libc::SYS_unlinkat, &[Path(1)]),
    fwd(libc::SYS_rename, &[Path(0), Path(1)]),
    fwd(libc::SYS_renameat, &[Path(1), Path(3)]),
    fwd(libc::SYS_renameat2, &[Path(1), Path(3)]),
    fwd(libc::SYS_link, &[Path(0), Path(1)]),
    fwd(libc::SYS_linkat, &[Path(1), Path(3)]),
    fwd(libc::SYS_symlink, &[Path(0), Path(1)]),
    fwd(libc::SYS_symlinkat, &[Path(0), Path(2)]),
    fwd(libc::SYS_readlink, &[Path(0), Out { buf: 1, len: 2 }]),
    fwd(libc::SYS_readlinkat, &[Path(1), Out { buf: 2, len: 3 }]),
    fwd(libc::SYS_truncate, &[Path(0)]),
    fwd(libc::SYS_chmod, &[Path(0)]),
    fwd(libc::SYS_fchmodat, &[Path(1)]),
    fwd(libc::SYS_chown, &[Path(0)]),
    fwd(libc::SYS_lchown, &[Path(0)]),
    fwd(libc::SYS_fchownat, &[Path(1)]),
    fwd(libc::SYS_utimensat, &[Path(1), InFixed { buf: 2, size: TIMES }]),
    fwd(libc::SYS_chdir, &[Path(0)]),
    fwd(libc::SYS_getcwd, &[Out { buf: 0, len: 1 }]),
    // Waiting on descriptors: they are at home, so the wait happens there.
    fwd(libc::SYS_poll, &[InOutElems { buf: 0, cnt: 1, size: 8 }]),
    fwd(libc::SYS_ppoll, &[InOutElems { buf: 0, cnt: 1, size: 8 }, InOutFixed { buf: 2, size: TIMESPEC }, InFixed { buf: 3, size: 8 }]),
    fwd(
        libc::SYS_select,
        &[
            InOutBits { buf: 1, nfds: 0 },
            InOutBits { buf: 2, nfds: 0 },
            InOutBits { buf: 3, nfds: 0 },
            InOutFixed { buf: 4, size: TIMESPEC },
        ],
    ),
    fwd(libc::SYS_epoll_create, &[]),
    fwd(libc::SYS_epoll_create1, &[]),
    fwd(libc::SYS_epoll_ctl, &[InFixed { buf: 3, size: EPOLL_EVENT }]),
    fwd(libc::SYS_epoll_wait, &[OutElems { buf: 1, cnt: 2, size: EPOLL_EVENT }]),
    fwd(libc::SYS_epoll_pwait, &[OutElems { buf: 1, cnt: 2, size: EPOLL_EVENT }, InFixed { buf: 4, size: 8 }]),
    fwd(libc::SYS_eventfd, &[]),
    fwd(libc::SYS_eventfd2, &[]),
    // Children and other processes are at home.
    fwd(libc::SYS_wait4, &[OutFixed { buf: 1, size: 4 }, OutFixed { buf: 3, size: RUSAGE }]),
    fwd(libc::SYS_waitid, &[OutFixed { buf: 2, size: SIGINFO }, OutFixed { buf: 4, size: RUSAGE }]),
    fwd(libc::SYS_kill, &[]),
    fwd(libc::SYS_tgkill, &[]),
    fwd(libc::SYS_tkill, &[]),
    // Sockets live at home, so a connection survives migration.
    fwd(libc::SYS_socket, &[]),
    fwd(libc::SYS_socketpair, &[OutFixed { buf: 3, size: 8 }]),
    fwd(libc::SYS_connect, &[In { buf: 1, len: 2 }]),
    fwd(libc::SYS_bind, &[In { buf: 1, len: 2 }]),
    fwd(libc::SYS_listen, &[]),
    fwd(libc::SYS_shutdown, &[]),
    fwd(libc::SYS_setsockopt, &[In { buf: 3, len: 4 }]),
    fwd(libc::SYS_sendto, &[In { buf: 1, len: 2 }, In { buf: 4, len: 5 }]),
    fwd(libc::SYS_getsockopt, &[InOutSized { buf: 3, lenp: 4 }]),
    fwd(libc::SYS_getsockname, &[InOutSized { buf: 1, lenp: 2 }]),
    fwd(libc::SYS_getpeername, &[InOutSized { buf: 1, lenp: 2 }]),
    fwd(libc::SYS_accept, &[InOutSized { buf: 1, lenp: 2 }]),
    fwd(libc::SYS_accept4, &[InOutSized { buf: 1, lenp: 2 }]),
    fwd(libc::SYS_recvfrom, &[Out { buf: 1, len: 2 }, InOutSized { buf: 4, lenp: 5 }]),
    // Descriptors passed with SCM_RIGHTS are home descriptors, which is what they are at home.
    fwd(libc::SYS_sendmsg, &[MsgHdr { msg: 1, send: true }]),
    fwd(libc::SYS_recvmsg, &[MsgHdr { msg: 1, send: false }]),
    // Credentials live at home, in the deputy: the identity a migrated process has is the one its
    // home task has (its files, signals to others and children are checked against it there).
    fwd(libc::SYS_setuid, &[]),
    fwd(libc::SYS_setgid, &[]),
    fwd(libc::SYS_setreuid, &[]),
    fwd(libc::SYS_setregid, &[]),
    fwd(libc::SYS_setresuid, &[]),
    fwd(libc::SYS_setresgid, &[]),
    fwd(libc::SYS_setfsuid, &[]),
    fwd(libc::SYS_setfsgid, &[]),
    fwd(libc::SYS_getresuid, &[OutFixed { buf: 0, size: 4 }, OutFixed { buf: 1, size: 4 }, OutFixed { buf: 2, size: 4 }]),
    fwd(libc::SYS_getresgid, &[OutFixed { buf: 0, size: 4 }, OutFixed { buf: 1, size: 4 }, OutFixed { buf: 2, size: 4 }]),
    fwd(libc::SYS_getgroups, &[OutElems { buf: 1, cnt: 0, size: 4 }]),
    fwd(libc::SYS_setgroups, &[InElems { buf: 1, cnt: 0, size: 4 }]),
    fwd(libc::SYS_capget, &[InOutFixed { buf: 0, size: CAP_HEADER }, OutFixed { buf: 1, size: CAP_DATA }]),
    fwd(libc::SYS_capset, &[InOutFixed { buf: 0, size: CAP_HEADER }, InFixed { buf: 1, size: CAP_DATA }]),
];

/// fcntl commands the libc crate does not name.
const F_SETSIG: i32 = 10;
const F_GETSIG: i32 = 11;
const F_SETOWN_EX: i32 = 15;
const F_GETOWN_EX: i32 = 16;

/// fcntl commands whose third argument is a plain integer.
pub fn fcntl_is_plain(cmd: u64) -> bool {
    matches!(
        cmd as i32,
        libc::F_DUPFD
            | libc::F_GETFD
            | libc::F_SETFD
            | libc::F_GETFL
            | libc::F_SETFL
            | libc::F_DUPFD_CLOEXEC
            | libc::F_SETOWN
            | libc::F_GETOWN
            | F_SETSIG
            | F_GETSIG
            | libc::F_SETLEASE
            | libc::F_GETLEASE
            | libc::F_NOTIFY
            | libc::F_SETPIPE_SZ
            | libc::F_GETPIPE_SZ
            | libc::F_ADD_SEALS
            | libc::F_GET_SEALS
    )
}

/// `struct flock` in and out: POSIX record locks (owned by the home task) and open file
/// description locks.
const FCNTL_LOCK: &[Arg] = &[InOutFixed { buf: 2, size: FLOCK }];
const FCNTL_OWNER_OUT: &[Arg] = &[OutFixed { buf: 2, size: 8 }];
const FCNTL_OWNER_IN: &[Arg] = &[InFixed { buf: 2, size: 8 }];

/// The shape of fcntl's third argument for command `cmd`, if it is known.
fn fcntl_shape(cmd: u64) -> Option<&'static [Arg]> {
    if fcntl_is_plain(cmd) {
        return Some(&[]);
    }
    Some(match cmd as i32 {
        libc::F_GETLK | libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => FCNTL_LOCK,
        F_GETOWN_EX => FCNTL_OWNER_OUT,
        F_SETOWN_EX => FCNTL_OWNER_IN,
        _ => return None,
    })
}

const IOCTL_TCGETS: &[Arg] = &[OutFixed { buf: 2, size: TERMIOS }];
const IOCTL_TCSETS: &[Arg] = &[InFixed { buf: 2, size: TERMIOS }];
const IOCTL_WINSZ: &[Arg] = &[OutFixed { buf: 2, size: WINSIZE }];
const IOCTL_SET_WINSZ: &[Arg] = &[InFixed { buf: 2, size: WINSIZE }];
const IOCTL_INT: &[Arg] = &[OutFixed { buf: 2, size: 4 }];
const IOCTL_SET_INT: &[Arg] = &[InFixed { buf: 2, size: 4 }];
const IOCTL_U64: &[Arg] = &[OutFixed { buf: 2, size: 8 }];

/// The shape of ioctl's third argument for request `req`, for the requests whose argument is
/// known (terminals, descriptors, sockets, block devices); others bring the process home.
fn ioctl_shape(req: u64) -> Option<&'static [Arg]> {
    Some(match req as u32 {
        // TCGETS
        0x5401 => IOCTL_TCGETS,
        // TCSETS, TCSETSW, TCSETSF
        0x5402..=0x5404 => IOCTL_TCSETS,
        // TCSBRK, TCXONC, TCFLSH, TIOCSCTTY, TIOCNOTTY, FIONCLEX, FIOCLEX: integer or no argument
        0x5409 | 0x540A | 0x540B | 0x540E | 0x5422 | 0x5450 | 0x5451 => &[],
        // TIOCGPGRP, TIOCOUTQ (SIOCOUTQ), FIONREAD (SIOCINQ), TIOCGSID, TIOCGPTN, FIGETBSZ
        0x540F | 0x5411 | 0x541B | 0x5429 | 0x8004_5430 | 0x2 => IOCTL_INT,
        // TIOCSPGRP, FIONBIO, FIOASYNC, TIOCSPTLCK
        0x5410 | 0x5421 | 0x5452 | 0x4004_5431 => IOCTL_SET_INT,
        // TIOCGWINSZ, TIOCSWINSZ
        0x5413 => IOCTL_WINSZ,
        0x5414 => IOCTL_SET_WINSZ,
        // BLKGETSIZE64
        0x8008_1272 => IOCTL_U64,
        _ => return None,
    })
}

const PSELECT6: &[Arg] =
    &[InOutBits { buf: 1, nfds: 0 }, InOutBits { buf: 2, nfds: 0 }, InOutBits { buf: 3, nfds: 0 }, InOutFixed { buf: 4, size: TIMESPEC }];

/// Resource limits the kernel enforces on the running task itself (memory, CPU time, stack),
/// rather than on descriptors or files, which live at home.
pub fn rlimit_acts_where_it_runs(resource: u64) -> bool {
    matches!(
        resource as u32,
        libc::RLIMIT_AS
            | libc::RLIMIT_DATA
            | libc::RLIMIT_STACK
            | libc::RLIMIT_CPU
            | libc::RLIMIT_MEMLOCK
            | libc::RLIMIT_RSS
            | libc::RLIMIT_RTTIME
    )
}

/// The disposition of call `nr` with arguments `args`.
pub fn classify(nr: u32, args: &[u64; 6]) -> Disposition {
    let nr = nr as libc::c_long;
    if nr == libc::SYS_ioctl {
        return ioctl_shape(args[1]).map_or(Disposition::Home, Disposition::Forward);
    }
    if nr == libc::SYS_fcntl {
        return fcntl_shape(args[1]).map_or(Disposition::Home, Disposition::Forward);
    }
    // glibc's select() is pselect6 without a signal mask (args[5] == 0): forwarded like select.
    // A mask would have to apply to the remote task while the deputy waits: that goes home.
    if nr == libc::SYS_pselect6 {
        return if args[5] == 0 { Disposition::Forward(PSELECT6) } else { Disposition::Home };
    }
    // Limits on memory and CPU are enforced where the process runs, so setting one of them goes
    // home (the limits travel with the process when it moves again); the other limits act at home
    // (descriptors, file size, processes ...) and are set in the deputy. Reading is forwarded.
    if nr == libc::SYS_prlimit64 && args[2] != 0 && rlimit_acts_where_it_runs(args[1]) {
        return Disposition::Home;
    }
    match TABLE.iter().find(|r| r.nr == nr) {
        Some(r) if r.nr == libc::SYS_mmap && !mmap_is_anonymous(args) => Disposition::Home,
        Some(r) => r.disposition,
        None => Disposition::Home,
    }
}

/// Files of `/proc/self` (or `/proc/thread-self`, `/proc/PID` of the home pid) that show the
/// process's memory. Opened by the deputy at home, whose user memory is released while the process
/// is away, they would read empty or wrong: opening one brings the process home. (Paths are
/// matched as written: a relative path from a descriptor or a cwd inside /proc is not.)
pub fn proc_file_needs_home(path: &[u8], home_pid: u32) -> bool {
    let path = path.strip_suffix(b"\0").unwrap_or(path);
    let Some(rest) = path.strip_prefix(b"/proc/") else { return false };
    let pid = home_pid.to_string();
    let rest = match rest.iter().position(|c| *c == b'/') {
        Some(i) if [&b"self"[..], b"thread-self", pid.as_bytes()].contains(&&rest[..i]) => &rest[i + 1..],
        _ => return false,
    };
    // /proc/self/task/TID/FILE is the same file for the single thread.
    let file = match rest.strip_prefix(b"task/") {
        Some(t) => t.splitn(2, |c| *c == b'/').nth(1).unwrap_or(b""),
        None => rest,
    };
    const MEMORY_FILES: &[&[u8]] =
        &[b"cmdline", b"environ", b"maps", b"smaps", b"smaps_rollup", b"numa_maps", b"auxv", b"mem", b"pagemap", b"stat", b"statm"];
    MEMORY_FILES.contains(&file)
}

/// mmap is local only for anonymous private memory.
pub fn mmap_is_anonymous(args: &[u64; 6]) -> bool {
    let flags = args[3] as i32;
    flags & libc::MAP_ANONYMOUS != 0 && flags & libc::MAP_SHARED == 0
}

/// Numbers the seccomp filter lets through unconditionally (mmap is checked on its flags).
pub fn local_numbers() -> Vec<u32> {
    TABLE.iter().filter(|r| matches!(r.disposition, Disposition::Local(_))).map(|r| r.nr as u32).collect()
}

/// Calls the kernel lane may carry (native engine, docs/NATIVE.md): forwarded with no buffer
/// whatever their arguments, nothing for the guest to do before or after (no signal to itself,
/// no credentials to mirror, no fork, no path), and never blocking at home (a frozen process
/// waits for a lane call's result, so a call that could sleep forever stays on the guest's
/// path, where a return home can interrupt it).
pub const LANE_CANDIDATES: &[libc::c_long] = &[
    libc::SYS_getppid,
    libc::SYS_getpgrp,
    libc::SYS_getpgid,
    libc::SYS_getsid,
    libc::SYS_setpgid,
    libc::SYS_lseek,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_close,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchown,
    libc::SYS_ftruncate,
    libc::SYS_umask,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_shutdown,
    libc::SYS_listen,
];

/// The numbers of [`LANE_CANDIDATES`] that this table forwards with no buffer and that run
/// nowhere else (never local: the module refuses a lane call that is also local).
pub fn lane_numbers() -> Vec<u32> {
    let local = local_numbers();
    LANE_CANDIDATES
        .iter()
        .map(|&nr| nr as u32)
        .filter(|&nr| {
            !local.contains(&nr) && TABLE.iter().any(|r| r.nr == nr as libc::c_long && r.disposition == Disposition::Forward(&[]))
        })
        .collect()
}

/// Human-readable reason a call brings the process home.
pub fn home_reason(nr: u32) -> String {
    format!("system call {} must run at home", syscall_names::name(nr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_carries_only_register_only_forwarded_calls() {
        let lane = lane_numbers();
        assert!(lane.contains(&(libc::SYS_getppid as u32)), "{lane:?}");
        assert!(lane.contains(&(libc::SYS_close as u32)), "{lane:?}");
        for nr in &lane {
            // Whatever the arguments: no buffer, no path, forwarded.
            for args in [[0u64; 6], [u64::MAX; 6], [3, 1, 2, 0, 0, 0]] {
                assert_eq!(classify(*nr, &args), Disposition::Forward(&[]), "{}", syscall_names::name(*nr));
            }
        }
        let local = local_numbers();
        assert!(lane.iter().all(|nr| !local.contains(nr)));
        // Calls that block, signal, fork or carry memory never go on the lane.
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_kill,
            libc::SYS_fcntl,
            libc::SYS_ioctl,
            libc::SYS_wait4,
            libc::SYS_pause,
            libc::SYS_setuid,
        ] {
            assert!(!lane.contains(&(nr as u32)), "{}", syscall_names::name(nr as u32));
        }
    }

    #[test]
    fn proc_files_of_the_process_memory_go_home() {
        for p in ["/proc/self/maps", "/proc/self/cmdline\0", "/proc/thread-self/environ", "/proc/42/stat", "/proc/self/task/42/statm"] {
            assert!(proc_file_needs_home(p.as_bytes(), 42), "{p}");
        }
        for p in [
            "/proc/self/status",
            "/proc/self/fd/3",
            "/proc/43/maps",
            "/proc/self",
            "/proc/selfish/maps",
            "/etc/maps",
            "maps",
            "/proc/self/exe",
        ] {
            assert!(!proc_file_needs_home(p.as_bytes(), 42), "{p}");
        }
    }

    #[test]
    fn rows_are_unique_and_named() {
        for (i, a) in TABLE.iter().enumerate() {
            assert!(syscall_names::NAMES.get(a.nr as usize).copied().flatten().is_some(), "row {i} nr {} unnamed", a.nr);
            for b in &TABLE[i + 1..] {
                assert_ne!(a.nr, b.nr, "duplicate row for {}", syscall_names::name(a.nr as u32));
            }
        }
    }

    #[test]
    fn file_mappings_and_unknown_calls_go_home() {
        let anon = [0, 4096, 3, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0];
        let file = [0, 4096, 1, libc::MAP_PRIVATE as u64, 3, 0];
        let shared = [0, 4096, 3, (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0];
        assert!(matches!(classify(libc::SYS_mmap as u32, &anon), Disposition::Local(_)));
        assert_eq!(classify(libc::SYS_mmap as u32, &file), Disposition::Home);
        assert_eq!(classify(libc::SYS_mmap as u32, &shared), Disposition::Home);
        assert_eq!(classify(libc::SYS_fork as u32, &[0; 6]), Disposition::Home);
        assert_eq!(classify(libc::SYS_socket as u32, &[0; 6]), Disposition::Forward(&[]));
        let peer = Disposition::Forward(&[InOutSized { buf: 1, lenp: 2 }]);
        assert_eq!(classify(libc::SYS_accept4 as u32, &[3, 0, 0, 0, 0, 0]), peer);
        assert_eq!(classify(libc::SYS_accept4 as u32, &[3, 0x1000, 0x2000, 0, 0, 0]), peer);
        assert!(matches!(classify(libc::SYS_recvfrom as u32, &[3, 0x1000, 64, 0, 0x2000, 0x3000]), Disposition::Forward(_)));
        assert!(matches!(classify(libc::SYS_recvmsg as u32, &[3, 0x1000, 0, 0, 0, 0]), Disposition::Forward(_)));
        assert!(matches!(classify(libc::SYS_setresuid as u32, &[0; 6]), Disposition::Forward(_)));
        assert_eq!(classify(libc::SYS_openat as u32, &[0; 6]), Disposition::Forward(&[Path(1)]));
        assert_eq!(classify(libc::SYS_write as u32, &[0; 6]), Disposition::Forward(&[In { buf: 1, len: 2 }]));
        assert_eq!(classify(libc::SYS_ioctl as u32, &[1, 0x5401, 0, 0, 0, 0]), Disposition::Forward(IOCTL_TCGETS));
        assert_eq!(classify(libc::SYS_ioctl as u32, &[1, 0x1234, 0, 0, 0, 0]), Disposition::Home);
        assert_eq!(classify(libc::SYS_fcntl as u32, &[1, libc::F_GETFL as u64, 0, 0, 0, 0]), Disposition::Forward(&[]));
        assert_eq!(classify(libc::SYS_fcntl as u32, &[1, libc::F_SETLK as u64, 0, 0, 0, 0]), Disposition::Forward(FCNTL_LOCK));
        assert_eq!(classify(libc::SYS_fcntl as u32, &[1, libc::F_OFD_GETLK as u64, 0, 0, 0, 0]), Disposition::Forward(FCNTL_LOCK));
        assert_eq!(classify(libc::SYS_fcntl as u32, &[1, 9999, 0, 0, 0, 0]), Disposition::Home);
        assert_eq!(classify(libc::SYS_ioctl as u32, &[1, libc::FIONBIO, 0, 0, 0, 0]), Disposition::Forward(IOCTL_SET_INT));
        assert_eq!(classify(libc::SYS_ioctl as u32, &[1, libc::FIOCLEX, 0, 0, 0, 0]), Disposition::Forward(&[]));
        assert_eq!(classify(9999, &[0; 6]), Disposition::Home);
        assert_eq!(classify(libc::SYS_pselect6 as u32, &[4, 0x1000, 0, 0, 0x2000, 0]), Disposition::Forward(PSELECT6));
        assert_eq!(classify(libc::SYS_pselect6 as u32, &[4, 0x1000, 0, 0, 0x2000, 0x3000]), Disposition::Home);
        let set = |res: u32| [0, u64::from(res), 0x1000, 0, 0, 0];
        let get = |res: u32| [0, u64::from(res), 0, 0x1000, 0, 0];
        assert_eq!(classify(libc::SYS_prlimit64 as u32, &set(libc::RLIMIT_AS)), Disposition::Home);
        assert!(matches!(classify(libc::SYS_prlimit64 as u32, &get(libc::RLIMIT_AS)), Disposition::Forward(_)));
        assert!(matches!(classify(libc::SYS_prlimit64 as u32, &set(libc::RLIMIT_NOFILE)), Disposition::Forward(_)));
        assert!(matches!(classify(libc::SYS_rt_sigpending as u32, &[0; 6]), Disposition::Local(_)));
    }
}
