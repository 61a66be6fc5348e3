//! A typestate wrapper over ptrace: only a [`Stopped`] tracee can have its registers and memory read
//! or written, or system calls injected. Injection uses a `syscall` instruction found in the tracee's
//! own vDSO with PTRACE_SYSCALL entry/exit stops, so no code is ever written into the process.
use crate::sys;
use crate::Error;
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::marker::PhantomData;

/// State marker: the tracee runs.
#[derive(Debug)]
pub struct Running;
/// State marker: the tracee sits in a ptrace stop.
#[derive(Debug)]
pub struct Stopped;

/// `struct user_regs_struct`.
pub type Regs = libc::user_regs_struct;

/// Shell-style status of an ended process: its exit code, or 128 + the signal that killed it.
pub fn shell_code(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// How the tracee ended while we waited for a stop.
fn gone(pid: Pid, ws: WaitStatus) -> Error {
    Error::TraceeGone { pid: pid.as_raw(), how: format!("{ws:?}"), code: shell_code(ws) }
}

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// Undoes an interrupted system call the way the kernel would on return to user mode, so the regs
/// can be resumed with `orig_rax = -1`. `same_task` keeps restart_syscall for RESTARTBLOCK (the
/// kernel's restart block only survives in the same task); a new task restarts the call itself.
pub fn fixup_restart(regs: &mut Regs, same_task: bool) {
    if (regs.orig_rax as i64) >= 0 {
        let e = -(regs.rax as i64);
        if matches!(e, ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK) {
            regs.rax = if e == ERESTART_RESTARTBLOCK && same_task { libc::SYS_restart_syscall as u64 } else { regs.orig_rax };
            regs.rip -= 2;
        }
    }
    regs.orig_rax = u64::MAX;
}

/// A traced task in state `S`.
#[derive(Debug)]
pub struct Tracee<S> {
    pid: Pid,
    /// Address of a `syscall` instruction (in the vDSO) used for injection.
    gadget: u64,
    /// Signals that arrived while we held the task; they were suppressed and must be delivered later.
    pub pending_signals: Vec<Signal>,
    /// Address of `syscall; int3` in a page of the tracee, when one exists: injection then needs
    /// one stop (the int3 trap) instead of two syscall stops.
    trap: Option<u64>,
    /// With a trap page and no user code left to resume (the deputy): base registers for injected
    /// calls, which are then neither saved nor restored.
    scratch_regs: Option<Regs>,
    _s: PhantomData<S>,
}

impl<S> Tracee<S> {
    pub fn pid(&self) -> Pid {
        self.pid
    }
    fn to<T>(self) -> Tracee<T> {
        Tracee {
            pid: self.pid,
            gadget: self.gadget,
            pending_signals: self.pending_signals,
            trap: self.trap,
            scratch_regs: self.scratch_regs,
            _s: PhantomData,
        }
    }
}

impl Tracee<Running> {
    /// PTRACE_SEIZE (no stop yet).
    pub fn seize(pid: Pid) -> Result<Tracee<Running>, Error> {
        let opts = ptrace::Options::PTRACE_O_TRACESYSGOOD;
        ptrace::seize(pid, opts).map_err(|e| Error::Sys { what: "PTRACE_SEIZE", pid: pid.as_raw(), errno: e })?;
        Ok(Tracee { pid, gadget: 0, pending_signals: Vec::new(), trap: None, scratch_regs: None, _s: PhantomData })
    }

    /// PTRACE_INTERRUPT and wait for the stop. Signals that race with the interrupt are recorded
    /// in `pending_signals` and suppressed.
    pub fn interrupt(self) -> Result<Tracee<Stopped>, Error> {
        self.interrupt_with(|| {})
    }

    /// Like [`interrupt`](Self::interrupt), running `meanwhile` after the interrupt is requested and
    /// before waiting for the stop (to release the task from a wait the interrupt cannot break,
    /// such as a seccomp notification the caller holds: the task stops as it leaves it).
    pub fn interrupt_with(self, meanwhile: impl FnOnce()) -> Result<Tracee<Stopped>, Error> {
        let pid = self.pid;
        ptrace::interrupt(pid).map_err(|e| Error::Sys { what: "PTRACE_INTERRUPT", pid: pid.as_raw(), errno: e })?;
        meanwhile();
        let mut t = self.to::<Stopped>();
        loop {
            match wait_stop(pid)? {
                WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_STOP => break,
                WaitStatus::Stopped(_, sig) => {
                    // signal-delivery-stop: hold the signal back, keep waiting for the interrupt stop.
                    t.pending_signals.push(sig);
                    ptrace::cont(pid, None).map_err(|e| Error::Sys { what: "PTRACE_CONT", pid: pid.as_raw(), errno: e })?;
                }
                WaitStatus::PtraceSyscall(_) => {
                    ptrace::cont(pid, None).map_err(|e| Error::Sys { what: "PTRACE_CONT", pid: pid.as_raw(), errno: e })?;
                }
                other => return Err(gone(pid, other)),
            }
        }
        t.gadget = find_gadget(pid)?;
        Ok(t)
    }
}

impl Tracee<Running> {
    /// Takes the stops the tracee reported while it ran, without waiting: signal-delivery-stops
    /// are recorded in `pending_signals` and suppressed (the tracee goes on); an end of the tracee
    /// is [`Error::TraceeGone`] (its status is reaped).
    pub fn take_stops(&mut self) -> Result<(), Error> {
        self.drain_stops(|_, _| false)
    }

    /// Like [`take_stops`](Self::take_stops), but the signals of signal-delivery-stops are returned
    /// as their `siginfo_t` (PTRACE_GETSIGINFO) instead of being recorded in `pending_signals`
    /// (a signal whose siginfo cannot be read is recorded there as before).
    pub fn take_stops_siginfo(&mut self) -> Result<Vec<[u8; sys::SIGINFO_LEN]>, Error> {
        let mut infos = Vec::new();
        self.drain_stops(|pid, _| sys::get_siginfo(pid).map(|info| infos.push(info)).is_ok())?;
        Ok(infos)
    }

    /// Reaps every stop reported so far without waiting and lets the tracee go on after each; a
    /// signal-delivery-stop is suppressed and offered to `taken`, and recorded in
    /// `pending_signals` unless `taken` kept it.
    fn drain_stops(&mut self, mut taken: impl FnMut(Pid, Signal) -> bool) -> Result<(), Error> {
        let pid = self.pid;
        loop {
            let ws = match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                Ok(ws) => ws,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::Sys { what: "waitpid", pid: pid.as_raw(), errno: e }),
            };
            match ws {
                WaitStatus::StillAlive => return Ok(()),
                WaitStatus::Stopped(_, sig) => {
                    if !taken(pid, sig) {
                        self.pending_signals.push(sig);
                    }
                }
                WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(_) => {}
                other => return Err(gone(pid, other)),
            }
            ptrace::cont(pid, None).map_err(|e| Error::Sys { what: "PTRACE_CONT", pid: pid.as_raw(), errno: e })?;
        }
    }
}

