//! Whole-migration procedures used by the home supervisor (mosrun) and the migration server (mosd).
use crate::capture::{self, Held};
use crate::channel::Channel;
use crate::deputy::Deputy;
use crate::guest::Guest;
use crate::ptrace::{Stopped, Tracee};
use crate::restore::{self, Options};
use crate::{sys, Error};
use mos_proto::control::Mode;
use mos_proto::deputy::DeputyMsg;
use mos_proto::frame::{self, Kind};
use mos_proto::migration::*;
use mos_proto::secure::Credential;
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a peer may stay silent during a migration before it is given up on.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// A migration that did not happen. `at_home` says whether the process is intact and running at
/// home (always true for a failed move out of home).
#[derive(Debug, thiserror::Error)]
#[error("{source}{}", match (&source, *at_home) {
    (Error::Ended { .. }, _) => "",
    (_, true) => " (the process keeps running at home)",
    (_, false) => " (the process could not be kept)",
})]
pub struct Failure {
    #[source]
    pub source: Error,
    pub at_home: bool,
}

/// A process that now runs elsewhere: its deputy and the channel to its remote component.
#[derive(Debug)]
pub struct Away {
    pub deputy: Deputy,
    pub stream: Channel,
    pub remote_pid: u32,
    pub stats: Stats,
    /// Large areas of the home copy still to free, a chunk at a time ([`Away::free_some`]).
    pub to_free: Vec<(u64, u64)>,
    /// The pre-copy userfaultfd, closed once the home copy is freed (closing it before would
    /// make the kernel unprotect every page of the copy first).
    pub armed: Option<crate::precopy::Armed>,
}

/// Areas of the home copy at least this large are freed after the deputy serves.
const FREE_LATER_MIN: u64 = 4 << 20;
/// Freed per [`Away::free_some`] call (about 1 ms of munmap here).
const FREE_CHUNK: u64 = 16 << 20;

impl Away {
    /// Frees one chunk of the home copy through the serving deputy; returns whether more is left.
    /// The supervisor calls it between forwarded calls, so that none waits for the whole release.
    pub fn free_some(&mut self) -> bool {
        if let Some((s, e)) = self.to_free.pop() {
            if let Err(err) = self.deputy.execute(libc::SYS_munmap as u32, [s, e - s, 0, 0, 0, 0], &[]) {
                tracing::debug!(error = %err, "freeing the home copy");
            }
        }
        if self.to_free.is_empty() {
            self.armed = None;
        }
        !self.to_free.is_empty()
    }
}

/// Data unacknowledged this long ends a connection (its peer is gone: powered off, partitioned).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Dead-peer detection on a migration or deputy connection, which outlives the migration: the
/// kernel drops the connection when sent data stays unacknowledged for [`PEER_TIMEOUT`]
/// (TCP_USER_TIMEOUT; a blocked write would otherwise wait ~15 min for TCP to give up), and
/// keepalive probes an idle one (10 s idle, then every 5 s, 3 probes) so that a remote node that
/// vanished while its guest computes is noticed too.
pub fn tune(stream: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = stream.set_nodelay(true);
    let _ = setsockopt(stream, sockopt::TcpUserTimeout, &(PEER_TIMEOUT.as_millis() as u32));
    let _ = setsockopt(stream, sockopt::KeepAlive, &true);
    let _ = setsockopt(stream, sockopt::TcpKeepIdle, &10);
    let _ = setsockopt(stream, sockopt::TcpKeepInterval, &5);
    let _ = setsockopt(stream, sockopt::TcpKeepCount, &3);
}

