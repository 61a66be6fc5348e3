//! A workload suite in the style of CRIU's ZDTM: one small behaviour per test, each migrated in the
//! middle of its run (home -> node 2 -> home) and checked against a run of the same program
//! without MOS (stdout, stderr and exit status, byte for byte).
//!
//! The program is `workloads/zdtm.c`; `argv[1]` picks the case. Each case sets up state at home
//! (files, descriptors, children, handlers, limits ...), prints `gate 1` and waits; the test moves
//! it to node 2 and checks node 2 hosts it, then opens the gate; the case exercises its behaviour
//! there (phase 1), prints `gate 2` and waits; the test checks where it is (still on node 2 for
//! every case whose calls the remote side serves), brings it home and opens the gate; the case
//! exercises the behaviour again at home (phase 2) and ends.
//!
//! Node 2 runs in its own mount namespace in which the case's scratch directory is covered by an
//! empty tmpfs, and in its own UTS namespace with another host name: a call wrongly executed on
//! node 2 instead of at home sees neither the files nor the home host name, and the output
//! differs from the reference.
//!
//! Run: `cargo build --bins && cargo test -p mos-tests --test zdtm -- --test-threads=2`.
use mos_tests::{after, assert_same_output, describe, wait_until, wl, Cluster, Proc};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

const LINE_TIMEOUT: Duration = Duration::from_secs(60);
const END_TIMEOUT: Duration = Duration::from_secs(120);
/// Host name of node 2 (its own UTS namespace).
const NODE2_HOSTNAME: &str = "mos-zdtm-node2";

