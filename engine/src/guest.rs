//! The remote side of a migrated process ("guest" on this node): answers its intercepted system
//! calls (locally, from what it knows of home, or by forwarding them to the deputy), relays signals,
//! reports its exit, and sends it home when asked or when it makes a call only home can run.
use crate::capture::{self, thaw};
use crate::channel::Wire;
use crate::deputy::SpinPolicy;
use crate::policy::{self, Answer, Arg, Disposition};
use crate::ptrace::{Running, Tracee};
use crate::{mem, sys, syscall_names, Error};
use mos_proto::deputy::{Buf, DeputyMsg, ExitStatus, MAX_BUF};
use mos_proto::frame::{self, FrameError, FrameReader, Kind};
use mos_proto::migration::Reason;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
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

/// What the hosting node asks of a guest while it runs (sent from other threads of the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Send the process home now (`mosctl expel`, shutdown).
    GoHome,
    /// Ask home to move the process on to this node (the local balancer's decision).
    MoveTo(u32),
}

impl Order {
    fn encode(self) -> [u8; 5] {
        let (tag, n) = match self {
            Order::GoHome => (0u8, 0u32),
            Order::MoveTo(n) => (1, n),
        };
        let mut b = [tag, 0, 0, 0, 0];
        b[1..].copy_from_slice(&n.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Order> {
        match (b.first()?, b.get(1..5)?) {
            (0, _) => Some(Order::GoHome),
            (1, n) => Some(Order::MoveTo(u32::from_le_bytes(n.try_into().ok()?))),
            _ => None,
        }
    }
}

/// The sending end of a guest's order channel; cheap to clone, usable from any thread.
#[derive(Debug)]
pub struct Orders(std::os::unix::net::UnixDatagram);

impl Orders {
    /// Queues `o` for the guest; fails when its host loop is gone (the guest ended).
    pub fn send(&self, o: Order) -> std::io::Result<()> {
        self.0.send(&o.encode()).map(|_| ())
    }

    pub fn try_clone(&self) -> std::io::Result<Orders> {
        self.0.try_clone().map(Orders)
    }
}

/// The receiving end, polled by [`serve`].
#[derive(Debug)]
pub struct Inbox(std::os::unix::net::UnixDatagram);

/// A new order channel.
pub fn orders() -> std::io::Result<(Orders, Inbox)> {
    let (a, b) = std::os::unix::net::UnixDatagram::pair()?;
    b.set_nonblocking(true)?;
    Ok((Orders(a), Inbox(b)))
}

/// How much of a returned buffer is valid.
#[derive(Debug, Clone, Copy)]
enum Keep {
    All,
    /// `ret` elements of this size.
    RetTimes(usize),
}

/// Where the `Out`/`InOut` buffers of a forwarded call land in the remote task, in request order.
type Dests = Vec<(Vec<(u64, usize)>, Keep)>;

/// Reads a NUL-terminated string (at most PATH_MAX bytes, NUL included) from the task.
fn read_cstr(pid: Pid, addr: u64) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    let mut a = addr;
    while out.len() < libc::PATH_MAX as usize {
        // Never read across a page boundary: the next page may be unmapped.
        let chunk = (4096 - (a % 4096) as usize).min(libc::PATH_MAX as usize - out.len());
        let mut b = vec![0u8; chunk];
        mem::readv(pid, &[(a, chunk)], &mut b).map_err(|_| libc::EFAULT)?;
        if let Some(z) = b.iter().position(|c| *c == 0) {
            out.extend_from_slice(&b[..=z]);
            return Ok(out);
        }
        out.extend_from_slice(&b);
        a += chunk as u64;
    }
    Err(libc::ENAMETOOLONG)
}

/// Turns an intercepted call into a deputy request: copies the `In` data out of the task and
/// records where `Out` data goes. Returns (call number to run at home, args, buffers, out dests).
/// `iov_skip`: bytes of a readv/writev already moved by earlier requests of the same call.
fn build_request(pid: Pid, nr: u32, args: [u64; 6], specs: &[Arg], iov_skip: usize) -> Result<(u32, [u64; 6], Vec<Buf>, Dests), i32> {
    let mut a = args;
    let mut fnr = nr;
    let mut bufs = Vec::new();
    let mut dests = Vec::new();
    let mut total = 0usize;
    let mut room = |n: usize| -> Result<usize, i32> {
        let n = n.min(MAX_BUF - total);
        total += n;
        Ok(n)
    };
    let read = |addr: u64, len: usize| -> Result<Vec<u8>, i32> {
        let mut d = vec![0u8; len];
        if len > 0 {
            mem::readv(pid, &[(addr, len)], &mut d).map_err(|_| libc::EFAULT)?;
        }
        Ok(d)
    };
    for spec in specs {
        match *spec {
            Arg::Path(i) => {
                if a[i as usize] == 0 {
                    continue;
                }
                let data = read_cstr(pid, a[i as usize])?;
                if room(data.len())? < data.len() {
                    return Err(libc::ENAMETOOLONG);
                }
                bufs.push(Buf::In { arg: i, data });
            }
            Arg::In { buf, len } => {
                // A null pointer stays null at home (the kernel answers it the same way there).
                if a[buf as usize] == 0 {
                    continue;
                }
                let l = room(a[len as usize] as usize)?;
                a[len as usize] = l as u64;
                bufs.push(Buf::In { arg: buf, data: read(a[buf as usize], l)? });
            }
            Arg::InFixed { buf, size } => {
                if a[buf as usize] == 0 {
                    continue;
                }
                let l = room(size as usize)?;
                bufs.push(Buf::In { arg: buf, data: read(a[buf as usize], l)? });
            }
            Arg::Out { buf, len } => {
                let l = room(a[len as usize] as usize)?;
                a[len as usize] = l as u64;
                bufs.push(Buf::Out { arg: buf, len: l as u32, by_ret: true });
                dests.push((vec![(args[buf as usize], l)], Keep::All));
            }
            Arg::InOutFixed { .. } | Arg::InOutElems { .. } | Arg::InOutBits { .. } => {
                let (buf, want) = match *spec {
                    Arg::InOutFixed { buf, size } => (buf, size as usize),
                    Arg::InOutElems { buf, cnt, size } => (buf, (a[cnt as usize] as usize).saturating_mul(size as usize)),
                    Arg::InOutBits { buf, nfds } => (buf, (a[nfds as usize] as usize).min(65536).div_ceil(64) * 8),
                    _ => unreachable!(),
                };
                if a[buf as usize] == 0 {
                    continue;
                }
                if room(want)? < want {
                    return Err(libc::EINVAL);
                }
                bufs.push(Buf::InOut { arg: buf, data: read(a[buf as usize], want)? });
                dests.push((vec![(args[buf as usize], want)], Keep::All));
            }
            Arg::OutElems { buf, cnt, size } => {
                let want = (a[cnt as usize] as usize).saturating_mul(size as usize);
                let l = room(want)? / (size as usize) * (size as usize);
                a[cnt as usize] = (l / size as usize) as u64;
                bufs.push(Buf::Out { arg: buf, len: l as u32, by_ret: false });
                dests.push((vec![(args[buf as usize], l)], Keep::RetTimes(size as usize)));
            }
            Arg::OutFixed { buf, size } => {
                if a[buf as usize] == 0 {
                    continue;
                }
                let l = room(size as usize)?;
                bufs.push(Buf::Out { arg: buf, len: l as u32, by_ret: false });
                dests.push((vec![(args[buf as usize], l)], Keep::All));
            }
            Arg::InIov { iov, cnt } | Arg::OutIov { iov, cnt } => {
                // The first `iov_skip` bytes were moved by earlier requests of the same call.
                let mut skip = iov_skip;
                let mut vecs = Vec::new();
                let mut sum = 0usize;
                for (base, len) in read_iov(pid, a[iov as usize], a[cnt as usize])? {
                    let drop = skip.min(len);
                    skip -= drop;
                    let len = room(len - drop)?;
                    if len > 0 {
                        vecs.push((base + drop as u64, len));
                        sum += len;
                    }
                }
                // readv/writev run at home as read/write of one gathered buffer.
                a[2] = sum as u64;
                if matches!(spec, Arg::InIov { .. }) {
                    fnr = libc::SYS_write as u32;
                    let mut data = vec![0u8; sum];
                    if sum > 0 {
                        mem::readv(pid, &vecs, &mut data).map_err(|_| libc::EFAULT)?;
                    }
                    bufs.push(Buf::In { arg: 1, data });
                } else {
                    fnr = libc::SYS_read as u32;
                    bufs.push(Buf::Out { arg: 1, len: sum as u32, by_ret: true });
                    dests.push((vecs, Keep::All));
                }
            }
        }
    }
    Ok((fnr, a, bufs, dests))
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

/// How long the guest busy-polls for a reply before it sleeps (see [`SpinPolicy`]).
const REPLY_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// The kernel's "restart this call" result (an interrupted call with no handler to run).
const ERESTARTSYS: i32 = 512;

/// Size of `struct stat` on x86-64 (`st_mode` is the u32 at offset 24).
const STAT_SIZE: u32 = 144;

/// The read/write family, whose data may exceed one deputy buffer and is then moved in chunks.
#[derive(Debug, Clone, Copy)]
enum IoCall {
    /// read/write/pread64/pwrite64: buffer in args[1], count in args[2], position in args[3].
    Plain { read: bool, positioned: bool },
    /// readv/writev: iovec array in args[1], count in args[2].
    Vector { read: bool },
}

impl IoCall {
    fn of(nr: u32) -> Option<IoCall> {
        Some(match nr as libc::c_long {
            libc::SYS_read => IoCall::Plain { read: true, positioned: false },
            libc::SYS_write => IoCall::Plain { read: false, positioned: false },
            libc::SYS_pread64 => IoCall::Plain { read: true, positioned: true },
            libc::SYS_pwrite64 => IoCall::Plain { read: false, positioned: true },
            libc::SYS_readv => IoCall::Vector { read: true },
            libc::SYS_writev => IoCall::Vector { read: false },
            _ => return None,
        })
    }

    fn reads(self) -> bool {
        matches!(self, IoCall::Plain { read: true, .. } | IoCall::Vector { read: true })
    }
}

/// The iovec array at `addr` of `cnt` entries (at most IOV_MAX): (base, len) of each.
fn read_iov(pid: Pid, addr: u64, cnt: u64) -> Result<Vec<(u64, usize)>, i32> {
    let cnt = (cnt as usize).min(1024);
    let mut raw = vec![0u8; cnt * 16];
    if cnt > 0 {
        mem::readv(pid, &[(addr, cnt * 16)], &mut raw).map_err(|_| libc::EFAULT)?;
    }
    Ok(raw
        .chunks_exact(16)
        .map(|c| {
            let base = u64::from_le_bytes(c[0..8].try_into().expect("8 bytes"));
            (base, u64::from_le_bytes(c[8..16].try_into().expect("8 bytes")) as usize)
        })
        .collect())
}

/// Bytes a readv/writev call asks to move.
fn iov_total(pid: Pid, args: &[u64; 6]) -> Result<usize, i32> {
    Ok(read_iov(pid, args[1], args[2])?.iter().fold(0usize, |s, (_, l)| s.saturating_add(*l)))
}

/// The signal number when call `nr` is the process signalling itself (kill of its pid, tgkill or
/// tkill of its single thread): such a signal is delivered here, before the call returns.
fn own_signal(nr: u32, args: &[u64; 6], home_pid: u32) -> Option<i32> {
    let me = home_pid as i32;
    let (target_is_me, sig) = match nr as libc::c_long {
        libc::SYS_kill => (args[0] as i32 == me, args[1]),
        libc::SYS_tgkill => (args[0] as i32 == me && args[1] as i32 == me, args[2]),
        libc::SYS_tkill => (args[0] as i32 == me, args[1]),
        _ => return None,
    };
    // An invalid number goes home, which answers EINVAL as the kernel does.
    let sig = i32::try_from(sig).ok().filter(|s| (0..=64).contains(s))?;
    target_is_me.then_some(sig)
}

/// Copies the `Out`/`InOut` buffers of a reply into the task. Err(EFAULT) when it cannot.
fn write_outs(pid: Pid, ret: i64, dests: Dests, outs: &[Vec<u8>]) -> Result<(), i32> {
    for ((vecs, keep), data) in dests.into_iter().zip(outs) {
        let valid = match keep {
            Keep::All => data.len(),
            Keep::RetTimes(size) => (ret.max(0) as usize).saturating_mul(size).min(data.len()),
        };
        let data = &data[..valid];
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
        let n = data.len() - left;
        if n > 0 && mem::writev(pid, &ranges, &data[..n]).is_err() {
            return Err(libc::EFAULT);
        }
    }
    Ok(())
}

/// Raw result and `Out` buffers of a forwarded call.
type CallResult = (i64, Vec<Vec<u8>>);

struct Host<'a, S> {
    s: &'a mut S,
    /// Frames from home, read ahead: bytes held here belong to the stream (see `go_home`).
    rx: FrameReader,
    reply_spin: SpinPolicy,
    g: &'a Guest,
    seq: u64,
    /// Signals from home held back while a forwarded call is in flight (delivering one would
    /// restart a call that already ran at home).
    held: Vec<i32>,
    recall: bool,
    home_refused: bool,
}

impl<S: Wire> Host<'_, S> {
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
        // The reply usually comes within tens of µs: catch it without sleeping when that pays.
        self.reply_spin.spin(&mut self.rx, self.s);
        loop {
            let f = self.rx.read_frame(self.s)?;
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
        let own_sig = own_signal(nr, &args, self.g.home_pid);
        match disp {
            Disposition::Local(_) => {
                let _ = sys::notif_send(listener, n.id, Ok(0), true);
            }
            Disposition::Answer(Answer::HomePid) => answer(Ok(i64::from(self.g.home_pid))),
            Disposition::Home if self.home_refused => answer(Err(libc::ENOSYS)),
            Disposition::Home => {
                let name = syscall_names::name(nr).into_owned();
                tracing::info!(pid = pid.as_raw(), call = %name, "call must run at home: sending the process home");
                return self.go_home(Reason::Syscall { nr, name }, Some((listener, n.id)));
            }
            Disposition::Forward(_) if own_sig.is_some() => {
                // A signal the process sends itself pends before the call returns, as the kernel
                // does: it is queued on the task here, before the answer (not sent home and back).
                let sig = own_sig.unwrap_or(0);
                answer(if sig == 0 { Ok(0) } else { sys::tgkill(pid, pid, sig).map(|()| 0).map_err(|e| e as i32) });
            }
            Disposition::Forward(specs) => return self.forward_call(listener, n.id, nr, args, specs),
        }
        Ok(None)
    }

