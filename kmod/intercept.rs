// SPDX-License-Identifier: GPL-2.0
//! The native engine's system-call interception (feature bit INTERCEPT): a remote component's
//! calls reach its guest (the mosd thread that hosts it) without seccomp and without ptrace stops.
//!
//! `MOSIX_IOC_INTERCEPT` turns a descriptor into the listener of one process (the caller's
//! single-threaded child, the stub a guest restored). A probe on the `sys_enter` tracepoint sees
//! each of its calls in its own context: a call in the `local` set, or made from `pass_ip` (the
//! engine's injection gadget), runs untouched at native speed; any other is recorded, skipped
//! (its number becomes -1, as a tracepoint probe may do), and the process parks on its way back
//! to user mode, killable only, until the guest answers. The call's result then becomes the
//! return value, or, with CONTINUE, the call is made again and let through once.
//!
//! The listener speaks the seccomp user-notification ioctls, with their numbers and layouts
//! (`SECCOMP_IOCTL_NOTIF_RECV`, `_SEND`, `_ID_VALID`, `_SET_FLAGS`) and poll(): the guest serves
//! both engines with one code path. Closing it answers a waiting call with `ENOSYS` (as seccomp
//! does) and stops the interception.
//!
//! With a lane (`MOSIX_IOC_LANE`), a call in the lane set is not posted to the guest: the
//! process's park sends it on the lane socket to its deputy's module (deputy.rs) and waits there,
//! killable, for the result, with no daemon on either side. A lane that fails is closed and its
//! calls go to the guest again.
use crate::abi::{Intercept, SeccompNotif, SeccompResp, AUDIT_ARCH_X86_64};
use crate::freeze::FileState;
use crate::lane::{Lane, LaneErr};
use crate::sys::{self, Sock, TaskRef};
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::Opaque;
use kernel::uaccess::UserSlice;

/// States of [`Listener::state`].
const IDLE: u32 = 0;
/// A call is recorded and the process parks (or is about to).
const POSTED: u32 = 1;
/// The guest has read it (`NOTIF_RECV`).
const RECEIVED: u32 = 2;
/// The guest answered; the process takes the answer and goes on.
const ANSWERED: u32 = 3;
/// A lane call: the process sends it itself on the lane and waits there for its result (the
/// guest never sees it; if it cannot be sent, it becomes POSTED).
const LANE: u32 = 4;

const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;
const ENOSYS: i64 = 38;
const ERESTARTSYS: i64 = 512;

/// One intercepted process: shared by its descriptor, the probe's table and its queued work.
pub(crate) struct Listener {
    work: Opaque<bindings::callback_head>,
    task: TaskRef,
    pid: i32,
    local: [u64; 8],
    pass_ip: u64,
    state: AtomicU32,
    /// Id of the last recorded call (never 0).
    id: AtomicU64,
    nr: AtomicI64,
    args: [AtomicU64; 6],
    ip: AtomicU64,
    /// The answer: result (a negative errno for an error) and whether to make the call instead.
    ret: AtomicI64,
    cont: AtomicBool,
    /// A call to let through once, made again after a CONTINUE: its number and address.
    pass_nr: AtomicI64,
    pass_at: AtomicU64,
    /// The descriptor is closed: nothing more is intercepted, a waiting call gets ENOSYS.
    closed: AtomicBool,
    /// The kernel lane (`MOSIX_IOC_LANE`): a `KBox<Lane>` as a raw pointer, set once, owned by
    /// this field and freed with the listener; null when there is none.
    lane: AtomicPtr<Lane>,
    /// The calls sent on the lane (bitmap of 0..512), set before `lane`.
    lane_calls: [AtomicU64; 8],
}

impl Listener {
    fn is_local(&self, nr: i64) -> bool {
        (0..512).contains(&nr) && self.local[(nr / 64) as usize] & (1u64 << (nr % 64)) != 0
    }

    /// The lane, if it is set and still used.
    fn lane(&self) -> Option<&Lane> {
        let p = self.lane.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-null `lane` is a `KBox<Lane>` owned by this listener, freed only in its
        // `drop` (after every reference, and so every user of `&self`, is gone).
        Some(unsafe { &*p }).filter(|l| l.live())
    }

    fn goes_on_lane(&self, nr: i64) -> bool {
        (0..512).contains(&nr)
            && self.lane_calls[(nr / 64) as usize].load(Ordering::Relaxed) & (1u64 << (nr % 64)) != 0
            && self.lane().is_some()
    }

