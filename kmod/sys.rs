// SPDX-License-Identifier: GPL-2.0
//! Every call from mosix.ko into C, each behind a thin safe wrapper. No other file of the module
//! has `unsafe` code. 6.12 has no `kernel::miscdevice` and no `kernel::fs::File`, so the character
//! device is built here from `kernel::bindings::file_operations` and the C shim `mosix_shim.c`.

use core::marker::PhantomData;
use kernel::bindings;
use kernel::error::to_result;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong};
use kernel::prelude::*;

// `file_operations` reaches `struct mod_arch_specific`, empty in this configuration: rustc flags
// pointers to it as not FFI-safe although only the pointer crosses (the bindings crate allows it too).
#[allow(improper_ctypes)]
extern "C" {
    // mosix_shim.c: owns the `struct miscdevice` (not in kernel::bindings on 6.12).
    fn mosix_shim_misc_register(fops: *const bindings::file_operations) -> c_int;
    fn mosix_shim_misc_deregister();
}

/// What `/dev/mosix` does; every method runs in the context of the calling task.
pub(crate) trait Device {
    /// A task opens the device; an error refuses the open.
    fn open() -> Result;
    /// The last reference to a descriptor opened successfully is gone.
    fn release();
    /// `ioctl(fd, cmd, arg)`; `Ok(v)` becomes the (non-negative) return value.
    fn ioctl(cmd: u32, arg: usize) -> Result<i32>;
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
    }
}

/// `file_operations::open`: misc_open() has already installed our `fops` on the file.
unsafe extern "C" fn open_trampoline<T: Device>(_inode: *mut bindings::inode, _file: *mut bindings::file) -> c_int {
    match T::open() {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `file_operations::release`: called once per successfully opened file.
unsafe extern "C" fn release_trampoline<T: Device>(_inode: *mut bindings::inode, _file: *mut bindings::file) -> c_int {
    T::release();
    0
}

/// `file_operations::unlocked_ioctl`.
unsafe extern "C" fn ioctl_trampoline<T: Device>(_file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    match T::ioctl(cmd, arg as usize) {
        Ok(v) => v as c_long,
        Err(e) => e.to_errno() as c_long,
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