/// Moves process `pid` from home to the mosd at `target`, with pre-copy (pages stream while the
/// process runs; [`crate::precopy`]) or stop-and-copy, over a secure connection when `cred` (from
/// this node's mosd) is given. On failure the process continues at home as if nothing happened.
pub fn migrate_out(pid: Pid, home_node: u32, target: SocketAddr, mode: Mode, cred: Option<&Credential>) -> Result<Away, Failure> {
    let start = Instant::now();
    let fail = |e: Error| Failure { source: e, at_home: true };
    // Connect first: an unreachable node costs the process no freeze at all.
    let mut stream = crate::channel::connect(target, cred).map_err(fail)?;
    let _ = stream.set_read_timeout(Some(MIGRATION_TIMEOUT));
    // A target that vanishes without a reset (powered off, partitioned) must not keep the process
    // frozen: sends time out too, and the process resumes at home.
    let _ = stream.set_write_timeout(Some(MIGRATION_TIMEOUT));
    let (mut t, img, sent, uffd) = match mode {
        Mode::StopCopy => {
            let (t, img, sent) = stop_copy(&mut stream, pid, home_node)?;
            (t, img, sent, None)
        }
        Mode::Lazy => {
            let (t, img, sent) = lazy(&mut stream, pid, home_node)?;
            (t, img, sent, None)
        }
        // Without dirty tracking (an older kernel, or the process cannot take one more
        // descriptor) the move is stop-and-copy.
        Mode::PreCopy if !crate::precopy::supported() => {
            let (t, img, sent) = stop_copy(&mut stream, pid, home_node)?;
            (t, img, sent, None)
        }
        Mode::PreCopy => match crate::precopy::send(&mut stream, pid, home_node, crate::precopy::STOP_RULE) {
            Ok(done) => {
                let (t, img, sent, uffd) = done.into_parts();
                (t, img, sent, Some(uffd))
            }
            Err(n) if n.untracked => {
                tracing::info!(pid = pid.as_raw(), error = %n.error, "no dirty tracking: stop-and-copy");
                let (t, img, sent) = stop_copy(&mut stream, pid, home_node)?;
                (t, img, sent, None)
            }
            // A process that ends while its pages stream (it was never frozen) is not a failure
            // of the move: say so rather than name the /proc file that vanished with it.
            Err(_) if crate::procfs::ended(pid) => return Err(Failure { source: Error::Ended { pid: pid.as_raw() }, at_home: true }),
            Err(n) => return Err(Failure { source: n.error, at_home: n.at_home }),
        },
    };
    let pending = std::mem::take(&mut t.pending_signals);
    // Large areas are freed later, between forwarded calls.
    let keep: Vec<(u64, u64)> =
        img.maps.iter().filter(|m| !m.is_special() && m.len() >= FREE_LATER_MIN).map(|m| (m.start, m.end)).collect();
    let deputy = Deputy::release_keeping(t, img.context.rseq.as_ref(), &keep).map_err(|e| Failure { source: e, at_home: false })?;
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    for s in pending {
        let _ = frame::write_msg(&mut stream, Kind::Deputy, &DeputyMsg::Signal { sig: s as i32 });
    }
    let mut stats = sent.stats;
    stats.total_us = start.elapsed().as_micros() as u64;
    let mut to_free = Vec::new();
    // A deputy without shared memory (trap mode) was released the old way: everything is unmapped
    // already, and its own area may lie where a kept one was.
    let keep = if deputy.served() { keep } else { Vec::new() };
    for (s, e) in keep.iter().rev() {
        let mut a = *e;
        while a > *s {
            let b = a.saturating_sub(FREE_CHUNK).max(*s);
            to_free.push((b, a));
            a = b;
        }
    }
    to_free.reverse();
    // With nothing left to free, the userfaultfd has nothing left to unprotect: close it now.
    let armed = if to_free.is_empty() { None } else { uffd };
    Ok(Away { deputy, stream, remote_pid: sent.remote_pid, stats, to_free, armed })
}

/// Freezes the process (native engine if there is one, else ptrace) and captures its context and
/// memory map; on failure it runs on as it was.
fn freeze_and_capture(pid: Pid, home_node: u32) -> Result<(Held, capture::Image, Instant), Failure> {
    let fail = |e: Error| Failure { source: e, at_home: true };
    let mut h = capture::freeze_held(pid).map_err(fail)?;
    let frozen_at = Instant::now();
    match capture::capture_held(&mut h, pid.as_raw() as u32, home_node, Reason::Manual) {
        Ok(img) => {
            tracing::debug!(pid = pid.as_raw(), engine = h.engine(), "frozen and captured");
            Ok((h, img, frozen_at))
        }
        Err(e) => {
            // Registers are untouched by capture; resume as it was.
            let _ = capture::resume_held(h);
            Err(fail(e))
        }
    }
}

