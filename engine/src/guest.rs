//! The remote side of a migrated process ("guest" on this node): answers its intercepted system
//! calls (locally, from what it knows of home, or by forwarding them to the deputy), relays signals,
//! reports its exit, and sends it home when asked or when it makes a call only home can run.
use crate::capture::{self, thaw};
use crate::policy::{self, Answer, Disposition, Shape};
use crate::ptrace::{Running, Tracee};
use crate::{mem, sys, syscall_names, Error};
use mos_proto::deputy::{Buf, DeputyMsg, ExitStatus, MAX_BUF};
use mos_proto::frame::{self, FrameError, Kind};
use mos_proto::migration::Reason;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

/// A restored, running remote component.
#[derive(Debug)]
pub struct Guest {
    pub pid: Pid,
    pub listener: OwnedFd,
    pub pidfd: OwnedFd,
    pub home_pid: u32,
    pub home_node: u32,
}

/// How hosting ended.
#[derive(Debug)]
pub enum End {
    Exited(ExitStatus),
    /// The process went home (stats of that migration).
    WentHome(mos_proto::migration::Stats),
    /// The deputy channel broke or home asked: the remote copy was killed.
    Killed(String),
}

fn reap(pid: Pid) -> Option<ExitStatus> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => return Some(ExitStatus::Code(c)),
            Ok(WaitStatus::Signaled(_, s, core)) => return Some(ExitStatus::Signal { sig: s as i32, core }),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

fn kill_and_reap(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, Some(WaitPidFlag::__WALL));
}

/// Raw result and `Out` buffers of a forwarded call.
type CallResult = (i64, Vec<Vec<u8>>);

struct Host<'a, S> {
    s: &'a mut S,
    g: &'a Guest,
    seq: u64,
    /// Signals from home held back while a forwarded call is in flight (delivering one would
    /// restart a call that already ran at home).
    held: Vec<i32>,
    recall: bool,
    home_refused: bool,
}