fn wait_stop(pid: Pid) -> Result<WaitStatus, Error> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(ws) => return Ok(ws),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::Sys { what: "waitpid", pid: pid.as_raw(), errno: e }),
        }
    }
}

/// Finds a `syscall` (0f 05) instruction in the task's vDSO.
pub fn find_gadget(pid: Pid) -> Result<u64, Error> {
    let maps = crate::procfs::maps(pid)?;
    let vdso = maps
        .iter()
        .find(|m| m.name == "[vdso]")
        .ok_or_else(|| Error::Unsupported { pid: pid.as_raw(), reason: "the process has no vDSO".into() })?;
    let bytes = crate::mem::read_mem(pid, vdso.start, (vdso.end - vdso.start) as usize)?;
    let off = bytes
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .ok_or_else(|| Error::Unsupported { pid: pid.as_raw(), reason: "no syscall instruction in the vDSO".into() })?;
    Ok(vdso.start + off as u64)
}

impl Tracee<Stopped> {
    /// Adopts a child that called PTRACE_TRACEME and stopped itself with SIGSTOP.
    pub fn from_traceme_child(pid: Pid) -> Result<Tracee<Stopped>, Error> {
        match wait_stop(pid)? {
            WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
            other => return Err(gone(pid, other)),
        }
        ptrace::setoptions(pid, ptrace::Options::PTRACE_O_TRACESYSGOOD | ptrace::Options::PTRACE_O_EXITKILL).map_err(|e| Error::Sys {
            what: "PTRACE_SETOPTIONS",
            pid: pid.as_raw(),
            errno: e,
        })?;
        let gadget = find_gadget(pid)?;
        Ok(Tracee { pid, gadget, pending_signals: Vec::new(), trap: None, scratch_regs: None, _s: PhantomData })
    }

