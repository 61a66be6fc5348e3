// SPDX-License-Identifier: GPL-2.0
//! The native engine's deputy at home (feature bit LANE): the home task of a migrated process,
//! served by the module instead of a futex loop, takes register-only calls straight from the
//! kernel lane (a socket to the remote process's module) and runs them without mosrun.
//!
//! `MOSIX_IOC_DEPUTY` registers the deputy (the caller's single-threaded child) with its lane
//! socket. The deputy runs a loop of its engine's making:
//!
//! ```text
//! marker: mov eax, 34 (pause); syscall      ; marker_ip is the address after this syscall
//!         mov rdi, rax; jmp marker          ; the last call's result goes in the next marker
//! ```
//!
//! The probe skips each marker call and queues [`mosix_dep_park`] on the deputy. That work, in
//! the deputy's own context on its way back to user mode, first hands over the result (rdi) of
//! the call it ran before (on the lane, or to the caller of `MOSIX_IOC_DEPUTY_CALL`), then waits
//! for the next call: a lane call or a posted one. It sets the deputy's registers so that its
//! `syscall` is executed again as that call, and returns: the call runs in the deputy's own
//! context at native speed (its descriptors, credentials, cwd), and its result comes back in
//! the next marker. A signal or a ptrace interrupt ends the wait: the marker is an interrupted
//! call then, restarted by the kernel (or by the tracer's resumption) after the stop.
//!
//! `MOSIX_IOC_DEPUTY_CALL` posts a call (the engine's calls with buffers, which live in memory it
//! shares with the deputy) and waits for its result, at most `timeout_ms` (its driver looks at
//! the deputy's ptrace stops between waits). Closing the descriptor stops the service: the
//! deputy's marker is then a real `pause()` (its driver moves it elsewhere first).
//!
//! The lane carries fixed records (`abi::LANE_CALL_LEN`, `abi::LANE_REPLY_LEN`; mos_proto::lane):
//! a call not in the registered set is answered -ENOSYS; a malformed record ends the lane.
use crate::abi::{DeputyCall, DeputyReg};
use crate::freeze::FileState;
use crate::lane::{Lane, LaneErr};
use crate::sys::{self, Sock, TaskRef};
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::Opaque;
use kernel::uaccess::UserSlice;

/// The marker call: `pause` (without the module the deputy just sleeps in it).
const MARKER: i64 = 34;
const ENOSYS: i64 = 38;

/// What the deputy runs now ([`Deputy::running`]): its result comes in the next marker's rdi.
const RUN_NONE: u32 = 0;
const RUN_LANE: u32 = 1;
const RUN_POSTED: u32 = 2;

/// States of [`Deputy::posted`].
const P_IDLE: u32 = 0;
const P_POSTED: u32 = 1;
const P_RUNNING: u32 = 2;
const P_CLOSED: u32 = 3;

/// One deputy served by the module: shared by its descriptor, the probe's table and its queued work.
pub(crate) struct Deputy {
    work: Opaque<bindings::callback_head>,
    task: TaskRef,
    pid: i32,
    marker_ip: u64,
    calls: [u64; 8],
    lane: Option<Lane>,
    queued: AtomicBool,
    running: AtomicU32,
    lane_seq: AtomicU64,
    /// The posted call (`MOSIX_IOC_DEPUTY_CALL`).
    posted: AtomicU32,
    nr: AtomicI64,
    args: [AtomicU64; 6],
    ret: AtomicI64,
    /// 1 when `ret` holds the posted call's result, not yet taken.
    done: AtomicU32,
    closed: AtomicBool,
}

impl Deputy {
    fn lane(&self) -> Option<&Lane> {
        self.lane.as_ref().filter(|l| l.live())
    }

    fn lane_failed(&self, lane: &Lane, why: &str) {
        if lane.fail() {
            pr_warn!("deputy {}: kernel lane closed ({})\n", self.pid, why);
        }
    }

    fn reply(&self, seq: u64, ret: i64) {
        let Some(lane) = self.lane() else { return };
        if lane.reply(seq, ret).is_err() {
            self.lane_failed(lane, "cannot send a reply");
        }
    }

