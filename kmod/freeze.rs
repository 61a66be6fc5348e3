// SPDX-License-Identifier: GPL-2.0
//! The native engine's freeze, thaw and context capture (feature bits FREEZE and CAPTURE).
//!
//! Freezing queues a task_work on the target (`TWA_SIGNAL`: it is kicked out of an interruptible
//! wait or system call as a signal would): in its own context, on its way back to user mode, the
//! target parks in a killable wait until thawed. It is then exactly where a ptrace interrupt-stop
//! would leave it (an interrupted system call not yet restarted), it runs no user code, and no
//! ptrace stop, signal or job-control state is involved. Only SIGKILL ends the park early.
//! A descriptor freezes one process at a time; closing it thaws that process, so a freezer that
//! dies never leaves a process frozen.
use crate::abi::{Context, SigAction, SigInfo, Target, SIGINFO_MAX, SIGINFO_SLOT};
use crate::deputy::Deputy;
use crate::intercept::Listener;
use crate::sys::{self, TaskRef};
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::Opaque;
use kernel::uaccess::UserSlice;

/// Freeze states of [`Frozen::state`].
const PENDING: u32 = 0;
const PARKED: u32 = 1;
const THAWED: u32 = 2;
const CANCELLED: u32 = 3;
const KILLED: u32 = 4;

/// `NT_PRSTATUS` and `NT_X86_XSTATE` (include/uapi/linux/elf.h).
const NT_PRSTATUS: u32 = 1;
const NT_X86_XSTATE: u32 = 0x202;
/// The largest XSAVE image copied (x86-64's largest today, with AMX tiles, is about 11 KiB).
const XSTATE_MAX: usize = 16 << 10;
/// How long FREEZE waits for the process to park when the caller gives 0.
const DEFAULT_TIMEOUT_MS: u32 = 10_000;
const SS_DISABLE: u32 = 2;

/// One freeze: shared by the descriptor that made it and the parked task's task_work.
struct Frozen {
    work: Opaque<bindings::callback_head>,
    state: AtomicU32,
    task: TaskRef,
    pid: i32,
    /// Made by a restore (the process parks by itself), not by FREEZE.
    restored: bool,
}

/// What one open `/dev/mosix` holds.
pub(crate) struct FileState {
    /// Taken by every ioctl of this descriptor (a second concurrent one gets `EBUSY`).
    busy: AtomicBool,
    /// The process frozen through this descriptor: an `Arc<Frozen>` turned into a raw pointer
    /// (this field owns that reference), or null.
    frozen: AtomicPtr<Frozen>,
    /// The process intercepted through this descriptor (`Arc<Listener>` as a raw pointer, owned
    /// by this field), or null. Set once; taken at release.
    listener: AtomicPtr<Listener>,
    /// The deputy served through this descriptor (`Arc<Deputy>` as a raw pointer, owned by this
    /// field), or null. Set once; taken at release.
    deputy: AtomicPtr<Deputy>,
}

impl FileState {
    pub(crate) fn new() -> FileState {
        FileState {
            busy: AtomicBool::new(false),
            frozen: AtomicPtr::new(core::ptr::null_mut()),
            listener: AtomicPtr::new(core::ptr::null_mut()),
            deputy: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    pub(crate) fn lock(&self) -> Result<Busy<'_>> {
        self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).map_err(|_| EBUSY)?;
        Ok(Busy(self))
    }

    /// The freeze this descriptor holds (a new reference), if any.
    fn current(&self, _held: &Busy<'_>) -> Option<Arc<Frozen>> {
        let p = self.frozen.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` came from `Arc::into_raw` and this field still owns that reference: only
        // `take` (under the same lock, which we hold) or release (no ioctl running) give it up.
        Some(unsafe { arc_ref(p) })
    }

    /// The process intercepted through this descriptor (a new reference), if any. Needs no lock:
    /// the field is set once and cleared only at release, when no ioctl runs.
    pub(crate) fn listener_ref(&self) -> Option<Arc<Listener>> {
        let p = self.listener.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` came from `Arc::into_raw` and this field owns that reference until release
        // (no ioctl runs then).
        Some(unsafe { arc_ref(p) })
    }

