//! Harness for MOS integration tests: a local cluster of `mosd` daemons on 127.0.0.1..n, jobs run
//! under `mosrun`, `mosctl` calls, fault injection, and helpers to observe processes in /proc.
//!
//! House rules kept here:
//! * no sleep is used for synchronisation: every wait is [`wait_until`] with a deadline, polling
//!   every [`POLL`];
//! * every child process (daemons, jobs, `mosctl`) runs in its own process group and is killed,
//!   with all its descendants, when its owner is dropped, also while unwinding from a panic (and
//!   the daemons and jobs get `PR_SET_PDEATHSIG` as a last resort should the test process die);
//! * when a test panics, every node's log is dumped to stderr, and so is what each job printed.
//!
//! The binaries are taken from the directory of the running test binary (`target/<profile>/`),
//! or from `MOS_BIN_DIR` when set.
use serde_json::Value;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod faults;
pub mod vnode;

/// Poll interval of [`wait_until`].
pub const POLL: Duration = Duration::from_millis(10);
/// Default time a `mosctl` call may take.
pub const MOSCTL_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a daemon gets to answer on its control socket after being started.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Paths of the C workloads compiled by build.rs.
pub mod wl {
    /// The ZDTM-style behaviour suite (tests/tests/zdtm.rs), one case per `argv[1]`; dynamic only.
    pub const ZDTM_DYNAMIC: &str = env!("WL_ZDTM_DYNAMIC");
    pub const COUNTER_STATIC: &str = env!("WL_COUNTER_STATIC");
    pub const COUNTER_DYNAMIC: &str = env!("WL_COUNTER_DYNAMIC");
    pub const COUNTER_PIE: &str = env!("WL_COUNTER_PIE");
    pub const MEMTOUCH_STATIC: &str = env!("WL_MEMTOUCH_STATIC");
    pub const MEMTOUCH_DYNAMIC: &str = env!("WL_MEMTOUCH_DYNAMIC");
    pub const MEMTOUCH_PIE: &str = env!("WL_MEMTOUCH_PIE");
    pub const THREADS_STATIC: &str = env!("WL_THREADS_STATIC");
    pub const THREADS_DYNAMIC: &str = env!("WL_THREADS_DYNAMIC");
    pub const THREADS_PIE: &str = env!("WL_THREADS_PIE");
    pub const OPENER_DYNAMIC: &str = env!("WL_OPENER_DYNAMIC");
    pub const FILEOPS_STATIC: &str = env!("WL_FILEOPS_STATIC");
    pub const FILEOPS_DYNAMIC: &str = env!("WL_FILEOPS_DYNAMIC");
    pub const CALLBENCH_DYNAMIC: &str = env!("WL_CALLBENCH_DYNAMIC");
    pub const NETCLIENT_DYNAMIC: &str = env!("WL_NETCLIENT_DYNAMIC");
    pub const CRASHER_STATIC: &str = env!("WL_CRASHER_STATIC");
    pub const CPUJOB_STATIC: &str = env!("WL_CPUJOB_STATIC");
    /// Live-migration workload: dirties pages at a set rate, maps/unmaps/grows the heap, checks itself.
    pub const CHURN_STATIC: &str = env!("WL_CHURN_STATIC");
    pub const CHURN_DYNAMIC: &str = env!("WL_CHURN_DYNAMIC");
    pub const CHURN_PIE: &str = env!("WL_CHURN_PIE");
}

/// The IPv4 address `k` after `first` (node addresses of a map line are consecutive).
fn first_addr_plus(first: &str, k: u32) -> String {
    let a: std::net::Ipv4Addr = first.parse().expect("IPv4 node address");
    std::net::Ipv4Addr::from(u32::from(a) + k).to_string()
}

/// A deadline `d` from now.
pub fn after(d: Duration) -> Instant {
    Instant::now() + d
}

/// Polls `cond` every [`POLL`] until it returns `Some`, and returns that value. Panics naming
/// `what` if `deadline` passes first. The pause between polls is the poll interval, not a guess
/// at how long something takes: the condition itself decides.
pub fn wait_until<T>(deadline: Instant, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Directory holding mosd, mosrun and mosctl.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MOS_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("the test binary has a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of one of the MOS binaries; panics with a hint when it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} not found: build the binaries first (`cargo build --bins`)", p.display());
    p
}

// ---------------------------------------------------------------------------------------------
// /proc helpers