    fn allowed(&self, nr: u32) -> bool {
        nr < 512 && i64::from(nr) != MARKER && self.calls[(nr / 64) as usize] & (1u64 << (nr % 64)) != 0
    }

    /// Reads one whole lane call if one has begun to arrive: Ok(Some((seq, nr, args))), Ok(None)
    /// when nothing is there (or the lane just failed), Err when the deputy was killed while the
    /// rest came.
    fn next_lane_call(&self) -> Result<Option<(u64, u32, [u64; 6])>> {
        let Some(lane) = self.lane() else { return Ok(None) };
        match lane.next_call() {
            Ok(c) => Ok(c),
            Err(LaneErr::Killed) => Err(EINTR),
            Err(LaneErr::Broken(why)) => {
                self.lane_failed(lane, why);
                Ok(None)
            }
            // (Receiving never gives it.)
            Err(LaneErr::NotSent) => Ok(None),
        }
    }
}

/// Called by the C probe, in the deputy's own context with preemption off, for each of its
/// system calls: whether this one is the marker (the probe then skips it).
///
/// # Safety
///
/// `d` is a `Deputy` kept alive by the probe's table entry for the whole call (as for
/// `intercept::mosix_intercept_enter`).
#[no_mangle]
pub(crate) unsafe extern "C" fn mosix_deputy_enter(d: *const Deputy, nr: i64, ip: u64) -> bool {
    // SAFETY: per the contract, `d` is live for this call.
    let d = unsafe { &*d };
    if nr != MARKER || ip != d.marker_ip || d.closed.load(Ordering::Acquire) || d.queued.swap(true, Ordering::AcqRel) {
        return false;
    }
    // SAFETY: `d` lives in an `Arc` (made by `register` below); `work` is its field;
    // `mosix_dep_park` takes the reference back from it.
    if !unsafe { crate::freeze::queue_with_ref(d, d.work.get(), sys::Kind::Deputy) } {
        d.queued.store(false, Ordering::Release);
        return false;
    }
    true
}

/// The task_work of a marker call, run by the deputy on its way back to user mode.
///
/// # Safety
///
/// `head` is the `work` field of a `Deputy` whose `Arc` reference was given to this callback by
/// `Arc::into_raw` in [`mosix_deputy_enter`].
#[no_mangle]
pub(crate) unsafe extern "C" fn mosix_dep_park(head: *mut bindings::callback_head) {
    // SAFETY: per the contract, `head` lies in a `Deputy` kept alive by the reference handed to us.
    let d = unsafe { Arc::from_raw(kernel::container_of!(head, Deputy, work)) };
    d.queued.store(false, Ordering::Release);
    if d.task.is_exiting() {
        return;
    }
    let result = sys::arg0() as i64;
    match d.running.swap(RUN_NONE, Ordering::AcqRel) {
        RUN_LANE => d.reply(d.lane_seq.load(Ordering::Relaxed), result),
        RUN_POSTED => {
            d.ret.store(result, Ordering::Relaxed);
            let _ = d.posted.compare_exchange(P_RUNNING, P_IDLE, Ordering::AcqRel, Ordering::Acquire);
            d.done.store(1, Ordering::Release);
            sys::wake();
        }
        _ => {}
    }
    loop {
        if d.closed.load(Ordering::Acquire) {
            sys::interrupted_call(MARKER);
            return;
        }
        if d.posted.compare_exchange(P_POSTED, P_RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let mut args = [0u64; 6];
            for (a, s) in args.iter_mut().zip(&d.args) {
                *a = s.load(Ordering::Relaxed);
            }
            d.running.store(RUN_POSTED, Ordering::Release);
            sys::set_call(d.nr.load(Ordering::Relaxed), &args);
            return;
        }
        match d.next_lane_call() {
            Err(_) => return, // killed
            Ok(Some((seq, nr, args))) if d.allowed(nr) => {
                d.lane_seq.store(seq, Ordering::Relaxed);
                d.running.store(RUN_LANE, Ordering::Release);
                sys::set_call(i64::from(nr), &args);
                return;
            }
            Ok(Some((seq, _, _))) => {
                d.reply(seq, -ENOSYS);
                continue;
            }
            Ok(None) => {}
        }
        // Any signal or ptrace interrupt ends the wait; the marker is made again after it.
        if Lane::wait(d.lane(), &d.posted, P_IDLE, false).is_err() {
            sys::interrupted_call(MARKER);
            return;
        }
    }
}