/// What the test does while a case runs, in order.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Waits for the line `gate N`; under MOS first moves the process (gate 1: home -> node 2;
    /// gate 2: node 2 -> home; gate 3: home -> node 2 again, for a case that came home by itself
    /// during phase 1) and checks where it is; then opens the gate (SIGWINCH).
    Gate(u32),
    /// Waits for the line; under MOS brings the process home from node 2 (where it must be),
    /// whatever it is doing; then creates `ctl/homeN`.
    Home(&'static str, u32),
    /// Waits for the line, then sends the signal to the process (its home pid under MOS).
    Kill(&'static str, Signal),
    /// Waits for the line, sends SIGSTOP, waits until the task that runs the process (on node 2
    /// when it is there) is stopped, then sends SIGCONT.
    StopCont(&'static str),
    /// Waits for the line, then writes the text to the process's stdin.
    Stdin(&'static str, &'static str),
    /// Closes the process's stdin.
    CloseStdin,
    /// Waits for the line; under MOS, every other process of home node 1 (a child forked away)
    /// must run on node 2: each is brought home with `mosctl migrate`; then creates `ctl/homeN`.
    ChildrenHome(&'static str, u32),
    /// Waits for the line; when the process runs on node 2, checks that the task running it there
    /// has these `Uid:`, `Gid:` and `Groups:` lines in its /proc status; then sends SIGUSR1.
    StubIds(&'static str, [&'static str; 3]),
}
use Step::*;

#[derive(Debug, Clone, Copy)]
struct Case {
    steps: &'static [Step],
    /// Every call of phase 1 is served on node 2 (locally or by the deputy): the process must
    /// still be there at gate 2. Cases whose phase 1 makes a call only home runs (fork, execve,
    /// alarm ...) come home by themselves; that is checked by their output only.
    stays_away: bool,
    /// The process gets a stdin pipe from the test (else /dev/null).
    stdin: bool,
    /// It forks during phase 1 on node 2: each child must have been made on node 2 (as a guest
    /// of its own there), not at home.
    forks_away: u32,
}

const GATES: &[Step] = &[Gate(1), Gate(2)];
/// The usual case: migrated at gate 1, brought home at gate 2, never home in between.
const AWAY: Case = Case { steps: GATES, stays_away: true, stdin: false, forks_away: 0 };
/// A case whose phase 1 makes a call that brings the process home.
const COMES_HOME: Case = Case { stays_away: false, ..AWAY };
/// A case that ends during phase 1, on node 2.
const ENDS_AWAY: Case = Case { steps: &[Gate(1)], ..AWAY };

/// One run of a case: the reference (no MOS) or under mosrun on a cluster.
struct Run<'a> {
    proc: &'a mut Proc,
    /// The process's pid (its home pid under MOS).
    pid: u32,
    ctl: PathBuf,
    mos: Option<&'a Cluster>,
    case: Case,
    /// Bytes of stdout already searched for awaited lines.
    scanned: usize,
}

impl Run<'_> {
    /// Waits until stdout has a complete line equal to `line` after the lines already seen.
    fn wait_line(&mut self, line: &str) {
        let what = format!("{} to print the line `{line}`", self.proc.what());
        let mut ended_at: Option<Instant> = None;
        wait_until(after(LINE_TIMEOUT), &what, || {
            let new = self.proc.stdout_from(self.scanned);
            let mut start = 0;
            for (i, b) in new.iter().enumerate() {
                if *b == b'\n' {
                    let found = &new[start..i] == line.as_bytes();
                    start = i + 1;
                    if found {
                        self.scanned += start;
                        return Some(());
                    }
                }
            }
            self.scanned += start;
            // Its last output may still be in the pipe when it ends: give the reader a moment.
            if let Some(st) = self.proc.try_status() {
                let t = *ended_at.get_or_insert_with(Instant::now);
                if t.elapsed() > Duration::from_secs(2) {
                    panic!("{} ended ({}) without printing the line `{line}`", self.proc.what(), describe(&st));
                }
            }
            None
        });
    }

    /// Where the process runs now (node number), according to its home node.
    fn node(&self, c: &Cluster) -> u64 {
        let row = c.ps_row(1, self.pid, false).unwrap_or_else(|| panic!("home node 1 does not list pid {}: {}", self.pid, c.ps(1)));
        row["node"].as_u64().unwrap_or_else(|| panic!("ps row without a node: {row}"))
    }

    /// The pid of the task that runs the process now: on node 2 its local pid there.
    fn running_task(&self) -> u32 {
        match self.mos {
            Some(c) if self.node(c) == 2 => {
                let row = c.ps_row(2, self.pid, true).expect("node 2 lists the process it hosts");
                row["local_pid"].as_u64().expect("guest row has local_pid") as u32
            }
            _ => self.pid,
        }
    }

    fn gate(&mut self, n: u32) {
        self.wait_line(&format!("gate {n}"));
        if let Some(c) = self.mos {
            if n == 3 {
                assert_eq!(self.node(c), 1, "gate 3 is for a process that came home by itself, but it is not home");
            }
            if n == 1 || n == 3 {
                c.migrate(1, self.pid, "2");
                assert_eq!(self.node(c), 2, "after `mosctl migrate {} 2` the home node does not show it on node 2", self.pid);
                assert!(c.ps_row(2, self.pid, true).is_some(), "node 2 does not host pid {}: {}", self.pid, c.ps(2));
            } else {
                let node = self.node(c);
                if self.case.stays_away {
                    assert_eq!(node, 2, "phase 1 brought the process home although node 2 serves all its calls: {}", c.log(2));
                }
                if node != 1 {
                    c.migrate(1, self.pid, "home");
                }
                assert_eq!(self.node(c), 1, "the process is not home after `mosctl migrate {} home`", self.pid);
            }
        }
        self.signal(Signal::SIGWINCH);
    }

    fn home(&mut self, line: &str, n: u32) {
        self.wait_line(line);
        if let Some(c) = self.mos {
            if self.node(c) != 1 {
                assert_eq!(self.node(c), 2, "the process is neither home nor on node 2");
                c.migrate(1, self.pid, "home");
            }
            assert_eq!(self.node(c), 1, "the process is not home after `mosctl migrate {} home`", self.pid);
        }
        std::fs::write(self.ctl.join(format!("home{n}")), b"").expect("create ctl/homeN");
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid as i32), sig).unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid));
    }

    fn step(&mut self, s: Step) {
        match s {
            Gate(n) => self.gate(n),
            Home(line, n) => self.home(line, n),
            Kill(line, sig) => {
                self.wait_line(line);
                self.signal(sig);
            }
            StopCont(line) => {
                self.wait_line(line);
                let task = self.running_task();
                self.signal(Signal::SIGSTOP);
                wait_until(after(Duration::from_secs(20)), &format!("task {task} to stop"), || {
                    let stat = std::fs::read_to_string(format!("/proc/{task}/stat")).ok()?;
                    stat.rsplit(')').next()?.trim_start().starts_with('T').then_some(())
                });
                self.signal(Signal::SIGCONT);
            }
            Stdin(line, text) => {
                self.wait_line(line);
                self.proc.write_stdin(text.as_bytes());
            }
            CloseStdin => self.proc.close_stdin(),
            ChildrenHome(line, n) => {
                self.wait_line(line);
                if let Some(c) = self.mos {
                    let ps = c.ps(1);
                    let others: Vec<u64> = ps["processes"]
                        .as_array()
                        .expect("ps rows")
                        .iter()
                        .filter(|r| r["guest"].as_bool() == Some(false) && r["pid"].as_u64() != Some(u64::from(self.pid)))
                        .map(|r| {
                            assert_eq!(r["node"].as_u64(), Some(2), "a child forked away is not on node 2: {r}");
                            r["pid"].as_u64().expect("pid")
                        })
                        .collect();
                    assert!(!others.is_empty(), "home node 1 lists no child forked away: {ps}");
                    for child in others {
                        c.migrate(1, child as u32, "home");
                        let row = c.ps_row(1, child as u32, false).expect("the child is still listed");
                        assert_eq!(row["node"].as_u64(), Some(1), "the child is not home after `mosctl migrate {child} home`");
                    }
                }
                std::fs::write(self.ctl.join(format!("home{n}")), b"").expect("create ctl/homeN");
            }
            StubIds(line, want) => {
                self.wait_line(line);
                if self.mos.is_some_and(|c| self.node(c) == 2) {
                    let task = self.running_task();
                    let st = std::fs::read_to_string(format!("/proc/{task}/status")).expect("status of the remote task");
                    for (key, want) in ["Uid:", "Gid:", "Groups:"].into_iter().zip(want) {
                        let got = st.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "));
                        assert_eq!(got.as_deref(), Some(want), "{key} of the task on node 2 (pid {task})");
                    }
                }
                self.signal(Signal::SIGUSR1);
            }
        }
    }
}

