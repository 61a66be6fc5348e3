//! The deputy: the original task at home, its user memory released, executing forwarded system
//! calls in its own context (its fds, cwd, credentials, pid and parent stay as they were).
//!
//! Two ways to run a forwarded call in it:
//! * **served** (the usual way): the deputy runs a 90-byte loop in a page of its own, sleeping on a
//!   futex in a memory file it shares with mosrun. A call is posted there (number, arguments, buffers),
//!   the futex is woken, the deputy runs the call and posts the result. No ptrace stop, no register
//!   access: the tracer only sees the deputy when a signal arrives for it (a signal-delivery-stop,
//!   reported by SIGCHLD; the signal is taken and forwarded, as before).
//! * **trap** (fallback when the shared memory cannot be set up, e.g. no descriptor left for the
//!   memory file): the deputy stays in a ptrace stop and each call is one PTRACE_CONT to a
//!   `syscall; int3` page.
//!
//! Protocol of the shared control page (offsets in bytes; the deputy's side is the machine code
//! below): `state` u32 at 0, `nr` u64 at 8, `args` 6×u64 at 16, `ret` u64 at 64; the buffers
//! follow at [`BUFS`]. mosrun writes nr/args/buffers, stores `state = POSTED` (release) and wakes the
//! futex. The deputy runs the call, stores `ret`, swaps `state` to `IDLE` and wakes the futex only if
//! the old value was `POSTED_WAITING` (mosrun asleep). mosrun touches `ret` and the buffers only when
//! it has seen `IDLE` (acquire); the deputy only while the state is posted.
use crate::channel::Wire;
use crate::ptrace::{Running, Stopped, Tracee};
use crate::sys::{self, SharedMem};
use crate::{mem, procfs, Error};
use mos_proto::deputy::{Buf, ExitStatus, MAX_BUF, NO_ARG};
use mos_proto::frame::FrameReader;
use mos_proto::migration::Rseq;
use nix::sys::signal::Signal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Bytes of the deputy's buffer area (in/out buffers of one forwarded call).
const AREA: u64 = MAX_BUF as u64 + 4096;

/// The real-time signals (32..=64; bit n-1 for signal n). The deputy keeps them blocked: a
/// real-time signal-delivery-stop cannot be represented by nix's `WaitStatus`/`Signal` (its
/// waitpid fails with EINVAL once the kernel has reported the stop, and the process was lost).
/// Blocked, they stay queued in the home task, with their siginfo and count, and are delivered
/// when the process comes home. Forwarding them needs raw signal numbers in `ptrace` (see the
/// ZDTM suite's `rt_signals` case).
const RT_SIGNALS: u64 = !0u64 << 31;

/// Offsets in the shared control page.
const STATE: usize = 0;
const NR: usize = 8;
const ARGS: usize = 16;
const RET: usize = 64;
/// Where the buffers start in the shared memory file.
const BUFS: usize = 4096;
/// Size of the shared memory file: control page and buffers.
const SHARED_LEN: usize = BUFS + AREA as usize;

/// `state`: no call posted (the deputy sleeps on the futex).
const IDLE: u32 = 0;
/// `state`: a call is posted; mosrun spins.
const POSTED: u32 = 1;
/// `state`: a call is posted and mosrun sleeps on the futex: wake it when done.
const POSTED_WAITING: u32 = 3;

/// The deputy's loop, entered with rbx = the shared control page (in the deputy):
/// ```text
/// top:  mov eax,[rbx]; test al,1; jnz run             ; a call posted?
///       mov edx,eax; mov rdi,rbx; xor esi,esi; xor r10d,r10d; mov eax,202; syscall; jmp top
///                                                      ; futex(&state, FUTEX_WAIT, seen, NULL)
/// run:  mov rax,[rbx+8]; mov rdi,[rbx+16]; mov rsi,[rbx+24]; mov rdx,[rbx+32]
///       mov r10,[rbx+40]; mov r8,[rbx+48]; mov r9,[rbx+56]; syscall
///       mov [rbx+64],rax; xor eax,eax; xchg [rbx],eax  ; ret, then state = IDLE
///       cmp eax,3; jne top                             ; mosrun asleep?
///       mov rdi,rbx; mov esi,1; mov edx,1; mov eax,202; syscall; jmp top   ; futex wake
/// ```
/// A call interrupted by a signal that the tracer suppresses is restarted by the kernel (the
/// `syscall` instruction is re-executed with the same registers).
const LOOP_CODE: [u8; 90] = [
    0x8b, 0x03, // mov eax,[rbx]
    0xa8, 0x01, // test al,1
    0x75, 0x13, // jnz run (+0x13 -> 0x19)
    0x89, 0xc2, // mov edx,eax
    0x48, 0x89, 0xdf, // mov rdi,rbx
    0x31, 0xf6, // xor esi,esi
    0x45, 0x31, 0xd2, // xor r10d,r10d
    0xb8, 0xca, 0x00, 0x00, 0x00, // mov eax,202
    0x0f, 0x05, // syscall
    0xeb, 0xe7, // jmp top
    // run (0x19):
    0x48, 0x8b, 0x43, 0x08, // mov rax,[rbx+8]
    0x48, 0x8b, 0x7b, 0x10, // mov rdi,[rbx+16]
    0x48, 0x8b, 0x73, 0x18, // mov rsi,[rbx+24]
    0x48, 0x8b, 0x53, 0x20, // mov rdx,[rbx+32]
    0x4c, 0x8b, 0x53, 0x28, // mov r10,[rbx+40]
    0x4c, 0x8b, 0x43, 0x30, // mov r8,[rbx+48]
    0x4c, 0x8b, 0x4b, 0x38, // mov r9,[rbx+56]
    0x0f, 0x05, // syscall
    0x48, 0x89, 0x43, 0x40, // mov [rbx+64],rax
    0x31, 0xc0, // xor eax,eax
    0x87, 0x03, // xchg [rbx],eax
    0x83, 0xf8, 0x03, // cmp eax,3
    0x75, 0xbc, // jne top
    0x48, 0x89, 0xdf, // mov rdi,rbx
    0xbe, 0x01, 0x00, 0x00, 0x00, // mov esi,1
    0xba, 0x01, 0x00, 0x00, 0x00, // mov edx,1
    0xb8, 0xca, 0x00, 0x00, 0x00, // mov eax,202
    0x0f, 0x05, // syscall
    0xeb, 0xa6, // jmp top
];

