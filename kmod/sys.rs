// SPDX-License-Identifier: GPL-2.0
//! Every call from mosix.ko into C, each behind a thin safe wrapper. No other file of the module
//! has `unsafe` code. 6.12 has no `kernel::miscdevice` and no `kernel::fs::File`, so the character
//! device is built here from `kernel::bindings::file_operations` and the C shim `mosix_shim.c`.

use core::marker::PhantomData;
use kernel::bindings;
use kernel::error::to_result;
use core::sync::atomic::AtomicU32;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use kernel::prelude::*;

// `file_operations` reaches `struct mod_arch_specific`, empty in this configuration: rustc flags
// pointers to it as not FFI-safe although only the pointer crosses (the bindings crate allows it too).
#[allow(improper_ctypes)]
extern "C" {
    // mosix_shim.c: owns the `struct miscdevice` (not in kernel::bindings on 6.12).
    fn mosix_shim_misc_register(fops: *const bindings::file_operations) -> c_int;
    fn mosix_shim_misc_deregister();
    // mosix_shim.c: the native engine's wrappers (see there).
    fn mosix_shim_is_parent(child: *mut bindings::task_struct, parent: *mut bindings::task_struct) -> c_int;
    fn mosix_shim_task_work_add(t: *mut bindings::task_struct, work: *mut bindings::callback_head) -> c_int;
    fn mosix_shim_park(state: *mut u32, while_is: u32) -> c_int;
    fn mosix_shim_wait_change(state: *mut u32, while_is: u32, timeout_ms: c_uint) -> c_long;
    fn mosix_shim_wake();
    fn mosix_shim_save_user_fpu();
    fn mosix_shim_regset(t: *mut bindings::task_struct, note_type: c_uint, buf: *mut c_void, size: c_uint) -> c_int;
    fn mosix_shim_peek_siginfo(t: *mut bindings::task_struct, skip: c_ulong, out: *mut c_void, max: c_uint, slot: c_uint, written: *mut c_uint) -> c_long;
    fn mosix_shim_current_tgid() -> c_int;
    fn mosix_shim_user_top() -> c_ulong;
    fn mosix_shim_mmap(addr: c_ulong, len: c_ulong, prot: c_ulong, flags: c_ulong, fd: c_int, off: c_ulong) -> c_long;
    fn mosix_shim_pread(fd: c_int, buf: *mut c_void, len: usize, pos: u64) -> c_long;
    fn mosix_shim_poke(addr: c_ulong, buf: *mut c_void, len: c_int) -> c_int;
    fn mosix_shim_set_rseq(ptr: u64, len: u32, sig: u32);
    fn mosix_shim_set_blocked(mask: u64);
    fn mosix_shim_set_user_regs(words: *const u64);
    fn mosix_shim_close_fd(fd: c_uint);
    fn mosix_shim_task_work_add_resume(work: *mut bindings::callback_head, kind: c_int) -> c_int;
    fn mosix_shim_set_return(v: c_long);
    fn mosix_shim_restart_call(nr: c_long);
    fn mosix_shim_interrupted_call(nr: c_long);
    fn mosix_shim_park_interruptible(state: *mut u32, while_is: u32) -> c_int;
    fn mosix_shim_intercept_add(t: *mut bindings::task_struct, l: *const c_void, kind: c_int) -> c_int;
    fn mosix_shim_sock_get(fd: c_int, err: *mut c_int) -> *mut c_void;
    fn mosix_shim_sock_put(sock: *mut c_void);
    fn mosix_shim_sock_send(sock: *mut c_void, buf: *const c_void, len: usize) -> c_long;
    fn mosix_shim_sock_recv(sock: *mut c_void, buf: *mut c_void, len: usize) -> c_long;
    fn mosix_shim_sock_shutdown(sock: *mut c_void);
    fn mosix_shim_sock_wait(sock: *mut c_void, state: *mut u32, while_is: u32, killable: c_int) -> c_int;
    fn mosix_shim_set_call(nr: c_long, args: *const u64);
    fn mosix_shim_arg0() -> u64;
    fn mosix_shim_intercept_remove(l: *const c_void) -> bool;
    fn mosix_shim_intercept_exit();
    fn mosix_shim_can_intercept() -> c_int;
    fn mosix_shim_poll_wait(file: *mut bindings::file, wait: *mut bindings::poll_table_struct);
}

