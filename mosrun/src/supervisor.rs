//! The home supervisor's event loop. At home the program runs natively and untraced; away, its
//! original task is the deputy (stopped, memory released) and this loop executes the calls the
//! remote component forwards, relays signals, and ends the deputy the way the remote process ended.
use crate::checkpoints::{Checkpoints, Periodic};
use mos_engine::channel::Wire;
use mos_engine::checkpoint;
use mos_engine::deputy::{Deputy, SpinPolicy};
use mos_engine::migrate::{self, Away};
use mos_engine::Error as EngineError;
use mos_proto::control::{AfterCheckpoint, Command, Mode, Reply, Request, Target};
use mos_proto::deputy::{DeputyMsg, LaneJoin, OnUnsupported};
use mos_proto::frame::{self, FrameReader, Kind};
use mos_proto::migration::{Offer, Reason, Refuse, Stats};
use mos_proto::secure::Credential;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

type BoxError = Box<dyn std::error::Error>;

/// Signals mosrun relays to the program instead of dying of them.
const RELAYED: [Signal; 6] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// How long, after a reply, mosrun busy-polls for the next request before it sleeps (see
/// [`SpinPolicy`]).
const NEXT_SPIN: std::time::Duration = std::time::Duration::from_micros(30);

/// How often, while away, the deputy is checked for signals sent to the home pid.
const SIGNAL_PROBE: std::time::Duration = std::time::Duration::from_millis(100);

/// Blocks the relayed signals and SIGCHLD (stops of the deputy, i.e. a signal for the home pid
/// while the process is away, are reported by it) and returns a descriptor that reads them.
fn signal_fd() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in RELAYED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
}

enum Where {
    Home,
    Away { node: u32, away: Box<Away> },
}

struct Supervisor {
    pid: Pid,
    home_node: u32,
    control: Option<UnixStream>,
    control_path: std::path::PathBuf,
    pidfd: OwnedFd,
    /// A migration command waiting for the process to come home first: (id, final target).
    pending: Option<(u64, Target)>,
    /// How the pending move leaves home once the process is back (`Mode::PreCopy` by default).
    pending_mode: Mode,
    /// Frames from the remote side (away), read ahead so that a request costs one read.
    rx: FrameReader,
    /// Busy-polling for the next request after a reply.
    next_spin: SpinPolicy,
    /// Checkpoint files and the periodic schedule (`-C`, `-A`, `-N`).
    ckpt: Checkpoints,
    /// A checkpoint waiting for the process to come home first: (command id or None for a periodic
    /// one, file, what then).
    pending_ckpt: Option<(Option<u64>, Option<String>, AfterCheckpoint)>,
    on_unsupported: OnUnsupported,
    /// (call, node) pairs already warned about (-w).
    warned: Vec<(u32, u32)>,
    /// Signals pending on the remote task as it comes home (`DeputyMsg::Queued` before its
    /// `Offer`): queued at home once it is back.
    returning: Vec<Vec<u8>>,
    /// Away: when the deputy was last looked at for real-time signals.
    rt_checked: std::time::Instant,
    /// How mosrun was started (the supervisor of a forked child starts the same way).
    opts: Options,
}

/// Where the program starts.
#[derive(Debug, Clone)]
pub enum Start {
    Home,
    /// A node number or address.
    On(String),
    /// The best node for a job needing this much memory.
    Best {
        mem_mb: u32,
    },
}

/// How mosrun was asked to run the program.
#[derive(Debug, Clone)]
pub struct Options {
    pub start: Start,
    /// The balancer may move it (`-l`, default) or not (`-L`).
    pub auto: bool,
    /// Memory it declared (`-m`), MiB.
    pub mem_mb: u32,
    /// Calls only home runs: bring the program home (default), fail them (`-e`), or fail them
    /// with a warning (`-w`).
    pub on_unsupported: OnUnsupported,
    /// Checkpoint files and period (`-C`, `-A`, `-N`).
    pub checkpoint: Periodic,
}

/// What mosrun supervises.
#[derive(Debug, Clone)]
pub enum Launch {
    /// A program it starts.
    Spawn(Vec<String>),
    /// A process it recovers from a checkpoint (`-R FILE -O fd=PATH,...`).
    Recover { file: std::path::PathBuf, overrides: Vec<(u32, std::path::PathBuf)> },
}