    pub fn regs(&self) -> Result<Regs, Error> {
        ptrace::getregs(self.pid).map_err(|e| Error::Sys { what: "PTRACE_GETREGS", pid: self.pid.as_raw(), errno: e })
    }
    pub fn set_regs(&mut self, r: Regs) -> Result<(), Error> {
        ptrace::setregs(self.pid, r).map_err(|e| Error::Sys { what: "PTRACE_SETREGS", pid: self.pid.as_raw(), errno: e })
    }
    pub fn xstate(&self) -> Result<Vec<u8>, Error> {
        sys::get_xstate(self.pid).map_err(|e| Error::Sys { what: "PTRACE_GETREGSET(XSTATE)", pid: self.pid.as_raw(), errno: e })
    }
    pub fn set_xstate(&mut self, x: &[u8]) -> Result<(), Error> {
        sys::set_xstate(self.pid, x).map_err(|e| Error::Sys { what: "PTRACE_SETREGSET(XSTATE)", pid: self.pid.as_raw(), errno: e })
    }
    pub fn sigmask(&self) -> Result<u64, Error> {
        sys::get_sigmask(self.pid).map_err(|e| Error::Sys { what: "PTRACE_GETSIGMASK", pid: self.pid.as_raw(), errno: e })
    }
    pub fn set_sigmask(&mut self, m: u64) -> Result<(), Error> {
        sys::set_sigmask(self.pid, m).map_err(|e| Error::Sys { what: "PTRACE_SETSIGMASK", pid: self.pid.as_raw(), errno: e })
    }
    pub fn rseq(&self) -> Result<Option<(u64, u32, u32)>, Error> {
        sys::get_rseq(self.pid).map_err(|e| Error::Sys { what: "PTRACE_GET_RSEQ_CONFIGURATION", pid: self.pid.as_raw(), errno: e })
    }

    /// Uses the `syscall; int3` at `addr` (in the tracee) for later injections; `None` goes back to
    /// the vDSO gadget.
    pub fn set_trap(&mut self, addr: Option<u64>) {
        self.trap = addr;
        self.scratch_regs = None;
    }

    /// Declares that the tracee's registers need not be preserved by injections (its user code
    /// will never be resumed as is): injections through the trap page then skip saving and
    /// restoring them. Cleared by [`set_trap`](Self::set_trap).
    pub fn registers_disposable(&mut self) -> Result<(), Error> {
        self.scratch_regs = Some(self.regs()?);
        Ok(())
    }

    /// The `syscall` instruction used for injection.
    pub fn gadget(&self) -> u64 {
        self.gadget
    }
    /// After the vDSO moved by `delta` bytes, the gadget moved with it.
    pub fn vdso_moved(&mut self, old_base: u64, new_base: u64) {
        self.gadget = self.gadget - old_base + new_base;
    }