/// Where the lane loop starts in the deputy's code page (after [`LOOP_CODE`]).
const LANE_AT: u64 = 128;
/// The lane loop (native mode, kmod/deputy.rs): a marker `pause` that the module catches and
/// turns into the next call, whose result goes in the next marker's rdi.
/// ```text
/// marker: mov eax,34; syscall          ; the module's marker (LANE_MARKER_END: after the syscall)
///         mov rdi,rax; jmp marker
/// ```
const LANE_CODE: [u8; 12] = [0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x89, 0xc7, 0xeb, 0xf4];
const LANE_MARKER_END: u64 = 7;

/// The deputy's code page: the futex loop, then the lane loop at [`LANE_AT`].
fn code_page() -> Vec<u8> {
    let mut page = LOOP_CODE.to_vec();
    page.resize(LANE_AT as usize, 0xcc);
    page.extend_from_slice(&LANE_CODE);
    page
}

/// While asleep on a call, mosrun looks for stops of the deputy (a signal that arrived during the
/// call stops it until it is taken; or its death) after 1 ms, then at doubling intervals up to this.
const CALL_CHECK: Duration = Duration::from_millis(100);

#[derive(Debug)]
enum Task {
    /// In a ptrace stop: registers and memory can be used.
    Parked(Tracee<Stopped>),
    /// Running its loop (served mode).
    Serving(Tracee<Running>),
    /// Lost while being parked (it ended).
    Gone,
}

/// The memory shared with a served deputy.
#[derive(Debug)]
struct Shared {
    mem: SharedMem,
    /// Address of the shared memory in the deputy.
    base: u64,
}

#[derive(Debug)]
pub struct Deputy {
    task: Task,
    pid: nix::unistd::Pid,
    /// Trap mode: the buffer area (in the deputy).
    area: u64,
    /// Served mode.
    shared: Option<Shared>,
    /// Signals for the home pid taken with their siginfo (served mode), for
    /// [`take_siginfos`](Self::take_siginfos).
    siginfos: Vec<Vec<u8>>,
    /// Served mode: where the code page is in the deputy.
    code: u64,
    /// Served by the module (native mode, [`Deputy::serve_natively`]): the deputy runs the lane
    /// loop, calls are posted through the module, and lane calls reach it without mosrun.
    native: Option<crate::native::ServedDeputy>,
}