    /// Forwards one call to the deputy and answers the notification with its result. A read or
    /// write larger than one deputy buffer ([`MAX_BUF`]) is split, as the kernel would carry it
    /// out: writes continue until everything is written or a chunk comes back short; reads continue
    /// only on regular files and block devices (a pipe or socket returns what it has).
    fn forward_call(&mut self, listener: i32, id: u64, nr: u32, args: [u64; 6], specs: &[Arg]) -> Result<Option<End>, Error> {
        let pid = self.g.pid;
        let answer = |r: Result<i64, i32>| {
            let _ = sys::notif_send(listener, id, r, false);
        };
        let io = IoCall::of(nr);
        let total = match io {
            Some(IoCall::Plain { .. }) => args[2] as usize,
            Some(IoCall::Vector { .. }) => match iov_total(pid, &args) {
                Ok(t) => t,
                Err(errno) => {
                    answer(Err(errno));
                    return Ok(None);
                }
            },
            None => 0,
        };
        let mut done = 0usize;
        let result = loop {
            let mut a = args;
            let mut iov_skip = 0;
            match io {
                Some(IoCall::Plain { positioned, .. }) => {
                    a[1] = a[1].wrapping_add(done as u64);
                    a[2] -= done as u64;
                    if positioned {
                        a[3] = a[3].wrapping_add(done as u64);
                    }
                }
                Some(IoCall::Vector { .. }) => iov_skip = done,
                None => {}
            }
            let (fnr, a, bufs, dests) = match build_request(pid, nr, a, specs, iov_skip) {
                Ok(r) => r,
                Err(errno) => break if done > 0 { Ok(done as i64) } else { Err(errno) },
            };
            // For the read/write family, a[2] is now the length this request carries.
            let carried = a[2] as usize;
            // Data read from the task is only trustworthy if the task still waits for this call.
            let read_memory = bufs.iter().any(|b| matches!(b, Buf::In { .. } | Buf::InOut { .. }));
            if read_memory && !sys::notif_id_valid(listener, id) {
                return Ok(None);
            }
            let (ret, outs) = match self.forward(fnr, a, bufs)? {
                Ok(r) => r,
                Err(end) => return Ok(Some(end)),
            };
            if let Err(errno) = write_outs(pid, ret, dests, &outs) {
                break if done > 0 { Ok(done as i64) } else { Err(errno) };
            }
            if ret < 0 {
                break if done > 0 { Ok(done as i64) } else { Err((-ret) as i32) };
            }
            let Some(io) = io else { break Ok(ret) };
            done += ret as usize;
            if ret as usize != carried || done >= total || carried == 0 {
                break Ok(done as i64);
            }
            // A full chunk of a read: continue only where the kernel would have filled it all.
            if io.reads() && done == carried {
                match self.fd_fills_reads(a[0])? {
                    Ok(true) => {}
                    Ok(false) => break Ok(done as i64),
                    Err(end) => return Ok(Some(end)),
                }
            }
        };
        answer(result);
        for sig in std::mem::take(&mut self.held) {
            if let Ok(s) = Signal::try_from(sig) {
                let _ = kill(pid, s);
            }
        }
        Ok(None)
    }