/// Asks mosd (on a connection of its own) which node `start` means: `None` for home.
fn placement(control_path: &Path, start: &Start) -> Result<Option<u32>, BoxError> {
    let req = match start {
        Start::Home => return Ok(None),
        Start::On(name) => Request::Whois { name: name.clone() },
        Start::Best { mem_mb } => Request::BestNode { mem_mb: *mem_mb },
    };
    let mut c = UnixStream::connect(control_path)?;
    let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    frame::write_msg(&mut c, Kind::Control, &req)?;
    match frame::read_frame(&mut c)?.expect::<Reply>(Kind::Control)? {
        Reply::Whois { node, .. } => Ok(Some(node)),
        Reply::Error { message } => Err(message.into()),
        other => Err(format!("unexpected reply from mosd: {other:?}").into()),
    }
}

pub fn run(control_path: &Path, launch: Launch, opts: Options) -> Result<i32, BoxError> {
    let mut control = UnixStream::connect(control_path)
        .map_err(|e| format!("cannot reach mosd at {} ({e}); is mosd running? (set --control or MOS_SOCKET)", control_path.display()))?;
    let target = placement(control_path, &opts.start)?;
    // Spawn before blocking the relayed signals: a child inherits the blocked mask.
    let (pid, program) = match launch {
        Launch::Spawn(program) => {
            let mut cmd = std::process::Command::new(&program[0]);
            cmd.args(&program[1..]);
            // Started elsewhere: the move waits until the dynamic loader is done (the program at
            // its entry point), or the loader's next mmap of a library descriptor, which lives at
            // home, would bring the program straight back.
            let elsewhere = target.is_some();
            if elsewhere {
                mos_engine::sys::trace_on_exec(&mut cmd);
            }
            let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", program[0]))?;
            let pid = Pid::from_raw(child.id() as i32);
            if elsewhere {
                match mos_engine::ptrace::run_to_entry(pid) {
                    Ok(()) => {}
                    Err(mos_engine::Error::TraceeGone { code: Some(code), .. }) => return Ok(code),
                    Err(e) => {
                        let _ = kill(pid, Signal::SIGKILL);
                        let _ = waitpid(pid, None);
                        return Err(format!("cannot start {}: {e}", program[0]).into());
                    }
                }
            }
            (pid, program)
        }
        Launch::Recover { file, overrides } => {
            let r = checkpoint::recover(&file, &overrides)?;
            tracing::info!(file = %file.display(), old_pid = r.loaded.header.pid, pid = r.pid.as_raw(), us = r.restore_us, rebuild_us = r.rebuild_us, "recovered");
            (r.pid, r.loaded.header.command)
        }
    };
    let sfd = signal_fd()?;
    let pidfd = mos_engine::sys::pidfd_open(pid)?;
    let command = program.join(" ");
    let ckpt = Checkpoints::new(opts.checkpoint.clone(), program, pid.as_raw() as u32);
    frame::write_msg(
        &mut control,
        Kind::Control,
        &Request::Register { pid: pid.as_raw() as u32, uid: nix::unistd::getuid().as_raw(), command, auto: opts.auto, mem_mb: opts.mem_mb },
    )?;
    let home_node = match frame::read_frame(&mut control)?.expect::<Reply>(Kind::Control)? {
        Reply::Registered { node } => node,
        Reply::Error { message } => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(format!("mosd refused to supervise the program: {message}").into());
        }
        other => return Err(format!("unexpected reply from mosd: {other:?}").into()),
    };
    // Start elsewhere: ask mosd to move the program now, as `mosctl migrate` would. The answer is
    // not awaited (this loop is the one that performs the move); the connection is kept open.
    let mut s = Supervisor {
        pid,
        home_node,
        control: Some(control),
        control_path: control_path.to_owned(),
        pidfd,
        pending: None,
        pending_mode: Mode::PreCopy,
        rx: FrameReader::new(),
        next_spin: SpinPolicy::new(NEXT_SPIN),
        ckpt,
        pending_ckpt: None,
        on_unsupported: opts.on_unsupported,
        warned: Vec::new(),
        returning: Vec::new(),
        rt_checked: std::time::Instant::now(),
        opts: opts.clone(),
    };
    if let Some(n) = target.filter(|n| *n != home_node) {
        s.ask_move(n)?;
    }
    Ok(s.event_loop(sfd, Where::Home))
}

/// What the supervisor of a child forked away needs (see [`Supervisor::on_fork`]).
struct ForkedChild {
    /// The child deputy at home (the child's home pid), detached in `pause()`.
    pid: Pid,
    parent: Pid,
    node: u32,
    addr: SocketAddr,
    token: u64,
    home_node: u32,
    control_path: std::path::PathBuf,
    command: Vec<String>,
    opts: Options,
}