/// Stop-and-copy: freeze, capture, send everything, wait for `Resumed`. Returns the process
/// held by ptrace (for its deputy), whichever engine froze it.
fn stop_copy<S: std::io::Read + std::io::Write>(
    stream: &mut S,
    pid: Pid,
    home_node: u32,
) -> Result<(Tracee<Stopped>, capture::Image, capture::Sent), Failure> {
    let fail = |e: Error| Failure { source: e, at_home: true };
    let (mut h, img, frozen_at) = freeze_and_capture(pid, home_node)?;
    let mut pending = std::mem::take(h.pending_signals());
    let sent = match capture::send_mode(stream, pid, &mut pending, &img, frozen_at, false) {
        Ok((s, _)) => s,
        Err(e) => {
            *h.pending_signals() = pending;
            capture::thaw_held(h, img.home_regs).map_err(|te| Failure { source: te, at_home: false })?;
            return Err(fail(e));
        }
    };
    let engine = h.engine();
    // The remote copy runs: the home task becomes the deputy, held by ptrace.
    let mut t = h.into_traced().map_err(|e| Failure { source: e, at_home: false })?;
    t.pending_signals.extend(pending);
    tracing::info!(pid = pid.as_raw(), engine, frozen_us = sent.stats.frozen_us, "moved by stop-and-copy");
    Ok((t, img, sent))
}

/// Post-copy: freeze, send everything but the lazy areas, wait for `Resumed`, then serve the lazy
/// phase ([`crate::postcopy`]) with the process frozen here. If that fails, the remote copy is
/// given up and the process resumes here.
fn lazy(stream: &mut Channel, pid: Pid, home_node: u32) -> Result<(Tracee<Stopped>, capture::Image, capture::Sent), Failure> {
    let fail = |e: Error| Failure { source: e, at_home: true };
    let (mut h, img, frozen_at) = freeze_and_capture(pid, home_node)?;
    let back_home = |h: Held, e: Error| match capture::thaw_held(h, img.home_regs) {
        Ok(()) => fail(e),
        Err(te) => Failure { source: te, at_home: false },
    };
    let mut pending = std::mem::take(h.pending_signals());
    let (mut sent, areas) = match capture::send_mode(stream, pid, &mut pending, &img, frozen_at, true) {
        Ok(s) => s,
        Err(e) => {
            *h.pending_signals() = pending;
            return Err(back_home(h, e));
        }
    };
    *h.pending_signals() = pending;
    if !areas.is_empty() {
        let resumed_at = Instant::now();
        match crate::postcopy::serve_home(stream, pid, &areas, resumed_at) {
            Ok(s) => {
                sent.stats.lazy_us = s.lazy_us;
                sent.stats.faults = s.faults;
                sent.stats.pages_sent += s.pages;
                sent.stats.bytes_sent += s.bytes;
            }
            Err(e) => {
                tracing::warn!(pid = pid.as_raw(), error = %e, "lazy phase failed: the process resumes at home");
                return Err(back_home(h, e));
            }
        }
    }
    let t = h.into_traced().map_err(|e| Failure { source: e, at_home: false })?;
    Ok((t, img, sent))
}

/// Receives a process coming home (its `Offer` already read from the deputy channel) into the
/// deputy. On success the process runs natively at home again. On failure the deputy is put back
/// in its released state and the remote copy keeps running.
/// A return home that did not happen.
#[derive(Debug)]
pub enum NotHome {
    /// The remote copy keeps running; here is the deputy, released again.
    StillAway(Error, Box<Deputy>),
    /// The home task could not be made a deputy again (or died): the process cannot go on.
    Lost(Error),
}

pub fn receive_home(away: &mut Channel, deputy: Deputy, offer: &Offer) -> Result<(Stats, Pid), NotHome> {
    let start = Instant::now();
    let mut t = deputy.into_tracee();
    let pid = t.pid();
    let redeputy = |t: Tracee<Stopped>, e: Error| -> Result<(Stats, Pid), NotHome> {
        match Deputy::release(t, None) {
            Ok(d) => Err(NotHome::StillAway(e, Box::new(d))),
            Err(e2) => Err(NotHome::Lost(Error::Restore(format!("deputy of {pid} lost after a failed return home: {e}; then {e2}")))),
        }
    };
    let accept = match restore::check_offer(&t, offer) {
        Ok(a) => a,
        Err(reason) => {
            let _ = frame::write_msg(away, Kind::Refuse, &Refuse { reason: reason.clone() });
            return redeputy(t, Error::Refused(reason));
        }
    };
    if let Err(e) = frame::write_msg(away, Kind::Accept, &accept) {
        return redeputy(t, e.into());
    }
    let _ = away.set_read_timeout(Some(MIGRATION_TIMEOUT));
    let r = restore::receive(away, offer, &mut t, Options { set_exe: false, install_filter: false, lazy: false });
    let _ = away.set_read_timeout(None);
    let got = match r {
        Ok((_, got)) => got,
        Err(e) => {
            let _ = frame::write_msg(away, Kind::Failed, &Failed { reason: e.to_string() });
            return redeputy(t, e);
        }
    };
    // Home always wins from here: even if Resumed cannot be sent, the remote copy dies with the channel.
    let _ = frame::write_msg(away, Kind::Resumed, &Resumed { remote_pid: pid.as_raw() as u32 });
    let pending = std::mem::take(&mut t.pending_signals);
    t.detach(None).map_err(NotHome::Lost)?;
    for s in pending {
        let _ = nix::sys::signal::kill(pid, s);
    }
    let stats = Stats {
        frozen_us: start.elapsed().as_micros() as u64,
        total_us: start.elapsed().as_micros() as u64,
        rounds: 1,
        pages_sent: got.pages,
        bytes_sent: got.bytes,
        ..Stats::default()
    };
    Ok((stats, pid))
}