    /// Runs system call `nr` in the tracee and returns its raw result (negative errno on failure).
    /// The tracee's registers are preserved. Signals that arrive meanwhile are recorded in
    /// `pending_signals` and suppressed.
    pub fn inject(&mut self, nr: libc::c_long, args: [u64; 6]) -> Result<i64, Error> {
        let pid = self.pid;
        // A task that only ever runs injected calls (the deputy, with its trap page) need not have
        // its registers saved and put back around each call: reuse the registers of the last one.
        let saved = match (self.trap, self.scratch_regs) {
            (Some(_), Some(r)) => r,
            _ => self.regs()?,
        };
        let mut r = saved;
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.r9 = args[5];
        if let Some(trap) = self.trap {
            r.rip = trap;
            self.set_regs(r)?;
            let ret = loop {
                ptrace::cont(pid, None).map_err(|e| Error::Sys { what: "PTRACE_CONT", pid: pid.as_raw(), errno: e })?;
                match wait_stop(pid)? {
                    WaitStatus::Stopped(_, Signal::SIGTRAP) => {
                        let now = self.regs()?;
                        if now.rip == trap + 3 {
                            break now.rax as i64;
                        }
                        self.pending_signals.push(Signal::SIGTRAP);
                    }
                    // A signal interrupted the call: hold it back; the kernel restarts the call.
                    WaitStatus::Stopped(_, sig) => self.pending_signals.push(sig),
                    WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(_) => {}
                    other => return Err(gone(pid, other)),
                }
            };
            if self.scratch_regs.is_none() {
                self.set_regs(saved)?;
            }
            return Ok(ret);
        }
        r.rip = self.gadget;
        self.set_regs(r)?;
        let mut entered = false;
        let ret = loop {
            ptrace::syscall(pid, None).map_err(|e| Error::Sys { what: "PTRACE_SYSCALL", pid: pid.as_raw(), errno: e })?;
            match wait_stop(pid)? {
                WaitStatus::PtraceSyscall(_) if !entered => entered = true,
                WaitStatus::PtraceSyscall(_) => break self.regs()?.rax as i64,
                WaitStatus::Stopped(_, sig) => self.pending_signals.push(sig),
                WaitStatus::PtraceEvent(..) => {}
                other => return Err(gone(pid, other)),
            }
        };
        self.set_regs(saved)?;
        Ok(ret)
    }

    /// Like [`inject`](Self::inject) but turns a negative result into an error naming the call.
    pub fn inject_ok(&mut self, what: &'static str, nr: libc::c_long, args: [u64; 6]) -> Result<u64, Error> {
        let r = self.inject(nr, args)?;
        if r < 0 && r > -4096 {
            return Err(Error::Injected { what, pid: self.pid.as_raw(), errno: Errno::from_raw((-r) as i32) });
        }
        Ok(r as u64)
    }

    /// Resumes the tracee and stops tracing it. `sig` is delivered on resume.
    pub fn detach(self, sig: Option<Signal>) -> Result<(), Error> {
        ptrace::detach(self.pid, sig).map_err(|e| Error::Sys { what: "PTRACE_DETACH", pid: self.pid.as_raw(), errno: e })
    }

    /// Ends the tracee (SIGKILL) and reaps it if it is our child.
    pub fn kill(self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, Some(WaitPidFlag::__WALL));
    }

    /// Makes the tracee die with its tracer (PTRACE_O_EXITKILL): for a task that cannot go on
    /// alone, like a deputy whose process runs elsewhere. Detaching clears it.
    pub fn exit_with_tracer(&mut self) -> Result<(), Error> {
        ptrace::setoptions(self.pid, ptrace::Options::PTRACE_O_TRACESYSGOOD | ptrace::Options::PTRACE_O_EXITKILL).map_err(|e| Error::Sys {
            what: "PTRACE_SETOPTIONS",
            pid: self.pid.as_raw(),
            errno: e,
        })
    }

    /// Injects `fork` with PTRACE_O_TRACEFORK on, so the child starts traced by this thread and
    /// stopped before it runs anything. Returns the child, stopped (its registers are the
    /// injection's: the caller sets them), or the negative errno of the fork.
    pub fn inject_fork(&mut self) -> Result<Result<Tracee<Stopped>, i64>, Error> {
        let pid = self.pid;
        let opts = |o: ptrace::Options| {
            ptrace::setoptions(pid, o).map_err(|e| Error::Sys { what: "PTRACE_SETOPTIONS", pid: pid.as_raw(), errno: e })
        };
        let base = ptrace::Options::PTRACE_O_TRACESYSGOOD | ptrace::Options::PTRACE_O_EXITKILL;
        opts(base | ptrace::Options::PTRACE_O_TRACEFORK)?;
        let r = self.inject(libc::SYS_fork, [0; 6]);
        opts(base)?;
        let r = r?;
        if r <= 0 {
            return Ok(Err(if r == 0 { -i64::from(libc::EAGAIN) } else { r }));
        }
        let child = Pid::from_raw(r as i32);
        // Its first stop: PTRACE_EVENT_STOP (or SIGSTOP, for a tracer that attached otherwise).
        match wait_stop(child)? {
            WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..) => {}
            other => return Err(gone(child, other)),
        }
        Ok(Ok(Tracee { pid: child, gadget: self.gadget, pending_signals: Vec::new(), trap: None, scratch_regs: None, _s: PhantomData }))
    }

    /// Lets the tracee run on, still traced (PTRACE_CONT, no signal): it stops again for signals
    /// (see [`Tracee::take_stops`]) and for [`Tracee::interrupt`].
    pub fn resume(self) -> Result<Tracee<Running>, Error> {
        ptrace::cont(self.pid, None).map_err(|e| Error::Sys { what: "PTRACE_CONT", pid: self.pid.as_raw(), errno: e })?;
        Ok(self.to())
    }

    /// Resumes the tracee with `sig` delivered (used to end a deputy by a signal).
    pub fn cont_with(self, sig: Signal) -> Result<(), Error> {
        ptrace::cont(self.pid, Some(sig)).map_err(|e| Error::Sys { what: "PTRACE_CONT", pid: self.pid.as_raw(), errno: e })
    }
}