/// A scratch root with `work/` and `ctl/`, removed at the end.
fn scratch() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("mos-zdtm-").tempdir().expect("temp dir");
    std::fs::create_dir(d.path().join("work")).unwrap();
    std::fs::create_dir(d.path().join("ctl")).unwrap();
    d
}

fn env_for_case() -> Vec<(String, String)> {
    vec![
        ("ZDTM_FROM_TEST".into(), "set by the test".into()),
        ("ZDTM_UNSET".into(), "to be unset before the move".into()),
        ("ZDTM_SENDER".into(), std::process::id().to_string()),
    ]
}

/// The status mosrun ends with for a program that ended with `st`.
fn mosrun_code(st: &ExitStatus) -> i32 {
    st.code().or_else(|| st.signal().map(|s| 128 + s)).unwrap_or_else(|| panic!("unexpected status {st:?}"))
}

/// Checks that node 2 (mosd pid `node2`) cannot see `root` and has its own host name.
fn assert_node2_isolated(node2: u32, root: &Path) {
    let through = PathBuf::from(format!("/proc/{node2}/root{}", root.join("work").display()));
    assert!(root.join("work").is_dir(), "{} is missing at home", root.display());
    assert!(!through.exists(), "node 2 can see {}: the scratch directory is not hidden there", root.display());
    let uts = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/uts")).unwrap_or_else(|e| panic!("uts namespace of {p}: {e}"));
    assert_ne!(uts("self"), uts(&node2.to_string()), "node 2 does not run in its own UTS namespace");
}

fn run_case(name: &str, case: Case) {
    let env = env_for_case();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    // The reference: the same steps, without MOS.
    let ref_root = scratch();
    let root = ref_root.path().to_str().unwrap().to_string();
    let mut cmd = Command::new(wl::ZDTM_DYNAMIC);
    cmd.args([name, &root]).envs(env_ref.iter().copied());
    let what = format!("reference zdtm {name}");
    let mut p = if case.stdin { Proc::spawn_with_stdin(cmd, what, true) } else { Proc::spawn(cmd, what, true) };
    let pid = p.id();
    let mut run = Run { proc: &mut p, pid, ctl: ref_root.path().join("ctl"), mos: None, case, scanned: 0 };
    for s in case.steps {
        run.step(*s);
    }
    let want = p.output(after(END_TIMEOUT));

    // Under MOS, with the scratch root hidden on node 2.
    let mos_root = scratch();
    let root = mos_root.path().to_str().unwrap().to_string();
    let mut c = Cluster::start_with_env(2, &[(2, "MOS_TEST_HIDE", &root), (2, "MOS_TEST_HOSTNAME", NODE2_HOSTNAME)]);
    let node2 = c.node_pid(2).expect("node 2 runs");
    assert_node2_isolated(node2, mos_root.path());
    let mut job = c.spawn_mosrun_env(1, wl::ZDTM_DYNAMIC, &[name, &root], &env_ref, case.stdin);
    let pid = job.pid();
    c.wait_registered(1, pid);
    let mut run = Run { proc: &mut job.proc, pid, ctl: mos_root.path().join("ctl"), mos: Some(&c), case, scanned: 0 };
    for s in case.steps {
        run.step(*s);
    }
    let status = job.wait(END_TIMEOUT);
    if case.stays_away && !case.steps.iter().any(|s| matches!(s, Gate(2))) {
        // It ended during phase 1: on node 2, which logs the end of its guest (just after telling home).
        wait_until(after(Duration::from_secs(20)), "node 2 to log the end of its guest", || c.log(2).contains("guest ended").then_some(()));
    }
    if case.forks_away > 0 {
        let made = c.log(2).matches("forked child resumed here").count() as u32;
        assert_eq!(made, case.forks_away, "zdtm {name}: children made on node 2 (its log: {})", c.log(2));
    }
    assert_same_output(&job.stdout(), &want.stdout, &format!("zdtm {name}: stdout"));
    assert_same_output(&job.stderr(), &want.stderr, &format!("zdtm {name}: stderr"));
    assert_eq!(
        status.code(),
        Some(mosrun_code(&want.status)),
        "zdtm {name}: mosrun ended with {}, the reference with {}",
        describe(&status),
        describe(&want.status)
    );
}