/// Serves an incoming migration on this node: reads the `Offer`, forks a stub with the process's
/// uid/gid, checks the offer, rebuilds the process in the stub with its seccomp filter, answers
/// `Resumed` and lets it run. On any error the stub is killed and the sender keeps the process.
/// `admit` may refuse the offer first (a blocked node, not enough memory), with the reason.
pub fn accept_guest(stream: &mut Channel, admit: impl FnOnce(&Offer) -> Result<(), String>) -> Result<(Guest, Stats), Error> {
    accept_guest_with(stream, admit, |_, _| {})
}

/// Like [`accept_guest`]; `resumed` runs just before `Resumed` is sent (the sender reports the
/// move done as soon as it reads it), e.g. to list the guest here by then. If `Err` comes after
/// it ran, the guest did not stay.
pub fn accept_guest_with(
    stream: &mut Channel,
    admit: impl FnOnce(&Offer) -> Result<(), String>,
    resumed: impl FnOnce(&Guest, &Stats),
) -> Result<(Guest, Stats), Error> {
    tune(stream.tcp());
    let _ = stream.set_read_timeout(Some(MIGRATION_TIMEOUT));
    let offer: Offer = frame::read_frame(stream)?.expect(Kind::Offer)?;
    let r = accept_offer(stream, offer, admit, resumed, None);
    let _ = stream.set_read_timeout(None);
    r
}

/// The stream of the local copy that makes a forked child (see [`crate::guest::ForkSlot`]): the
/// parent's host sends `child_tid` first (u64 LE: where the child's fork stores its tid, 0 for
/// nowhere), then the parent's image as a migration stream.
pub fn accept_fork_child<S: Read + Write>(stream: &mut S) -> Result<(Guest, Stats), Error> {
    let mut b = [0u8; 8];
    stream.read_exact(&mut b)?;
    let child_tid = u64::from_le_bytes(b);
    let offer: Offer = frame::read_frame(stream)?.expect(Kind::Offer)?;
    let (guest, stats, lazy) = receive_offer(stream, offer, |_| Ok(()), |_, _| {}, Some(child_tid))?;
    if lazy.is_some() {
        // The local copy of a forking guest is always sent whole.
        let _ = nix::sys::signal::kill(guest.pid, nix::sys::signal::Signal::SIGKILL);
        return Err(Error::Restore("a forked child's copy asked for a lazy phase".into()));
    }
    Ok((guest, stats))
}

/// [`accept_guest_with`] once the `Offer` is read. `child_tid`: the process is a forked child; its
/// home pid is stored at that address (unless 0) before it runs, as CLONE_CHILD_SETTID does.
/// A post-copy's lazy phase is served here.
pub fn accept_offer(
    stream: &mut Channel,
    offer: Offer,
    admit: impl FnOnce(&Offer) -> Result<(), String>,
    resumed: impl FnOnce(&Guest, &Stats),
    child_tid: Option<u64>,
) -> Result<(Guest, Stats), Error> {
    let start = Instant::now();
    let (guest, mut stats, lazy) = receive_offer(stream, offer, admit, resumed, child_tid)?;
    let Some((uffd, areas)) = lazy else { return Ok((guest, stats)) };
    match crate::postcopy::serve_guest(stream, uffd, &areas) {
        Ok(f) => {
            stats.total_us = start.elapsed().as_micros() as u64;
            stats.faults = f.faults;
            stats.pages_sent += f.pages;
            stats.bytes_sent += f.bytes;
            Ok((guest, stats))
        }
        Err(e) => {
            // Home resumes the process; this copy must not run on.
            let _ = nix::sys::signal::kill(guest.pid, nix::sys::signal::Signal::SIGKILL);
            Err(e)
        }
    }
}

