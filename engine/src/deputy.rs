//! The deputy: the original task at home, stopped, its user memory released, executing forwarded
//! system calls in its own context (its fds, cwd, credentials, pid and parent stay as they were).
use crate::ptrace::{Stopped, Tracee};
use crate::{mem, procfs, Error};
use mos_proto::deputy::{Buf, ExitStatus, MAX_BUF};
use mos_proto::migration::Rseq;
use nix::sys::signal::Signal;

/// Bytes of the deputy's buffer area (in/out buffers of one forwarded call).
const AREA: u64 = MAX_BUF as u64 + 4096;

/// The real-time signals (32..=64; bit n-1 for signal n). The deputy keeps them blocked: a
/// real-time signal-delivery-stop cannot be represented by nix's `WaitStatus`/`Signal` (its
/// waitpid fails with EINVAL once the kernel has reported the stop, and the process was lost).
/// Blocked, they stay queued in the home task, with their siginfo and count, and are delivered
/// when the process comes home. Forwarding them needs raw signal numbers in `ptrace` (see the
/// ZDTM suite's `rt_signals` case).
const RT_SIGNALS: u64 = !0u64 << 31;

#[derive(Debug)]
pub struct Deputy {
    t: Tracee<Stopped>,
    area: u64,
}

impl Deputy {
    /// Turns a frozen task into a deputy: unregister rseq, unmap all user memory (the kernel's
    /// vDSO areas stay: they hold the injection gadget), map the buffer area.
    pub fn release(mut t: Tracee<Stopped>, rseq: Option<&Rseq>) -> Result<Deputy, Error> {
        if let Some(r) = rseq {
            // Ignore failure: it was not registered (or already unregistered).
            let _ = t.inject(libc::SYS_rseq, [r.ptr, u64::from(r.len), 1, u64::from(r.sig), 0, 0]);
        }
        for m in procfs::maps(t.pid())?.iter().filter(|m| !m.is_special()) {
            t.inject_ok("munmap(release)", libc::SYS_munmap, [m.start, m.len(), 0, 0, 0, 0])?;
        }
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let area = t.inject_ok("mmap(deputy area)", libc::SYS_mmap, [0, AREA + 4096, prot, flags, u64::MAX, 0])?;
        // A `syscall; int3` page after the buffers: one ptrace stop per forwarded call.
        let code = area + AREA;
        mem::write_mem(t.pid(), code, &[0x0f, 0x05, 0xcc, 0xcc])?;
        t.inject_ok("mprotect(deputy code)", libc::SYS_mprotect, [code, 4096, (libc::PROT_READ | libc::PROT_EXEC) as u64, 0, 0, 0])?;
        t.set_trap(Some(code));
        // Nothing blocked but the real-time signals (see RT_SIGNALS): every other signal sent to
        // the home pid surfaces here and is forwarded; the remote component's own mask decides (the
        // home mask comes back with the context).
        t.set_sigmask(RT_SIGNALS)?;
        // Its user memory is gone: the registers it was frozen with will never be resumed.
        t.registers_disposable()?;
        Ok(Deputy { t, area })
    }

    pub fn tracee(&mut self) -> &mut Tracee<Stopped> {
        &mut self.t
    }

    /// The task, back to vDSO-gadget injection (the trampoline page goes when its memory is rebuilt).
    pub fn into_tracee(mut self) -> Tracee<Stopped> {
        self.t.set_trap(None);
        self.t
    }

    /// Signals sent to the home pid, taken from the deputy (they are not delivered at home).
    /// Forwarded calls surface them as a side effect; with `probe`, pending ones are looked up in
    /// /proc and surfaced with a no-op injection.
    pub fn take_signals(&mut self, probe: bool) -> Result<Vec<Signal>, Error> {
        if probe {
            let st = procfs::status(self.t.pid())?;
            // Blocked real-time signals wait for the return home: no injection for them.
            if (st.sig_pnd | st.shd_pnd) & !RT_SIGNALS != 0 {
                self.t.inject(libc::SYS_getpid, [0; 6])?;
            }
        }
        Ok(std::mem::take(&mut self.t.pending_signals))
    }

    /// Executes a forwarded call. Returns the raw result and the `Out` buffers.
    /// A call interrupted by a signal (which the deputy holds back) is restarted.
    pub fn execute(&mut self, nr: u32, mut args: [u64; 6], bufs: &[Buf]) -> Result<(i64, Vec<Vec<u8>>), Error> {
        let pid = self.t.pid();
        let mut off = 0u64;
        let mut outs = Vec::new();
        for b in bufs {
            let (arg, len) = match b {
                Buf::In { arg, data } | Buf::InOut { arg, data } => (*arg, data.len() as u64),
                Buf::Out { arg, len, .. } => (*arg, u64::from(*len)),
            };
            if arg > 5 || off + len > AREA {
                return Ok((-(libc::EINVAL as i64), Vec::new()));
            }
            args[arg as usize] = self.area + off;
            if let Buf::In { data, .. } | Buf::InOut { data, .. } = b {
                if !data.is_empty() {
                    mem::writev(pid, &[(self.area + off, data.len())], data)?;
                }
            }
            if !matches!(b, Buf::In { .. }) {
                outs.push((self.area + off, len));
            }
            off = (off + len + 15) & !15;
        }
        let ret = loop {
            let r = self.t.inject(nr as libc::c_long, args)?;
            if !matches!(-r, 512 | 513 | 514 | 516) {
                break r;
            }
        };
        // Out and InOut buffers come back in request order.
        let mut out_data = Vec::new();
        for (b, (addr, len)) in bufs.iter().filter(|b| !matches!(b, Buf::In { .. })).zip(outs) {
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
                mem::readv(pid, &[(addr, n as usize)], &mut v)?;
            }
            out_data.push(v);
        }
        Ok((ret, out_data))
    }

    /// Ends the deputy the way the remote process ended, so the parent at home sees that status.
    pub fn end(mut self, status: ExitStatus) -> Result<(), Error> {
        let pid = self.t.pid();
        match status {
            ExitStatus::Code(c) => {
                let mut r = self.t.regs()?;
                r.rax = libc::SYS_exit_group as u64;
                r.orig_rax = u64::MAX;
                r.rdi = c as u64;
                r.rip = self.t.gadget();
                self.t.set_regs(r)?;
                self.t.detach(None)
            }
            ExitStatus::Signal { sig, .. } => {
                let s = Signal::try_from(sig).unwrap_or(Signal::SIGKILL);
                // No core file from an empty deputy; default action; signal unblocked.
                let _ = crate::sys::set_rlimit(pid, libc::RLIMIT_CORE, 0, 0);
                mem::writev(pid, &[(self.area, 32)], &[0u8; 32])?;
                self.t.inject(libc::SYS_rt_sigaction, [sig as u64, self.area, 0, 8, 0, 0])?;
                let mask = self.t.sigmask()? & !(1u64 << (sig - 1));
                self.t.set_sigmask(mask)?;
                // The signal pends while the task is stopped and acts on detach (or kills at once).
                let _ = nix::sys::signal::kill(pid, s);
                let _ = self.t.detach(None);
                Ok(())
            }
        }
    }
}