/// Fields of /proc/PID/stat after the command name: index 0 is field 3 (state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// utime + stime (fields 14 and 15 of /proc/PID/stat), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let f = stat_fields(pid).unwrap_or_else(|| panic!("process {pid} is gone (no /proc/{pid}/stat)"));
    let utime: u64 = f[11].parse().expect("utime");
    let stime: u64 = f[12].parse().expect("stime");
    utime + stime
}

/// Parent pid (field 4 of /proc/PID/stat).
pub fn ppid_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok())
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f[0] != "Z" && f[0] != "X")
}

fn all_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Direct children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    all_pids().into_iter().filter(|p| ppid_of(*p) == Some(pid)).collect()
}

/// Waits (60 s at most) until a process below `node_pid` (the stub a migration fills on that
/// node) holds more than `kib` KiB, while `mig` (the `mosctl migrate` doing it) still runs:
/// (pid, KiB). Panics, with mosctl's output, if the migration ends first.
pub fn wait_receiving(mig: &mut Proc, node_pid: u32, kib: u64) -> (u32, u64) {
    wait_until(after(Duration::from_secs(60)), "the node to receive pages", || {
        if let Some(st) = mig.try_status() {
            let out = mig.output(after(Duration::from_secs(5)));
            panic!(
                "the migration ended ({}) before the node was seen receiving pages: {}{}",
                describe(&st),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        descendants(node_pid).into_iter().find_map(|p| rss_kib(p).filter(|k| *k > kib).map(|k| (p, k)))
    })
}

/// All descendants of `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let table: Vec<(u32, u32)> = all_pids().into_iter().filter_map(|p| Some((p, ppid_of(p)?))).collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (c, _) in table.iter().filter(|(_, pp)| *pp == p) {
            if !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
}

fn sigkill_group(pgid: u32) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), nix::sys::signal::Signal::SIGKILL);
}

/// SIGKILLs `child`'s process group and every descendant of it (found before the kill, so
/// orphans are not lost), then reaps it. `child` must have been spawned with `process_group(0)`.
fn kill_tree(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let pid = child.id();
    let desc = descendants(pid);
    sigkill_group(pid);
    sigkill(pid);
    for d in desc {
        sigkill(d);
    }
    let _ = child.wait();
}

/// Makes the child die with SIGKILL if the thread that spawned it ends (the test thread).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes the prctl system
    // call, which is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Last `max` bytes of `b`, as text.
fn tail(b: &[u8], max: usize) -> String {
    let start = b.len().saturating_sub(max);
    let mut s = String::from_utf8_lossy(&b[start..]).into_owned();
    if start > 0 {
        s.insert_str(0, &format!("[... {start} bytes before ...]\n"));
    }
    s
}

/// Describes how a process ended: "exit code N" or "signal N".
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{status:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Processes with captured output

/// A child process whose stdout and stderr are read by threads into shared buffers. Dropping it
/// kills its process group and descendants; if the thread is panicking, what it printed is dumped.
pub struct Proc {
    what: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    eof: Vec<Arc<AtomicBool>>,
    /// The write end of its stdin, when spawned with [`Proc::spawn_with_stdin`].
    stdin: Option<ChildStdin>,
}

fn reader(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>, eof: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 65536];
        loop {
            match r.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.lock().expect("buffer lock").extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        eof.store(true, Ordering::SeqCst);
    });
}

impl Proc {
    /// Spawns `cmd` in its own process group with stdin from /dev/null and piped stdout/stderr.
    pub fn spawn(cmd: Command, what: impl Into<String>, pdeathsig: bool) -> Proc {
        Proc::spawn_inner(cmd, what.into(), pdeathsig, false)
    }

    /// Like [`Proc::spawn`], with stdin a pipe the test writes with [`Proc::write_stdin`].
    pub fn spawn_with_stdin(cmd: Command, what: impl Into<String>, pdeathsig: bool) -> Proc {
        Proc::spawn_inner(cmd, what.into(), pdeathsig, true)
    }

    fn spawn_inner(mut cmd: Command, what: String, pdeathsig: bool, piped_stdin: bool) -> Proc {
        cmd.stdin(if piped_stdin { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        if pdeathsig {
            die_with_parent(&mut cmd);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e} ({cmd:?})"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let eof = vec![Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false))];
        reader(child.stdout.take().expect("piped stdout"), stdout.clone(), eof[0].clone());
        reader(child.stderr.take().expect("piped stderr"), stderr.clone(), eof[1].clone());
        let stdin = child.stdin.take();
        Proc { what, child, status: None, stdout, stderr, eof, stdin }
    }

    /// Writes `data` to the process's stdin (spawned with [`Proc::spawn_with_stdin`]).
    pub fn write_stdin(&mut self, data: &[u8]) {
        let what = &self.what;
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("{what} has no stdin pipe (closed, or not spawned with one)"));
        stdin.write_all(data).and_then(|()| stdin.flush()).unwrap_or_else(|e| panic!("writing to the stdin of {what}: {e}"));
    }

    /// Closes the process's stdin: it reads end-of-file.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Pid of the spawned process.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().expect("buffer lock").clone()
    }