/// What `/dev/mosix` does; every method runs in the context of the calling task.
pub(crate) trait Device {
    /// What one open descriptor holds.
    type File: Send + Sync;
    /// A task opens the device; an error refuses the open.
    fn open() -> Result<KBox<Self::File>>;
    /// The last reference to a descriptor opened successfully is gone.
    fn release(file: KBox<Self::File>);
    /// `ioctl(fd, cmd, arg)`; `Ok(v)` becomes the return value (any value: a restore returns the
    /// restored context's `rax`).
    fn ioctl(file: &Self::File, cmd: u32, arg: usize) -> Result<i64>;
    /// poll(): whether the descriptor is readable now (the caller is put on the module's wait
    /// queue first, so a change after this answer wakes it).
    fn readable(file: &Self::File) -> bool;
}

/// `/dev/mosix`, registered as a misc character device with dynamic minor, until dropped.
///
/// # Invariants
///
/// * `fops` is registered with the misc subsystem for the whole life of `self`, and it never moves
///   (it is boxed), so the pointer the kernel holds stays valid until `drop` deregisters it.
/// * At most one `Registration` exists: the shim has a single `struct miscdevice`, and only module
///   init creates one.
pub(crate) struct Registration<T: Device> {
    /// Never read here: the kernel reads it through the pointer it was given.
    #[allow(dead_code)]
    fops: KBox<bindings::file_operations>,
    _device: PhantomData<T>,
}

// SAFETY: after registration the kernel only reads `fops`, from any thread; `Registration` itself
// holds no thread-bound state.
unsafe impl<T: Device> Send for Registration<T> {}
// SAFETY: as above: shared references give no access to anything mutable.
unsafe impl<T: Device> Sync for Registration<T> {}

impl<T: Device> Registration<T> {
    /// Creates `/dev/mosix`, its operations owned by `module` (so the module cannot be unloaded
    /// while a descriptor is open).
    pub(crate) fn register(module: &'static ThisModule) -> Result<Self> {
        // SAFETY: `file_operations` is a C struct of nullable function pointers and a module
        // pointer: all-zero is a valid value ("operation not provided").
        let mut fops: bindings::file_operations = unsafe { core::mem::zeroed() };
        fops.owner = module.as_ptr();
        fops.open = Some(open_trampoline::<T>);
        fops.release = Some(release_trampoline::<T>);
        fops.unlocked_ioctl = Some(ioctl_trampoline::<T>);
        fops.poll = Some(poll_trampoline::<T>);
        let fops = KBox::new(fops, GFP_KERNEL)?;
        // SAFETY: `fops` is heap-allocated and owned by the `Registration` returned below, whose
        // `drop` deregisters the device before the box is freed (type invariant); the shim's
        // single miscdevice is free because this is the only `Registration` (type invariant).
        to_result(unsafe { mosix_shim_misc_register(&*fops) })?;
        Ok(Self { fops, _device: PhantomData })
    }
}

impl<T: Device> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: the device was registered in `register` (type invariant); after this call the
        // kernel holds no pointer to `self.fops`, which is freed after this function returns.
        unsafe { mosix_shim_misc_deregister() };
        // SAFETY: no preconditions: with the device gone (and no descriptor open, or the module
        // could not be unloading) the probe table is empty; this waits for the probe's delayed
        // unregistration and makes it now, so no module code runs after the module's exit.
        unsafe { mosix_shim_intercept_exit() };
    }
}