/// The supervisor of a child forked away, in a process of its own: takes the child deputy over
/// (seize, served loop of its own), registers the child with mosd, opens its deputy channel to
/// the node where the child runs ([`mos_proto::deputy::ForkJoin`]) and serves it as mosrun serves
/// any process away. Returns mosrun's status.
fn run_forked(c: ForkedChild) -> i32 {
    let pid = c.pid;
    match supervise_forked(c) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mosrun: the child {pid} forked away is lost: {e}");
            let _ = kill(pid, Signal::SIGKILL);
            1
        }
    }
}

fn supervise_forked(c: ForkedChild) -> Result<i32, BoxError> {
    use mos_proto::deputy::ForkJoin;
    use mos_proto::migration::{Failed, Resumed};
    let t = mos_engine::ptrace::Tracee::seize(c.pid)?.interrupt()?;
    let deputy = Deputy::release(t, None)?;
    let mut control = UnixStream::connect(&c.control_path)?;
    let command = c.command.join(" ");
    let auto = c.opts.auto;
    let mem_mb = c.opts.mem_mb;
    let me = c.pid.as_raw() as u32;
    frame::write_msg(
        &mut control,
        Kind::Control,
        &Request::Register { pid: me, uid: nix::unistd::getuid().as_raw(), command, auto, mem_mb },
    )?;
    match frame::read_frame(&mut control)?.expect::<Reply>(Kind::Control)? {
        Reply::Registered { .. } => {}
        Reply::Error { message } => return Err(format!("mosd refused to supervise it: {message}").into()),
        other => return Err(format!("unexpected reply from mosd: {other:?}").into()),
    }
    // With a cluster key, mosd vouches for this user on the child's connection too.
    let cred = ticket(&c.control_path).map_err(|e| format!("cannot get a connection ticket from mosd: {e}"))?;
    let mut stream = mos_engine::channel::connect(c.addr, cred.as_ref())?;
    stream.set_read_timeout(Some(migrate::MIGRATION_TIMEOUT))?;
    let join = ForkJoin { home_node: c.home_node, parent_pid: c.parent.as_raw() as u32, child_pid: me, token: c.token };
    frame::write_msg(&mut stream, Kind::ForkJoin, &join)?;
    let f = frame::read_frame(&mut stream)?;
    let remote_pid = match f.kind {
        Kind::Resumed => f.decode::<Resumed>()?.remote_pid,
        Kind::Failed => return Err(format!("node {}: {}", c.node, f.decode::<Failed>()?.reason).into()),
        other => return Err(format!("unexpected {other:?} frame from node {}", c.node).into()),
    };
    stream.set_read_timeout(None)?;
    tracing::info!(pid = me, parent = c.parent.as_raw(), node = c.node, remote_pid, "forked child runs away");
    let sfd = signal_fd()?;
    let pidfd = mos_engine::sys::pidfd_open(c.pid)?;
    let opts = Options { checkpoint: Default::default(), ..c.opts };
    let mut s = Supervisor {
        pid: c.pid,
        home_node: c.home_node,
        control: Some(control),
        control_path: c.control_path,
        pidfd,
        pending: None,
        rx: FrameReader::new(),
        next_spin: SpinPolicy::new(NEXT_SPIN),
        pending_mode: Mode::PreCopy,
        ckpt: Checkpoints::new(Default::default(), c.command, me),
        pending_ckpt: None,
        on_unsupported: opts.on_unsupported,
        warned: Vec::new(),
        returning: Vec::new(),
        rt_checked: std::time::Instant::now(),
        opts,
    };
    s.tell(&Request::Moved { node: c.node });
    let mut away = Away { deputy, stream, remote_pid, stats: Stats::default(), to_free: Vec::new(), armed: None };
    s.send_policy(&mut away);
    Ok(s.event_loop(sfd, Where::Away { node: c.node, away: Box::new(away) }))
}

/// A credential for a secure connection to another node, from the local mosd (`None`: the
/// cluster has no key and connections stay plain).
fn ticket(control_path: &Path) -> Result<Option<Credential>, BoxError> {
    let mut side = UnixStream::connect(control_path)?;
    let _ = side.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    frame::write_msg(&mut side, Kind::Control, &Request::Ticket)?;
    match frame::read_frame(&mut side)?.expect::<Reply>(Kind::Control)? {
        Reply::Ticket { credential } => Ok(credential),
        Reply::Error { message } => Err(message.into()),
        other => Err(format!("unexpected reply from mosd: {other:?}").into()),
    }
}

impl Supervisor {
    /// Asks mosd to move the program to node `n`, as `mosctl migrate` would, on a side connection.
    /// The answer is not awaited: this loop performs the move when mosd's command arrives.
    fn ask_move(&self, n: u32) -> Result<(), BoxError> {
        let mut side = UnixStream::connect(&self.control_path)?;
        frame::write_msg(&mut side, Kind::Control, &Request::Migrate { pid: self.pid.as_raw() as u32, target: n.to_string() })?;
        Ok(())
    }