    /// What was printed on stdout from byte `start` on (empty if not that much yet).
    pub fn stdout_from(&self, start: usize) -> Vec<u8> {
        let b = self.stdout.lock().expect("buffer lock");
        b.get(start..).map(<[u8]>::to_vec).unwrap_or_default()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().expect("buffer lock").clone()
    }

    /// Number of complete lines on stdout so far.
    pub fn lines(&self) -> usize {
        self.stdout.lock().expect("buffer lock").iter().filter(|b| **b == b'\n').count()
    }

    /// The exit status, if the process has ended (it is reaped then).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap_or_else(|e| panic!("waiting for {}: {e}", self.what));
        }
        self.status
    }

    /// Waits until stdout has at least `k` lines. Panics if the process ends first or at `deadline`.
    pub fn wait_lines(&mut self, k: usize, deadline: Instant) -> usize {
        let what = format!("{} to print {k} lines", self.what);
        wait_until(deadline, &what, || {
            let n = self.lines();
            if n >= k {
                return Some(n);
            }
            if let Some(st) = self.try_status() {
                // It may have printed more between the count and the wait.
                if self.lines() < k && self.eof[0].load(Ordering::SeqCst) {
                    panic!("{} ended ({}) after {} of {k} lines", self.what, describe(&st), self.lines());
                }
            }
            None
        })
    }

    /// Waits for the process to end and its output pipes to close; returns the exit status.
    pub fn wait(&mut self, deadline: Instant) -> ExitStatus {
        let what = format!("{} to end", self.what);
        wait_until(deadline, &what, || {
            let st = self.try_status()?;
            self.eof.iter().all(|e| e.load(Ordering::SeqCst)).then_some(st)
        })
    }

    /// Waits for the end and returns status and output.
    pub fn output(&mut self, deadline: Instant) -> Output {
        let status = self.wait(deadline);
        Output { status, stdout: self.stdout(), stderr: self.stderr() }
    }

    /// SIGKILLs the process group and every descendant.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            kill_tree(&mut self.child);
            self.status = self.child.try_wait().ok().flatten();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== {} (pid {}) stdout =====\n{}\n===== {} stderr =====\n{}",
                self.what,
                self.child.id(),
                tail(&self.stdout(), 16384),
                self.what,
                tail(&self.stderr(), 16384)
            );
        }
    }
}

/// Runs `cmd` to its end within `timeout`; kills it and panics on timeout.
pub fn run(cmd: Command, what: &str, timeout: Duration) -> Output {
    let mut p = Proc::spawn(cmd, what, true);
    p.output(after(timeout))
}

/// Runs a workload directly (no MOS at all): the reference output and status.
pub fn reference(program: &str, args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run(cmd, &format!("reference run of {program} {}", args.join(" ")), timeout)
}

/// A job started with `mosrun`.
pub struct RunningJob {
    pub proc: Proc,
    pub home: u32,
    program: PathBuf,
    pid: Option<u32>,
}

impl RunningJob {
    /// The pid of the program at home: mosrun's child once it has executed the program.
    pub fn pid(&mut self) -> u32 {
        if let Some(p) = self.pid {
            return p;
        }
        let mosrun = self.proc.id();
        let program = self.program.clone();
        let what = format!("{} to start {} as its child", self.proc.what, program.display());
        let p = wait_until(after(Duration::from_secs(10)), &what, || {
            let found = children_of(mosrun).into_iter().find(|c| std::fs::read_link(format!("/proc/{c}/exe")).is_ok_and(|e| e == program));
            if found.is_none() {
                if let Some(st) = self.proc.try_status() {
                    panic!("{} ended ({}) before its program was found", self.proc.what, describe(&st));
                }
            }
            found
        });
        self.pid = Some(p);
        p
    }

    pub fn lines(&self) -> usize {
        self.proc.lines()
    }

    pub fn stdout(&self) -> Vec<u8> {
        self.proc.stdout()
    }