/// Auxiliary-vector entry AT_ENTRY: the program's entry point.
const AT_ENTRY: u64 = 9;

/// The value of auxv entry `key` in a raw /proc/PID/auxv image (pairs of native words).
pub fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|c| {
        let k = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
        (k == key).then(|| u64::from_le_bytes(c[8..].try_into().expect("8 bytes")))
    })
}

/// Runs a freshly exec'd child (stopped by SIGTRAP after `sys::trace_on_exec`) up to its entry
/// point, then detaches it: the dynamic loader has then mapped every library, so a move right
/// after this never catches the loader half-way (mapping a home descriptor would bring it home).
/// A one-byte breakpoint at AT_ENTRY is written with PTRACE_POKEDATA and taken out before the
/// program runs its first instruction. Signals that arrive meanwhile are delivered as usual.
pub fn run_to_entry(pid: Pid) -> Result<(), Error> {
    let sys_err = |what: &'static str| move |e: Errno| Error::Sys { what, pid: pid.as_raw(), errno: e };
    match wait_stop(pid)? {
        WaitStatus::Stopped(_, Signal::SIGTRAP) => {}
        other => return Err(gone(pid, other)),
    }
    let entry = auxv_value(&crate::procfs::auxv(pid)?, AT_ENTRY)
        .ok_or_else(|| Error::Unsupported { pid: pid.as_raw(), reason: "no AT_ENTRY in its auxiliary vector".into() })?;
    let addr = entry as ptrace::AddressType;
    let word = ptrace::read(pid, addr).map_err(sys_err("PTRACE_PEEKDATA"))?;
    let trapped = (word & !0xff) | 0xcc;
    ptrace::write(pid, addr, trapped).map_err(sys_err("PTRACE_POKEDATA"))?;
    let mut sig = None;
    loop {
        ptrace::cont(pid, sig.take()).map_err(sys_err("PTRACE_CONT"))?;
        match wait_stop(pid)? {
            WaitStatus::Stopped(_, Signal::SIGTRAP) => {
                let mut r = ptrace::getregs(pid).map_err(sys_err("PTRACE_GETREGS"))?;
                if r.rip != entry + 1 {
                    sig = Some(Signal::SIGTRAP);
                    continue;
                }
                ptrace::write(pid, addr, word).map_err(sys_err("PTRACE_POKEDATA"))?;
                r.rip = entry;
                ptrace::setregs(pid, r).map_err(sys_err("PTRACE_SETREGS"))?;
                return ptrace::detach(pid, None).map_err(sys_err("PTRACE_DETACH"));
            }
            WaitStatus::Stopped(_, s) => sig = Some(s),
            other => return Err(gone(pid, other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auxv_lookup_finds_the_entry_and_stops_at_the_end() {
        let mut raw = Vec::new();
        for (k, v) in [(3u64, 0x40u64), (AT_ENTRY, 0x401000), (0, 0)] {
            raw.extend_from_slice(&k.to_le_bytes());
            raw.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(auxv_value(&raw, AT_ENTRY), Some(0x401000));
        assert_eq!(auxv_value(&raw, 3), Some(0x40));
        assert_eq!(auxv_value(&raw, 25), None);
        assert_eq!(auxv_value(&raw[..20], AT_ENTRY), None);
    }
}