    fn lane_failed(&self, lane: &Lane, why: &str) {
        if lane.fail() {
            pr_warn!("pid {}: kernel lane closed ({}); calls go to the guest\n", self.pid, why);
        }
    }

    /// Sends the recorded call on the lane and waits (killable) for its result. None when it
    /// could not be sent (the guest then takes it); else its result (-ENOSYS if the lane broke
    /// after sending, as for a listener that went away).
    fn lane_call(&self) -> Option<i64> {
        let lane = self.lane()?;
        let mut args = [0u64; 6];
        for (a, s) in args.iter_mut().zip(&self.args) {
            *a = s.load(Ordering::Relaxed);
        }
        match lane.call(self.id.load(Ordering::Relaxed), self.nr.load(Ordering::Relaxed) as u32, &args) {
            Ok(ret) => Some(ret),
            // The process is dying: the value is never seen.
            Err(LaneErr::Killed) => Some(-ENOSYS),
            // Not made: the guest takes it.
            Err(LaneErr::NotSent) => {
                self.lane_failed(lane, "cannot send");
                None
            }
            // Made or not: its result is lost with the lane.
            Err(LaneErr::Broken(why)) => {
                self.lane_failed(lane, why);
                Some(-ENOSYS)
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let p = self.lane.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: the `KBox<Lane>` this field owned (from `KBox::into_raw` in `lane`).
            drop(unsafe { KBox::from_raw(p) });
        }
    }
}

/// Called by the C probe, in the process's own context with preemption off, for each of its
/// system calls: whether to intercept this one (the probe then skips it).
///
/// # Safety
///
/// `l` is a `Listener` kept alive by the probe's table entry for the whole call (the entry is
/// removed under the lock the probe holds, before the table's reference is dropped).
#[no_mangle]
pub(crate) unsafe extern "C" fn mosix_intercept_enter(l: *const Listener, nr: i64, args: *const u64, ip: u64) -> bool {
    // SAFETY: per the contract, `l` is live for this call.
    let l = unsafe { &*l };
    if l.closed.load(Ordering::Acquire) || nr < 0 {
        return false;
    }
    if l.pass_nr.load(Ordering::Relaxed) == nr && l.pass_at.load(Ordering::Relaxed) == ip {
        l.pass_nr.store(-1, Ordering::Relaxed);
        return false;
    }
    if ip == l.pass_ip || l.is_local(nr) || l.state.load(Ordering::Acquire) != IDLE {
        return false;
    }
    // SAFETY: the C probe passes the six argument registers.
    let a = unsafe { core::slice::from_raw_parts(args, 6) };
    l.nr.store(nr, Ordering::Relaxed);
    for (slot, v) in l.args.iter().zip(a) {
        slot.store(*v, Ordering::Relaxed);
    }
    l.ip.store(ip, Ordering::Relaxed);
    let id = l.id.load(Ordering::Relaxed).wrapping_add(1).max(1);
    l.id.store(id, Ordering::Relaxed);
    // The work holds a reference to the listener until it has run.
    // SAFETY: `l` lives in an `Arc` (every `Listener` is made by `intercept` below); `work` is its
    // field; `mosix_icpt_park` takes the reference back from it.
    if !unsafe { crate::freeze::queue_with_ref(l, l.work.get(), sys::Kind::Listener) } {
        return false;
    }
    if l.goes_on_lane(nr) {
        l.state.store(LANE, Ordering::Release);
    } else {
        l.state.store(POSTED, Ordering::Release);
        sys::wake();
    }
    true
}

/// The task_work of an intercepted call, run by the process itself on its way back to user mode:
/// parks until the guest answers, then returns the answer (or makes the call again).
///
/// # Safety
///
/// `head` is the `work` field of a `Listener` whose `Arc` reference was given to this callback by
/// `Arc::into_raw` in [`mosix_intercept_enter`].
#[no_mangle]
pub(crate) unsafe extern "C" fn mosix_icpt_park(head: *mut bindings::callback_head) {
    // SAFETY: per the contract, `head` lies in a `Listener` kept alive by the reference handed to us.
    let l = unsafe { Arc::from_raw(kernel::container_of!(head, Listener, work)) };
    if l.task.is_exiting() {
        l.state.store(IDLE, Ordering::Release);
        sys::wake();
        return;
    }
    if l.state.load(Ordering::Acquire) == LANE {
        if let Some(ret) = l.lane_call() {
            sys::set_return(ret);
            // No wake: a lane call is invisible to the guest (never readable, never received),
            // and waking the module's queue would wake the guest's poll for nothing, a context
            // switch into mosd for every lane call (RECV waiting on LANE wakes with the next
            // POSTED).
            l.state.store(IDLE, Ordering::Release);
            return;
        }
        // Not sent: the guest takes it, as any call. A listener closed meanwhile answers it
        // ENOSYS (`release` sets `closed` before it looks for a POSTED call, so one of us does).
        l.state.store(POSTED, Ordering::SeqCst);
        sys::wake();
        if l.closed.load(Ordering::SeqCst) {
            l.ret.store(-ENOSYS, Ordering::Relaxed);
            l.cont.store(false, Ordering::Relaxed);
            let _ = l.state.compare_exchange(POSTED, ANSWERED, Ordering::AcqRel, Ordering::Acquire);
        }
    }
    loop {
        let s = l.state.load(Ordering::Acquire);
        if s == ANSWERED {
            break;
        }
        if s == POSTED {
            // Not received yet: any signal (or a ptrace interrupt) withdraws the call, which is
            // then an interrupted call (-ERESTARTSYS), restarted or failed with EINTR by the
            // kernel's own rules: what seccomp does before the listener receives (and
            // WAIT_KILLABLE_RECV after).
            if sys::park_interruptible(&l.state, POSTED).is_err()
                && l.state.compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                sys::interrupted_call(l.nr.load(Ordering::Relaxed));
                sys::wake();
                return;
            }
            continue;
        }
        if l.closed.load(Ordering::Acquire) || sys::park(&l.state, s).is_err() {
            // Killed, or the listener is gone: the call fails as with no guest.
            l.ret.store(-ENOSYS, Ordering::Relaxed);
            l.cont.store(false, Ordering::Relaxed);
            break;
        }
    }
    let ret = l.ret.load(Ordering::Relaxed);
    if l.cont.load(Ordering::Relaxed) {
        let nr = l.nr.load(Ordering::Relaxed);
        l.pass_at.store(l.ip.load(Ordering::Relaxed), Ordering::Relaxed);
        l.pass_nr.store(nr, Ordering::Relaxed);
        sys::restart_call(nr);
    } else if ret == -ERESTARTSYS {
        // As seccomp leaves it: an interrupted call with its number (the probe made it -1), so
        // the kernel, or a tracer's fixup, restarts it.
        sys::interrupted_call(l.nr.load(Ordering::Relaxed));
    } else {
        sys::set_return(ret);
    }
    l.state.store(IDLE, Ordering::Release);
    sys::wake();
}