impl<S: Read + Write + AsFd> Host<'_, S> {
    fn send(&mut self, m: &DeputyMsg) -> Result<(), Error> {
        frame::write_msg(self.s, Kind::Deputy, m)?;
        Ok(())
    }

    /// Handles a home message that may arrive at any time. Returns Some(end) when hosting stops.
    fn on_home_msg(&mut self, m: DeputyMsg, in_call: bool) -> Option<End> {
        match m {
            DeputyMsg::Signal { sig } if in_call => self.held.push(sig),
            DeputyMsg::Signal { sig } => {
                if let Ok(s) = Signal::try_from(sig) {
                    let _ = kill(self.g.pid, s);
                }
            }
            DeputyMsg::Recall => self.recall = true,
            DeputyMsg::Kill => {
                kill_and_reap(self.g.pid);
                return Some(End::Killed("home asked to end the process".into()));
            }
            other => tracing::warn!(?other, "unexpected deputy message from home; ignored"),
        }
        None
    }

    fn forward(&mut self, nr: u32, args: [u64; 6], bufs: Vec<Buf>) -> Result<Result<CallResult, End>, Error> {
        self.seq += 1;
        let seq = self.seq;
        self.send(&DeputyMsg::Syscall { seq, nr, args, bufs })?;
        loop {
            let f = frame::read_frame(self.s)?;
            match f.expect::<DeputyMsg>(Kind::Deputy)? {
                DeputyMsg::Reply { seq: s, ret, outs } if s == seq => return Ok(Ok((ret, outs))),
                DeputyMsg::Reply { seq: s, .. } => tracing::warn!(s, seq, "reply out of sequence; ignored"),
                m => {
                    if let Some(end) = self.on_home_msg(m, true) {
                        return Ok(Err(end));
                    }
                }
            }
        }
    }

    /// Handles one notification. Returns Some(end) when hosting stops.
    fn on_notif(&mut self, listener: i32) -> Result<Option<End>, Error> {
        let n = match sys::notif_recv(listener) {
            Ok(n) => n,
            // The task was interrupted or died before we read it.
            Err(_) => return Ok(None),
        };
        let nr = n.data.nr as u32;
        let args = n.data.args;
        let pid = self.g.pid;
        let answer = |r: Result<i64, i32>| {
            let _ = sys::notif_send(listener, n.id, r, false);
        };
        let disp = if n.data.arch == 0xc000_003e { policy::classify(nr, &args) } else { Disposition::Home };
        match disp {
            Disposition::Local(_) => {
                let _ = sys::notif_send(listener, n.id, Ok(0), true);
            }
            Disposition::Answer(Answer::HomePid) => answer(Ok(i64::from(self.g.home_pid))),
            Disposition::Home if self.home_refused => answer(Err(libc::ENOSYS)),
            Disposition::Home => {
                let name = syscall_names::name(nr).into_owned();
                tracing::info!(pid = pid.as_raw(), call = %name, "call must run at home: sending the process home");
                return self.go_home(Reason::Syscall { nr, name });
            }
            Disposition::Forward(shape) => {
                let mut a = args;
                let mut bufs = Vec::new();
                let mut scatter: Option<Vec<(u64, usize)>> = None;
                let mut fnr = nr;
                match shape {
                    Shape::Plain => {}
                    Shape::InBuf { buf, len } => {
                        let l = (a[len as usize] as usize).min(MAX_BUF);
                        let mut data = vec![0u8; l];
                        if l > 0 && mem::readv(pid, &[(a[buf as usize], l)], &mut data).is_err() {
                            answer(Err(libc::EFAULT));
                            return Ok(None);
                        }
                        a[len as usize] = l as u64;
                        bufs.push(Buf::In { arg: buf, data });
                    }
                    Shape::OutBuf { buf, len } => {
                        let l = (a[len as usize] as usize).min(MAX_BUF);
                        a[len as usize] = l as u64;
                        bufs.push(Buf::Out { arg: buf, len: l as u32, by_ret: true });
                        scatter = Some(vec![(args[buf as usize], l)]);
                    }
                    Shape::InIov { iov, cnt } | Shape::OutIov { iov, cnt } => {
                        let cnt = (a[cnt as usize] as usize).min(1024);
                        let mut raw = vec![0u8; cnt * 16];
                        if cnt > 0 && mem::readv(pid, &[(a[iov as usize], cnt * 16)], &mut raw).is_err() {
                            answer(Err(libc::EFAULT));
                            return Ok(None);
                        }
                        let mut vecs = Vec::new();
                        let mut total = 0usize;
                        for c in raw.chunks_exact(16) {
                            let base = u64::from_le_bytes(c[0..8].try_into().expect("8"));
                            let len = (u64::from_le_bytes(c[8..16].try_into().expect("8")) as usize).min(MAX_BUF - total);
                            if len > 0 {
                                vecs.push((base, len));
                                total += len;
                            }
                        }
                        // readv/writev become read/write of one gathered buffer at home.
                        fnr = if matches!(shape, Shape::InIov { .. }) { libc::SYS_write as u32 } else { libc::SYS_read as u32 };
                        a[2] = total as u64;
                        if matches!(shape, Shape::InIov { .. }) {
                            let mut data = vec![0u8; total];
                            if total > 0 && mem::readv(pid, &vecs, &mut data).is_err() {
                                answer(Err(libc::EFAULT));
                                return Ok(None);
                            }
                            bufs.push(Buf::In { arg: 1, data });
                        } else {
                            bufs.push(Buf::Out { arg: 1, len: total as u32, by_ret: true });
                            scatter = Some(vecs);
                        }
                    }
                }
                if !sys::notif_id_valid(listener, n.id) {
                    return Ok(None);
                }
                let (ret, outs) = match self.forward(fnr, a, bufs)? {
                    Ok(r) => r,
                    Err(end) => return Ok(Some(end)),
                };
                if let (Some(vecs), Some(data)) = (scatter, outs.first()) {
                    let mut left = data.len();
                    let mut ranges = Vec::new();
                    for (b, l) in vecs {
                        if left == 0 {
                            break;
                        }
                        let k = l.min(left);
                        ranges.push((b, k));
                        left -= k;
                    }
                    if !data.is_empty() && mem::writev(pid, &ranges, data).is_err() {
                        answer(Err(libc::EFAULT));
                        return Ok(None);
                    }
                }
                answer(if ret < 0 { Err((-ret) as i32) } else { Ok(ret) });
                for sig in std::mem::take(&mut self.held) {
                    if let Ok(s) = Signal::try_from(sig) {
                        let _ = kill(pid, s);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Freezes the process and streams it home over the deputy channel.
    fn go_home(&mut self, reason: Reason) -> Result<Option<End>, Error> {
        let start = Instant::now();
        let pid = self.g.pid;
        let mut t = Tracee::<Running>::seize(pid)?.interrupt()?;
        let frozen_at = Instant::now();
        let img = match capture::capture(&mut t, self.g.home_pid, self.g.home_node, reason) {
            Ok(i) => i,
            Err(e) => {
                // Cannot capture: keep running here; calls that need home now fail with ENOSYS.
                tracing::error!(error = %e, "cannot capture the process to send it home");
                self.home_refused = true;
                let regs = t.regs()?;
                let mut r = regs;
                crate::ptrace::fixup_restart(&mut r, true);
                thaw(t, r)?;
                return Ok(None);
            }
        };
        match capture::send(self.s, &mut t, &img, frozen_at) {
            Ok(mut sent) => {
                sent.stats.total_us = start.elapsed().as_micros() as u64;
                t.kill();
                Ok(Some(End::WentHome(sent.stats)))
            }
            Err(e @ (Error::Refused(_) | Error::PeerFailed(_))) => {
                tracing::error!(error = %e, "home did not take the process back; it keeps running here");
                self.home_refused = true;
                thaw(t, img.home_regs)?;
                Ok(None)
            }
            Err(e) => {
                // The channel to home is gone: without its deputy the process cannot go on.
                t.kill();
                Ok(Some(End::Killed(format!("lost the deputy channel while sending the process home: {e}"))))
            }
        }
    }
}

/// Hosts a restored guest until it exits, goes home, or its home is lost.
pub fn serve<S: Read + Write + AsFd>(stream: &mut S, g: &Guest) -> End {
    let mut h = Host { s: stream, g, seq: 0, held: Vec::new(), recall: false, home_refused: false };
    loop {
        if h.recall {
            h.recall = false;
            match h.go_home(Reason::Recall) {
                Ok(Some(end)) => return end,
                Ok(None) => {}
                Err(e) => {
                    kill_and_reap(g.pid);
                    return End::Killed(format!("recall failed: {e}"));
                }
            }
        }
        let (sock_ready, notif_ready, exit_ready) = {
            let mut fds = [
                PollFd::new(h.s.as_fd(), PollFlags::POLLIN),
                PollFd::new(g.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(g.pidfd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    kill_and_reap(g.pid);
                    return End::Killed(format!("poll failed: {e}"));
                }
            }
            let r = |f: &PollFd| f.revents().is_some_and(|e| !e.is_empty());
            (r(&fds[0]), r(&fds[1]), r(&fds[2]))
        };
        if exit_ready {
            if let Some(status) = reap(g.pid) {
                let _ = h.send(&DeputyMsg::Exited { status });
                return End::Exited(status);
            }
        }
        if notif_ready {
            match h.on_notif(g.listener.as_raw_fd()) {
                Ok(Some(end)) => return end,
                Ok(None) => {}
                Err(e) => {
                    kill_and_reap(g.pid);
                    return End::Killed(format!("deputy channel failed: {e}"));
                }
            }
        }
        if sock_ready {
            match frame::read_frame(h.s).and_then(|f| f.expect::<DeputyMsg>(Kind::Deputy)) {
                Ok(m) => {
                    if let Some(end) = h.on_home_msg(m, false) {
                        return end;
                    }
                }
                Err(e) => {
                    kill_and_reap(g.pid);
                    let why = if matches!(e, FrameError::Closed) {
                        "home closed the deputy channel".to_string()
                    } else {
                        format!("deputy channel failed: {e}")
                    };
                    return End::Killed(why);
                }
            }
        }
    }
}