    /// A credential for a secure connection from mosd (on a side connection); None when the
    /// cluster has no key.
    fn credential(&self) -> Result<Option<Credential>, BoxError> {
        ticket(&self.control_path)
    }

    fn reap(&self) -> i32 {
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                Ok(ws) => {
                    if let Some(c) = mos_engine::ptrace::shell_code(ws) {
                        return c;
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 128 + libc::SIGKILL,
            }
        }
    }

    fn tell(&mut self, r: &Request) {
        if let Some(c) = self.control.as_mut() {
            if frame::write_msg(c, Kind::Control, r).is_err() {
                tracing::warn!("lost the connection to mosd; the program keeps running unsupervised by the cluster");
                self.control = None;
            }
        }
    }

    fn event_loop(&mut self, sfd: SignalFd, mut place: Where) -> i32 {
        let mut last_probe = std::time::Instant::now();
        loop {
            let held = matches!(&place, Where::Away { away, .. } if self.rx.has_frame() || away.stream.buffered());
            // The home copy still being freed: do not sleep in poll meanwhile.
            let freeing = matches!(&place, Where::Away { away, .. } if !away.to_free.is_empty());
            let (ctl, exit, sig, net) = {
                let mut fds = vec![PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN), PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
                if let Some(c) = &self.control {
                    fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
                }
                let ctl_i = self.control.as_ref().map(|_| fds.len() - 1);
                let net_i = match &place {
                    Where::Away { away, .. } => {
                        fds.push(PollFd::new(away.stream.as_fd(), PollFlags::POLLIN));
                        Some(fds.len() - 1)
                    }
                    Where::Home => None,
                };
                // A frame already read ahead is handled without waiting. Away, a deputy in trap mode
                // is checked for signals every 100 ms (a served one reports them by SIGCHLD).
                let trapped = matches!(&place, Where::Away { away, .. } if !away.deputy.served());
                // Away, the deputy is also looked at for real-time signals every 100 ms.
                let timeout = if held || freeing {
                    PollTimeout::ZERO
                } else if trapped || matches!(place, Where::Away { .. }) {
                    PollTimeout::from(100u8)
                } else {
                    PollTimeout::NONE
                };
                let timeout = self.ckpt.cap(timeout);
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "poll failed");
                    }
                }
                let ready = |i: usize| fds[i].revents().is_some_and(|e| !e.is_empty());
                (ctl_i.is_some_and(ready), ready(0), ready(1), held || net_i.is_some_and(ready))
            };
            // SIGCHLD: the deputy stopped (a signal for the home pid) or ended.
            let mut child = false;
            if sig {
                if let Ok(Some(si)) = sfd.read_signal() {
                    let sig = si.ssi_signo as i32;
                    match &mut place {
                        _ if sig == libc::SIGCHLD => child = true,
                        Where::Home => {
                            if let Ok(s) = Signal::try_from(sig) {
                                let _ = kill(self.pid, s);
                            }
                        }
                        Where::Away { away, .. } => {
                            let _ = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Signal { sig });
                        }
                    }
                }
            }
            if let Where::Away { away, .. } = &mut place {
                // (A deputy in trap mode also causes SIGCHLD with every forwarded call: the timer.)
                let probe = if away.deputy.served() { child } else { last_probe.elapsed() >= SIGNAL_PROBE };
                if probe {
                    last_probe = std::time::Instant::now();
                }
                match away.deputy.take_signals(probe) {
                    Ok(sigs) => {
                        for s in sigs {
                            let _ = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Signal { sig: s as i32 });
                        }
                        // With their siginfo (sender, code) where the deputy could read it.
                        for info in away.deputy.take_siginfos() {
                            let _ = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Queued { info });
                        }
                    }
                    Err(EngineError::TraceeGone { code: Some(c), .. }) => {
                        let _ = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Kill);
                        return c;
                    }
                    Err(_) => {}
                }
            }
            if let Where::Away { away, .. } = &mut place {
                if self.rt_checked.elapsed() >= SIGNAL_PROBE {
                    self.relay_rt_signals(away);
                }
            }
            // Every source is served in the same round: back-to-back forwarded calls must not starve
            // commands and signals.
            if net {
                if let Where::Away { away, node } = place {
                    place = match self.on_remote(*away, node) {
                        Ok(p) => p,
                        Err(code) => return code,
                    };
                } else {
                    unreachable!()
                }
            }
            if exit {
                let code = self.reap();
                if let Where::Away { mut away, .. } = place {
                    let _ = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Kill);
                }
                return code;
            }
            if self.ckpt.due() {
                place = self.on_checkpoint(place, None, None, AfterCheckpoint::Continue);
            }
            if ctl {
                let cmd = self.control.as_mut().map(|c| frame::read_frame(c).and_then(|f| f.expect::<Command>(Kind::Control)));
                match cmd {
                    Some(Ok(Command::Migrate { id, target })) => place = self.on_migrate(place, id, target, Mode::PreCopy),
                    Some(Ok(Command::MigrateMode { id, target, mode })) => place = self.on_migrate(place, id, target, mode),
                    Some(Ok(Command::Checkpoint { id, file, then })) => place = self.on_checkpoint(place, Some(id), file, then),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "lost the connection to mosd; the program keeps running");
                        self.control = None;
                    }
                    None => {}
                }
            }
            // One chunk of the home copy per round, between forwarded calls.
            if let Where::Away { away, .. } = &mut place {
                if !away.to_free.is_empty() {
                    away.free_some();
                }
            }
        }
    }

    fn done(&mut self, id: u64, result: Result<Stats, String>) {
        self.tell(&Request::CommandDone { id, result });
    }

    fn go(&mut self, id: u64, node: u32, addr: &str, mode: Mode) -> Where {
        let sa: SocketAddr = match addr.parse() {
            Ok(a) => a,
            Err(e) => {
                self.done(id, Err(format!("bad node address {addr}: {e}")));
                return Where::Home;
            }
        };
        // With a cluster key, mosd vouches for this user on the connection (mosrun never sees the key).
        let cred = match self.credential() {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("cannot get a connection ticket from mosd: {e}");
                tracing::warn!(error = %msg, "migration failed");
                self.done(id, Err(msg));
                return Where::Home;
            }
        };
        match migrate::migrate_out(self.pid, self.home_node, sa, mode, cred.as_ref()) {
            Ok(mut away) => {
                // A new connection: nothing of the old one is held.
                self.rx = FrameReader::new();
                // Tests make the remote side meet such a call before the policy arrives: it is then
                // sent only once a return home has been refused.
                if std::env::var_os("MOS_TEST_POLICY_HELD").is_none() {
                    self.send_policy(&mut away);
                }
                // Real-time signals pending at home now wait in the deputy: they go along.
                self.relay_rt_signals(&mut away);
                let stats = away.stats.clone();
                self.tell(&Request::Moved { node });
                self.done(id, Ok(stats));
                Where::Away { node, away: Box::new(away) }
            }
            Err(f) => {
                let msg = f.to_string();
                tracing::warn!(error = %msg, "migration failed");
                self.done(id, Err(msg));
                Where::Home
            }
        }
    }

    /// Tells the remote side what to do with calls only home runs (-e, -w); nothing by default.
    /// A call it meets before this arrives brings the process home, and is refused there
    /// ([`come_home`](Self::come_home)).
    fn send_policy(&self, away: &mut Away) {
        if self.on_unsupported != OnUnsupported::GoHome {
            let m = DeputyMsg::Policy { on_unsupported: self.on_unsupported };
            if let Err(e) = frame::write_msg(&mut away.stream, Kind::Deputy, &m) {
                tracing::warn!(error = %e, "could not send the -e/-w policy to the remote node");
            }
        }
    }

    /// Sends the real-time signals pending on the deputy to the remote side, with their siginfo.
    /// (The deputy keeps them blocked: a stop for one could not be taken, see
    /// `engine::deputy::RT_SIGNALS`; whatever is not taken is delivered when the process is home.)
    fn relay_rt_signals(&mut self, away: &mut Away) {
        self.rt_checked = std::time::Instant::now();
        if !away.deputy.rt_pending().unwrap_or(false) {
            return;
        }
        match away.deputy.take_rt_signals() {
            Ok(infos) => {
                for info in infos {
                    let _ = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Queued { info });
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not take real-time signals from the deputy"),
        }
    }

    /// mosrun -w: a call the remote node did not run (one warning per call and node).
    fn warn_unsupported(&mut self, nr: u32, node: u32) {
        if self.on_unsupported == OnUnsupported::FailAndTell && !self.warned.contains(&(nr, node)) {
            self.warned.push((nr, node));
            eprintln!(
                "mosrun: warning: system call {} is not supported on node {node}: it failed with ENOSYS",
                mos_engine::syscall_names::name(nr)
            );
        }
    }

    /// `mode` says how the process moves out of home; moves from a remote node (onward or home)
    /// are always stop-and-copy.
    fn on_migrate(&mut self, place: Where, id: u64, target: Target, mode: Mode) -> Where {
        match (place, target) {
            (Where::Home, Target::Home) => {
                self.done(id, Ok(Stats::default()));
                Where::Home
            }
            (Where::Home, Target::Node { node, addr }) => self.go(id, node, &addr, mode),
            (Where::Away { node, away }, Target::Node { node: to, .. }) if node == to => {
                self.done(id, Ok(Stats::default()));
                Where::Away { node, away }
            }
            (Where::Away { node, mut away }, target) => {
                if self.pending.is_some() || self.pending_ckpt.is_some() {
                    self.done(id, Err("another migration of this process is in progress".into()));
                } else if frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Recall).is_err() {
                    self.done(id, Err("the node running the process is unreachable".into()));
                } else {
                    self.pending = Some((id, target));
                    self.pending_mode = mode;
                }
                Where::Away { node, away }
            }
        }
    }

    /// One message from the remote side. `Err(code)` ends mosrun with that status.
    fn on_remote(&mut self, mut away: Away, node: u32) -> Result<Where, i32> {
        let f = match self.rx.read_frame(&mut away.stream) {
            Ok(f) => f,
            Err(e) => return Err(self.lost(away.deputy, &format!("lost the connection to node {node}: {e}"))),
        };
        match f.kind {
            Kind::Deputy => {}
            Kind::Offer => {
                let offer: Offer = match f.decode() {
                    Ok(o) => o,
                    Err(e) => return Err(self.lost(away.deputy, &format!("bad offer from node {node}: {e}"))),
                };
                return Ok(self.come_home(away, node, &offer));
            }
            other => return Err(self.lost(away.deputy, &format!("unexpected {other:?} frame from node {node}"))),
        }
        let msg: DeputyMsg = match f.decode() {
            Ok(m) => m,
            Err(e) => return Err(self.lost(away.deputy, &format!("bad message from node {node}: {e}"))),
        };
        match msg {
            DeputyMsg::Syscall { seq, nr, args, bufs } => match away.deputy.execute(nr, args, &bufs) {
                Ok((ret, outs)) => {
                    if let Err(e) = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Reply { seq, ret, outs }) {
                        return Err(self.lost(away.deputy, &format!("lost the connection to node {node}: {e}")));
                    }
                    // A process making calls back to back sends the next one within µs.
                    self.next_spin.spin(&mut self.rx, &mut away.stream);
                }
                Err(e) => return Err(self.deputy_failed(away, e)),
            },
            DeputyMsg::Exited { status } => {
                if let Err(e) = away.deputy.end(status) {
                    tracing::warn!(error = %e, "could not end the deputy the same way");
                }
                let code = self.reap();
                return Err(code);
            }
            DeputyMsg::Fork { seq } => {
                let (ret, token) = match self.on_fork(&mut away, node) {
                    Ok(r) => r,
                    Err(e) => return Err(self.deputy_failed(away, e)),
                };
                if let Err(e) = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Forked { seq, ret, token }) {
                    return Err(self.lost(away.deputy, &format!("lost the connection to node {node}: {e}")));
                }
            }
            DeputyMsg::Unsupported { nr } => self.warn_unsupported(nr, node),
            DeputyMsg::Lane { token } => self.open_lane(&mut away, node, token),
            DeputyMsg::Queued { info } => self.returning.push(info),
            DeputyMsg::Reroute { node: to } => {
                tracing::info!(from = node, to, "the remote node's balancer moves the process on");
                if let Err(e) = self.ask_move(to) {
                    tracing::warn!(error = %e, "could not ask mosd to move the process on");
                }
            }
            other => tracing::warn!(?other, "unexpected message from the remote side; ignored"),
        }
        Ok(Where::Away { node, away: Box::new(away) })
    }

    /// The remote side offers the kernel lane (docs/NATIVE.md): if this node's module can serve
    /// the deputy, it does from now on, and a connection to the remote node carries the lane.
    /// Anything that fails leaves the deputy served as before (the offer is then ignored).
    fn open_lane(&mut self, away: &mut Away, node: u32, token: u64) {
        if !mos_engine::native::lane_available() || away.stream.is_secure() || !away.deputy.served() || away.deputy.served_natively() {
            tracing::debug!(node, "kernel lane offered, not taken");
            return;
        }
        let opened = (|| -> Result<(), BoxError> {
            let addr = away.stream.peer_addr()?;
            let mut lane = std::net::TcpStream::connect_timeout(&addr, mos_engine::channel::CONNECT_TIMEOUT)?;
            migrate::tune(&lane);
            lane.set_nodelay(true)?;
            // Served first: the remote module sends calls only once the join has arrived there.
            away.deputy.serve_natively(Some(std::os::fd::AsFd::as_fd(&lane)))?;
            frame::write_msg(
                &mut lane,
                Kind::LaneJoin,
                &LaneJoin { home_node: self.home_node, home_pid: self.pid.as_raw() as u32, token },
            )?;
            Ok(())
        })();
        match opened {
            Ok(()) => tracing::info!(node, "kernel lane open: the module serves the deputy"),
            Err(e) => tracing::warn!(node, error = %e, "could not open the kernel lane; calls keep coming through mosrun"),
        }
    }

    /// The process forked away: the deputy forks (the child deputy has its descriptors, cwd,
    /// credentials and parent), and a supervisor of its own, in a new process, takes the child
    /// deputy over and opens the child's deputy channel. Returns the fork's result for the remote
    /// side (the child's home pid, or -errno) and the channel's token.
    fn on_fork(&mut self, away: &mut Away, node: u32) -> Result<(i64, u64), EngineError> {
        let again = -i64::from(libc::EAGAIN);
        let (addr, token) = match (away.stream.peer_addr(), mos_engine::channel::token()) {
            (Ok(a), Ok(t)) => (a, t),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot fork away");
                return Ok((again, 0));
            }
        };
        let child = match away.deputy.fork()? {
            Ok(c) => c,
            Err(errno) => return Ok((errno, 0)),
        };
        let c = ForkedChild {
            pid: child,
            parent: self.pid,
            node,
            addr,
            token,
            home_node: self.home_node,
            control_path: self.control_path.clone(),
            command: self.ckpt.command().to_vec(),
            opts: self.opts.clone(),
        };
        // (mosrun is single-threaded, as spawn_detached requires.)
        match mos_engine::sys::spawn_detached(move || run_forked(c)) {
            Ok(()) => Ok((i64::from(child.as_raw()), token)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the forked child's supervisor");
                let _ = kill(child, Signal::SIGKILL);
                Ok((again, 0))
            }
        }
    }

    fn come_home(&mut self, mut away: Away, node: u32, offer: &Offer) -> Where {
        tracing::info!(reason = ?offer.reason, "process coming home");
        // Signals pending on the remote task as it left: queued here once it is back.
        let returning = std::mem::take(&mut self.returning);
        // The remote side waits for our answer after an Offer: it cannot have sent anything more,
        // and the migration stream is read from the socket itself.
        if !self.rx.is_empty() {
            let _ = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Kill);
            eprintln!("mosrun: node {node} sent data after its offer; the process is lost");
            let _ = kill(self.pid, Signal::SIGKILL);
            std::process::exit(self.reap());
        }
        // -e/-w: a call only home runs, met before the remote side had our policy, does not bring
        // the process home: the return is refused and the call fails there with ENOSYS. (Unless a
        // migration is pending: its Recall may be in flight, and the process comes home for it.)
        if let (Reason::Syscall { nr, name }, None) = (&offer.reason, &self.pending) {
            if self.on_unsupported != OnUnsupported::GoHome {
                let reason = format!("mosrun -e: system call {name} fails with ENOSYS on node {node}");
                // (A broken connection shows at the next read, which ends the process as lost.)
                if let Err(e) = frame::write_msg(&mut away.stream, Kind::Refuse, &Refuse { reason }) {
                    tracing::warn!(error = %e, "could not refuse the return home");
                }
                self.warn_unsupported(*nr, node);
                self.send_policy(&mut away);
                return Where::Away { node, away: Box::new(away) };
            }
        }
        // The deputy leaves its loop and waits in a ptrace stop to be rebuilt.
        if let Err(e) = away.deputy.park() {
            let _ = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Kill);
            if let Some((id, _)) = self.pending.take() {
                self.done(id, Err(format!("the process was lost coming home: {e}")));
            }
            if let EngineError::TraceeGone { code: Some(c), .. } = e {
                std::process::exit(c);
            }
            eprintln!("mosrun: {e}; the process is lost");
            let _ = kill(self.pid, Signal::SIGKILL);
            std::process::exit(self.reap());
        }
        match migrate::receive_home(&mut away.stream, away.deputy, offer) {
            Ok((stats, _)) => {
                for info in returning {
                    if let Err(e) = mos_engine::sys::queue_signal(self.pid, &info) {
                        tracing::warn!(error = %e, "could not queue a signal that was pending on the process as it came home");
                    }
                }
                self.tell(&Request::Moved { node: 0 });
                if let Some((id, file, then)) = self.pending_ckpt.take() {
                    self.checkpoint_now(id, file, then);
                }
                match self.pending.take() {
                    Some((id, Target::Node { node: to, addr })) => self.go(id, to, &addr, self.pending_mode),
                    Some((id, Target::Home)) => {
                        self.done(id, Ok(stats));
                        Where::Home
                    }
                    None => Where::Home,
                }
            }
            Err(migrate::NotHome::Lost(e)) => {
                let _ = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Kill);
                if let Some((id, _)) = self.pending.take() {
                    self.done(id, Err(format!("the process was lost coming home: {e}")));
                }
                eprintln!("mosrun: {e}; the process is lost");
                let _ = kill(self.pid, Signal::SIGKILL);
                std::process::exit(self.reap());
            }
            Err(migrate::NotHome::StillAway(e, deputy)) => {
                tracing::error!(error = %e, "could not take the process home; it keeps running on node {node}");
                away.deputy = *deputy;
                if let Some((id, _)) = self.pending.take() {
                    self.done(id, Err(format!("could not bring the process home: {e}")));
                }
                if let Some((id, _, _)) = self.pending_ckpt.take() {
                    self.checkpoint_done(id, Err(format!("could not bring the process home to checkpoint it: {e}")));
                }
                Where::Away { node, away: Box::new(away) }
            }
        }
    }

    fn checkpoint_done(&mut self, id: Option<u64>, result: Result<mos_proto::control::Checkpointed, String>) {
        match id {
            Some(id) => self.tell(&Request::CheckpointDone { id, result }),
            None => {
                if let Err(e) = result {
                    eprintln!("mosrun: periodic checkpoint: {e}");
                }
            }
        }
    }

    /// A checkpoint asked by mosd (`id`) or due by the period (`None`). A process that runs
    /// elsewhere is brought home first (checkpoints are taken at home).
    fn on_checkpoint(&mut self, place: Where, id: Option<u64>, file: Option<String>, then: AfterCheckpoint) -> Where {
        match place {
            Where::Home => {
                self.checkpoint_now(id, file, then);
                Where::Home
            }
            Where::Away { node, mut away } => {
                if self.pending.is_some() || self.pending_ckpt.is_some() {
                    self.checkpoint_done(id, Err("a migration or checkpoint of this process is in progress; try again".into()));
                } else if frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Recall).is_err() {
                    self.checkpoint_done(id, Err("the node running the process is unreachable".into()));
                } else {
                    self.pending_ckpt = Some((id, file, then));
                }
                Where::Away { node, away }
            }
        }
    }

    /// Checkpoints the process, which runs at home. After `chkexit`, mosrun exits (status 0).
    fn checkpoint_now(&mut self, id: Option<u64>, file: Option<String>, then: AfterCheckpoint) {
        let series = file.is_none();
        let path = file.map(std::path::PathBuf::from).unwrap_or_else(|| self.ckpt.next_path());
        let meta = checkpoint::Meta { node: self.home_node, command: self.ckpt.command().to_vec() };
        let result = checkpoint::checkpoint(self.pid, &path, &meta, then);
        if series && result.is_ok() {
            self.ckpt.taken();
        }
        let result = result.map(|d| mos_proto::control::Checkpointed {
            path: d.path.to_string_lossy().into_owned(),
            bytes: d.bytes,
            frozen_us: d.frozen_us,
            total_us: d.total_us,
        });
        let exited = then == AfterCheckpoint::Exit && result.is_ok();
        if let Ok(d) = &result {
            tracing::info!(path = %d.path, bytes = d.bytes, frozen_us = d.frozen_us, "checkpoint written");
        }
        let path_msg = result.as_ref().map(|d| d.path.clone()).unwrap_or_default();
        self.checkpoint_done(id, result.map_err(|e| e.to_string()));
        if exited {
            eprintln!("mosrun: process {} checkpointed to {path_msg} and ended (recover it with mosrun -R {path_msg})", self.pid);
            std::process::exit(0);
        }
    }

    fn deputy_failed(&mut self, mut away: Away, e: EngineError) -> i32 {
        let _ = frame::write_msg(&mut away.stream, Kind::Deputy, &DeputyMsg::Kill);
        if let EngineError::TraceeGone { code: Some(c), .. } = e {
            return c;
        }
        tracing::error!(error = %e, "the deputy failed");
        self.lost(away.deputy, "the deputy failed")
    }

    /// The remote component is gone: the process cannot continue. End the deputy.
    fn lost(&mut self, deputy: Deputy, why: &str) -> i32 {
        eprintln!("mosrun: {why}; the process is lost");
        drop(deputy);
        let _ = kill(self.pid, Signal::SIGKILL);
        self.reap()
    }
}
