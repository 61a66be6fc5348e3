//! What a remote component may do with each system call: policy as data, apart from the mechanism
//! (seccomp + the guest loop in mosd) that applies it.
//!
//! * `Local` calls are allowed by the seccomp filter and run natively on the remote node.
//! * `Forward` calls are executed by the deputy at home; the row says which argument is a buffer.
//! * `Answer` calls are answered by the remote node from what it knows of home (no round trip).
//! * Every other call brings the process home before it runs (MOSIX's default for calls the remote
//!   side does not support): the call then executes natively at home, so nothing misbehaves.
use crate::syscall_names;

/// How one buffer argument moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// No buffers.
    Plain,
    /// `args[buf]` points to `args[len]` bytes read by the call (write-like).
    InBuf { buf: u8, len: u8 },
    /// `args[buf]` points to `args[len]` bytes the call fills; the result says how many (read-like).
    OutBuf { buf: u8, len: u8 },
    /// `args[iov]` is an iovec array of `args[cnt]` entries read by the call (writev-like).
    InIov { iov: u8, cnt: u8 },
    /// `args[iov]` is an iovec array of `args[cnt]` entries the call fills (readv-like).
    OutIov { iov: u8, cnt: u8 },
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
    Forward(Shape),
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
const fn fwd(nr: libc::c_long, shape: Shape) -> Row {
    Row { nr, disposition: Disposition::Forward(shape) }
}

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
    // Ending: the exit status is sent home by the remote side when the task is reaped.
    local(libc::SYS_exit, "status forwarded home on reaping"),
    local(libc::SYS_exit_group, "status forwarded home on reaping"),
    // Identity.
    Row { nr: libc::SYS_getpid, disposition: Disposition::Answer(Answer::HomePid) },
    Row { nr: libc::SYS_gettid, disposition: Disposition::Answer(Answer::HomePid) },
    fwd(libc::SYS_getppid, Shape::Plain),
    // Descriptors: they live at home.
    fwd(libc::SYS_read, Shape::OutBuf { buf: 1, len: 2 }),
    fwd(libc::SYS_write, Shape::InBuf { buf: 1, len: 2 }),
    fwd(libc::SYS_pread64, Shape::OutBuf { buf: 1, len: 2 }),
    fwd(libc::SYS_pwrite64, Shape::InBuf { buf: 1, len: 2 }),
    fwd(libc::SYS_readv, Shape::OutIov { iov: 1, cnt: 2 }),
    fwd(libc::SYS_writev, Shape::InIov { iov: 1, cnt: 2 }),
    fwd(libc::SYS_close, Shape::Plain),
];

/// The disposition of call `nr` with arguments `args`.
pub fn classify(nr: u32, args: &[u64; 6]) -> Disposition {
    match TABLE.iter().find(|r| r.nr == nr as libc::c_long) {
        Some(r) if r.nr == libc::SYS_mmap && !mmap_is_anonymous(args) => Disposition::Home,
        Some(r) => r.disposition,
        None => Disposition::Home,
    }
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

/// Human-readable reason a call brings the process home.
pub fn home_reason(nr: u32) -> String {
    format!("system call {} must run at home", syscall_names::name(nr))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(classify(libc::SYS_openat as u32, &[0; 6]), Disposition::Home);
        assert_eq!(classify(libc::SYS_write as u32, &[0; 6]), Disposition::Forward(Shape::InBuf { buf: 1, len: 2 }));
        assert_eq!(classify(9999, &[0; 6]), Disposition::Home);
    }
}