/// Maps the shared memory file into the deputy and here, and the loop code into the deputy.
/// Returns the shared memory and the code address. On failure the deputy is left with its memory
/// released (the caller falls back to trap mode).
fn serve_setup(t: &mut Tracee<Stopped>) -> Result<(Shared, u64), Error> {
    let pid = t.pid();
    let prot_rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let page = t.inject_ok(
        "mmap(deputy code)",
        libc::SYS_mmap,
        [0, 4096, prot_rw, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0],
    )?;
    mem::write_mem(pid, page, b"mos-deputy\0")?;
    let fd = t.inject_ok("memfd_create(deputy)", libc::SYS_memfd_create, [page, libc::MFD_CLOEXEC as u64, 0, 0, 0, 0])?;
    // The descriptor is the process's only for these few injections: closed before any forwarded
    // call can see it.
    let shared = (|| {
        t.inject_ok("ftruncate(deputy memfd)", libc::SYS_ftruncate, [fd, SHARED_LEN as u64, 0, 0, 0, 0])?;
        let base = t.inject_ok("mmap(deputy shared)", libc::SYS_mmap, [0, SHARED_LEN as u64, prot_rw, libc::MAP_SHARED as u64, fd, 0])?;
        let pidfd = sys::pidfd_open(pid).map_err(|e| Error::Sys { what: "pidfd_open", pid: pid.as_raw(), errno: e })?;
        let local = sys::pidfd_getfd(std::os::fd::AsRawFd::as_raw_fd(&pidfd), fd as i32).map_err(|e| Error::Sys {
            what: "pidfd_getfd",
            pid: pid.as_raw(),
            errno: e,
        })?;
        let mem = SharedMem::map(&local, SHARED_LEN).map_err(|e| Error::Sys { what: "mmap(shared)", pid: pid.as_raw(), errno: e })?;
        Ok::<_, Error>(Shared { mem, base })
    })();
    let _ = t.inject(libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
    let shared = shared?;
    mem::write_mem(pid, page, &code_page())?;
    t.inject_ok("mprotect(deputy code)", libc::SYS_mprotect, [page, 4096, (libc::PROT_READ | libc::PROT_EXEC) as u64, 0, 0, 0])?;
    Ok((shared, page))
}

impl Deputy {
    /// Turns a frozen task into a deputy: unregister rseq, unmap all user memory (the kernel's
    /// vDSO areas stay: they hold the injection gadget), then set up served mode (or, failing
    /// that, the trap page) and let it wait for calls.
    pub fn release(t: Tracee<Stopped>, rseq: Option<&Rseq>) -> Result<Deputy, Error> {
        Self::release_keeping(t, rseq, &[])
    }

    /// Like [`Deputy::release`], leaving mapped the areas that lie inside `keep` (`(start, end)`):
    /// the caller frees them later with [`Deputy::execute`]d munmaps while the deputy already
    /// serves (freeing a large copy takes ~75 ms per GiB here, which the remote process's first
    /// forwarded call would otherwise wait for).
    pub fn release_keeping(mut t: Tracee<Stopped>, rseq: Option<&Rseq>, keep: &[(u64, u64)]) -> Result<Deputy, Error> {
        let pid = t.pid();
        if let Some(r) = rseq {
            // Ignore failure: it was not registered (or already unregistered).
            let _ = t.inject(libc::SYS_rseq, [r.ptr, u64::from(r.len), 1, u64::from(r.sig), 0, 0]);
        }
        let kept = |m: &procfs::MapEntry| keep.iter().any(|(s, e)| *s <= m.start && m.end <= *e);
        for m in procfs::maps(pid)?.iter().filter(|m| !m.is_special() && !kept(m)) {
            t.inject_ok("munmap(release)", libc::SYS_munmap, [m.start, m.len(), 0, 0, 0, 0])?;
        }
        // Nothing blocked but the real-time signals (see RT_SIGNALS): every other signal sent to
        // the home pid surfaces here and is forwarded; the remote component's own mask decides (the
        // home mask comes back with the context).
        t.set_sigmask(RT_SIGNALS)?;
        // Without mosrun it could only wait forever (the remote copy dies with the channel).
        t.exit_with_tracer()?;
        match serve_setup(&mut t) {
            Ok((shared, code)) => {
                let mut r = t.regs()?;
                r.rip = code;
                r.rbx = shared.base;
                // No stack is used; a valid one anyway.
                r.rsp = shared.base + BUFS as u64;
                r.rax = 0;
                r.orig_rax = u64::MAX;
                t.set_regs(r)?;
                let task = Task::Serving(t.resume()?);
                Ok(Deputy { task, pid, area: 0, shared: Some(shared), siginfos: Vec::new(), code, native: None })
            }
            Err(e) => {
                tracing::warn!(pid = pid.as_raw(), error = %e, "deputy without shared memory: one ptrace stop per forwarded call");
                for m in procfs::maps(pid)?.iter().filter(|m| !m.is_special()) {
                    t.inject_ok("munmap(release)", libc::SYS_munmap, [m.start, m.len(), 0, 0, 0, 0])?;
                }
                let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
                let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
                let area = t.inject_ok("mmap(deputy area)", libc::SYS_mmap, [0, AREA + 4096, prot, flags, u64::MAX, 0])?;
                // A `syscall; int3` page after the buffers: one ptrace stop per forwarded call.
                let code = area + AREA;
                mem::write_mem(pid, code, &[0x0f, 0x05, 0xcc, 0xcc])?;
                t.inject_ok(
                    "mprotect(deputy code)",
                    libc::SYS_mprotect,
                    [code, 4096, (libc::PROT_READ | libc::PROT_EXEC) as u64, 0, 0, 0],
                )?;
                t.set_trap(Some(code));
                // Its user memory is gone: the registers it was frozen with will never be resumed.
                t.registers_disposable()?;
                Ok(Deputy { task: Task::Parked(t), pid, area, shared: None, siginfos: Vec::new(), code: 0, native: None })
            }
        }
    }

    /// Does the deputy run calls without ptrace stops (served mode)?
    pub fn served(&self) -> bool {
        self.shared.is_some()
    }

    /// Is the deputy served by the module (native mode)?
    pub fn served_natively(&self) -> bool {
        self.native.is_some()
    }

    /// Native mode (kmod/deputy.rs): the module serves the deputy from now on, with the kernel
    /// lane `lane` (a connected stream socket to the remote node's module; the module keeps its
    /// own reference) if given. The deputy leaves its futex loop for the lane loop; calls posted
    /// by [`execute`](Self::execute) go through the module. Only for a served deputy that is our
    /// own child; on failure it stays as it was.
    pub fn serve_natively(&mut self, lane: Option<std::os::fd::BorrowedFd<'_>>) -> Result<(), Error> {
        if self.shared.is_none() || self.native.is_some() {
            return Err(Error::Sys { what: "MOSIX_IOC_DEPUTY", pid: self.pid.as_raw(), errno: nix::errno::Errno::EINVAL });
        }
        let (pid, code) = (self.pid, self.code);
        let t = self.parked()?;
        let mut r = t.regs()?;
        // rbx (the shared page) is kept: the futex loop can take over again.
        r.rip = code + LANE_AT;
        r.rax = 0;
        r.orig_rax = u64::MAX;
        t.set_regs(r)?;
        let served = crate::native::serve_deputy(pid, lane, code + LANE_AT + LANE_MARKER_END, &crate::policy::lane_numbers());
        if served.is_err() {
            // Back to the futex loop.
            r.rip = code;
            t.set_regs(r)?;
        }
        if let Task::Parked(t) = std::mem::replace(&mut self.task, Task::Gone) {
            self.task = Task::Serving(t.resume()?);
        }
        self.native = Some(served?);
        Ok(())
    }

    /// Stops a served deputy's loop and holds it in a ptrace stop (for the return home or its
    /// end). Signals that arrive meanwhile are recorded for [`take_signals`](Self::take_signals).
    pub fn park(&mut self) -> Result<(), Error> {
        self.task = match std::mem::replace(&mut self.task, Task::Gone) {
            Task::Serving(t) => Task::Parked(t.interrupt()?),
            Task::Gone => return Err(Error::TraceeGone { pid: self.pid.as_raw(), how: "lost earlier".into(), code: None }),
            parked => parked,
        };
        Ok(())
    }

    fn parked(&mut self) -> Result<&mut Tracee<Stopped>, Error> {
        self.park()?;
        match &mut self.task {
            Task::Parked(t) => Ok(t),
            _ => unreachable!("park() leaves the task parked or fails"),
        }
    }

    /// The task, back to vDSO-gadget injection (the trampoline page and the shared memory go when
    /// its memory is rebuilt).
    ///
    /// # Panics
    /// If a served deputy was not [parked](Self::park) first.
    pub fn into_tracee(mut self) -> Tracee<Stopped> {
        // Parked: its registers are about to be replaced; the module stops serving it.
        if matches!(self.task, Task::Parked(_)) {
            self.native = None;
        }
        match std::mem::replace(&mut self.task, Task::Gone) {
            Task::Parked(mut t) => {
                t.set_trap(None);
                t
            }
            _ => panic!("Deputy::into_tracee on a deputy that was not parked"),
        }
    }

    /// Signals sent to the home pid, taken from the deputy (they are not delivered at home).
    /// A served deputy reports them by stopping (the tracer gets SIGCHLD): with `probe` its stops
    /// are taken. A trap-mode deputy surfaces them during forwarded calls; with `probe`, pending ones
    /// are looked up in /proc and surfaced with a no-op injection.
    pub fn take_signals(&mut self, probe: bool) -> Result<Vec<Signal>, Error> {
        let pid = self.pid;
        match &mut self.task {
            Task::Serving(t) => {
                if probe {
                    let infos = t.take_stops_siginfo()?;
                    self.siginfos.extend(infos.iter().map(|i| i.to_vec()));
                }
                Ok(std::mem::take(&mut t.pending_signals))
            }
            Task::Parked(t) => {
                if probe && self.shared.is_none() {
                    let st = procfs::status(pid)?;
                    // Blocked real-time signals wait for the return home: no injection for them.
                    if (st.sig_pnd | st.shd_pnd) & !RT_SIGNALS != 0 {
                        t.inject(libc::SYS_getpid, [0; 6])?;
                    }
                }
                Ok(std::mem::take(&mut t.pending_signals))
            }
            Task::Gone => Err(Error::TraceeGone { pid: pid.as_raw(), how: "lost earlier".into(), code: None }),
        }
    }

    /// Signals for the home pid that [`take_signals`](Self::take_signals) took with their siginfo
    /// (a served deputy's signal-delivery-stops), each a `siginfo_t`.
    pub fn take_siginfos(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.siginfos)
    }

    /// Are real-time signals pending on the deputy? (They stay blocked there, see [`RT_SIGNALS`]:
    /// take them with [`take_rt_signals`](Self::take_rt_signals).)
    pub fn rt_pending(&self) -> Result<bool, Error> {
        let st = procfs::status(self.pid)?;
        Ok((st.sig_pnd | st.shd_pnd) & RT_SIGNALS != 0)
    }

    /// Takes the real-time signals pending on the deputy, each as its `siginfo_t`, in the order
    /// they would be delivered (rt_sigtimedwait with a zero timeout, run in the deputy).
    pub fn take_rt_signals(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let mut got = Vec::new();
        // Bounded: the queue cannot grow past RLIMIT_SIGPENDING anyway.
        while got.len() < 4096 {
            let bufs = [
                Buf::In { arg: 0, data: RT_SIGNALS.to_le_bytes().to_vec() },
                Buf::Out { arg: 1, len: sys::SIGINFO_LEN as u32, by_ret: false },
                Buf::In { arg: 2, data: vec![0; 16] },
            ];
            let (r, mut outs) = self.execute(libc::SYS_rt_sigtimedwait as u32, [0, 0, 0, 8, 0, 0], &bufs)?;
            if r <= 0 {
                break;
            }
            got.push(outs.pop().unwrap_or_default());
        }
        Ok(got)
    }

    /// Executes a forwarded call. Returns the raw result and the `Out` buffers.
    /// A call interrupted by a signal (which the deputy holds back) is restarted.
    pub fn execute(&mut self, nr: u32, mut args: [u64; 6], bufs: &[Buf]) -> Result<(i64, Vec<Vec<u8>>), Error> {
        let pid = self.pid;
        let base = match &self.shared {
            Some(s) => s.base + BUFS as u64,
            None => self.area,
        };
        // Each buffer at its offset in the area; In and InOut data copied there now.
        let mut off = 0u64;
        let mut outs = Vec::new();
        // Offset and length of each entry of `bufs` (a fixup has none).
        let mut at: Vec<Option<(u64, u64)>> = Vec::with_capacity(bufs.len());
        for b in bufs {
            let (arg, len) = match b {
                Buf::In { arg, data } | Buf::InOut { arg, data } => (*arg, data.len() as u64),
                Buf::Out { arg, len, .. } => (*arg, u64::from(*len)),
                Buf::Fixup { .. } => {
                    at.push(None);
                    continue;
                }
            };
            if (arg > 5 && arg != NO_ARG) || off + len > AREA {
                return Ok((-(libc::EINVAL as i64), Vec::new()));
            }
            if arg != NO_ARG {
                args[arg as usize] = base + off;
            }
            at.push(Some((off, len)));
            if let Buf::In { data, .. } | Buf::InOut { data, .. } = b {
                if !data.is_empty() {
                    self.put(base, off, data)?;
                }
            }
            if !matches!(b, Buf::In { .. }) {
                outs.push((off, len));
            }
            off = (off + len + 15) & !15;
        }
        // Pointers inside buffers, now that every buffer has its place.
        for f in bufs {
            let Buf::Fixup { buf, at: pos, target } = *f else { continue };
            let place = |i: u16| at.get(i as usize).copied().flatten();
            let into_readable = matches!(bufs.get(buf as usize), Some(Buf::In { .. } | Buf::InOut { .. }));
            match (place(buf), place(target)) {
                (Some((o, len)), Some((t, _))) if into_readable && u64::from(pos) + 8 <= len => {
                    self.put(base, o + u64::from(pos), &(base + t).to_le_bytes())?;
                }
                _ => return Ok((-(libc::EINVAL as i64), Vec::new())),
            }
        }
        let ret = if self.shared.is_some() { self.run_served(nr, args)? } else { self.run_trapped(nr, args)? };
        // Out and InOut buffers come back in request order.
        let mut out_data = Vec::new();
        for (b, (o, len)) in bufs.iter().filter(|b| matches!(b, Buf::Out { .. } | Buf::InOut { .. })).zip(outs) {
            let by_ret = matches!(b, Buf::Out { by_ret: true, .. });
            let n = if ret < 0 {
                0
            } else if by_ret {
                (ret as u64).min(len)
            } else {
                len
            };
            let mut v = vec![0u8; n as usize];
            if n > 0 {
                match &self.shared {
                    Some(sh) => sh.mem.read(BUFS + o as usize, &mut v),
                    None => {
                        mem::readv(pid, &[(base + o, n as usize)], &mut v)?;
                    }
                }
            }
            out_data.push(v);
        }
        Ok((ret, out_data))
    }

    /// Copies `data` to offset `off` of the buffer area (at `base` in the deputy).
    fn put(&self, base: u64, off: u64, data: &[u8]) -> Result<(), Error> {
        match &self.shared {
            Some(sh) => sh.mem.write(BUFS + off as usize, data),
            None => {
                mem::writev(self.pid, &[(base + off, data.len())], data)?;
            }
        }
        Ok(())
    }

    /// Trap mode: one injection through the `syscall; int3` page.
    fn run_trapped(&mut self, nr: u32, args: [u64; 6]) -> Result<i64, Error> {
        let t = self.parked()?;
        loop {
            let r = t.inject(nr as libc::c_long, args)?;
            if !matches!(-r, 512 | 513 | 514 | 516) {
                return Ok(r);
            }
        }
    }

    /// Served mode: posts the call in the shared page, wakes the deputy and sleeps on the futex
    /// until its result is there, looking for stops of the deputy at growing intervals up to
    /// [`CALL_CHECK`].
    fn run_served(&mut self, nr: u32, args: [u64; 6]) -> Result<i64, Error> {
        let Some(sh) = &self.shared else { unreachable!("served mode has shared memory") };
        let Task::Serving(t) = &mut self.task else {
            return Err(Error::TraceeGone { pid: self.pid.as_raw(), how: "deputy not serving".into(), code: None });
        };
        if let Some(n) = &self.native {
            // Through the module: posted, then waited for, looking at the deputy's stops between
            // waits as below.
            let mut post = Some(nr);
            let mut nap = Duration::from_millis(1);
            loop {
                match n.call(post, args, nap) {
                    Ok(Some(ret)) => return Ok(ret),
                    Ok(None) => post = None,
                    Err(e) => {
                        t.take_stops()?;
                        return Err(Error::Sys { what: "MOSIX_IOC_DEPUTY_CALL", pid: self.pid.as_raw(), errno: e });
                    }
                }
                t.take_stops()?;
                nap = (nap * 2).min(CALL_CHECK);
            }
        }
        let m = &sh.mem;
        m.u64_at(NR).store(u64::from(nr), Ordering::Relaxed);
        for (i, a) in args.iter().enumerate() {
            m.u64_at(ARGS + 8 * i).store(*a, Ordering::Relaxed);
        }
        let state = m.u32_at(STATE);
        state.store(POSTED, Ordering::Release);
        sys::futex_wake(state);
        // Asleep until it is done: the deputy wakes us when it sees POSTED_WAITING. (No spinning
        // here: the deputy usually runs on this CPU as soon as we sleep; measured, a spin did not
        // pay.)
        let mut nap = Duration::from_millis(1);
        loop {
            let now = state.compare_exchange(POSTED, POSTED_WAITING, Ordering::AcqRel, Ordering::Acquire).unwrap_or_else(|v| v);
            if now == IDLE {
                break;
            }
            sys::futex_wait(state, POSTED_WAITING, nap);
            if state.load(Ordering::Acquire) == IDLE {
                break;
            }
            // A signal may have stopped it in the call (a kill of its own group, say), or it ended.
            t.take_stops()?;
            nap = (nap * 2).min(CALL_CHECK);
        }
        Ok(m.u64_at(RET).load(Ordering::Relaxed) as i64)
    }

    /// Forks the deputy (MOSIX: the child of a migrated process gets a deputy that is a fork of
    /// its parent's, so it has the same descriptors, cwd, credentials and parent at home). The
    /// fork is injected while the deputy is parked; the child starts traced and stopped, its
    /// memory is released (the loop page and the shared memory are the parent's), every signal
    /// but SIGKILL/SIGSTOP blocked, and it is detached sleeping in `pause()`, for another tracer
    /// to seize ([`Tracee::seize`], then [`Deputy::release`]). Signals that arrive for it
    /// meanwhile stay pending. Returns its pid, or the fork's negative errno.
    pub fn fork(&mut self) -> Result<Result<nix::unistd::Pid, i64>, Error> {
        let served = self.served();
        let t = self.parked()?;
        let child = t.inject_fork();
        // The parent goes back to its loop (the registers it was parked with lead there).
        if served {
            if let Task::Parked(t) = std::mem::replace(&mut self.task, Task::Gone) {
                self.task = Task::Serving(t.resume()?);
            }
        }
        let mut c = match child? {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let pid = c.pid();
        let prepared = (|| {
            c.set_sigmask(!((1u64 << (libc::SIGKILL - 1)) | (1u64 << (libc::SIGSTOP - 1))))?;
            for m in procfs::maps(pid)?.iter().filter(|m| !m.is_special()) {
                c.inject_ok("munmap(forked deputy)", libc::SYS_munmap, [m.start, m.len(), 0, 0, 0, 0])?;
            }
            let mut r = c.regs()?;
            r.rip = c.gadget();
            r.rax = libc::SYS_pause as u64;
            r.orig_rax = u64::MAX;
            c.set_regs(r)
        })();
        match prepared {
            Ok(()) => {
                c.detach(None)?;
                Ok(Ok(pid))
            }
            Err(e) => {
                c.kill();
                Err(e)
            }
        }
    }

    /// Ends the deputy the way the remote process ended, so the parent at home sees that status.
    pub fn end(mut self, status: ExitStatus) -> Result<(), Error> {
        let pid = self.pid;
        self.park()?;
        self.native = None;
        let Task::Parked(mut t) = std::mem::replace(&mut self.task, Task::Gone) else { unreachable!("parked") };
        t.set_trap(None);
        match status {
            ExitStatus::Code(c) => {
                let mut r = t.regs()?;
                r.rax = libc::SYS_exit_group as u64;
                r.orig_rax = u64::MAX;
                r.rdi = c as u64;
                r.rip = t.gadget();
                t.set_regs(r)?;
                t.detach(None)
            }
            ExitStatus::Signal { sig, .. } => {
                let s = Signal::try_from(sig).unwrap_or(Signal::SIGKILL);
                // No core file from an empty deputy; default action; signal unblocked.
                let _ = crate::sys::set_rlimit(pid, libc::RLIMIT_CORE, 0, 0);
                // A zeroed sigaction (SIG_DFL) in a scratch page of the deputy.
                let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
                let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
                let act = t.inject_ok("mmap(end)", libc::SYS_mmap, [0, 4096, prot, flags, u64::MAX, 0])?;
                t.inject(libc::SYS_rt_sigaction, [sig as u64, act, 0, 8, 0, 0])?;
                let mask = t.sigmask()? & !(1u64 << (sig - 1));
                t.set_sigmask(mask)?;
                // The signal pends while the task is stopped and acts on detach (or kills at once).
                let _ = nix::sys::signal::kill(pid, s);
                let _ = t.detach(None);
                Ok(())
            }
        }
    }
}

/// Busy-polls stream `s` (non-blocking reads into `rx`) until a whole frame is held, for at most
/// `budget`. Both ends of the deputy channel use it where the next frame is usually due within
/// µs: catching it this way saves the sleep and wake-up of a blocking read. Returns whether a frame
/// came. End of stream or an error stops it (the blocking read that follows reports them).
pub fn spin_for_frame<S: Wire + ?Sized>(rx: &mut FrameReader, s: &mut S, budget: Duration) -> bool {
    let start = Instant::now();
    while !rx.has_frame() {
        let r = rx.fill_with(|b| s.read_now(b));
        match r {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
        if start.elapsed() >= budget {
            return false;
        }
        std::hint::spin_loop();
    }
    true
}

/// When to busy-poll before sleeping ([`spin_for_frame`]): spinning pays only when the other side
/// answers within the budget on a CPU of its own. When it does not (the CPUs are busy: the spinner
/// was preempted; or the process thinks between calls: no frame came), spinning only steals CPU
/// time: after such a miss it stops for a number of waits that doubles with each further miss (up
/// to 256, so that one spin in 256 waits is all it costs when it never pays), then tries again.
#[derive(Debug, Clone)]
pub struct SpinPolicy {
    budget: Duration,
    misses: u32,
    rest: u32,
}

impl SpinPolicy {
    pub const fn new(budget: Duration) -> SpinPolicy {
        SpinPolicy { budget, misses: 0, rest: 0 }
    }

    /// How long to spin for the next wait (zero: do not spin).
    pub fn budget(&mut self) -> Duration {
        if self.rest > 0 {
            self.rest -= 1;
            return Duration::ZERO;
        }
        self.budget
    }

    /// Whether the spin just made (after a non-zero [`budget`](Self::budget)) caught its frame.
    pub fn caught(&mut self, hit: bool) {
        if hit {
            self.misses = 0;
        } else {
            self.misses = (self.misses + 1).min(8);
            self.rest = 1 << self.misses;
        }
    }

    /// Spins for a frame if the policy says so; true when one came while spinning.
    pub fn spin<S: Wire + ?Sized>(&mut self, rx: &mut FrameReader, s: &mut S) -> bool {
        let budget = self.budget();
        if budget.is_zero() {
            return false;
        }
        let before = sys::involuntary_switches();
        let hit = spin_for_frame(rx, s, budget);
        // Preempted while spinning: the CPUs are shared with other work (or with the very side
        // we wait for), so the spin took CPU time from someone. Counted as a miss.
        let preempted = sys::involuntary_switches() != before;
        self.caught(hit && !preempted);
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{getpid, Pid};

    /// A child process (`sleep`), seized and stopped by this thread and turned into a deputy, as
    /// mosrun does with its program; `nofile` is its soft descriptor limit at the release.
    fn deputy(nofile: Option<u64>) -> Deputy {
        // Reaped with waitpid by each test (or by take_signals when it is killed).
        let pid = Pid::from_raw(std::process::Command::new("sleep").arg("1000").spawn().expect("spawn sleep").id() as i32);
        // The process must have started (its rseq registered, its memory mapped) before the freeze.
        let deadline = Instant::now() + Duration::from_secs(10);
        // Started means: `sleep` mapped and blocked in its nanosleep (state S), past its start-up.
        let started = |pid| {
            procfs::maps(pid).is_ok_and(|m| m.iter().any(|m| m.name.ends_with("/sleep")))
                && procfs::status(pid).is_ok_and(|st| st.state == 'S')
        };
        while !started(pid) {
            assert!(Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Tracee::<Running>::seize(pid).expect("seize").interrupt().expect("interrupt");
        let rseq = t.rseq().expect("rseq config").map(|(ptr, len, sig)| Rseq { ptr, len, sig });
        if let Some(n) = nofile {
            let (_, hard) = sys::get_rlimit(pid, libc::RLIMIT_NOFILE).expect("prlimit");
            sys::set_rlimit(pid, libc::RLIMIT_NOFILE, n, hard).expect("prlimit");
        }
        Deputy::release(t, rseq.as_ref()).expect("release")
    }

    /// Calls, buffers and signals through a deputy, then its end with a code.
    fn exercise(mut d: Deputy) {
        let pid = d.pid;
        // Its own context: the parent is this process.
        assert_eq!(d.execute(libc::SYS_getppid as u32, [0; 6], &[]).unwrap().0, i64::from(getpid().as_raw()));
        // Out buffer: a pipe of its own; In and Out data through it.
        let (r, outs) = d.execute(libc::SYS_pipe2 as u32, [0; 6], &[Buf::Out { arg: 0, len: 8, by_ret: false }]).unwrap();
        assert_eq!(r, 0);
        let fds = &outs[0];
        let (rd, wr) =
            (u64::from(u32::from_le_bytes(fds[0..4].try_into().unwrap())), u64::from(u32::from_le_bytes(fds[4..8].try_into().unwrap())));
        let data = b"through the deputy".to_vec();
        let w = d.execute(libc::SYS_write as u32, [wr, 0, data.len() as u64, 0, 0, 0], &[Buf::In { arg: 1, data: data.clone() }]).unwrap();
        assert_eq!(w.0, data.len() as i64);
        let (n, outs) = d.execute(libc::SYS_read as u32, [rd, 0, 100, 0, 0, 0], &[Buf::Out { arg: 1, len: 100, by_ret: true }]).unwrap();
        assert_eq!((n, &outs[0]), (data.len() as i64, &data));
        // A pointer inside a buffer (Fixup): writev through an iovec array that is not an argument
        // itself, pointing at a data buffer that is not one either.
        let iov = [0u8; 8].into_iter().chain(5u64.to_le_bytes()).collect::<Vec<u8>>();
        let bufs = [
            Buf::In { arg: 1, data: iov.clone() },
            Buf::In { arg: NO_ARG, data: b"fixup".to_vec() },
            Buf::Fixup { buf: 0, at: 0, target: 1 },
        ];
        assert_eq!(d.execute(libc::SYS_writev as u32, [wr, 0, 1, 0, 0, 0], &bufs).unwrap().0, 5);
        let (n, outs) = d.execute(libc::SYS_read as u32, [rd, 0, 100, 0, 0, 0], &[Buf::Out { arg: 1, len: 100, by_ret: true }]).unwrap();
        assert_eq!((n, &outs[0][..]), (5, &b"fixup"[..]));
        // A fixup that does not fit its buffer fails the call.
        let bad = [Buf::In { arg: 1, data: iov }, Buf::Fixup { buf: 0, at: 12, target: 0 }];
        assert_eq!(d.execute(libc::SYS_writev as u32, [wr, 0, 1, 0, 0, 0], &bad).unwrap().0, -(libc::EINVAL as i64));
        // A failing call returns its errno and no data.
        let (e, outs) = d.execute(libc::SYS_read as u32, [999, 0, 8, 0, 0, 0], &[Buf::Out { arg: 1, len: 8, by_ret: true }]).unwrap();
        assert_eq!((e, outs[0].len()), (-(libc::EBADF as i64), 0));
        // A signal for it is taken (not delivered at home), whichever way it surfaces.
        nix::sys::signal::kill(pid, Signal::SIGUSR1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            got = d.take_signals(true).unwrap();
            // A served deputy hands them over with their siginfo: the sender is this process.
            for info in d.take_siginfos() {
                let field = |off: usize| i32::from_le_bytes(info[off..off + 4].try_into().unwrap());
                assert_eq!((field(8), field(16)), (libc::SI_USER, getpid().as_raw()), "si_code, si_pid");
                got.push(Signal::try_from(field(0)).unwrap());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, vec![Signal::SIGUSR1]);
        // Real-time signals stay queued in the deputy until they are taken, with their siginfo.
        let sig = libc::SIGRTMIN() + 2;
        for v in [11i32, 22] {
            // As sigqueue() makes it: si_signo, si_code SI_QUEUE, si_pid, si_uid, si_value.
            let mut info = vec![0u8; sys::SIGINFO_LEN];
            info[0..4].copy_from_slice(&sig.to_le_bytes());
            info[8..12].copy_from_slice(&libc::SI_QUEUE.to_le_bytes());
            info[16..20].copy_from_slice(&getpid().as_raw().to_le_bytes());
            info[24..28].copy_from_slice(&v.to_le_bytes());
            sys::queue_signal(pid, &info).unwrap();
        }
        assert!(d.rt_pending().unwrap());
        let infos = d.take_rt_signals().unwrap();
        let field = |i: &Vec<u8>, off: usize| i32::from_le_bytes(i[off..off + 4].try_into().unwrap());
        // si_signo at 0, si_code at 8, si_pid at 16, si_value at 24.
        let got: Vec<_> = infos.iter().map(|i| (field(i, 0), field(i, 8), field(i, 16), field(i, 24))).collect();
        assert_eq!(got, vec![(sig, libc::SI_QUEUE, getpid().as_raw(), 11), (sig, libc::SI_QUEUE, getpid().as_raw(), 22)]);
        assert!(!d.rt_pending().unwrap());
        assert_eq!(d.execute(libc::SYS_getppid as u32, [0; 6], &[]).unwrap().0, i64::from(getpid().as_raw()), "calls go on");
        d.park().unwrap();
        d.end(ExitStatus::Code(7)).unwrap();
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 7));
    }

    /// wait4 run in deputy `d` for `child`: (result, raw status).
    fn wait_in(d: &mut Deputy, child: Pid) -> (i64, i32) {
        let (r, outs) = d
            .execute(libc::SYS_wait4 as u32, [child.as_raw() as u64, 0, 0, 0, 0, 0], &[Buf::Out { arg: 1, len: 4, by_ret: false }])
            .unwrap();
        (r, outs.first().filter(|o| o.len() == 4).map_or(-1, |o| i32::from_le_bytes(o[..4].try_into().unwrap())))
    }

    #[test]
    fn a_forked_deputy_is_the_deputys_child_and_can_be_served_by_another_tracer() {
        let mut d = deputy(None);
        let parent = d.pid;
        // A descriptor of the deputy's own, which the child deputy must have too.
        let (r, outs) = d.execute(libc::SYS_pipe2 as u32, [0; 6], &[Buf::Out { arg: 0, len: 8, by_ret: false }]).unwrap();
        assert_eq!(r, 0);
        let wr = u64::from(u32::from_le_bytes(outs[0][4..8].try_into().unwrap()));
        let rd = u64::from(u32::from_le_bytes(outs[0][0..4].try_into().unwrap()));
        let child = d.fork().unwrap().expect("fork in the deputy");
        // The parent deputy goes on serving calls.
        assert_eq!(d.execute(libc::SYS_getppid as u32, [0; 6], &[]).unwrap().0, i64::from(getpid().as_raw()));
        // The child was left detached, in pause(): another thread (a tracer of its own, as the
        // forked child's mosrun is) takes it over and makes it a served deputy.
        let served = std::thread::spawn(move || {
            let t = Tracee::<Running>::seize(child).expect("seize the child deputy").interrupt().expect("interrupt");
            let mut c = Deputy::release(t, None).expect("release the child deputy");
            assert!(c.served());
            let ppid = c.execute(libc::SYS_getppid as u32, [0; 6], &[]).unwrap().0;
            let data = b"from the child deputy".to_vec();
            let w = c.execute(libc::SYS_write as u32, [wr, 0, data.len() as u64, 0, 0, 0], &[Buf::In { arg: 1, data }]).unwrap().0;
            c.park().unwrap();
            c.end(ExitStatus::Code(23)).unwrap();
            (ppid, w)
        })
        .join()
        .unwrap();
        assert_eq!(served, (i64::from(parent.as_raw()), 21), "the child's parent is the deputy; it has the deputy's pipe");
        let (n, outs) = d.execute(libc::SYS_read as u32, [rd, 0, 100, 0, 0, 0], &[Buf::Out { arg: 1, len: 100, by_ret: true }]).unwrap();
        assert_eq!((n, &outs[0][..]), (21, &b"from the child deputy"[..]));
        // wait4 in the parent deputy sees the status the child deputy ended with.
        let (r, st) = wait_in(&mut d, child);
        assert_eq!((r, libc::WIFEXITED(st), libc::WEXITSTATUS(st)), (i64::from(child.as_raw()), true, 23));
        d.park().unwrap();
        d.end(ExitStatus::Code(0)).unwrap();
        assert_eq!(waitpid(parent, None).unwrap(), WaitStatus::Exited(parent, 0));
    }

    #[test]
    fn spin_policy_backs_off_after_misses_and_resumes_after_a_hit() {
        let b = Duration::from_micros(10);
        let mut p = SpinPolicy::new(b);
        assert_eq!(p.budget(), b);
        let rest = |p: &mut SpinPolicy| (0..).take_while(|_| p.budget().is_zero()).count();
        p.caught(false);
        assert_eq!(rest(&mut p), 2);
        p.caught(false);
        assert_eq!(rest(&mut p), 4);
        for _ in 0..20 {
            p.caught(false);
        }
        assert_eq!(rest(&mut p), 256, "capped");
        p.caught(true);
        assert_eq!(p.budget(), b);
        p.caught(false);
        assert_eq!(rest(&mut p), 2, "a hit starts the count again");
    }

    #[test]
    fn served_deputy_runs_calls_and_surfaces_signals() {
        let d = deputy(None);
        assert!(d.served());
        exercise(d);
    }

    #[test]
    fn without_a_free_descriptor_the_deputy_falls_back_to_the_trap_page() {
        // memfd_create fails with EMFILE: one ptrace stop per call instead.
        let d = deputy(Some(0));
        assert!(!d.served());
        // The pipe of `exercise` needs descriptors: give them back now.
        let (_, hard) = sys::get_rlimit(d.pid, libc::RLIMIT_NOFILE).unwrap();
        sys::set_rlimit(d.pid, libc::RLIMIT_NOFILE, 64, hard).unwrap();
        exercise(d);
    }

    #[test]
    fn a_served_deputy_ends_by_the_signal_that_ended_the_process() {
        let mut d = deputy(None);
        let pid = d.pid;
        assert_eq!(d.execute(libc::SYS_getppid as u32, [0; 6], &[]).unwrap().0, i64::from(getpid().as_raw()));
        d.end(ExitStatus::Signal { sig: libc::SIGTERM, core: false }).unwrap();
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Signaled(pid, Signal::SIGTERM, false));
    }

    #[test]
    fn a_served_deputy_that_is_killed_is_reported_gone() {
        let mut d = deputy(None);
        let pid = d.pid;
        nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match d.take_signals(true) {
                Err(Error::TraceeGone { code, .. }) => {
                    assert_eq!(code, Some(128 + libc::SIGKILL));
                    break;
                }
                other => assert!(Instant::now() < deadline, "still not gone: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
