//! The remote side of a migrated process ("guest" on this node): answers its intercepted system
//! calls (locally, from what it knows of home, or by forwarding them to the deputy), relays signals,
//! reports its exit, and sends it home when asked or when it makes a call only home can run.
use crate::capture::{self, thaw};
use crate::channel::Wire;
use crate::deputy::SpinPolicy;
use crate::policy::{self, Answer, Arg, Disposition};
use crate::ptrace::{Running, Tracee};
use crate::{mem, sys, syscall_names, Error};
use mos_proto::deputy::{Buf, DeputyMsg, ExitStatus, OnUnsupported, MAX_BUF, NO_ARG};
use mos_proto::frame::{self, FrameError, FrameReader, Kind};
use mos_proto::migration::Reason;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::Write;
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
    /// A [`ForkSlot`] was queued: wakes the host loop, which drops it unless it is forking.
    Slot,
    /// A [`LaneSlot`] was queued: the host loop takes it if its token is the one it offered.
    Lane,
}

impl Order {
    fn encode(self) -> [u8; 5] {
        let (tag, n) = match self {
            Order::GoHome => (0u8, 0u32),
            Order::MoveTo(n) => (1, n),
            Order::Slot => (2, 0),
            Order::Lane => (3, 0),
        };
        let mut b = [tag, 0, 0, 0, 0];
        b[1..].copy_from_slice(&n.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Order> {
        match (b.first()?, b.get(1..5)?) {
            (0, _) => Some(Order::GoHome),
            (1, n) => Some(Order::MoveTo(u32::from_le_bytes(n.try_into().ok()?))),
            (2, _) => Some(Order::Slot),
            (3, _) => Some(Order::Lane),
            _ => None,
        }
    }
}

/// The sending end of a guest's order channel; cheap to clone, usable from any thread.
#[derive(Debug)]
pub struct Orders(std::os::unix::net::UnixDatagram, std::sync::mpsc::Sender<ForkSlot>, std::sync::mpsc::Sender<LaneSlot>);

impl Orders {
    /// Queues `o` for the guest; fails when its host loop is gone (the guest ended).
    pub fn send(&self, o: Order) -> std::io::Result<()> {
        self.0.send(&o.encode()).map(|_| ())
    }

    pub fn try_clone(&self) -> std::io::Result<Orders> {
        Ok(Orders(self.0.try_clone()?, self.1.clone(), self.2.clone()))
    }

    /// Hands the guest the place for the child it is forking (the child's deputy channel has
    /// arrived from home). Fails (giving the slot back) when its host loop is gone.
    pub fn fork_slot(&self, slot: ForkSlot) -> Result<(), ForkSlot> {
        self.1.send(slot).map_err(|e| e.0)?;
        let _ = self.send(Order::Slot);
        Ok(())
    }

    /// Hands the guest the kernel lane home opened ([`mos_proto::deputy::LaneJoin`]). Fails
    /// (giving it back) when its host loop is gone.
    pub fn lane(&self, slot: LaneSlot) -> Result<(), LaneSlot> {
        self.2.send(slot).map_err(|e| e.0)?;
        let _ = self.send(Order::Lane);
        Ok(())
    }
}

/// A kernel lane from home: the connection after its `LaneJoin`, and the join's token.
#[derive(Debug)]
pub struct LaneSlot {
    pub token: u64,
    pub stream: std::net::TcpStream,
}

/// Where a guest that forks sends its child: the hosting node made a new guest thread for the
/// child (with the child's deputy channel from home) and waits on `image` for a copy of the
/// parent (see [`crate::migrate::accept_fork_child`]).
#[derive(Debug)]
pub struct ForkSlot {
    /// The child's home pid (its deputy's pid at home).
    pub child_pid: u32,
    /// The token of the `ForkJoin` that brought the child's deputy channel.
    pub token: u64,
    pub image: std::os::unix::net::UnixStream,
}

/// The receiving end, polled by [`serve`].
#[derive(Debug)]
pub struct Inbox(std::os::unix::net::UnixDatagram, std::sync::mpsc::Receiver<ForkSlot>, std::sync::mpsc::Receiver<LaneSlot>);

/// A new order channel.
pub fn orders() -> std::io::Result<(Orders, Inbox)> {
    let (a, b) = std::os::unix::net::UnixDatagram::pair()?;
    b.set_nonblocking(true)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (ltx, lrx) = std::sync::mpsc::channel();
    Ok((Orders(a, tx, ltx), Inbox(b, rx, lrx)))
}

/// How long a forking guest waits for its child's deputy channel from home.
const FORK_JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A fork the remote side carries out itself (the child stays a guest here, with a deputy that is
/// a fork of its parent's): `fork`, or `clone` with only the flags of a fork (exit signal
/// SIGCHLD, no new stack, tid stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkShape {
    /// CLONE_CHILD_SETTID: the child's tid (its home pid) is stored there in the child.
    pub child_settid: Option<u64>,
    /// CLONE_CHILD_CLEARTID: the child's clear_child_tid address.
    pub child_cleartid: Option<u64>,
    /// CLONE_PARENT_SETTID: the child's tid is stored there in the parent.
    pub parent_settid: Option<u64>,
}

/// Is call `nr` with `args` a fork of the kind [`ForkShape`] describes? Anything else (threads,
/// vfork, namespaces, clone3 ...) is not: it keeps its policy (run at home).
pub fn fork_shape(nr: u32, args: &[u64; 6]) -> Option<ForkShape> {
    const CLONE_PARENT_SETTID: u64 = 0x0010_0000;
    const CLONE_CHILD_CLEARTID: u64 = 0x0020_0000;
    const CLONE_CHILD_SETTID: u64 = 0x0100_0000;
    match nr as libc::c_long {
        libc::SYS_fork => Some(ForkShape { child_settid: None, child_cleartid: None, parent_settid: None }),
        libc::SYS_clone => {
            // clone(flags, newsp, parent_tid, child_tid, tls) on x86-64.
            let flags = args[0];
            let allowed = 0xff | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID;
            if flags & !allowed != 0 || flags & 0xff != libc::SIGCHLD as u64 || args[1] != 0 {
                return None;
            }
            let when = |f: u64, addr: u64| (flags & f != 0).then_some(addr);
            Some(ForkShape {
                child_settid: when(CLONE_CHILD_SETTID, args[3]),
                child_cleartid: when(CLONE_CHILD_CLEARTID, args[3]),
                parent_settid: when(CLONE_PARENT_SETTID, args[2]),
            })
        }
        _ => None,
    }
}

/// How much of a returned buffer is valid.
#[derive(Debug, Clone, Copy)]
enum Keep {
    All,
    /// `ret` elements of this size.
    RetTimes(usize),
    /// Only these (offset, length) fields (the rest holds the deputy's pointers).
    Fields(&'static [(usize, usize)]),
}

/// `struct msghdr` on x86-64: name (8), namelen (4, padded), iov (8), iovlen (8), control (8),
/// controllen (8), flags (4, padded).
const MSGHDR: usize = 56;
const MSG_NAME: usize = 0;
const MSG_NAMELEN: usize = 8;
const MSG_IOV: usize = 16;
const MSG_IOVLEN: usize = 24;
const MSG_CONTROL: usize = 32;
const MSG_CONTROLLEN: usize = 40;
/// What recvmsg changes in the caller's msghdr: namelen, controllen and flags.
const MSG_RESULT_FIELDS: &[(usize, usize)] = &[(MSG_NAMELEN, 4), (MSG_CONTROLLEN, 8), (48, 4)];

fn field_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Where the `Out`/`InOut` buffers of a forwarded call land in the remote task, in request order.
type Dests = Vec<(Vec<(u64, usize)>, Keep)>;

/// A deputy request built from an intercepted call: call number and arguments to run at home, its
/// buffers, where its out data goes, and the bytes of data it carries (read/write family, sendmsg).
type Request = (u32, [u64; 6], Vec<Buf>, Dests, usize);

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
/// The last element: bytes of data the request carries for the read/write family and sendmsg.
fn build_request(pid: Pid, nr: u32, args: [u64; 6], specs: &[Arg], iov_skip: usize) -> Result<Request, i32> {
    let mut a = args;
    let mut fnr = nr;
    let mut bufs = Vec::new();
    let mut dests = Vec::new();
    let mut total = 0usize;
    // Set by iovec and msghdr arguments; else args[2] as the buffers left it (read/write).
    let mut carried = None;
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
            Arg::InOutSized { buf, lenp } => {
                if a[lenp as usize] == 0 {
                    // A buffer without its length: the kernel answers EFAULT (it cannot be passed
                    // on: a pointer of this task means nothing at home).
                    if a[buf as usize] != 0 {
                        return Err(libc::EFAULT);
                    }
                    continue;
                }
                let raw = read(a[lenp as usize], 4)?;
                let want = u32::from_le_bytes(raw[..4].try_into().expect("4 bytes")) as usize;
                if a[buf as usize] == 0 {
                    // No buffer: the length is passed on as it is (accept ignores it).
                    bufs.push(Buf::InOut { arg: lenp, data: raw });
                    dests.push((vec![(args[lenp as usize], 4)], Keep::All));
                    continue;
                }
                // Room for the length first; the buffer may be cut to what is left.
                room(4)?;
                let l = room(want)?;
                bufs.push(Buf::InOut { arg: lenp, data: (l as u32).to_le_bytes().to_vec() });
                dests.push((vec![(args[lenp as usize], 4)], Keep::All));
                bufs.push(Buf::InOut { arg: buf, data: read(a[buf as usize], l)? });
                dests.push((vec![(args[buf as usize], l)], Keep::All));
            }
            Arg::InElems { buf, cnt, size } => {
                if a[buf as usize] == 0 {
                    continue;
                }
                let want = (a[cnt as usize] as usize).saturating_mul(size as usize);
                if room(want)? < want {
                    return Err(libc::EINVAL);
                }
                bufs.push(Buf::In { arg: buf, data: read(a[buf as usize], want)? });
            }
            Arg::MsgHdr { msg, send } => {
                let mut hdr = read(a[msg as usize], MSGHDR)?;
                room(MSGHDR + 16)?;
                let name = field_u64(&hdr, MSG_NAME);
                let namelen = u32::from_le_bytes(hdr[MSG_NAMELEN..MSG_NAMELEN + 4].try_into().expect("4 bytes")) as usize;
                let control = field_u64(&hdr, MSG_CONTROL);
                let controllen = field_u64(&hdr, MSG_CONTROLLEN) as usize;
                // Name and control buffer first: they cannot be cut.
                let name_room = if name != 0 { room(namelen)? } else { 0 };
                let control_room = if control != 0 { room(controllen)? } else { 0 };
                if (name != 0 && name_room < namelen) || (control != 0 && control_room < controllen) {
                    return Err(libc::ENOBUFS);
                }
                // The data: the iovecs gathered into one buffer, described by one iovec at home.
                // A long sendmsg goes in chunks: the first `iov_skip` bytes went with earlier
                // requests of the call, and so did the name and the control data.
                let mut skip = iov_skip;
                let mut vecs = Vec::new();
                let mut sum = 0usize;
                for (base, len) in read_iov(pid, field_u64(&hdr, MSG_IOV), field_u64(&hdr, MSG_IOVLEN))? {
                    let drop = skip.min(len);
                    skip -= drop;
                    let len = room(len - drop)?;
                    if len > 0 {
                        vecs.push((base + drop as u64, len));
                        sum += len;
                    }
                }
                carried = Some(sum);
                let (name_room, control_room) = if iov_skip > 0 {
                    hdr[MSG_NAMELEN..MSG_NAMELEN + 4].fill(0);
                    hdr[MSG_CONTROLLEN..MSG_CONTROLLEN + 8].fill(0);
                    (0, 0)
                } else {
                    (name_room, control_room)
                };
                // Pointers are set at home (fixups); lengths stay as they are.
                hdr[MSG_NAME..MSG_NAME + 8].fill(0);
                hdr[MSG_IOV..MSG_IOV + 8].fill(0);
                hdr[MSG_IOVLEN..MSG_IOVLEN + 8].copy_from_slice(&1u64.to_le_bytes());
                hdr[MSG_CONTROL..MSG_CONTROL + 8].fill(0);
                let first = bufs.len() as u16;
                let mut iov = vec![0u8; 16];
                iov[8..16].copy_from_slice(&(sum as u64).to_le_bytes());
                if send {
                    bufs.push(Buf::In { arg: msg, data: hdr });
                } else {
                    bufs.push(Buf::InOut { arg: msg, data: hdr });
                    dests.push((vec![(args[msg as usize], MSGHDR)], Keep::Fields(MSG_RESULT_FIELDS)));
                }
                bufs.push(Buf::In { arg: NO_ARG, data: iov });
                bufs.push(Buf::Fixup { buf: first, at: MSG_IOV as u32, target: first + 1 });
                if send {
                    let mut data = vec![0u8; sum];
                    if sum > 0 {
                        mem::readv(pid, &vecs, &mut data).map_err(|_| libc::EFAULT)?;
                    }
                    bufs.push(Buf::In { arg: NO_ARG, data });
                } else {
                    bufs.push(Buf::Out { arg: NO_ARG, len: sum as u32, by_ret: true });
                    dests.push((vecs, Keep::All));
                }
                bufs.push(Buf::Fixup { buf: first + 1, at: 0, target: bufs.len() as u16 - 1 });
                for (ptr, len, at) in [(name, name_room, MSG_NAME), (control, control_room, MSG_CONTROL)] {
                    if len == 0 {
                        continue;
                    }
                    // Received into: copied in first, so bytes the call does not write stay.
                    let data = read(ptr, len)?;
                    if send {
                        bufs.push(Buf::In { arg: NO_ARG, data });
                    } else {
                        bufs.push(Buf::InOut { arg: NO_ARG, data });
                        dests.push((vec![(ptr, len)], Keep::All));
                    }
                    bufs.push(Buf::Fixup { buf: first, at: at as u32, target: bufs.len() as u16 - 1 });
                }
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
                carried = Some(sum);
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
    let carried = carried.unwrap_or(a[2] as usize);
    Ok((fnr, a, bufs, dests, carried))
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
    /// sendmsg: a `struct msghdr` in args[1]; continued only on stream sockets.
    SendMsg,
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
            libc::SYS_sendmsg => IoCall::SendMsg,
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

/// Bytes a sendmsg call asks to send (its msghdr at `msg`).
fn msg_total(pid: Pid, msg: u64) -> Result<usize, i32> {
    let mut hdr = vec![0u8; MSGHDR];
    mem::readv(pid, &[(msg, MSGHDR)], &mut hdr).map_err(|_| libc::EFAULT)?;
    Ok(read_iov(pid, field_u64(&hdr, MSG_IOV), field_u64(&hdr, MSG_IOVLEN))?.iter().fold(0usize, |s, (_, l)| s.saturating_add(*l)))
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

/// A `siginfo_t` for a signal sent with kill/tgkill (`code` SI_USER or SI_TKILL) by `pid`/`uid`.
fn siginfo(sig: i32, code: i32, pid: i32, uid: u32) -> Vec<u8> {
    let mut info = vec![0u8; sys::SIGINFO_LEN];
    info[0..4].copy_from_slice(&sig.to_le_bytes());
    info[8..12].copy_from_slice(&code.to_le_bytes());
    info[16..20].copy_from_slice(&pid.to_le_bytes());
    info[20..24].copy_from_slice(&uid.to_le_bytes());
    info
}

/// Does the task see the siginfo of signal `sig` (a handler catches it, or it is blocked and may be
/// waited for), by its /proc status `st`? Job-control signals and SIGKILL act without one.
fn wants_siginfo(st: &crate::procfs::Status, sig: i32) -> bool {
    if matches!(sig, libc::SIGKILL | libc::SIGSTOP | libc::SIGCONT | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
        || !(1..=64).contains(&sig)
    {
        return false;
    }
    (st.sig_cgt | st.sig_blk) & (1u64 << (sig - 1)) != 0
}

/// Makes the task queue signal `info` on itself (rt_tgsigqueueinfo injected with ptrace: a process
/// may give its own signals any siginfo, another process only a negative si_code). The task is
/// interrupted wherever it is (`meanwhile` runs once the interrupt is requested: it releases a
/// notification the task waits on), the siginfo is written below its stack pointer (and put back),
/// and on release the kernel delivers the signal, restarting or failing an interrupted call as it
/// would have for any signal.
fn inject_signal(pid: Pid, info: &[u8], meanwhile: impl FnOnce()) -> Result<(), Error> {
    let sig = i32::from_le_bytes(info.get(0..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4]));
    in_task(pid, meanwhile, |t| {
        let regs = t.regs()?;
        // Below the red zone and anything the task may use there.
        let addr = regs.rsp.wrapping_sub(1024) & !63;
        let saved = mem::read_mem(pid, addr, sys::SIGINFO_LEN)?;
        let mut si = [0u8; sys::SIGINFO_LEN];
        let n = info.len().min(si.len());
        si[..n].copy_from_slice(&info[..n]);
        mem::write_mem(pid, addr, &si)?;
        let r = t.inject(libc::SYS_rt_tgsigqueueinfo, [pid.as_raw() as u64, pid.as_raw() as u64, sig as u64, addr, 0, 0]);
        mem::write_mem(pid, addr, &saved)?;
        match r? {
            r if r < 0 => {
                Err(Error::Injected { what: "rt_tgsigqueueinfo", pid: pid.as_raw(), errno: nix::errno::Errno::from_raw((-r) as i32) })
            }
            _ => Ok(()),
        }
    })
}

/// Runs `f` on the task held in a ptrace stop, then lets it go on: `meanwhile` runs once the
/// interrupt is requested (it answers a notification the task waits on, which the interrupt cannot
/// break); signals that raced with the interrupt are sent again.
fn in_task(
    pid: Pid,
    meanwhile: impl FnOnce(),
    f: impl FnOnce(&mut Tracee<crate::ptrace::Stopped>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut t = Tracee::<Running>::seize(pid)?.interrupt_with(meanwhile)?;
    let done = f(&mut t);
    let raced = std::mem::take(&mut t.pending_signals);
    t.detach(None)?;
    for s in raced {
        let _ = kill(pid, s);
    }
    done
}

/// Calls that change credentials: run by the deputy (the identity lives at home) and, once they
/// succeeded there, by the remote task too, so that its identity on the remote node follows.
fn changes_credentials(nr: u32) -> bool {
    matches!(
        nr as libc::c_long,
        libc::SYS_setuid
            | libc::SYS_setgid
            | libc::SYS_setreuid
            | libc::SYS_setregid
            | libc::SYS_setresuid
            | libc::SYS_setresgid
            | libc::SYS_setfsuid
            | libc::SYS_setfsgid
            | libc::SYS_setgroups
            | libc::SYS_capset
    )
}

/// Delivers a signal from home (`siginfo_t`): with its siginfo where the task can see it.
fn deliver(pid: Pid, info: &[u8]) {
    let field = |off: usize| info.get(off..off + 4).and_then(|b| b.try_into().ok()).map_or(0, i32::from_le_bytes);
    let (sig, code) = (field(0), field(8));
    // A negative si_code (sigqueue ...) other than SI_TKILL is queued as it is from here.
    let kept_anyway = code < 0 && code != libc::SI_TKILL;
    if !kept_anyway && crate::procfs::status(pid).is_ok_and(|st| wants_siginfo(&st, sig)) {
        match inject_signal(pid, info, || {}) {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, sig, "could not have the task queue its signal; sent without its siginfo"),
        }
    }
    if let Err(e) = sys::queue_signal(pid, info) {
        tracing::warn!(error = %e, sig, "could not deliver a signal from home");
    }
}

/// Copies the `Out`/`InOut` buffers of a reply into the task. Err(EFAULT) when it cannot.
fn write_outs(pid: Pid, ret: i64, dests: Dests, outs: &[Vec<u8>]) -> Result<(), i32> {
    for ((vecs, keep), data) in dests.into_iter().zip(outs) {
        let valid = match keep {
            Keep::All => data.len(),
            Keep::RetTimes(size) => (ret.max(0) as usize).saturating_mul(size).min(data.len()),
            Keep::Fields(fields) => {
                let base = vecs.first().map_or(0, |v| v.0);
                for &(off, len) in fields {
                    if let Some(f) = data.get(off..off + len) {
                        if mem::writev(pid, &[(base + off as u64, len)], f).is_err() {
                            return Err(libc::EFAULT);
                        }
                    }
                }
                continue;
            }
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
    /// The same for signals sent with their siginfo (`DeputyMsg::Queued`).
    held_info: Vec<Vec<u8>>,
    recall: bool,
    home_refused: bool,
    /// What home asked for calls only it can run (`DeputyMsg::Policy`).
    on_unsupported: OnUnsupported,
    /// Calls home was told about ([`DeputyMsg::Unsupported`]).
    told: Vec<u32>,
    /// Places for children this guest forks ([`Orders::fork_slot`]).
    forks: &'a std::sync::mpsc::Receiver<ForkSlot>,
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
            DeputyMsg::Queued { info } if in_call => self.held_info.push(info),
            DeputyMsg::Queued { info } => deliver(self.g.pid, &info),
            DeputyMsg::Recall => self.recall = true,
            DeputyMsg::Policy { on_unsupported } => self.on_unsupported = on_unsupported,
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
        let mut disp = if n.data.arch == 0xc000_003e { policy::classify(nr, &args) } else { Disposition::Home };
        // Files of /proc/self that show the process's memory are read at home, in the process.
        let path_arg = match nr as libc::c_long {
            libc::SYS_open => Some(0),
            libc::SYS_openat => Some(1),
            _ => None,
        };
        if let (Some(i), Disposition::Forward(_)) = (path_arg, disp) {
            if read_cstr(pid, args[i]).is_ok_and(|p| policy::proc_file_needs_home(&p, self.g.home_pid)) {
                disp = Disposition::Home;
            }
        }
        if let Some(shape) = fork_shape(nr, &args).filter(|_| n.data.arch == 0xc000_003e) {
            return self.fork_call(listener, n.id, shape);
        }
        let own_sig = own_signal(nr, &args, self.g.home_pid);
        match disp {
            Disposition::Local(_) => {
                let _ = sys::notif_send(listener, n.id, Ok(0), true);
            }
            Disposition::Answer(Answer::HomePid) => answer(Ok(i64::from(self.g.home_pid))),
            Disposition::Home if self.home_refused || self.on_unsupported != OnUnsupported::GoHome => {
                answer(Err(libc::ENOSYS));
                // Home is told once per call (a process may retry a call in a loop).
                if self.on_unsupported == OnUnsupported::FailAndTell && !self.told.contains(&nr) {
                    self.told.push(nr);
                    tracing::info!(pid = pid.as_raw(), call = %syscall_names::name(nr), "call only home runs failed with ENOSYS (mosrun -w)");
                    self.send(&DeputyMsg::Unsupported { nr })?;
                }
            }
            Disposition::Home => {
                let name = syscall_names::name(nr).into_owned();
                tracing::info!(pid = pid.as_raw(), call = %name, "call must run at home: sending the process home");
                return self.go_home(Reason::Syscall { nr, name }, Some((listener, n.id)));
            }
            Disposition::Forward(_) if own_sig.is_some() => {
                // A signal the process sends itself pends before the call returns, as the kernel
                // does: it is queued on the task here, before the answer (not sent home and back).
                // One it catches or blocks is queued by the task itself, with the siginfo the
                // kernel would give it (sender: its home pid; SI_USER for kill, SI_TKILL else).
                let sig = own_sig.unwrap_or(0);
                let status = if sig != 0 { crate::procfs::status(pid).ok() } else { None };
                if let Some(st) = status.filter(|st| wants_siginfo(st, sig)) {
                    let code = if nr as libc::c_long == libc::SYS_kill { libc::SI_USER } else { libc::SI_TKILL };
                    let info = siginfo(sig, code, self.g.home_pid as i32, st.uid);
                    let answered = std::cell::Cell::new(false);
                    let done = inject_signal(pid, &info, || {
                        answered.set(true);
                        answer(Ok(0));
                    });
                    match (done, answered.get()) {
                        (Ok(()), _) => {}
                        (Err(_), true) => {
                            let _ = sys::tgkill(pid, pid, sig);
                        }
                        (Err(_), false) => answer(sys::tgkill(pid, pid, sig).map(|()| 0).map_err(|e| e as i32)),
                    }
                } else {
                    answer(if sig == 0 { Ok(0) } else { sys::tgkill(pid, pid, sig).map(|()| 0).map_err(|e| e as i32) });
                }
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
            Some(IoCall::SendMsg) => match msg_total(pid, args[1]) {
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
                Some(IoCall::Vector { .. } | IoCall::SendMsg) => iov_skip = done,
                None => {}
            }
            let (fnr, a, bufs, dests, carried) = match build_request(pid, nr, a, specs, iov_skip) {
                Ok(r) => r,
                Err(errno) => break if done > 0 { Ok(done as i64) } else { Err(errno) },
            };
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
            // A message is one datagram: only a stream is sent in chunks.
            if matches!(io, IoCall::SendMsg) && done == carried {
                match self.fd_is_stream(a[0])? {
                    Ok(true) => {}
                    Ok(false) => break Ok(done as i64),
                    Err(end) => return Ok(Some(end)),
                }
            }
        };
        if result.is_ok() && changes_credentials(nr) {
            // The same call in the remote task (its arguments point into its own memory), after
            // the answer: the stub it runs in takes the identity the process now has at home.
            let answered = std::cell::Cell::new(false);
            let mirrored = in_task(
                pid,
                || {
                    answered.set(true);
                    answer(result);
                },
                |t| {
                    let r = t.inject(nr as libc::c_long, args)?;
                    if r < 0 {
                        tracing::warn!(call = %syscall_names::name(nr), errno = -r, "credentials changed at home but not on this node");
                    }
                    Ok(())
                },
            );
            if let Err(e) = mirrored {
                tracing::warn!(error = %e, call = %syscall_names::name(nr), "could not change the credentials on this node");
            }
            if !answered.get() {
                answer(result);
            }
        } else {
            answer(result);
        }
        for sig in std::mem::take(&mut self.held) {
            if let Ok(s) = Signal::try_from(sig) {
                let _ = kill(pid, s);
            }
        }
        for info in std::mem::take(&mut self.held_info) {
            deliver(pid, &info);
        }
        Ok(None)
    }

    /// The process forks (notification `id`, held): home forks the deputy and sends the child's
    /// deputy channel to this node, whose new guest thread for the child receives a copy of the
    /// process (memory, registers with fork returning 0 in the child, its home pid as tid); then
    /// the parent's fork returns the child's home pid. On failure it returns an error and, if the
    /// child deputy was made, that deputy ends (its supervisor at home sees the failure).
    fn fork_call(&mut self, listener: i32, id: u64, shape: ForkShape) -> Result<Option<End>, Error> {
        let pid = self.g.pid;
        let answer = |r: Result<i64, i32>| {
            let _ = sys::notif_send(listener, id, r, false);
        };
        self.seq += 1;
        let seq = self.seq;
        self.send(&DeputyMsg::Fork { seq })?;
        let (ret, token) = loop {
            let f = self.rx.read_frame(self.s)?;
            match f.expect::<DeputyMsg>(Kind::Deputy)? {
                DeputyMsg::Forked { seq: s, ret, token } if s == seq => break (ret, token),
                m @ (DeputyMsg::Reply { .. } | DeputyMsg::Forked { .. }) => tracing::warn!(?m, seq, "answer out of sequence; ignored"),
                m => {
                    if let Some(end) = self.on_home_msg(m, true) {
                        return Ok(Some(end));
                    }
                }
            }
        };
        if ret <= 0 || ret > i64::from(i32::MAX) {
            answer(Err(if ret < 0 { (-ret) as i32 } else { libc::EAGAIN }));
        } else {
            let child = ret as u32;
            let deadline = Instant::now() + FORK_JOIN_TIMEOUT;
            let slot = loop {
                match self.forks.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(slot) if slot.child_pid == child && slot.token == token => break Some(slot),
                    // A late slot of an earlier fork that failed, or a connection that does not
                    // know the token: dropped (that child, if any, ends).
                    Ok(_) => continue,
                    Err(_) => break None,
                }
            };
            match slot {
                None => {
                    tracing::warn!(child, "the child's deputy channel did not arrive from home; fork fails with EAGAIN");
                    answer(Err(libc::EAGAIN));
                }
                Some(slot) => self.copy_child(listener, id, child, shape, slot)?,
            }
        }
        for sig in std::mem::take(&mut self.held) {
            if let Ok(s) = Signal::try_from(sig) {
                let _ = kill(pid, s);
            }
        }
        for info in std::mem::take(&mut self.held_info) {
            deliver(pid, &info);
        }
        Ok(None)
    }

    /// Makes the child: the process, held in its fork (notification `id`), is stopped and sent as a
    /// migration stream to the child's guest thread (a full copy of its memory), with the child's
    /// registers returning 0 from the call; then the process resumes with the fork's result.
    fn copy_child(&mut self, listener: i32, id: u64, child: u32, shape: ForkShape, slot: ForkSlot) -> Result<(), Error> {
        let pid = self.g.pid;
        // As in `go_home`: the held notification is answered with ERESTARTSYS once the interrupt
        // is requested; the task stops leaving the call, whose result is then set in its registers.
        let mut t = Tracee::<Running>::seize(pid)?.interrupt_with(|| {
            let _ = sys::notif_send(listener, id, Err(ERESTARTSYS), false);
        })?;
        let regs = t.regs()?;
        let made = (|| -> Result<(), Error> {
            let mut img = capture::capture(&mut t, child, self.g.home_node, mos_proto::migration::Reason::Manual)?;
            let mut r = regs;
            r.rax = 0;
            r.orig_rax = u64::MAX;
            img.context.regs = capture::regs_to_words(&r);
            // What fork gives the child: its clear_child_tid, no robust list.
            img.context.tid_address = shape.child_cleartid.unwrap_or(0);
            img.context.robust_list = None;
            let mut image = slot.image;
            let _ = image.set_read_timeout(Some(crate::migrate::MIGRATION_TIMEOUT));
            let _ = image.set_write_timeout(Some(crate::migrate::MIGRATION_TIMEOUT));
            image.write_all(&shape.child_settid.unwrap_or(0).to_le_bytes())?;
            capture::send(&mut image, &mut t, &img, Instant::now())?;
            Ok(())
        })();
        let ret = match made {
            Ok(()) => {
                if let Some(addr) = shape.parent_settid {
                    let _ = mem::write_mem(pid, addr, &(child as i32).to_le_bytes());
                }
                tracing::info!(child, "forked: the child runs here");
                i64::from(child)
            }
            Err(e) => {
                tracing::warn!(child, error = %e, "could not make the forked child here; fork fails with EAGAIN");
                -i64::from(libc::EAGAIN)
            }
        };
        let mut r = regs;
        r.rax = ret as u64;
        r.orig_rax = u64::MAX;
        thaw(t, r)
    }

    /// Is descriptor `fd` at home a stream socket (asked with a forwarded getsockopt SO_TYPE)?
    fn fd_is_stream(&mut self, fd: u64) -> Result<Result<bool, End>, Error> {
        let bufs = vec![Buf::Out { arg: 3, len: 4, by_ret: false }, Buf::InOut { arg: 4, data: 4u32.to_le_bytes().to_vec() }];
        let args = [fd, libc::SOL_SOCKET as u64, libc::SO_TYPE as u64, 0, 0, 0];
        Ok(match self.forward(libc::SYS_getsockopt as u32, args, bufs)? {
            Ok((0, outs)) => Ok(outs.first().and_then(|t| t.get(0..4)).is_some_and(|t| t == libc::SOCK_STREAM.to_le_bytes())),
            Ok(_) => Ok(false),
            Err(end) => Err(end),
        })
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

    /// Freezes the guest to send it home: with the module when it intercepts this guest (a call
    /// held, received but not answered, is answered "restart" first: the kernel makes it again,
    /// and the freeze finds it interrupted, to be restarted at home), else with ptrace. `held`:
    /// the notification (listener, id) of the call that sends it home, which the task waits on.
    fn freeze(&self, held: Option<(i32, u64)>) -> Result<capture::Held, Error> {
        let pid = self.g.pid;
        // A freeze queued while the task is between the probe and its park goes behind that park
        // (the module requeues it), so the skipped call is answered or withdrawn before it parks.
        if crate::native::can_freeze_guest(self.g.listener.as_fd()) {
            if let Some((listener, id)) = held {
                let _ = sys::notif_send(listener, id, Err(ERESTARTSYS), false);
            }
            match crate::native::Parked::freeze(pid) {
                Ok(p) => return Ok(capture::Held::Parked(p)),
                // The held call was answered already: a ptrace interrupt withdraws it again.
                Err(e) => tracing::info!(pid = pid.as_raw(), error = %e, "the native engine cannot freeze the guest: ptrace"),
            }
            return Ok(capture::Held::Traced(Tracee::<Running>::seize(pid)?.interrupt()?));
        }
        // A task waiting on a notification we received waits killably (WAIT_KILLABLE_RECV): the
        // interrupt cannot break that wait. Answering ERESTARTSYS once the interrupt is requested
        // lets it leave the call and stop as an interrupted call, to be restarted at home.
        Ok(capture::Held::Traced(Tracee::<Running>::seize(pid)?.interrupt_with(|| {
            if let Some((listener, id)) = held {
                let _ = sys::notif_send(listener, id, Err(ERESTARTSYS), false);
            }
        })?))
    }

    fn go_home(&mut self, reason: Reason, held: Option<(i32, u64)>) -> Result<Option<End>, Error> {
        let start = Instant::now();
        let pid = self.g.pid;
        let mut h = self.freeze(held)?;
        let frozen_at = Instant::now();
        let img = match capture::capture_held(&mut h, self.g.home_pid, self.g.home_node, reason) {
            Ok(i) => i,
            Err(e) => {
                // Cannot capture: keep running here; calls that need home now fail with ENOSYS.
                tracing::error!(error = %e, "cannot capture the process to send it home");
                self.home_refused = true;
                capture::resume_held(h)?;
                return Ok(None);
            }
        };
        // Signals pending on the task go home with it (they die with this copy): queued ones with
        // their siginfo, and those that raced with a ptrace freeze (suppressed: they are
        // re-delivered here if the process stays).
        let mut pending: Vec<Vec<u8>> = capture::held_siginfo(&h).unwrap_or_default().iter().map(|i| i.to_vec()).collect();
        for s in h.pending_signals().iter() {
            let mut info = vec![0u8; sys::SIGINFO_LEN];
            info[0..4].copy_from_slice(&(*s as i32).to_le_bytes());
            pending.push(info);
        }
        for info in pending {
            if let Err(e) = self.send(&DeputyMsg::Queued { info }) {
                capture::end_held(h);
                return Ok(Some(End::Killed(format!("lost the deputy channel while sending the process home: {e}"))));
            }
        }
        let engine = h.engine();
        match capture::send_mode(&mut self.rx.chain(self.s), pid, h.pending_signals(), &img, frozen_at, false) {
            Ok((mut sent, _)) => {
                sent.stats.total_us = start.elapsed().as_micros() as u64;
                tracing::info!(pid = pid.as_raw(), engine, frozen_us = sent.stats.frozen_us, "sent home");
                capture::end_held(h);
                Ok(Some(End::WentHome(sent.stats)))
            }
            Err(e @ (Error::Refused(_) | Error::PeerFailed(_))) => {
                tracing::warn!(error = %e, "home did not take the process back; it keeps running here (calls only home runs fail with ENOSYS)");
                self.home_refused = true;
                capture::thaw_held(h, img.home_regs)?;
                Ok(None)
            }
            Err(e) => {
                // The channel to home is gone: without its deputy the process cannot go on.
                capture::end_held(h);
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
        held_info: Vec::new(),
        recall: false,
        home_refused: false,
        on_unsupported: OnUnsupported::GoHome,
        told: Vec::new(),
        forks: &inbox.1,
    };
    // The task and this thread hand over each call like a synchronous call, on one CPU.
    sys::notif_sync_wake_up(g.listener.as_raw_fd());
    let mut lane_token = offer_lane(&mut h);
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
        // A child's place can only be expected inside `fork_call`: any slot here is stale or not
        // home's (a ForkJoin without the right token); dropping it ends that connection.
        while h.forks.try_recv().is_ok() {}
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
                    // Dropped at the top of the loop (it is not forking now).
                    Some(Order::Slot) => {}
                    Some(Order::Lane) => {
                        while let Ok(slot) = inbox.2.try_recv() {
                            // Only the lane offered, once; any other connection is dropped (ended).
                            if lane_token.is_some_and(|t| t == slot.token) {
                                lane_token = None;
                                open_lane(g, slot.stream);
                            }
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

/// Offers home the kernel lane (docs/NATIVE.md) when this guest's calls are intercepted by the
/// module, which offers the lane, and the deputy channel is not encrypted (the lane is not):
/// returns the token of the offer.
fn offer_lane<S: Wire>(h: &mut Host<'_, S>) -> Option<u64> {
    if !h.s.plain() || !crate::native::lane_available() || !crate::native::is_device(h.g.listener.as_fd()) {
        return None;
    }
    let token = crate::channel::token().ok()?;
    match h.send(&DeputyMsg::Lane { token }) {
        Ok(()) => Some(token),
        Err(e) => {
            tracing::debug!(error = %e, "could not offer the kernel lane");
            None
        }
    }
}

/// Home opened the lane: from now on the module sends the process's register-only calls on it.
fn open_lane(g: &Guest, stream: std::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let calls = policy::lane_numbers();
    match crate::native::set_lane(g.listener.as_fd(), stream.as_fd(), &calls) {
        Ok(()) => tracing::info!(
            pid = g.pid.as_raw(),
            calls = calls.len(),
            "kernel lane open: register-only calls go to the deputy without this daemon"
        ),
        Err(e) => tracing::warn!(pid = g.pid.as_raw(), error = %e, "could not open the kernel lane; calls keep coming here"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_shape_takes_fork_and_glibc_fork_clones_only() {
        let plain = ForkShape { child_settid: None, child_cleartid: None, parent_settid: None };
        assert_eq!(fork_shape(libc::SYS_fork as u32, &[0; 6]), Some(plain));
        // glibc's fork(): CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, child tid pointer.
        let glibc = 0x0120_0000 | libc::SIGCHLD as u64;
        assert_eq!(
            fork_shape(libc::SYS_clone as u32, &[glibc, 0, 0, 0x7000, 0, 0]),
            Some(ForkShape { child_settid: Some(0x7000), child_cleartid: Some(0x7000), parent_settid: None })
        );
        let ptid = 0x0010_0000 | libc::SIGCHLD as u64;
        assert_eq!(
            fork_shape(libc::SYS_clone as u32, &[ptid, 0, 0x6000, 0x7000, 0, 0]),
            Some(ForkShape { child_settid: None, child_cleartid: None, parent_settid: Some(0x6000) })
        );
        // Threads, vfork, a new stack, another exit signal, namespaces, clone3, vfork(): not forks.
        let thread = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        assert_eq!(fork_shape(libc::SYS_clone as u32, &[thread, 0x5000, 0, 0, 0, 0]), None);
        let vfork = (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | libc::SIGCHLD as u64;
        assert_eq!(fork_shape(libc::SYS_clone as u32, &[vfork, 0, 0, 0, 0, 0]), None);
        assert_eq!(fork_shape(libc::SYS_clone as u32, &[libc::SIGCHLD as u64, 0x5000, 0, 0, 0, 0]), None);
        assert_eq!(fork_shape(libc::SYS_clone as u32, &[libc::SIGUSR1 as u64, 0, 0, 0, 0, 0]), None);
        assert_eq!(fork_shape(libc::SYS_clone as u32, &[libc::CLONE_NEWPID as u64 | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), None);
        assert_eq!(fork_shape(libc::SYS_clone3 as u32, &[0; 6]), None);
        assert_eq!(fork_shape(libc::SYS_vfork as u32, &[0; 6]), None);
    }
}