/// `MOSIX_IOC_INTERCEPT`.
pub(crate) fn intercept(file: &FileState, arg: usize) -> Result<i32> {
    let req: Intercept = UserSlice::new(arg, size_of::<Intercept>()).reader().read()?;
    if req.reserved0 != 0 || req.reserved != 0 {
        return Err(EINVAL);
    }
    let held = file.lock()?;
    if file.in_use(&held) {
        return Err(EBUSY);
    }
    let task = crate::freeze::mosix_child(req.pid)?;
    let l = Arc::new(
        Listener {
            work: Opaque::uninit(),
            task,
            pid: req.pid,
            local: req.local,
            pass_ip: req.pass_ip,
            state: AtomicU32::new(IDLE),
            id: AtomicU64::new(0),
            nr: AtomicI64::new(-1),
            args: Default::default(),
            ip: AtomicU64::new(0),
            ret: AtomicI64::new(0),
            cont: AtomicBool::new(false),
            pass_nr: AtomicI64::new(-1),
            pass_at: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            lane: AtomicPtr::new(core::ptr::null_mut()),
            lane_calls: Default::default(),
        },
        GFP_KERNEL,
    )?;
    crate::freeze::table_add(&l.task, &l, sys::Kind::Listener)?;
    file.set_listener(&held, l);
    Ok(0)
}