    pub fn stderr(&self) -> Vec<u8> {
        self.proc.stderr()
    }

    /// Waits for `k` lines of output, at most `timeout`.
    pub fn wait_lines(&mut self, k: usize, timeout: Duration) -> usize {
        self.proc.wait_lines(k, after(timeout))
    }

    /// Waits for mosrun to end, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.wait(after(timeout))
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.proc.try_status()
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster

struct Node {
    num: u32,
    addr: String,
    control: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    status: Option<ExitStatus>,
}

/// n mosd daemons on 127.0.0.1..127.0.0.n, sharing one port unique to this cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    map: PathBuf,
    port: u16,
    nodes: Vec<Node>,
    /// Virtual nodes (cgroup, namespaces) the daemons and mosruns run in, if any. Declared last:
    /// dropped after the daemons are stopped.
    vnodes: Option<vnode::VNodes>,
}

enum StartError {
    PortInUse,
}

static PORT_SEQ: AtomicU32 = AtomicU32::new(0);

/// A port in 20000..32000 (below the usual ephemeral range) free on 127.0.0.1..n right now.
/// Distinct per process (pid) and per cluster in this process (counter).
fn pick_port(n: u32) -> u16 {
    let pid = std::process::id();
    for _ in 0..1000 {
        let k = PORT_SEQ.fetch_add(1, Ordering::SeqCst);
        let port = 20000 + (pid.wrapping_mul(7919).wrapping_add(k.wrapping_mul(613)) % 12000) as u16;
        let held: Vec<_> = (1..=n).map_while(|i| TcpListener::bind((format!("127.0.0.{i}").as_str(), port)).ok()).collect();
        if held.len() == n as usize {
            return port;
        }
    }
    panic!("no free port found for a {n}-node cluster");
}

impl Cluster {
    /// Starts `n` nodes and waits until each answers `mosctl status --json`.
    pub fn start(n: u32) -> Cluster {
        Cluster::start_with_env(n, &[])
    }

    /// Like [`Cluster::start`], with extra environment `(node, name, value)` for some nodes.
    pub fn start_with_env(n: u32, env: &[(u32, &str, &str)]) -> Cluster {
        Cluster::start_in(n, env, None)
    }

    /// A cluster of virtual nodes on this host: node i runs in its own cgroup (CPU quota, memory
    /// limit) and namespaces as `specs[i-1]` says (at 127.0.0.i, or at 10.x.y.i on a bridge with
    /// netns), and so do the mosruns started on it.
    pub fn start_virtual(specs: &[vnode::VNodeSpec], env: &[(u32, &str, &str)]) -> Cluster {
        let vn = vnode::VNodes::create("cl", specs).unwrap_or_else(|e| panic!("cannot create virtual nodes: {e}"));
        Cluster::start_in(specs.len() as u32, env, Some(vn))
    }