/// `MOSIX_IOC_DEPUTY`.
pub(crate) fn register(file: &FileState, arg: usize) -> Result<i32> {
    let req: DeputyReg = UserSlice::new(arg, size_of::<DeputyReg>()).reader().read()?;
    if req.reserved != 0 || req.marker_ip == 0 {
        return Err(EINVAL);
    }
    let held = file.lock()?;
    if file.in_use(&held) {
        return Err(EBUSY);
    }
    let task = crate::freeze::mosix_child(req.pid)?;
    let lane = if req.fd >= 0 { Some(Lane::new(Sock::from_fd(req.fd)?)) } else { None };
    let d = Arc::new(
        Deputy {
            work: Opaque::uninit(),
            task,
            pid: req.pid,
            marker_ip: req.marker_ip,
            calls: req.calls,
            lane,
            queued: AtomicBool::new(false),
            running: AtomicU32::new(RUN_NONE),
            lane_seq: AtomicU64::new(0),
            posted: AtomicU32::new(P_IDLE),
            nr: AtomicI64::new(-1),
            args: Default::default(),
            ret: AtomicI64::new(0),
            done: AtomicU32::new(0),
            closed: AtomicBool::new(false),
        },
        GFP_KERNEL,
    )?;
    crate::freeze::table_add(&d.task, &d, sys::Kind::Deputy)?;
    file.set_deputy(&held, d);
    Ok(0)
}

/// `MOSIX_IOC_DEPUTY_CALL`.
pub(crate) fn call(d: &Deputy, arg: usize) -> Result<i32> {
    let (mut r, mut w) = UserSlice::new(arg, size_of::<DeputyCall>()).reader_writer();
    let mut c: DeputyCall = r.read()?;
    if c.reserved != 0 || c.done != 0 || c.timeout_ms > 60_000 || c.nr == MARKER || c.nr < -1 || c.nr >= 512 {
        return Err(EINVAL);
    }
    if d.closed.load(Ordering::Acquire) || d.task.is_exiting() {
        return Err(sys::esrch());
    }
    if c.nr >= 0 {
        if d.done.load(Ordering::Acquire) != 0 || d.posted.load(Ordering::Acquire) != P_IDLE {
            return Err(EBUSY);
        }
        d.nr.store(c.nr, Ordering::Relaxed);
        for (s, a) in d.args.iter().zip(c.args) {
            s.store(a, Ordering::Relaxed);
        }
        d.posted.compare_exchange(P_IDLE, P_POSTED, Ordering::AcqRel, Ordering::Acquire).map_err(|_| EBUSY)?;
        sys::wake();
    }
    if d.done.load(Ordering::Acquire) == 0 && c.timeout_ms > 0 {
        // A signal ends the wait early: "not done yet" (the call stays posted), never an error
        // that a restart would turn into a second post.
        let _ = sys::wait_change(&d.done, 0, c.timeout_ms);
    }
    if d.done.swap(0, Ordering::AcqRel) == 1 {
        c.ret = d.ret.load(Ordering::Relaxed);
        c.done = 1;
    }
    w.write(&c)?;
    Ok(0)
}

/// The descriptor is closed: the deputy is no longer served (a waiting marker returns and is
/// made again as a real `pause()`), its lane ends.
pub(crate) fn release(d: Arc<Deputy>) {
    d.closed.store(true, Ordering::Release);
    crate::freeze::table_remove(&d);
    d.posted.store(P_CLOSED, Ordering::Release);
    if let Some(s) = d.lane.as_ref() {
        s.shutdown();
    }
    sys::wake();
}