    /// As [`listener_ref`](Self::listener_ref), under the descriptor's lock.
    pub(crate) fn listener(&self, _held: &Busy<'_>) -> Option<Arc<Listener>> {
        self.listener_ref()
    }

    /// The deputy this descriptor serves (a new reference), if any.
    pub(crate) fn deputy_ref(&self) -> Option<Arc<Deputy>> {
        let p = self.deputy.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` came from `Arc::into_raw` and this field owns that reference until release
        // (no ioctl runs then).
        Some(unsafe { arc_ref(p) })
    }

    /// Makes this descriptor serve deputy `d` (the caller checked it is not [`in_use`](Self::in_use)).
    pub(crate) fn set_deputy(&self, _held: &Busy<'_>, d: Arc<Deputy>) {
        self.deputy.store(Arc::into_raw(d).cast_mut(), Ordering::Release);
    }

    /// Whether this descriptor already freezes, intercepts or serves a process (each descriptor
    /// does one of these at a time).
    pub(crate) fn in_use(&self, held: &Busy<'_>) -> bool {
        self.has_frozen(held) || self.listener_ref().is_some() || self.deputy_ref().is_some()
    }

    /// Makes this descriptor the listener `l` (the caller checked it has none).
    pub(crate) fn set_listener(&self, _held: &Busy<'_>, l: Arc<Listener>) {
        self.listener.store(Arc::into_raw(l).cast_mut(), Ordering::Release);
    }

    /// Whether a process is frozen (or about to park) through this descriptor.
    /// The process `pid` frozen through this descriptor and parked now (`ESRCH` otherwise).
    fn parked(&self, held: &Busy<'_>, pid: i32) -> Result<Arc<Frozen>> {
        match self.current(held) {
            Some(f) if f.pid == pid && f.state.load(Ordering::Acquire) == PARKED => Ok(f),
            _ => Err(sys::esrch()),
        }
    }

    pub(crate) fn has_frozen(&self, held: &Busy<'_>) -> bool {
        self.current(held).is_some()
    }

    /// Restore: the calling task parks on its way back to user mode, frozen through this
    /// descriptor as after `MOSIX_IOC_FREEZE` (its driver waits for that with FREEZE).
    pub(crate) fn park_current(&self, held: &Busy<'_>) -> Result {
        if self.current(held).is_some() {
            return Err(EBUSY);
        }
        let task = TaskRef::current();
        let pid = sys::current_tgid();
        let f = Arc::new(Frozen { work: Opaque::uninit(), state: AtomicU32::new(PENDING), task: task.clone_ref(), pid, restored: true }, GFP_KERNEL)?;
        let for_task = Arc::into_raw(f.clone());
        // SAFETY: as in `freeze`: `work` lives in the `Frozen` that `for_task` keeps alive until
        // `mosix_park` drops it.
        if let Err(e) = unsafe { task.task_work_add((*for_task).work.get()) } {
            // SAFETY: the work was not queued: the reference is still ours to drop.
            drop(unsafe { Arc::from_raw(for_task) });
            return Err(e);
        }
        self.frozen.store(Arc::into_raw(f).cast_mut(), Ordering::Release);
        Ok(())
    }

    /// Takes the freeze out of this descriptor.
    fn take(&self) -> Option<Arc<Frozen>> {
        let p = self.frozen.swap(core::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: a non-null `p` is the reference the field owned (from `Arc::into_raw`), now ours.
        (!p.is_null()).then(|| unsafe { Arc::from_raw(p) })
    }
}

/// A second reference to the `Arc<T>` behind `p`, leaving the reference `p` stands for untouched.
///
/// # Safety
///
/// `p` came from `Arc::into_raw`, and the reference it stands for stays alive during this call.
pub(crate) unsafe fn arc_ref<T>(p: *const T) -> Arc<T> {
    // SAFETY: per the contract; the `Arc` rebuilt here is forgotten, so the count it stands for
    // is not dropped: only the clone is new.
    let owned = unsafe { Arc::from_raw(p) };
    let extra = owned.clone();
    core::mem::forget(owned);
    extra
}

/// Queues `work` (a field of `*x`) on the calling task with kind `kind` (see
/// [`sys::task_work_add_resume`]), handing the work one more reference to `x`. Whether it was
/// queued (if not, that reference is dropped again).
///
/// # Safety
///
/// `x` lives in an `Arc<T>`; `work` is a field of `*x`; the callback of `kind` takes that
/// reference back with `Arc::from_raw` of the `T` around `work`.
pub(crate) unsafe fn queue_with_ref<T>(x: &T, work: *mut bindings::callback_head, kind: sys::Kind) -> bool {
    // SAFETY: per the contract, `x` lives in an `Arc`.
    let for_work = Arc::into_raw(unsafe { arc_ref(x as *const T) });
    // SAFETY: `work` lives in `*x`, which `for_work` keeps alive until the callback drops it; the
    // callback satisfies `task_work_add_resume`'s contract per ours.
    if unsafe { sys::task_work_add_resume(work, kind) }.is_err() {
        // SAFETY: not queued: the reference is ours to drop.
        drop(unsafe { Arc::from_raw(for_work) });
        return false;
    }
    true
}

/// Enters `a` in the probe's table for `task` (kind `kind`), with a reference of its own, given
/// back by [`table_remove`].
pub(crate) fn table_add<T>(task: &TaskRef, a: &Arc<T>, kind: sys::Kind) -> Result {
    let for_table = Arc::into_raw(a.clone());
    sys::intercept_add(task, for_table.cast(), kind).inspect_err(|_| {
        // SAFETY: the table did not take it: the reference is still ours to drop.
        drop(unsafe { Arc::from_raw(for_table) });
    })
}

/// Removes `a` from the probe's table (no probe uses it after this) and drops the table's
/// reference.
pub(crate) fn table_remove<T>(a: &Arc<T>) {
    let p: *const T = &**a;
    if sys::intercept_remove(p.cast()) {
        // SAFETY: the table's reference, from `Arc::into_raw` in `table_add`, given back once.
        drop(unsafe { Arc::from_raw(p) });
    }
}

/// The process `pid` a descriptor may freeze or intercept: a MOSIX process (the caller's child:
/// the program its mosrun runs, or the stub its guest restored; `EPERM` otherwise), not the
/// caller nor a kernel thread, single-threaded (`EINVAL`), alive (`ESRCH`).
pub(crate) fn mosix_child(pid: i32) -> Result<TaskRef> {
    let task = TaskRef::by_pid(pid).ok_or_else(sys::esrch)?;
    if task.is_current() || task.is_kthread() {
        return Err(EINVAL);
    }
    if !task.is_child_of_current() {
        return Err(EPERM);
    }
    if task.nr_threads() != 1 {
        return Err(EINVAL);
    }
    if task.is_exiting() {
        return Err(sys::esrch());
    }
    Ok(task)
}

/// The per-descriptor lock, released on drop.
pub(crate) struct Busy<'a>(&'a FileState);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// The task_work run by the frozen task itself, on its way back to user mode (called by the C
/// shim's work function, which then drops the module reference the queued work held).
///
/// # Safety
///
/// `head` is the `work` field of a `Frozen` whose `Arc` reference was given to this callback by
/// `Arc::into_raw` in [`freeze`].
#[no_mangle]
pub(crate) unsafe extern "C" fn mosix_park(head: *mut bindings::callback_head) {
    // SAFETY: per the contract, `head` lies in a `Frozen` kept alive by the reference handed to us.
    let f = unsafe { Arc::from_raw(kernel::container_of!(head, Frozen, work)) };
    if f.task.is_exiting() {
        // Run by exit_task_work(): the process is ending, not to be parked.
        let _ = f.state.compare_exchange(PENDING, KILLED, Ordering::AcqRel, Ordering::Acquire);
        sys::wake();
        return;
    }
    if f.state.compare_exchange(PENDING, PARKED, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return; // the freezer gave up (timeout or signal): go on as if nothing happened
    }
    // The user FPU state goes to memory now, so that it can be read while this task waits.
    sys::save_user_fpu();
    sys::wake();
    if sys::park(&f.state, PARKED).is_err() {
        let _ = f.state.compare_exchange(PARKED, KILLED, Ordering::AcqRel, Ordering::Acquire);
        sys::wake();
    }
}

/// `MOSIX_IOC_FREEZE`. For a process that restored itself through this descriptor (and parks by
/// itself), waits until it has parked.
pub(crate) fn freeze(file: &FileState, arg: usize) -> Result<i32> {
    let req: Target = UserSlice::new(arg, size_of::<Target>()).reader().read()?;
    if req.reserved != 0 {
        return Err(EINVAL);
    }
    let held = file.lock()?;
    if let Some(f) = file.current(&held) {
        // A process restored through this descriptor parks by itself: wait for that.
        if !f.restored || f.pid != req.pid {
            return Err(EBUSY);
        }
        let timeout = if req.timeout_ms == 0 { DEFAULT_TIMEOUT_MS } else { req.timeout_ms.min(600_000) };
        sys::wait_change(&f.state, PENDING, timeout)?;
        return match f.state.load(Ordering::Acquire) {
            PARKED => Ok(0),
            PENDING => Err(sys::etimedout()),
            _ => {
                drop(file.take());
                Err(sys::esrch())
            }
        };
    }
    // Only MOSIX processes are touched.
    let task = mosix_child(req.pid)?;
    let f = Arc::new(Frozen { work: Opaque::uninit(), state: AtomicU32::new(PENDING), task: task.clone_ref(), pid: req.pid, restored: false }, GFP_KERNEL)?;
    let for_task = Arc::into_raw(f.clone());
    // SAFETY: `work` lives in the `Frozen` that `for_task` keeps alive until `mosix_park` drops it;
    // `mosix_park` expects exactly that reference.
    if let Err(e) = unsafe { task.task_work_add((*for_task).work.get()) } {
        // SAFETY: the work was not queued: the reference is still ours to drop.
        drop(unsafe { Arc::from_raw(for_task) });
        return Err(if e == EINVAL { e } else { sys::esrch() });
    }
    let timeout = if req.timeout_ms == 0 { DEFAULT_TIMEOUT_MS } else { req.timeout_ms.min(600_000) };
    let waited = sys::wait_change(&f.state, PENDING, timeout);
    if !matches!(waited, Ok(true)) && f.state.compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        // The task_work stays queued and will find CANCELLED: the process goes on untouched.
        return Err(match waited {
            Err(e) => e,
            _ => sys::etimedout(),
        });
    }
    match f.state.load(Ordering::Acquire) {
        PARKED => {
            file.frozen.store(Arc::into_raw(f).cast_mut(), Ordering::Release);
            Ok(0)
        }
        _ => Err(sys::esrch()),
    }
}

/// Lets a frozen process go on (wakes its park). A restored process not parked yet will not park.
fn thaw_frozen(f: &Frozen) {
    let _ = f.state.compare_exchange(PARKED, THAWED, Ordering::AcqRel, Ordering::Acquire);
    let _ = f.state.compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire);
    sys::wake();
}

/// `MOSIX_IOC_THAW`.
pub(crate) fn thaw(file: &FileState, arg: usize) -> Result<i32> {
    let req: Target = UserSlice::new(arg, size_of::<Target>()).reader().read()?;
    if req.reserved != 0 || req.timeout_ms != 0 {
        return Err(EINVAL);
    }
    let held = file.lock()?;
    match file.current(&held) {
        Some(f) if f.pid == req.pid => {}
        _ => return Err(sys::esrch()),
    }
    let f = file.take().ok_or_else(sys::esrch)?;
    let killed = f.state.load(Ordering::Acquire) == KILLED;
    thaw_frozen(&f);
    drop(held);
    if killed {
        return Err(sys::esrch());
    }
    Ok(0)
}

/// The descriptor is closed: a process still frozen through it goes on; one intercepted through
/// it is no longer.
pub(crate) fn release(file: &FileState) {
    if let Some(f) = file.take() {
        thaw_frozen(&f);
    }
    let p = file.listener.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: the reference the field owned (from `Arc::into_raw`), now ours.
        crate::intercept::release(unsafe { Arc::from_raw(p) });
    }
    let p = file.deputy.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: the reference the field owned (from `Arc::into_raw`), now ours.
        crate::deputy::release(unsafe { Arc::from_raw(p) });
    }
}

/// `MOSIX_IOC_CONTEXT`.
pub(crate) fn context(file: &FileState, arg: usize) -> Result<i32> {
    let (mut reader, mut writer) = UserSlice::new(arg, size_of::<Context>()).reader_writer();
    let mut ctx: KBox<Context> = KBox::new(reader.read()?, GFP_KERNEL)?;
    if ctx.reserved != 0 {
        return Err(EINVAL);
    }
    let held = file.lock()?;
    let f = file.parked(&held, ctx.pid)?;
    let t = &f.task;
    let mut regs = [0u8; 27 * 8];
    if t.regset(NT_PRSTATUS, &mut regs)? != regs.len() {
        return Err(EINVAL);
    }
    for (i, w) in regs.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        ctx.regs[i] = u64::from_le_bytes(b);
    }
    let want = (ctx.xstate_len as usize).min(XSTATE_MAX);
    let mut xs = KVec::from_elem(0u8, want, GFP_KERNEL)?;
    let n = t.regset(NT_X86_XSTATE, &mut xs)?;
    UserSlice::new(ctx.xstate as usize, n).writer().write_slice(&xs[..n])?;
    ctx.xstate_len = n as u32;
    let st = t.state()?;
    ctx.sigmask = st.sigmask;
    ctx.brk = st.brk;
    ctx.tid_address = st.tid_address;
    ctx.robust_list = st.robust_list;
    ctx.robust_len = if st.robust_list != 0 { 24 } else { 0 };
    ctx.rseq = st.rseq;
    ctx.rseq_len = st.rseq_len;
    ctx.rseq_sig = st.rseq_sig;
    ctx.altstack_sp = st.altstack_sp;
    ctx.altstack_size = st.altstack_size;
    ctx.altstack_flags = if st.altstack_size == 0 { SS_DISABLE as i32 } else { st.altstack_flags as i32 };
    ctx.reserved0 = 0;
    for sig in 1..=64usize {
        ctx.sigactions[sig - 1] = if sig == 9 || sig == 19 {
            SigAction::default()
        } else {
            let [handler, flags, restorer, mask] = t.sigaction(sig);
            SigAction { handler, flags, restorer, mask }
        };
    }
    drop(held);
    writer.write(&*ctx)?;
    Ok(0)
}

/// `MOSIX_IOC_SIGINFO`: the queued signals of the process frozen through this descriptor, with
/// their siginfo (what PTRACE_PEEKSIGINFO gives a tracer), for a move that carries them along.
pub(crate) fn siginfo(file: &FileState, arg: usize) -> Result<i32> {
    let (mut reader, mut writer) = UserSlice::new(arg, size_of::<SigInfo>()).reader_writer();
    let mut req: SigInfo = reader.read()?;
    if req.reserved != 0 || req.count > SIGINFO_MAX {
        return Err(EINVAL);
    }
    let held = file.lock()?;
    let f = file.parked(&held, req.pid)?;
    let mut out = KVec::from_elem(0u8, req.count as usize * SIGINFO_SLOT, GFP_KERNEL)?;
    let (total, written) = f.task.peek_siginfo(req.skip, &mut out, SIGINFO_SLOT)?;
    drop(held);
    let n = written as usize * SIGINFO_SLOT;
    UserSlice::new(req.buf as usize, n).writer().write_slice(&out[..n])?;
    req.count = written;
    req.total = total;
    writer.write(&req)?;
    Ok(0)
}