macro_rules! cases {
    ($($(#[$m:meta])* $name:ident: $case:expr;)*) => {
        $(
            $(#[$m])*
            #[test]
            fn $name() {
                run_case(stringify!($name), $case);
            }
        )*
    };
}

cases! {
    // Files
    /// Write and read back through a descriptor opened before the move and files made after it.
    file_rw: AWAY;
    /// O_APPEND writes land at the end whatever the offset; stdio append.
    append: AWAY;
    /// lseek/read/pread/pwrite on an offset set before the move; holes.
    lseek: AWAY;
    /// mkdir, getdents of a directory stream opened before the move (300 entries), rmdir, *at calls.
    dirs: AWAY;
    /// link, symlink, readlink, rename, renameat2, linkat, symlinkat, readlinkat, unlink.
    links: AWAY;
    /// Relative paths after a chdir made before the move, `..`, chdir and fchdir while away.
    chdir: AWAY;
    /// getcwd (also into a too small buffer and with NULL), chdir, fchdir.
    getcwd: AWAY;
    /// stat, fstat, lstat, fstatat, statx, access, faccessat.
    stat: AWAY;
    /// truncate and ftruncate, reads past the old end.
    truncate: AWAY;
    /// chmod, fchmod, fchmodat, utimensat, futimens, chown family.
    chmod_utime: AWAY;
    /// umask set before the move applies to files created away and at home.
    umask: AWAY;
    /// dup, dup2, dup3, fcntl F_DUPFD/F_GETFD/F_SETFD/F_GETFL/F_SETFL, shared offsets.
    dup_fcntl: AWAY;
    /// A file unlinked before the move stays usable through its descriptor.
    unlinked_open: AWAY;
    /// A FIFO made at home, opened while away (the open blocks at home until the writer's).
    fifo: AWAY;

    // Output, pipes and children
    /// Buffered stdout, writev, stderr, a big fwrite: everything arrives at home in order.
    stdio_out: AWAY;
    /// A pipe pair to a child forked at home before the move; pipe2 while away.
    pipe_child: AWAY;
    /// Children forked before the move (one a zombie by then) waited for while away and at home.
    child_before: AWAY;
    /// fork after the move: the child is made on node 2 (a copy of the parent there, its deputy
    /// a fork of the parent's); it checks its parent, writes a home file and exits with a status
    /// the parent waits for (away and, in phase 2, at home).
    child_after: Case { forks_away: 1, ..AWAY };
    /// fork while away, the parent working at the same time; the child checks its pid and parent,
    /// handles a signal it raises, writes by a relative path and forks a grandchild (made on node
    /// 2 too) that it waits for; the parent takes SIGCHLD and the child's status.
    fork_away: Case { forks_away: 2, ..AWAY };
    /// fork while away, and the child execs (it comes home for that, as its own process: the
    /// parent stays on node 2); the new program writes a home file and ends with a status the
    /// parent waits for.
    fork_exec: Case { forks_away: 1, ..AWAY };
    /// A child forked away waits (a local call); its parent is brought home without it (the child
    /// stays on node 2, listed at home as its own process), then the child is brought home with
    /// `mosctl migrate`; its parent, at home, writes to their pipe and wakes it with a signal; the
    /// child reads, writes a home file and ends; the parent waits for it.
    fork_outlives: Case { steps: &[Gate(1), Gate(2), ChildrenHome("[2] waiting for the child's move", 2)], forks_away: 1, ..AWAY };
    /// SIGCHLD of a child forked before the move reaches the handler while away.
    sigchld: AWAY;
    /// execve after the move: the new image keeps pid, descriptors, environment, mask, ignored signals.
    execve: COMES_HOME;
    /// execve after the move brings the process home; the new program is then migrated again
    /// (gate 3), works on node 2 (stays there until gate 2) and ends at home with its own status.
    execve_away: Case { steps: &[Gate(1), Gate(3), Gate(2)], ..AWAY };

    // Signals
    /// A SIGUSR1 handler runs for a signal sent by the test to the home pid, for kill and raise.
    sig_handler: Case {
        steps: &[Gate(1), Kill("[1] waiting for SIGUSR1 1", Signal::SIGUSR1), Gate(2), Kill("[2] waiting for SIGUSR1 2", Signal::SIGUSR1)],
        ..AWAY
    };
    /// si_code and si_pid of signals from the test, from kill to itself and from raise (away, the
    /// task queues them on itself with the siginfo home saw, injected by its host).
    siginfo: Case {
        steps: &[Gate(1), Kill("[1] waiting for SIGUSR1 1", Signal::SIGUSR1), Gate(2), Kill("[2] waiting for SIGUSR1 2", Signal::SIGUSR1)],
        ..AWAY
    };
    /// sigprocmask, a blocked signal pending (sigpending), delivered on unblock and in sigsuspend.
    sigmask: AWAY;
    /// A signal a process sends itself is delivered before kill()/raise() returns (POSIX).
    self_signal: AWAY;
    /// A signal pending (blocked) at home when the process leaves is pending on node 2.
    pending_away: AWAY;
    /// A signal made pending (blocked) on node 2 is still pending when the process comes home.
    pending_home: AWAY;
    /// Real-time signals queue (three pending, three deliveries), before and after the move: the ones
    /// pending at home when it leaves are taken from the deputy and sent along with their siginfo.
    rt_signals: AWAY;
    /// sigtimedwait for a signal sent by the test to the home pid, and for one sent to itself.
    sigwait: Case {
        steps: &[Gate(1), Kill("[1] waiting for SIGUSR1 1", Signal::SIGUSR1), Gate(2), Kill("[2] waiting for SIGUSR1 2", Signal::SIGUSR1)],
        ..AWAY
    };
    /// A handler on an alternate signal stack set up before the move.
    sigaltstack: AWAY;
    /// SIGSTOP from outside stops the task where it runs; SIGCONT resumes it and runs its handler.
    sigstop: Case { steps: &[Gate(1), StopCont("[1] stop me 1"), Gate(2), StopCont("[2] stop me 2")], ..AWAY };
    /// An interval timer set before the move keeps delivering SIGALRM while away.
    itimer: AWAY;
    /// alarm() called after the move.
    alarm: COMES_HOME;

    // Sockets and waiting
    /// A TCP client of a server at home: the connection made before the move and a new one.
    tcp_client: AWAY;
    /// A TCP server accepting a home client while away; a Unix socket listener made while away.
    tcp_server: AWAY;
    /// A socketpair to a child at home; a datagram socketpair made while away.
    unix_pair: AWAY;
    /// poll and ppoll on a pipe fed by a child at home.
    poll: AWAY;
    /// select on a pipe fed by a child at home.
    select: AWAY;
    /// epoll made before the move; a second epoll and eventfd while away.
    epoll: AWAY;
    /// eventfd counters and semaphores.
    eventfd: AWAY;

    // Input, big writes, environment, limits, memory
    /// Lines read from stdin (written by the test after each move) and its end.
    stdin: Case {
        steps: &[Gate(1), Stdin("[1] prompt 1", "answer one\n"), Gate(2), Stdin("[2] prompt 2", "answer two\n"), CloseStdin],
        stdin: true,
        ..AWAY
    };
    /// 8 MiB through stdout and to a file (many times the deputy's 1 MiB buffer), read back.
    large_write: AWAY;
    /// One write() or read() call of 8 MiB returns its full count.
    big_single_write: AWAY;
    /// getenv/setenv/putenv: the environment travels with the memory.
    env: AWAY;
    /// RLIMIT_NOFILE set before the move limits opens away; setrlimit/prlimit of NOFILE and FSIZE away.
    rlimits: AWAY;
    /// RLIMIT_AS set after the move limits the process's own mappings (setting it brings it home).
    rlimit_as: COMES_HOME;
    /// Heap, anonymous mappings, stack and brk keep their contents; realloc, mprotect, madvise.
    memory: AWAY;
    /// Brought home in the middle of back-to-back forwarded calls (the other cases wait in a local
    /// call at the gates).
    busy_calls: Case { steps: &[Gate(1), Home("[1] busy 1", 1), Gate(2), Home("[2] busy 2", 2)], ..COMES_HOME };

    // Ends
    /// exit() while away runs the atexit handler; the exit code arrives home.
    exit_away: ENDS_AWAY;
    /// The exit code after coming home.
    exit_code: AWAY;
    /// abort() while away: the process ends by SIGABRT.
    fatal_abort: ENDS_AWAY;
    /// A SIGSEGV handler runs while away; the second fault kills the process with SIGSEGV.
    fatal_segv: ENDS_AWAY;
    /// SIGTERM from outside kills the process while away.
    fatal_term: Case { steps: &[Gate(1), Kill("[1] waiting for SIGTERM 1", Signal::SIGTERM)], ..AWAY };

    // Identity, time, host, /proc
    /// getpid, gettid, getppid, getpgrp, getsid, uids and gids are the ones at home.
    ids: AWAY;
    /// Monotonic and real-time clocks, nanosleep, clock_nanosleep.
    clock: AWAY;
    /// CPU-time clocks keep the time the process used before the move.
    #[ignore = "CLOCK_PROCESS_CPUTIME_ID/THREAD_CPUTIME_ID are local calls answered by the new task on node 2, \
                whose CPU time starts at 0, and the home task's CPU time does not include the time used away when \
                the process comes back: a task's CPU time cannot be set from user space, so the clocks would have to \
                be answered (with an offset carried in the context) on both sides, and at home nothing intercepts"]
    cpu_clock: AWAY;
    /// uname and gethostname answer the home host, not node 2's.
    uname: AWAY;
    /// /proc/self (exe, fd, cwd, status, stat, limits) describes the process (stat, which shows the
    /// memory size, brings it home).
    proc_self: COMES_HOME;
    /// /proc/self files that show the process's memory (cmdline, environ, maps, vsize in stat):
    /// opening one brings the process home, where they are read in the process itself.
    proc_self_mem: COMES_HOME;

    // Forwarded families added with mosrun -e/-w
    /// getsockopt/setsockopt (short option buffer, unknown option), getsockname/getpeername of TCP
    /// and of Unix sockets bound in the scratch directory, SO_PEERCRED is the home pid.
    sockopt: AWAY;
    /// sendmsg/recvmsg: iovecs scattered and gathered, MSG_TRUNC, named datagram sockets (the
    /// sender's name comes back), a home file's descriptor passed with SCM_RIGHTS and read through,
    /// one 3 MiB sendmsg on a stream to a home child (sent whole, in chunks of one deputy buffer).
    msg: AWAY;
    /// accept/accept4 with the peer address (also into a too short buffer), sendto/recvfrom with
    /// addresses over UDP.
    peer_addr: AWAY;
    /// getresuid/getresgid, setgroups, setresuid/setresgid to nobody and back, setfsuid, capget:
    /// the home task's identity changes, so a home file closed to nobody cannot be opened.
    creds: AWAY;
    /// The task that runs the process on node 2 takes the identity set at home (setgroups,
    /// setresgid, setresuid to nobody are repeated in it once they succeeded at home), and gives it
    /// back.
    creds_stub: Case {
        steps: &[Gate(1), StubIds("[1] dropped 1", ["0 65534 0 65534", "0 65534 0 65534", "65534"]), Gate(2), StubIds("[2] dropped 2", ["", "", ""])],
        ..AWAY
    };
    /// fcntl record locks (F_SETLK/F_GETLK/F_SETLKW) seen by a home child with the home pid, open
    /// file description locks, F_SETOWN/F_GETOWN.
    flock: AWAY;
    /// ioctl FIONREAD (pipe, socket, file), FIONBIO, FIOCLEX/FIONCLEX, FIGETBSZ, TIOCGWINSZ and TCGETS
    /// on a pipe (ENOTTY), fcntl F_SETPIPE_SZ/F_GETPIPE_SZ.
    ioctls: AWAY;
}