/// `MOSIX_IOC_LANE`: the listener's calls in `calls` go on the socket `fd` from now on.
pub(crate) fn lane(file: &FileState, arg: usize) -> Result<i32> {
    let req: crate::abi::Lane = UserSlice::new(arg, size_of::<crate::abi::Lane>()).reader().read()?;
    if req.reserved0 != 0 || req.reserved != 0 {
        return Err(EINVAL);
    }
    let held = file.lock()?;
    let l = file.listener(&held).ok_or(EINVAL)?;
    if req.calls.iter().zip(&l.local).any(|(c, loc)| c & loc != 0) {
        return Err(EINVAL);
    }
    if !l.lane.load(Ordering::Acquire).is_null() {
        return Err(EBUSY);
    }
    let lane = KBox::into_raw(KBox::new(Lane::new(Sock::from_fd(req.fd)?), GFP_KERNEL)?);
    for (slot, c) in l.lane_calls.iter().zip(req.calls) {
        slot.store(c, Ordering::Relaxed);
    }
    // Under the descriptor's lock, so nothing else set it meanwhile.
    l.lane.store(lane, Ordering::Release);
    Ok(0)
}

/// The descriptor is closed: stop intercepting, answer a waiting call with ENOSYS.
pub(crate) fn release(l: Arc<Listener>) {
    l.closed.store(true, Ordering::SeqCst);
    // A call waiting on the lane wakes at its end and fails with ENOSYS.
    if let Some(s) = l.lane() {
        s.shutdown();
    }
    // After this no probe uses the table's reference: take it back.
    crate::freeze::table_remove(&l);
    // No probe posts a call any more: one waiting (parked, or about to park) gets ENOSYS.
    l.ret.store(-ENOSYS, Ordering::Relaxed);
    l.cont.store(false, Ordering::Relaxed);
    for waiting in [POSTED, RECEIVED] {
        let _ = l.state.compare_exchange(waiting, ANSWERED, Ordering::SeqCst, Ordering::Acquire);
    }
    sys::wake();
}

/// `SECCOMP_IOCTL_NOTIF_RECV`: waits for a call, returns it.
pub(crate) fn recv(l: &Listener, arg: usize) -> Result<i32> {
    let mut w = UserSlice::new(arg, size_of::<SeccompNotif>()).writer();
    // Waits once for a change, as seccomp's RECV sleeps until a notification comes: if what
    // changed was not a new call (the process died, say), ENOENT, and the caller polls again.
    let mut waited = false;
    loop {
        if l.state.compare_exchange(POSTED, RECEIVED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            break;
        }
        if waited || l.closed.load(Ordering::Acquire) {
            return Err(ENOENT);
        }
        let s = l.state.load(Ordering::Acquire);
        if s != POSTED {
            sys::wait_change(&l.state, s, 60_000)?;
            waited = true;
        }
    }
    let mut n = SeccompNotif {
        id: l.id.load(Ordering::Relaxed),
        pid: l.pid as u32,
        flags: 0,
        nr: l.nr.load(Ordering::Relaxed) as i32,
        arch: AUDIT_ARCH_X86_64,
        ip: l.ip.load(Ordering::Relaxed),
        args: [0; 6],
    };
    for (d, s) in n.args.iter_mut().zip(&l.args) {
        *d = s.load(Ordering::Relaxed);
    }
    w.write(&n)?;
    Ok(0)
}

/// `SECCOMP_IOCTL_NOTIF_SEND`: the answer to the call received.
pub(crate) fn send(l: &Listener, arg: usize) -> Result<i32> {
    let r: SeccompResp = UserSlice::new(arg, size_of::<SeccompResp>()).reader().read()?;
    if r.flags & !SECCOMP_USER_NOTIF_FLAG_CONTINUE != 0 || (r.flags != 0 && (r.val != 0 || r.error != 0)) {
        return Err(EINVAL);
    }
    if l.state.load(Ordering::Acquire) != RECEIVED || r.id != l.id.load(Ordering::Relaxed) {
        return Err(ENOENT);
    }
    l.ret.store(if r.error != 0 { i64::from(r.error) } else { r.val }, Ordering::Relaxed);
    l.cont.store(r.flags & SECCOMP_USER_NOTIF_FLAG_CONTINUE != 0, Ordering::Relaxed);
    l.state.store(ANSWERED, Ordering::Release);
    sys::wake();
    Ok(0)
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: whether call `id` still waits for its answer.
pub(crate) fn id_valid(l: &Listener, arg: usize) -> Result<i32> {
    let id: u64 = UserSlice::new(arg, 8).reader().read()?;
    let s = l.state.load(Ordering::Acquire);
    if (s == RECEIVED || s == POSTED) && id == l.id.load(Ordering::Relaxed) && !l.task.is_exiting() {
        Ok(0)
    } else {
        Err(ENOENT)
    }
}

/// poll(): readable when a call waits to be received.
pub(crate) fn readable(l: &Listener) -> bool {
    l.state.load(Ordering::Acquire) == POSTED
}
