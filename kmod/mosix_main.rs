// SPDX-License-Identifier: GPL-2.0
//! mosix.ko: the native-mode kernel module of MOS, a MOSIX-style cluster for Linux.
//!
//! Built out of tree against MOS's own Rust-enabled 6.12 kernel (`qemu-harness/run build`); this
//! first version provides the device and its versioned ABI, not yet the native engine (freeze,
//! capture, restore, system-call interception: see docs/NATIVE.md, "Not done").
//!
//! # Userspace contract (ABI version 1)
//!
//! * Loading the module creates `/dev/mosix`, a misc character device (dynamic minor), mode 0600.
//!   Opening it needs `CAP_SYS_ADMIN` (`EPERM` otherwise): only the MOS daemons drive it. While a
//!   descriptor is open the module cannot be unloaded (`rmmod` fails with `EBUSY`).
//! * All requests are ioctls of type `0xB7`; their argument structures are `#[repr(C)]`, little
//!   endian, without padding (C twin: `kmod/include/mosix.h`); numbers and layouts of a version
//!   never change:
//!   - `MOSIX_IOC_VERSION = _IOR(0xB7, 0, struct mosix_version { u32 abi; u32 features; })`:
//!     fills in the module's ABI version (1) and the feature bits it provides (none yet: bit 0
//!     freeze/thaw, bit 1 capture, bit 2 restore, bit 3 system-call interception). Returns 0.
//!     Every client asks this first and uses only the version it knows.
//!   - `MOSIX_IOC_INFO = _IOWR(0xB7, 1, struct mosix_info { u32 abi; u32 size; u32 features;
//!     u32 open_files; u64 reserved; })`: the caller sets `abi` to the version it was built for
//!     (`EPROTO` if it differs from the module's), `size` to `sizeof(struct mosix_info)` and
//!     `reserved` to 0 (`EINVAL` otherwise); the module fills in `abi`, `features` and
//!     `open_files` (descriptors of `/dev/mosix` open now). Returns 0.
//!   - A pointer the module cannot read or write gives `EFAULT`; any other request `ENOTTY`.
//! * Errors never leave a trace in the kernel log beyond one line per load/unload.

use core::mem::size_of;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

mod abi;
mod sys;

use abi::{Info, Version, ABI_VERSION, MOSIX_IOC_INFO, MOSIX_IOC_VERSION};

module! {
    type: Mosix,
    name: "mosix",
    author: "MOS project",
    description: "MOS native mode: /dev/mosix (ABI version 1)",
    license: "GPL",
}

/// Descriptors of `/dev/mosix` open now.
static OPEN_FILES: AtomicU32 = AtomicU32::new(0);

/// The loaded module: owns the device registration.
struct Mosix {
    _dev: sys::Registration<MosixDevice>,
}

impl kernel::Module for Mosix {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let dev = sys::Registration::register(module)?;
        pr_info!("/dev/mosix ready (ABI version {})\n", ABI_VERSION);
        Ok(Mosix { _dev: dev })
    }
}

impl Drop for Mosix {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}

/// The operations of `/dev/mosix`.
struct MosixDevice;

impl sys::Device for MosixDevice {
    fn open() -> Result {
        if !sys::capable_sys_admin() {
            return Err(EPERM);
        }
        OPEN_FILES.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn release() {
        OPEN_FILES.fetch_sub(1, Ordering::Relaxed);
    }

    fn ioctl(cmd: u32, arg: usize) -> Result<i32> {
        match cmd {
            MOSIX_IOC_VERSION => version(arg),
            MOSIX_IOC_INFO => info(arg),
            _ => Err(ENOTTY),
        }
    }
}

/// `MOSIX_IOC_VERSION`: writes a [`Version`] to `arg`.
fn version(arg: usize) -> Result<i32> {
    let v = Version { abi: ABI_VERSION, features: abi::feature::PROVIDED };
    UserSlice::new(arg, size_of::<Version>()).writer().write(&v)?;
    Ok(0)
}

/// `MOSIX_IOC_INFO`: checks the caller's [`Info`] at `arg`, writes the module's back.
fn info(arg: usize) -> Result<i32> {
    let (mut reader, mut writer) = UserSlice::new(arg, size_of::<Info>()).reader_writer();
    let req: Info = reader.read()?;
    if req.abi != ABI_VERSION {
        return Err(sys::eproto());
    }
    if req.size as usize != size_of::<Info>() || req.reserved != 0 {
        return Err(EINVAL);
    }
    let answer = Info {
        abi: ABI_VERSION,
        size: req.size,
        features: abi::feature::PROVIDED,
        open_files: OPEN_FILES.load(Ordering::Relaxed),
        reserved: 0,
    };
    writer.write(&answer)?;
    Ok(0)
}