/// The userfaultfd and the lazy areas of a post-copy whose lazy phase is still to serve.
type LazyPhase = Option<(std::os::fd::OwnedFd, Vec<(u64, u64)>)>;

/// Receives a process into a new stub and resumes it; returns what a post-copy still needs.
fn receive_offer<S: Read + Write>(
    stream: &mut S,
    offer: Offer,
    admit: impl FnOnce(&Offer) -> Result<(), String>,
    resumed: impl FnOnce(&Guest, &Stats),
    child_tid: Option<u64>,
) -> Result<(Guest, Stats, LazyPhase), Error> {
    let start = Instant::now();
    let refuse = |stream: &mut S, reason: String| {
        let _ = frame::write_msg(stream, Kind::Refuse, &Refuse { reason: reason.clone() });
        Error::Refused(reason)
    };
    if let Err(reason) = admit(&offer) {
        return Err(refuse(stream, reason));
    }
    let child =
        sys::fork_stub(sys::StubIdentity { uid: offer.uid, gid: offer.gid }).map_err(|e| Error::Sys { what: "fork", pid: 0, errno: e })?;
    let mut t = match Tracee::<Stopped>::from_traceme_child(child) {
        Ok(t) => t,
        Err(e) => return Err(refuse(stream, format!("cannot start a stub process: {e}"))),
    };
    // Taken now, used by a post-copy only.
    let uffd = crate::postcopy::take_stub_uffd(&mut t);
    let accept = match restore::check_offer(&t, &offer) {
        Ok(a) => a,
        Err(reason) => {
            t.kill();
            return Err(refuse(stream, reason));
        }
    };
    crate::fault::point("after-offer");
    if let Err(e) = frame::write_msg(stream, Kind::Accept, &accept) {
        t.kill();
        return Err(e.into());
    }
    crate::fault::point("after-accept");
    let (listener, got) = match restore::receive(stream, &offer, &mut t, Options { set_exe: true, install_filter: true, lazy: true }) {
        Ok((Some(l), got)) => (l, got),
        Ok((None, _)) => unreachable!("install_filter was requested"),
        Err(e) => {
            let _ = frame::write_msg(stream, Kind::Failed, &Failed { reason: e.to_string() });
            t.kill();
            return Err(e);
        }
    };
    if !got.lazy.is_empty() {
        let armed = match &uffd {
            Some(u) => crate::postcopy::check_untouched(t.pid(), &got.lazy, &got.filled)
                .and_then(|()| crate::postcopy::arm_guest(u, t.pid(), &got.lazy)),
            None => Err(Error::Restore("this node cannot take a lazy migration (no userfaultfd)".into())),
        };
        if let Err(e) = armed {
            let _ = frame::write_msg(stream, Kind::Failed, &Failed { reason: e.to_string() });
            t.kill();
            return Err(e);
        }
    }
    crate::fault::point("before-resumed");
    let pid = t.pid();
    if let Some(addr) = child_tid.filter(|a| *a != 0) {
        if let Err(e) = crate::mem::write_mem(pid, addr, &(offer.home_pid as i32).to_le_bytes()) {
            let _ = frame::write_msg(stream, Kind::Failed, &Failed { reason: e.to_string() });
            t.kill();
            return Err(e);
        }
    }
    let pidfd = sys::pidfd_open(pid).map_err(|e| Error::Sys { what: "pidfd_open", pid: pid.as_raw(), errno: e })?;
    let stats =
        Stats { total_us: start.elapsed().as_micros() as u64, rounds: 1, pages_sent: got.pages, bytes_sent: got.bytes, ..Stats::default() };
    let guest = Guest { pid, listener, pidfd, home_pid: offer.home_pid, home_node: offer.home_node };
    resumed(&guest, &stats);
    if let Err(e) = frame::write_msg(stream, Kind::Resumed, &Resumed { remote_pid: pid.as_raw() as u32 }) {
        t.kill();
        return Err(e.into());
    }
    t.detach(None)?;
    let lazy = match (got.lazy.is_empty(), uffd) {
        (false, Some(uffd)) => Some((uffd, got.lazy)),
        _ => None,
    };
    Ok((guest, stats, lazy))
}
