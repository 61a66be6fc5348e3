//! The deputy channel: after `Resumed`, the migration connection carries these messages between the
//! remote component's host (mosd) and the deputy at home (mosrun), as `Kind::Deputy` frames.
//!
//! ```text
//! remote ── Syscall{seq,nr,args,bufs} ─▶ home   deputy executes it in the original task's context
//! remote ◀─ Reply{seq,ret,outs} ──────── home
//! remote ◀─ Signal{sig} ──────────────── home   a signal for the process (delivered remotely)
//! remote ◀─ Recall ───────────────────── home   come home: remote answers with an Offer and the stream
//! remote ── Offer… (migration stream) ─▶ home   also sent unasked when a call must run at home
//! remote ── Exited{status} ────────────▶ home   the process ended; home ends the deputy the same way
//! remote ── Reroute{node} ─────────────▶ home   the remote balancer wants it on `node`: home recalls it
//! remote ◀─ Policy{on_unsupported} ────── home   mosrun -e/-w: what to do with calls only home runs
//! remote ── Unsupported{nr} ───────────▶ home   (mosrun -w) call `nr` failed remotely with ENOSYS
//! remote ◀─ Queued{info} ──────────────── home   a signal with its siginfo (real-time ones, queued)
//! remote ── Queued{info}… Offer ────────▶ home   signals pending remotely as the process leaves
//! remote ── Fork{seq} ─────────────────▶ home   the process forks: home forks the deputy
//! remote ◀─ Forked{seq,ret} ───────────── home   the child deputy's pid (or -errno); its own
//!                                                deputy channel follows on a new connection
//!                                                (`Kind::ForkJoin` frame, see [`ForkJoin`])
//! ```
use serde::{Deserialize, Serialize};

/// Largest buffer moved with one forwarded call; bigger requests are split by the sender.
pub const MAX_BUF: usize = 1 << 20;

/// `arg` of a buffer that is not an argument of the call itself: it is reached through a pointer
/// inside another buffer, which a [`Buf::Fixup`] sets (the buffers of `sendmsg`/`recvmsg`).
pub const NO_ARG: u8 = u8::MAX;

/// A buffer argument of a forwarded call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Buf {
    /// Argument `arg` points to these bytes (copied in before the call).
    In { arg: u8, data: Vec<u8> },
    /// Argument `arg` points to `len` bytes the call writes (copied out after it). With `by_ret`,
    /// only the first `ret` bytes come back (read-like calls); otherwise all `len` bytes.
    Out { arg: u8, len: u32, by_ret: bool },
    /// Argument `arg` points to these bytes, which the call reads and may change: copied in
    /// before the call and all of them copied back after it when it succeeds.
    InOut { arg: u8, data: Vec<u8> },
    /// Not a buffer: once the buffers are laid out at home, the address of buffer number `target`
    /// (an index in the request's `bufs`) is stored as a little-endian u64 at byte `at` of buffer
    /// number `buf` (an `In` or `InOut` one). Pointers inside structures (`struct msghdr`) are
    /// made this way.
    Fixup { buf: u16, at: u32, target: u16 },
}

/// What the remote side does with a call that only home can run (MOSIX `mosrun -e` / `-w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnUnsupported {
    /// The process is brought home and the call runs there (the default; no `Policy` is sent).
    GoHome,
    /// The call fails with ENOSYS on the remote node; the process stays there (`mosrun -e`).
    Fail,
    /// As `Fail`, and home is told each time with [`DeputyMsg::Unsupported`] (`mosrun -w`).
    FailAndTell,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal { sig: i32, core: bool },
}

impl ExitStatus {
    /// Shell convention: the code, or 128 + signal. `sig` comes off the wire: it is masked to 7
    /// bits so a bogus value can neither overflow nor map to 0 (success).
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c & 0xff,
            ExitStatus::Signal { sig, .. } => 128 + (sig & 0x7f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeputyMsg {
    /// Execute system call `nr` at home. Pointer arguments named in `bufs` are replaced by
    /// addresses of the deputy's copies.
    Syscall { seq: u64, nr: u32, args: [u64; 6], bufs: Vec<Buf> },
    /// Result of `Syscall{seq}`: the raw return value (negative errno on error) and the `Out` buffers,
    /// in request order, each truncated to what the call reported.
    Reply { seq: u64, ret: i64, outs: Vec<Vec<u8>> },
    /// Deliver this signal to the process.
    Signal { sig: i32 },
    /// Bring the process back home now.
    Recall,
    /// The process ended remotely.
    Exited { status: ExitStatus },
    /// The home task is gone: end the remote component.
    Kill,
    /// From the remote node's balancer: please move the process on to node `node` (home resolves
    /// the node, recalls the process and sends it there).
    Reroute { node: u32 },
    /// From home: how to treat calls that only home can run, from now on. Sent after every move
    /// out of home when mosrun was started with `-e` or `-w` (and again after home refused a return
    /// for such a call, see docs/PROTOCOL.md).
    Policy { on_unsupported: OnUnsupported },
    /// From the remote side, under [`OnUnsupported::FailAndTell`]: call number `nr` failed with
    /// ENOSYS there.
    Unsupported { nr: u32 },
    /// A signal as a `siginfo_t` (128 bytes). From home: queue it on the process now (used for
    /// real-time signals, which queue and carry values). From the remote side, just before an
    /// `Offer`: this signal is pending on the process as it leaves; home queues it once the
    /// process is back and drops it if the return fails.
    Queued { info: Vec<u8> },
    /// From the remote side: the process called fork (or a clone that is a fork): home forks the
    /// deputy and answers [`DeputyMsg::Forked`]. The notification is held meanwhile.
    Fork { seq: u64 },
    /// Answer to `Fork{seq}`: the child deputy's pid at home (the child's home pid), or a negative
    /// errno. With a pid, home then opens the child's deputy channel ([`ForkJoin`]) carrying the
    /// same random `token`: the remote side takes only that connection as the child's.
    Forked { seq: u64, ret: i64, token: u64 },
    /// From the remote side, once: its module can carry register-only calls itself (the kernel
    /// lane, [`crate::lane`]). If home's module can serve the deputy, home opens the lane
    /// ([`LaneJoin`]) with this random `token`; otherwise it ignores this.
    Lane { token: u64 },
}

/// First frame (`Kind::LaneJoin`) of a connection from home to the node of a guest that offered
/// a lane ([`DeputyMsg::Lane`]): once the guest's node has taken it (it answers nothing), the
/// connection carries only [`crate::lane`] records, between the two nodes' modules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneJoin {
    pub home_node: u32,
    /// Home pid of the process (the guest on that node).
    pub home_pid: u32,
    /// The token of the guest's [`DeputyMsg::Lane`].
    pub token: u64,
}

/// First frame (`Kind::ForkJoin`) of a connection from home to the node where a guest forked:
/// this connection is the deputy channel of its child. The node answers `Resumed` once the
/// child runs there (a copy of the parent's memory and registers, its fork returning 0), or
/// `Failed`/`Refuse`; then the connection carries [`DeputyMsg`]s as any deputy channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkJoin {
    pub home_node: u32,
    /// Home pid of the forking process (the guest on that node).
    pub parent_pid: u32,
    /// Home pid of the child (its deputy at home).
    pub child_pid: u32,
    /// The token of the parent's [`DeputyMsg::Forked`] (unguessable: only home, which sent it on
    /// the parent's deputy channel, knows it).
    pub token: u64,
}