    fn start_in(n: u32, env: &[(u32, &str, &str)], mut vnodes: Option<vnode::VNodes>) -> Cluster {
        assert!((1..=250).contains(&n));
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new().prefix("mos-test-").tempdir().expect("temp dir");
            let map = dir.path().join("mosix.map");
            let addr = |i: u32| vnodes.as_ref().map_or_else(|| format!("127.0.0.{i}"), |v| v.addr(i).to_string());
            std::fs::write(&map, format!("1 {} {n}\n", addr(1))).expect("write map");
            let nodes = (1..=n)
                .map(|i| Node {
                    num: i,
                    addr: addr(i),
                    control: dir.path().join(format!("node{i}.sock")),
                    log: dir.path().join(format!("node{i}.log")),
                    child: None,
                    status: None,
                })
                .collect();
            let mut c = Cluster { port: pick_port(n), dir, map, nodes, vnodes: vnodes.take() };
            for i in 1..=n {
                let e: Vec<(&str, &str)> = env.iter().filter(|(k, _, _)| *k == i).map(|(_, a, b)| (*a, *b)).collect();
                c.spawn_node(i, &e);
            }
            match (1..=n).try_for_each(|i| c.wait_up(i)) {
                Ok(()) => return c,
                Err(StartError::PortInUse) => {
                    eprintln!("port {} was taken meanwhile; starting the cluster again on another port", c.port);
                    c.quiet_teardown();
                    vnodes = c.vnodes.take();
                }
            }
        }
        panic!("could not start a {n}-node cluster: ports kept being taken");
    }

    fn node(&self, i: u32) -> &Node {
        self.nodes.get((i as usize).wrapping_sub(1)).unwrap_or_else(|| panic!("no node {i} in this cluster"))
    }

    fn node_mut(&mut self, i: u32) -> &mut Node {
        self.nodes.get_mut((i as usize).wrapping_sub(1)).unwrap_or_else(|| panic!("no node {i} in this cluster"))
    }

    pub fn size(&self) -> u32 {
        self.nodes.len() as u32
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn map_path(&self) -> &Path {
        &self.map
    }

    /// Control socket of node `i`.
    pub fn control(&self, i: u32) -> &Path {
        &self.node(i).control
    }

    /// Address of node `i`.
    pub fn addr(&self, i: u32) -> &str {
        &self.node(i).addr
    }

    /// Environment that points mosrun/mosctl at node `i`.
    pub fn node_env(&self, i: u32) -> Vec<(String, String)> {
        vec![("MOS_SOCKET".to_string(), self.control(i).display().to_string())]
    }

    /// The log of node `i` so far (all its runs).
    pub fn log(&self, i: u32) -> String {
        std::fs::read(&self.node(i).log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Pid of node `i`'s mosd, if it runs.
    /// The network namespace of virtual node `i` (clusters started with netns virtual nodes).
    pub fn vnode_netns(&self, i: u32) -> Option<PathBuf> {
        self.vnodes.as_ref().and_then(|v| v.netns_path(i))
    }

    pub fn node_pid(&mut self, i: u32) -> Option<u32> {
        self.node_status(i).is_none().then(|| self.node(i).child.as_ref().map(Child::id)).flatten()
    }

    fn spawn_node(&mut self, i: u32, env: &[(&str, &str)]) {
        let (map, port) = (self.map.clone(), self.port);
        let first = self.node(1).addr.clone();
        let mosd = bin("mosd");
        let in_vnode = self.vnodes.as_ref().map(|vn| vn.command(i, &mosd, &[]));
        let n = self.node_mut(i);
        assert!(n.child.is_none(), "node {i} is already running");
        let mut log = OpenOptions::new().create(true).append(true).open(&n.log).expect("open node log");
        let _ = writeln!(log, "===== harness: starting mosd node {i} at {}:{port} env {env:?} =====", n.addr);
        let _ = std::fs::remove_file(&n.control);
        // MOS_TEST_HIDE=DIR[:DIR...]: this node runs in its own mount namespace where each DIR is
        // covered by an empty tmpfs, so a call wrongly executed on this node cannot see home files.
        let hide: Vec<String> =
            env.iter().find(|(k, _)| *k == "MOS_TEST_HIDE").map(|(_, v)| v.split(':').map(str::to_string).collect()).unwrap_or_default();
        // MOS_TEST_HOSTNAME=NAME: this node runs in its own UTS namespace with that host name, so
        // a uname wrongly answered on this node shows it.
        let hostname = env.iter().find(|(k, _)| *k == "MOS_TEST_HOSTNAME").map(|(_, v)| v.to_string());
        let mut cmd = if let Some(c) = in_vnode {
            c
        } else if hide.is_empty() && hostname.is_none() {
            Command::new(mosd)
        } else {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private"]);
            if hostname.is_some() {
                c.arg("--uts");
            }
            c.args([
                "--",
                "sh",
                "-c",
                "for d in $MOS_TEST_HIDE; do mount -t tmpfs mos-hidden \"$d\" || exit 99; done; \
                 if [ -n \"$MOS_TEST_HOSTNAME\" ]; then echo \"$MOS_TEST_HOSTNAME\" > /proc/sys/kernel/hostname || exit 98; fi; \
                 exec \"$0\" \"$@\"",
            ]);
            c.env("MOS_TEST_HIDE", hide.join(" ")).env("MOS_TEST_HOSTNAME", hostname.unwrap_or_default()).arg(mosd);
            c
        };
        // Nodes of this cluster share one machine and see the same load, so they make no automatic
        // migration decisions unless a test asks for it with MOS_TEST_BALANCE (on virtual nodes).
        if !env.iter().any(|(k, _)| *k == "MOS_TEST_BALANCE") {
            cmd.arg("--no-balance");
        }
        // MOS_TEST_MAP=A-B: this node's map holds only nodes A..=B of the cluster (others must be
        // found by auto-discovery). MOS_TEST_BROADCAST: announce by broadcast on the segment.
        let map = match env.iter().find(|(k, _)| *k == "MOS_TEST_MAP") {
            Some((_, range)) => {
                let (a, b) = range
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
                    .expect("MOS_TEST_MAP=A-B");
                let own = map.with_file_name(format!("node{i}.map"));
                std::fs::write(&own, format!("{a} {} {}\n", first_addr_plus(&first, a - 1), b - a + 1)).expect("write node map");
                own
            }
            None => map,
        };
        // MOS_TEST_KEY=TEXT: this node's cluster key (written to a mode-600 file).
        if let Some((_, text)) = env.iter().find(|(k, _)| *k == "MOS_TEST_KEY") {
            use std::os::unix::fs::OpenOptionsExt;
            let path = map.with_file_name(format!("node{i}.key"));
            let _ = std::fs::remove_file(&path);
            let mut f = OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path).expect("create key file");
            f.write_all(text.as_bytes()).expect("write key file");
            cmd.arg("--key").arg(&path);
        }
        if env.iter().any(|(k, _)| *k == "MOS_TEST_BROADCAST") {
            let a: std::net::Ipv4Addr = first.parse().expect("IPv4 node address");
            let o = a.octets();
            cmd.arg("--broadcast").arg(std::net::Ipv4Addr::new(o[0], o[1], o[2], 255).to_string());
        }
        cmd.arg("--map")
            .arg(&map)
            .arg("--node")
            .arg(i.to_string())
            .arg("--control")
            .arg(&n.control)
            .arg("--port")
            .arg(port.to_string())
            .env_remove("MOS_FAULT")
            .env_remove("MOS_FAULT_AFTER")
            .env_remove("MOS_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        die_with_parent(&mut cmd);
        n.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot start mosd for node {i}: {e}")));
        n.status = None;
    }

    /// Waits until node `i` answers `mosctl status --json` with a JSON document.
    fn wait_up(&mut self, i: u32) -> Result<(), StartError> {
        let deadline = after(STARTUP_TIMEOUT);
        let what = format!("node {i} to answer `mosctl status --json`");
        wait_until(deadline, &what, || {
            if let Some(st) = self.node_status(i) {
                let log = self.log(i);
                if log.contains("Address already in use") || log.contains("address already in use") {
                    return Some(Err(StartError::PortInUse));
                }
                panic!("mosd of node {i} ended ({}) before answering on its control socket", describe(&st));
            }
            if !self.control(i).exists() {
                return None;
            }
            let out = self.try_mosctl(i, &["status", "--json"], Duration::from_secs(10));
            (out.status.success() && serde_json::from_slice::<Value>(&out.stdout).is_ok()).then_some(Ok(()))
        })
    }

    /// The exit status of node `i`'s mosd if it has ended.
    pub fn node_status(&mut self, i: u32) -> Option<ExitStatus> {
        let n = self.node_mut(i);
        if n.status.is_none() {
            if let Some(c) = n.child.as_mut() {
                n.status = c.try_wait().ok().flatten();
            }
        }
        n.status
    }

    /// Waits until node `i`'s mosd has ended and returns how.
    pub fn wait_node_exit(&mut self, i: u32, timeout: Duration) -> ExitStatus {
        let what = format!("mosd of node {i} to end");
        wait_until(after(timeout), &what, || self.node_status(i))
    }

    /// SIGKILLs node `i`'s mosd and everything it started (as a crashed node loses it all).
    pub fn kill_node(&mut self, i: u32) {
        let n = self.node_mut(i);
        if let Some(c) = n.child.as_mut() {
            kill_tree(c);
            n.status = c.try_wait().ok().flatten();
        }
        let n = self.node_mut(i);
        n.child = None;
        let mut log = OpenOptions::new().append(true).open(&n.log).expect("open node log");
        let _ = writeln!(log, "===== harness: node {i} killed (SIGKILL) =====");
    }

    /// Starts node `i` again (killing it first if it runs) with extra environment, e.g.
    /// `MOS_FAULT`, and waits until it answers on its control socket.
    pub fn restart_node(&mut self, i: u32, env: &[(&str, &str)]) {
        if self.node(i).child.is_some() && self.node_status(i).is_none() {
            self.kill_node(i);
        }
        self.node_mut(i).child = None;
        self.spawn_node(i, env);
        if self.wait_up(i).is_err() {
            panic!("node {i} could not bind port {} again", self.port);
        }
    }

    fn mosctl_cmd(&self, i: u32, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("mosctl"));
        cmd.arg("--control").arg(self.control(i)).args(args).env_remove("MOS_SOCKET");
        cmd
    }

    /// Runs `mosctl --control <node i> ARGS` as user `uid` (group `uid`, no supplementary groups)
    /// through util-linux's setpriv. Opens the cluster's directory to other users for that (the
    /// control socket itself is world-writable; mosd checks the caller's credentials).
    pub fn mosctl_as(&self, uid: u32, i: u32, args: &[&str]) -> Output {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir(), std::fs::Permissions::from_mode(0o755)).expect("chmod cluster dir");
        let mut cmd = Command::new("setpriv");
        cmd.args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into(), "--".into()])
            .arg(bin("mosctl"))
            .arg("--control")
            .arg(self.control(i))
            .args(args)
            .env_remove("MOS_SOCKET");
        run(cmd, &format!("mosctl {} (node {i}, uid {uid})", args.join(" ")), MOSCTL_TIMEOUT)
    }

    /// Runs `mosctl --control <node i> ARGS` to its end (at most `timeout`), whatever its status.
    pub fn try_mosctl(&self, i: u32, args: &[&str], timeout: Duration) -> Output {
        run(self.mosctl_cmd(i, args), &format!("mosctl {} (node {i})", args.join(" ")), timeout)
    }

    /// Runs `mosctl --control <node i> ARGS` (at most [`MOSCTL_TIMEOUT`]).
    pub fn mosctl(&self, i: u32, args: &[&str]) -> Output {
        self.try_mosctl(i, args, MOSCTL_TIMEOUT)
    }

    /// Starts `mosctl --control <node i> ARGS` in the background.
    pub fn spawn_mosctl(&self, i: u32, args: &[&str]) -> Proc {
        Proc::spawn(self.mosctl_cmd(i, args), format!("mosctl {} (node {i})", args.join(" ")), true)
    }

    /// Runs `mosctl ARGS --json` on node `i`, asserts success and parses its stdout.
    pub fn mosctl_json(&self, i: u32, args: &[&str]) -> Value {
        let out = self.mosctl(i, args);
        assert!(
            out.status.success(),
            "mosctl {} on node {i} failed ({}): {}",
            args.join(" "),
            describe(&out.status),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("mosctl {} on node {i} printed no JSON ({e}): {}", args.join(" "), String::from_utf8_lossy(&out.stdout))
        })
    }

    /// `mosctl ps --json` on node `i`.
    pub fn ps(&self, i: u32) -> Value {
        self.mosctl_json(i, &["ps", "--json"])
    }

    /// `mosctl status --json` on node `i`.
    pub fn status(&self, i: u32) -> Value {
        self.mosctl_json(i, &["status", "--json"])
    }

    /// The `ps` row on node `i` for home pid `pid`, home rows (`guest == false`) or guest rows.
    pub fn ps_row(&self, i: u32, pid: u32, guest: bool) -> Option<Value> {
        let ps = self.ps(i);
        let rows = ps["processes"].as_array().unwrap_or_else(|| panic!("ps of node {i} has no `processes` array: {ps}"));
        rows.iter().find(|r| r["pid"].as_u64() == Some(u64::from(pid)) && r["guest"].as_bool() == Some(guest)).cloned()
    }

    /// Waits until home node `i` lists `pid` as its own process (mosrun registered it).
    pub fn wait_registered(&self, i: u32, pid: u32) -> Value {
        let what = format!("pid {pid} to appear in `mosctl ps --json` of node {i}");
        wait_until(after(Duration::from_secs(10)), &what, || self.ps_row(i, pid, false))
    }

    /// Starts `mosrun --control <node i> -- PROGRAM ARGS` (stdout/stderr captured).
    pub fn spawn_mosrun(&self, i: u32, program: &str, args: &[&str]) -> RunningJob {
        self.spawn_mosrun_with(i, &[], program, args)
    }

    /// Like [`spawn_mosrun`](Self::spawn_mosrun), with mosrun options (`-N 2`, `-b`, ...).
    pub fn spawn_mosrun_with(&self, i: u32, opts: &[&str], program: &str, args: &[&str]) -> RunningJob {
        let program_path = std::fs::canonicalize(program).unwrap_or_else(|e| panic!("workload {program}: {e}"));
        let mut cmd = match &self.vnodes {
            Some(vn) => vn.command(i, &bin("mosrun"), &[]),
            None => Command::new(bin("mosrun")),
        };
        cmd.arg("--control").arg(self.control(i)).args(opts).arg("--").arg(&program_path).args(args).env_remove("MOS_SOCKET");
        let what = format!("mosrun {} {} (home node {i})", program_path.display(), args.join(" "));
        RunningJob { proc: Proc::spawn(cmd, what, true), home: i, program: program_path, pid: None }
    }

    /// Like [`spawn_mosrun_with`](Self::spawn_mosrun_with), with extra environment for mosrun (and
    /// so the program).
    pub fn spawn_mosrun_with_env(&self, i: u32, opts: &[&str], program: &str, args: &[&str], env: &[(&str, &str)]) -> RunningJob {
        let program_path = std::fs::canonicalize(program).unwrap_or_else(|e| panic!("workload {program}: {e}"));
        let mut cmd = Command::new(bin("mosrun"));
        cmd.arg("--control").arg(self.control(i)).args(opts).arg("--").arg(&program_path).args(args).env_remove("MOS_SOCKET");
        cmd.envs(env.iter().copied());
        let what = format!("mosrun {} {} (home node {i})", program_path.display(), args.join(" "));
        RunningJob { proc: Proc::spawn(cmd, what, true), home: i, program: program_path, pid: None }
    }

    /// Like [`spawn_mosrun`](Self::spawn_mosrun), with extra environment for mosrun (and so the
    /// program) and, with `piped_stdin`, a stdin pipe written with [`Proc::write_stdin`].
    pub fn spawn_mosrun_env(&self, i: u32, program: &str, args: &[&str], env: &[(&str, &str)], piped_stdin: bool) -> RunningJob {
        let program_path = std::fs::canonicalize(program).unwrap_or_else(|e| panic!("workload {program}: {e}"));
        let mut cmd = Command::new(bin("mosrun"));
        cmd.arg("--control").arg(self.control(i)).arg("--").arg(&program_path).args(args).env_remove("MOS_SOCKET");
        cmd.envs(env.iter().copied());
        let what = format!("mosrun {} {} (home node {i})", program_path.display(), args.join(" "));
        let proc = if piped_stdin { Proc::spawn_with_stdin(cmd, what, true) } else { Proc::spawn(cmd, what, true) };
        RunningJob { proc, home: i, program: program_path, pid: None }
    }

    /// Starts a job under mosrun on node `i` and waits until its home pid is registered there.
    pub fn start_job(&self, i: u32, program: &str, args: &[&str]) -> (RunningJob, u32) {
        let mut job = self.spawn_mosrun(i, program, args);
        let pid = job.pid();
        self.wait_registered(i, pid);
        (job, pid)
    }

    /// `mosctl migrate PID TARGET` on node `i`; asserts success and returns its output.
    pub fn migrate(&self, i: u32, pid: u32, target: &str) -> Output {
        let out = self.mosctl(i, &["migrate", &pid.to_string(), target]);
        assert!(
            out.status.success(),
            "mosctl migrate {pid} {target} on node {i} failed ({}):\nstdout: {}\nstderr: {}",
            describe(&out.status),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `mosctl migrate PID TARGET` on node `i`, expected to fail; returns its output.
    pub fn migrate_fails(&self, i: u32, pid: u32, target: &str) -> Output {
        let out = self.mosctl(i, &["migrate", &pid.to_string(), target]);
        assert!(
            !out.status.success(),
            "mosctl migrate {pid} {target} on node {i} succeeded but should have failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Prints every node's log to stderr.
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            let log = std::fs::read(&n.log).unwrap_or_default();
            eprintln!(
                "===== node {} log ({}) =====\n{}\n===== end of node {} log =====",
                n.num,
                n.log.display(),
                tail(&log, 256 * 1024),
                n.num
            );
        }
    }

    fn quiet_teardown(&mut self) {
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                kill_tree(c);
            }
            n.child = None;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.quiet_teardown();
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Asserts that `got` equals `want` byte for byte, showing the first differing line.
pub fn assert_same_output(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let g = String::from_utf8_lossy(got);
    let w = String::from_utf8_lossy(want);
    let (gl, wl): (Vec<&str>, Vec<&str>) = (g.split_inclusive('\n').collect(), w.split_inclusive('\n').collect());
    let first = gl.iter().zip(&wl).position(|(a, b)| a != b).unwrap_or(gl.len().min(wl.len()));
    panic!(
        "{what}: output differs from the reference at line {} ({} lines vs {} expected, {} vs {} bytes)\n  got:      {:?}\n  expected: {:?}",
        first + 1,
        gl.len(),
        wl.len(),
        got.len(),
        want.len(),
        gl.get(first).copied().unwrap_or("<end of output>"),
        wl.get(first).copied().unwrap_or("<end of output>"),
    );
}