/// `file_operations::open`: misc_open() has already installed our `fops` on the file (and set
/// `private_data` to its miscdevice, which we replace by the descriptor's own state).
unsafe extern "C" fn open_trampoline<T: Device>(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    match T::open() {
        Ok(state) => {
            // SAFETY: the VFS passes the `struct file` being opened, valid and not yet shared;
            // `private_data` is ours to set. The box is taken back in `release_trampoline`.
            unsafe { (*file).private_data = KBox::into_raw(state).cast() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// `file_operations::release`: called once per successfully opened file, after its last ioctl.
unsafe extern "C" fn release_trampoline<T: Device>(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: `private_data` was set by `open_trampoline` from `KBox::into_raw` of a
    // `KBox<T::File>` and is taken back once: release runs once per open file, and no ioctl runs
    // on it any more (the file's last reference is gone).
    let state = unsafe { KBox::from_raw((*file).private_data.cast::<T::File>()) };
    T::release(state);
    0
}

/// `file_operations::unlocked_ioctl`.
unsafe extern "C" fn ioctl_trampoline<T: Device>(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: the VFS holds a reference to the open file for the whole call, so `private_data`
    // (set in `open_trampoline`, freed only in `release_trampoline`) points to a live `T::File`.
    let state = unsafe { &*(*file).private_data.cast::<T::File>() };
    match T::ioctl(state, cmd, arg as usize) {
        Ok(v) => v as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// `file_operations::poll`.
unsafe extern "C" fn poll_trampoline<T: Device>(file: *mut bindings::file, wait: *mut bindings::poll_table_struct) -> bindings::__poll_t {
    // SAFETY: the VFS passes a live file and its poll table; the shim adds the module's wait queue.
    unsafe { mosix_shim_poll_wait(file, wait) };
    // SAFETY: as in `ioctl_trampoline`: `private_data` points to a live `T::File` during the call.
    let state = unsafe { &*(*file).private_data.cast::<T::File>() };
    if T::readable(state) {
        // EPOLLIN | EPOLLRDNORM (include/uapi/linux/eventpoll.h): not in 6.12's bindings.
        0x0001 | 0x0040
    } else {
        0
    }
}

/// Whether the calling task has `CAP_SYS_ADMIN` in the initial user namespace (and the kernel
/// records that it used it, as for any privileged operation).
pub(crate) fn capable_sys_admin() -> bool {
    // SAFETY: `capable` only reads the current task's credentials; no preconditions.
    unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as c_int) }
}

/// The errno `EPROTO` (not among 6.12's `kernel::error::code` constants).
pub(crate) fn eproto() -> Error {
    Error::from_errno(-(bindings::EPROTO as c_int))
}

/// The errno `ESRCH`.
pub(crate) fn esrch() -> Error {
    Error::from_errno(-(bindings::ESRCH as c_int))
}

/// The errno `ETIMEDOUT`.
pub(crate) fn etimedout() -> Error {
    Error::from_errno(-(bindings::ETIMEDOUT as c_int))
}

/// A counted reference to a task (`get_task_struct`/`put_task_struct`).
///
/// # Invariants
///
/// `self.0` points to a task whose reference count this value holds one of.
pub(crate) struct TaskRef(*mut bindings::task_struct);

// SAFETY: a counted task reference may be used and dropped from any thread (put_task_struct is
// callable from any context that may sleep or not: it defers the free).
unsafe impl Send for TaskRef {}
// SAFETY: `&TaskRef` only gives reads of the task through the kernel's own accessors.
unsafe impl Sync for TaskRef {}

/// The user-visible state of a parked task that the native engine reports (see `abi::Context`).
pub(crate) struct TaskState {
    pub(crate) sigmask: u64,
    pub(crate) tid_address: u64,
    pub(crate) robust_list: u64,
    pub(crate) rseq: u64,
    pub(crate) rseq_len: u32,
    pub(crate) rseq_sig: u32,
    pub(crate) altstack_sp: u64,
    pub(crate) altstack_size: u64,
    pub(crate) altstack_flags: u32,
    pub(crate) brk: u64,
}

impl TaskRef {
    /// The calling task.
    pub(crate) fn current() -> TaskRef {
        // SAFETY: `current` is always a live task; get_task_struct takes a reference to it.
        let t = unsafe { bindings::get_current() };
        // SAFETY: as above.
        unsafe { bindings::get_task_struct(t) };
        TaskRef(t)
    }

    /// The task with pid `nr` in the caller's pid namespace.
    pub(crate) fn by_pid(nr: i32) -> Option<TaskRef> {
        if nr <= 0 {
            return None;
        }
        // SAFETY: find_get_pid takes any number and returns a counted `struct pid` or NULL.
        let pid = unsafe { bindings::find_get_pid(nr) };
        if pid.is_null() {
            return None;
        }
        // SAFETY: `pid` is a valid counted pid; get_pid_task returns a counted task or NULL.
        let t = unsafe { bindings::get_pid_task(pid, bindings::pid_type_PIDTYPE_PID) };
        // SAFETY: drops the reference find_get_pid took.
        unsafe { bindings::put_pid(pid) };
        (!t.is_null()).then_some(TaskRef(t))
    }

    /// Another counted reference to the same task.
    pub(crate) fn clone_ref(&self) -> TaskRef {
        // SAFETY: `self.0` is a live task (type invariant); this takes one more reference.
        unsafe { bindings::get_task_struct(self.0) };
        TaskRef(self.0)
    }

    /// Whether the calling task's process is this task's real parent (any of its threads).
    pub(crate) fn is_child_of_current(&self) -> bool {
        // SAFETY: both are live tasks (type invariant; `current` is always live); the shim reads
        // `real_parent` under RCU.
        unsafe { mosix_shim_is_parent(self.0, bindings::get_current()) != 0 }
    }

    /// Whether this is the calling task.
    pub(crate) fn is_current(&self) -> bool {
        // SAFETY: get_current has no preconditions.
        self.0 == unsafe { bindings::get_current() }
    }

    /// `task->flags` (PF_*).
    fn flags(&self) -> u32 {
        // SAFETY: the task is live (type invariant); `flags` is a plain word the task updates only
        // for itself; a racy read of it is what the kernel's own PF_ checks do.
        unsafe { core::ptr::read_volatile(&(*self.0).flags) }
    }

    /// A kernel thread (it has no user context to move).
    pub(crate) fn is_kthread(&self) -> bool {
        self.flags() & bindings::PF_KTHREAD != 0
    }

    /// The task has begun to exit.
    pub(crate) fn is_exiting(&self) -> bool {
        self.flags() & bindings::PF_EXITING != 0
    }

    /// Threads in its thread group.
    pub(crate) fn nr_threads(&self) -> i32 {
        // SAFETY: the task is live; `signal` lives as long as the task_struct (freed with it);
        // nr_threads is an int read racily, as /proc does.
        unsafe { core::ptr::read_volatile(&(*(*self.0).signal).nr_threads) }
    }

    /// Queues `freeze::mosix_park(work)` to run in the task's own context before it next returns
    /// to user mode (it is kicked out of interruptible waits as by a signal). While it is queued
    /// the module holds a reference to itself: it cannot be unloaded before the task ran it.
    ///
    /// # Safety
    ///
    /// `work` must stay valid and unmoved until `mosix_park` has been called with it, and must
    /// satisfy `mosix_park`'s contract.
    pub(crate) unsafe fn task_work_add(&self, work: *mut bindings::callback_head) -> Result {
        // SAFETY: the task is live (type invariant); the caller guarantees `work`.
        to_result(unsafe { mosix_shim_task_work_add(self.0, work) })
    }

    /// Copies the task's user regset `note_type` into `buf`, as PTRACE_GETREGSET: the bytes
    /// written. The task must not be running in user mode (parked or stopped).
    pub(crate) fn regset(&self, note_type: u32, buf: &mut [u8]) -> Result<usize> {
        let size = c_uint::try_from(buf.len()).map_err(|_| EINVAL)?;
        // SAFETY: the task is live; `buf` is a kernel buffer valid for `size` bytes of writes.
        let r = unsafe { mosix_shim_regset(self.0, note_type, buf.as_mut_ptr().cast(), size) };
        to_result(r.min(0))?;
        Ok(r as usize)
    }

    /// The siginfo of the task's queued signals (its own queue, then its process's), skipping
    /// the first `skip`, into `out` in `slot`-byte slots (zero-padded: `out` must be zeroed):
    /// (how many are queued in all, how many were copied).
    pub(crate) fn peek_siginfo(&self, skip: u32, out: &mut [u8], slot: usize) -> Result<(u32, u32)> {
        let max = c_uint::try_from(out.len() / slot).map_err(|_| EINVAL)?;
        let slot_c = c_uint::try_from(slot).map_err(|_| EINVAL)?;
        let mut written: c_uint = 0;
        // SAFETY: the task is live (type invariant); `out` is a kernel buffer with room for `max`
        // slots of `slot` bytes; the shim takes the task's signal lock for the copy.
        let r = unsafe { mosix_shim_peek_siginfo(self.0, skip as c_ulong, out.as_mut_ptr().cast(), max, slot_c, &mut written) };
        if r < 0 {
            return Err(Error::from_errno(r as i32));
        }
        Ok((u32::try_from(r).unwrap_or(u32::MAX), written))
    }

    /// The signal action of signal `sig` (1..=64): handler, flags, restorer, mask.
    pub(crate) fn sigaction(&self, sig: usize) -> [u64; 4] {
        // SAFETY: the task is live and `sighand` lives while the task is not reaped; the task is
        // parked, and with one thread (checked before freezing) it is the only writer of its
        // actions, so the words are stable. `sig` - 1 is below 64 (callers' range).
        unsafe {
            let a = &(*(*self.0).sighand).action[sig - 1].sa;
            let h: usize = core::mem::transmute(a.sa_handler);
            let r: usize = core::mem::transmute(a.sa_restorer);
            [h as u64, a.sa_flags as u64, r as u64, a.sa_mask.sig[0] as u64]
        }
    }

    /// Signal mask, alternate stack, rseq, robust list, clear-tid address and brk.
    pub(crate) fn state(&self) -> Result<TaskState> {
        // SAFETY: the task is live (type invariant) and parked (callers' contract): these fields
        // are written only by the task itself, so reading them here is stable.
        let mut st = unsafe {
            let t = &*self.0;
            TaskState {
                sigmask: t.blocked.sig[0] as u64,
                tid_address: t.clear_child_tid as u64,
                robust_list: t.robust_list as u64,
                rseq: t.rseq as u64,
                rseq_len: t.rseq_len,
                rseq_sig: t.rseq_sig,
                altstack_sp: t.sas_ss_sp as u64,
                altstack_size: t.sas_ss_size as u64,
                altstack_flags: t.sas_ss_flags,
                brk: 0,
            }
        };
        // SAFETY: the task is live; get_task_mm returns a counted mm or NULL (kernel thread or
        // exiting), released by mmput below.
        let mm = unsafe { bindings::get_task_mm(self.0) };
        if mm.is_null() {
            return Err(esrch());
        }
        // SAFETY: `mm` is counted until mmput; brk is a word read as /proc/PID/stat reads it.
        unsafe {
            st.brk = core::ptr::read_volatile(&(*mm).__bindgen_anon_1.brk) as u64;
            bindings::mmput(mm);
        }
        Ok(st)
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: drops the reference this value holds (type invariant).
        unsafe { bindings::put_task_struct(self.0) };
    }
}

/// Sleeps, killable only, while `state` holds `while_is`: Ok when it changed, Err when the
/// calling task was killed. No other signal ends the wait.
pub(crate) fn park(state: &AtomicU32, while_is: u32) -> Result {
    // SAFETY: `state` is a live atomic u32 for the whole wait (borrowed); the shim only reads it
    // with READ_ONCE, as AtomicU32 has the layout of u32.
    to_result(unsafe { mosix_shim_park(state.as_ptr(), while_is) })
}

/// Sleeps while `state` holds `while_is`, at most `timeout_ms`: Ok(true) when it changed,
/// Ok(false) on timeout, Err(ERESTARTSYS) when a signal came.
pub(crate) fn wait_change(state: &AtomicU32, while_is: u32, timeout_ms: u32) -> Result<bool> {
    // SAFETY: as in `park`.
    let r = unsafe { mosix_shim_wait_change(state.as_ptr(), while_is, timeout_ms) };
    if r < 0 {
        return Err(Error::from_errno(r as c_int));
    }
    Ok(r > 0)
}

/// Wakes every waiter of `park` and `wait_change` (they recheck their state).
pub(crate) fn wake() {
    // SAFETY: no preconditions: wakes the module's static wait queue.
    unsafe { mosix_shim_wake() };
}

/// Saves the calling task's user FPU registers to its fpstate (so they can be read from there
/// while it sleeps in the kernel); they are reloaded on its return to user mode.
pub(crate) fn save_user_fpu() {
    // SAFETY: no preconditions: kernel_fpu_begin/end in the calling task's context.
    unsafe { mosix_shim_save_user_fpu() };
}

/// The calling task's process id in its own pid namespace.
pub(crate) fn current_tgid() -> i32 {
    // SAFETY: no preconditions: reads the calling task's own pid.
    unsafe { mosix_shim_current_tgid() }
}

/// Threads of the calling task's process.
pub(crate) fn current_nr_threads() -> i32 {
    TaskRef::current().nr_threads()
}

/// The end of the user address space (TASK_SIZE_MAX).
pub(crate) fn user_top() -> u64 {
    // SAFETY: no preconditions: a constant of the architecture.
    unsafe { mosix_shim_user_top() as u64 }
}

/// `munmap(start, len)` in the calling task.
pub(crate) fn vm_munmap(start: u64, len: u64) -> Result {
    // SAFETY: vm_munmap acts on the calling task's own mm and checks its arguments.
    to_result(unsafe { bindings::vm_munmap(start as c_ulong, len as usize) })
}

/// `mmap` in the calling task: anonymous when `fd` < 0, else of the caller's descriptor `fd`.
pub(crate) fn vm_mmap(addr: u64, len: u64, prot: u32, flags: u64, fd: i32, off: u64) -> Result<u64> {
    // SAFETY: the shim takes its own reference on the file and calls vm_mmap, which checks its
    // arguments, on the calling task's own mm.
    let r = unsafe { mosix_shim_mmap(addr as c_ulong, len as c_ulong, prot as c_ulong, flags as c_ulong, fd, off as c_ulong) };
    if (-4095..0).contains(&r) {
        return Err(Error::from_errno(r as c_int));
    }
    Ok(r as u64)
}

/// Reads `buf.len()` bytes at `pos` of the caller's descriptor `fd` (kernel_read): the bytes read.
pub(crate) fn pread(fd: i32, buf: &mut [u8], pos: u64) -> Result<usize> {
    // SAFETY: `buf` is a kernel buffer valid for writes of its length; the shim holds a reference
    // on the file for the read.
    let r = unsafe { mosix_shim_pread(fd, buf.as_mut_ptr().cast(), buf.len(), pos) };
    to_result(r.min(0) as c_int)?;
    Ok(r as usize)
}

/// Writes `buf` at user address `addr` of the calling task through page protections (FOLL_FORCE,
/// as PTRACE_POKEDATA): the bytes written.
pub(crate) fn poke(addr: u64, buf: &mut [u8]) -> Result<usize> {
    let len = c_int::try_from(buf.len()).map_err(|_| EINVAL)?;
    // SAFETY: `buf` is a kernel buffer valid for `len` bytes; access_process_vm checks the user
    // range against the calling task's own mm.
    let r = unsafe { mosix_shim_poke(addr as c_ulong, buf.as_mut_ptr().cast(), len) };
    to_result(r.min(0))?;
    Ok(r as usize)
}

/// Sets the calling task's rseq registration (0: none).
pub(crate) fn set_rseq(ptr: u64, len: u32, sig: u32) {
    // SAFETY: the shim writes the calling task's own rseq fields, as the rseq system call does.
    unsafe { mosix_shim_set_rseq(ptr, len, sig) };
}

/// Sets the calling task's blocked signals (never SIGKILL or SIGSTOP).
pub(crate) fn set_blocked(mask: u64) {
    // SAFETY: the shim calls sigprocmask for the calling task.
    unsafe { mosix_shim_set_blocked(mask) };
}

/// Closes the calling task's descriptor `fd` (nothing if it is not open).
pub(crate) fn close_fd(fd: u32) {
    // SAFETY: the shim's close_fd acts on the calling task's own descriptor table.
    unsafe { mosix_shim_close_fd(fd) };
}

/// Kills the calling task (SIGKILL): it dies on its way back to user mode.
pub(crate) fn kill_current() {
    // SAFETY: force_sig acts on the calling task.
    unsafe { bindings::force_sig(bindings::SIGKILL as c_int) };
}

/// Replaces the calling task's saved user registers (a `struct user_regs_struct`, 27 words; the
/// user-settable flags only, segment registers and bases untouched): it returns to them from the
/// current system call.
pub(crate) fn set_user_regs(words: &[u64; 27]) {
    // SAFETY: `words` is 27 valid words; the shim writes the calling task's own pt_regs.
    unsafe { mosix_shim_set_user_regs(words.as_ptr()) };
}

/// Kinds of entries of the probe's table (and of the task works they queue).
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// An intercepted remote process: `intercept::mosix_intercept_enter`, `mosix_icpt_park`.
    Listener = 0,
    /// A deputy served by the module: `deputy::mosix_deputy_enter`, `mosix_dep_park`.
    Deputy = 1,
}

/// Queues `intercept::mosix_icpt_park(work)` (kind `Listener`) or `deputy::mosix_dep_park(work)`
/// (kind `Deputy`) on the calling task, to run before it returns to user mode and before any
/// signal is delivered (TWA_SIGNAL). Callable with preemption off. The queued work holds a module
/// reference.
///
/// # Safety
///
/// `work` must stay valid and unmoved until that function has been called with it, and must
/// satisfy its contract.
pub(crate) unsafe fn task_work_add_resume(work: *mut bindings::callback_head, kind: Kind) -> Result {
    // SAFETY: the caller guarantees `work`; the shim queues it on the current task.
    to_result(unsafe { mosix_shim_task_work_add_resume(work, kind as c_int) })
}

/// A stream socket of the caller's, held by the module (a file reference) for the kernel lane.
///
/// # Invariants
///
/// `self.0` is a `struct socket *` of a stream socket whose file reference this value holds.
pub(crate) struct Sock(*mut c_void);

// SAFETY: a socket's file reference may be used and dropped from any task; the kernel's socket
// calls do their own locking.
unsafe impl Send for Sock {}
// SAFETY: as above: every use goes through the kernel's socket calls, which lock.
unsafe impl Sync for Sock {}

impl Sock {
    /// The caller's descriptor `fd`, which must be a stream socket (`EBADF`, `ENOTSOCK`, `EINVAL`).
    pub(crate) fn from_fd(fd: i32) -> Result<Sock> {
        let mut err: c_int = 0;
        // SAFETY: the shim looks `fd` up in the calling task's own table and takes a reference.
        let p = unsafe { mosix_shim_sock_get(fd, &mut err) };
        if p.is_null() {
            return Err(Error::from_errno(if err < 0 { err } else { -(bindings::EBADF as c_int) }));
        }
        Ok(Sock(p))
    }

    /// Sends all of `buf` without blocking: Err when the socket cannot take it all now (its end
    /// is gone, or its buffer is full: the lane then stops being used).
    pub(crate) fn send_all(&self, buf: &[u8]) -> Result {
        // SAFETY: `self.0` is a live socket (type invariant); `buf` is valid for its length.
        let r = unsafe { mosix_shim_sock_send(self.0, buf.as_ptr().cast(), buf.len()) };
        if r < 0 {
            return Err(Error::from_errno(r as c_int));
        }
        if r as usize != buf.len() {
            return Err(EIO);
        }
        Ok(())
    }

    /// Receives what is there, at most `buf.len()` bytes, without blocking: Ok(Some(n)) with
    /// n > 0 bytes, Ok(None) when nothing is there yet, Err at the end of the stream (`EPIPE`)
    /// or on an error.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        // SAFETY: `self.0` is a live socket (type invariant); `buf` is valid for writes of its
        // length.
        let r = unsafe { mosix_shim_sock_recv(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        match r {
            0 => Err(EPIPE),
            r if r == -(bindings::EAGAIN as c_long) => Ok(None),
            r if r < 0 => Err(Error::from_errno(r as c_int)),
            r => Ok(Some(r as usize)),
        }
    }

    /// Ends both directions: a task waiting on it wakes and finds its end.
    pub(crate) fn shutdown(&self) {
        // SAFETY: `self.0` is a live socket (type invariant).
        unsafe { mosix_shim_sock_shutdown(self.0) };
    }

    /// Sleeps until the socket is readable (or at its end), or `state` (if given) no longer holds
    /// `while_is`. `killable`: only a fatal signal ends the wait; else any signal. Err(ERESTARTSYS)
    /// when a signal ended it.
    pub(crate) fn wait(sock: Option<&Sock>, state: Option<&AtomicU32>, while_is: u32, killable: bool) -> Result {
        let s = sock.map_or(core::ptr::null_mut(), |s| s.0);
        let st = state.map_or(core::ptr::null_mut(), |a| a.as_ptr());
        // SAFETY: `s` is null or a live socket (type invariant of the borrowed `Sock`); `st` is
        // null or a live atomic u32 for the whole wait (borrowed), read with READ_ONCE.
        to_result(unsafe { mosix_shim_sock_wait(s, st, while_is, c_int::from(killable)) })
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: gives back the file reference this value holds (type invariant).
        unsafe { mosix_shim_sock_put(self.0) };
    }
}

/// The calling task makes system call `nr` with `args` on its return to user mode: its `syscall`
/// instruction (the one that entered the current call) is executed again with these registers.
pub(crate) fn set_call(nr: i64, args: &[u64; 6]) {
    // SAFETY: `args` is six valid words; the shim writes the calling task's own pt_regs.
    unsafe { mosix_shim_set_call(nr as c_long, args.as_ptr()) };
}

/// The calling task's first argument register (rdi) of its current system call.
pub(crate) fn arg0() -> u64 {
    // SAFETY: reads the calling task's own pt_regs.
    unsafe { mosix_shim_arg0() }
}

/// The calling task's current system call returns `v` to user mode.
pub(crate) fn set_return(v: i64) {
    // SAFETY: writes the calling task's own saved rax.
    unsafe { mosix_shim_set_return(v as c_long) };
}

/// The calling task makes system call `nr` again on its return to user mode (its `syscall`
/// instruction is executed again with the same arguments).
pub(crate) fn restart_call(nr: i64) {
    // SAFETY: rewinds the calling task's own saved ip by the 2-byte `syscall` and sets rax.
    unsafe { mosix_shim_restart_call(nr as c_long) };
}

/// Adds `t` to the interception probe's table with its listener `l` (a pointer the table keeps
/// until [`intercept_remove`]); registers the probe with the first entry.
pub(crate) fn intercept_add(t: &TaskRef, l: *const c_void, kind: Kind) -> Result {
    // SAFETY: `t` is a live task for as long as its entry exists (its listener holds the
    // reference and outlives the entry); `l` is only handed back, by the probe, to the module
    // file of its kind.
    to_result(unsafe { mosix_shim_intercept_add(t.0, l, kind as c_int) })
}

/// Removes listener `l` from the probe's table (the probe itself is unregistered a few seconds
/// after the last entry goes); when this returns no probe uses `l` any more. Whether it was there.
pub(crate) fn intercept_remove(l: *const c_void) -> bool {
    // SAFETY: the shim only compares the pointer and waits for running probes.
    unsafe { mosix_shim_intercept_remove(l) }
}

/// Whether this kernel lets the module intercept system calls (it has tracepoints).
pub(crate) fn can_intercept() -> bool {
    // SAFETY: no preconditions: a build-time constant of the kernel.
    unsafe { mosix_shim_can_intercept() != 0 }
}

/// The calling task's current (skipped) system call `nr` becomes an interrupted one: it returns
/// -ERESTARTSYS with its number restored, so the kernel's signal code restarts it (or fails it
/// with EINTR for a handler without SA_RESTART), as for any call a signal interrupts.
pub(crate) fn interrupted_call(nr: i64) {
    // SAFETY: writes the calling task's own saved rax and orig_rax.
    unsafe { mosix_shim_interrupted_call(nr as c_long) };
}

/// As [`park`], but any signal (or ptrace interrupt) ends the wait too: Err then.
pub(crate) fn park_interruptible(state: &AtomicU32, while_is: u32) -> Result {
    // SAFETY: as in `park`.
    to_result(unsafe { mosix_shim_park_interruptible(state.as_ptr(), while_is) })
}