    /// Does a read of descriptor `fd` at home return the whole count it asks for (until the end)?
    /// True for regular files and block devices (asked with a forwarded fstat).
    fn fd_fills_reads(&mut self, fd: u64) -> Result<Result<bool, End>, Error> {
        let bufs = vec![Buf::Out { arg: 1, len: STAT_SIZE, by_ret: false }];
        Ok(match self.forward(libc::SYS_fstat as u32, [fd, 0, 0, 0, 0, 0], bufs)? {
            Ok((0, outs)) => {
                let mode = outs.first().and_then(|st| st.get(24..28)).map(|m| u32::from_le_bytes(m.try_into().expect("4 bytes")));
                Ok(mode.is_some_and(|m| matches!(m & libc::S_IFMT, libc::S_IFREG | libc::S_IFBLK)))
            }
            Ok(_) => Ok(false),
            Err(end) => Err(end),
        })
    }

    /// Freezes the process and streams it home over the deputy channel. `held`: the notification
    /// (listener, id) of the call that sends it home, which the task waits on.
    fn go_home(&mut self, reason: Reason, held: Option<(i32, u64)>) -> Result<Option<End>, Error> {
        let start = Instant::now();
        let pid = self.g.pid;
        // A task waiting on a notification we received waits killably (WAIT_KILLABLE_RECV): the
        // interrupt cannot break that wait. Answering ERESTARTSYS once the interrupt is requested
        // lets it leave the call and stop as an interrupted call, to be restarted at home.
        let mut t = Tracee::<Running>::seize(pid)?.interrupt_with(|| {
            if let Some((listener, id)) = held {
                let _ = sys::notif_send(listener, id, Err(ERESTARTSYS), false);
            }
        })?;
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
        match capture::send(&mut self.rx.chain(self.s), &mut t, &img, frozen_at) {
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

/// Hosts a restored guest until it exits, goes home, or its home is lost. `inbox` carries the
/// hosting node's [`Order`]s.
pub fn serve<S: Wire>(stream: &mut S, g: &Guest, inbox: &Inbox) -> End {
    let mut h = Host {
        s: stream,
        rx: FrameReader::new(),
        reply_spin: SpinPolicy::new(REPLY_SPIN),
        g,
        seq: 0,
        held: Vec::new(),
        recall: false,
        home_refused: false,
    };
    // The task and this thread hand over each call like a synchronous call, on one CPU.
    sys::notif_sync_wake_up(g.listener.as_raw_fd());
    loop {
        if h.recall {
            h.recall = false;
            match h.go_home(Reason::Recall, None) {
                Ok(Some(end)) => return end,
                Ok(None) => {}
                Err(e) => {
                    kill_and_reap(g.pid);
                    return End::Killed(format!("recall failed: {e}"));
                }
            }
        }
        // A message from home already read ahead is handled without waiting for anything.
        let held = h.rx.has_frame() || h.s.buffered();
        let (sock_ready, notif_ready, exit_ready, order_ready) = {
            let mut fds = [
                PollFd::new(h.s.as_fd(), PollFlags::POLLIN),
                PollFd::new(g.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(g.pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(inbox.0.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, if held { PollTimeout::ZERO } else { PollTimeout::NONE }) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    kill_and_reap(g.pid);
                    return End::Killed(format!("poll failed: {e}"));
                }
            }
            let r = |f: &PollFd| f.revents().is_some_and(|e| !e.is_empty());
            (held || r(&fds[0]), r(&fds[1]), r(&fds[2]), r(&fds[3]))
        };
        if order_ready {
            let mut b = [0u8; 8];
            while let Ok(n) = inbox.0.recv(&mut b) {
                match Order::decode(&b[..n]) {
                    Some(Order::GoHome) => h.recall = true,
                    Some(Order::MoveTo(node)) => {
                        if let Err(e) = h.send(&DeputyMsg::Reroute { node }) {
                            tracing::warn!(error = %e, "could not ask home to move the process on");
                        }
                    }
                    None => tracing::warn!("malformed order for a guest; ignored"),
                }
            }
            if h.recall {
                continue;
            }
        }
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
            // A forwarded call reads home's messages until its reply (a Recall or Signal among
            // them is handled there): the socket readiness seen before may be stale. Poll again.
            continue;
        }
        if sock_ready {
            match h.rx.read_frame(h.s).and_then(|f| f.expect::<DeputyMsg>(Kind::Deputy)) {
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
