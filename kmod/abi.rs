// SPDX-License-Identifier: GPL-2.0
//! The userspace ABI of `/dev/mosix`: ioctl numbers and the structures they carry.
//!
//! Every structure is `#[repr(C)]`, made of fixed-size little-endian integers, with no implicit
//! padding, so its C twin (`kmod/include/mosix.h`) has the same layout. Numbers and layouts of a
//! given [`ABI_VERSION`] never change; a change of either is a new version.

use core::mem::size_of;
use kernel::ioctl::{_IOR, _IOWR};
use kernel::types::{AsBytes, FromBytes};

/// The version of this ABI. Userspace passes the version it was built for in [`Info::abi`].
pub(crate) const ABI_VERSION: u32 = 1;

/// The ioctl type byte of `/dev/mosix`.
pub(crate) const MAGIC: u32 = 0xB7;

/// Feature bits of [`Version::features`] and [`Info::features`]: which native-engine operations
/// this build of the module provides. None yet (the portable engine does all the work).
pub(crate) mod feature {
    /// Freeze and thaw a MOSIX process without ptrace (not implemented yet).
    #[allow(dead_code)]
    pub(crate) const FREEZE: u32 = 1 << 0;
    /// Capture a process's user context as the migration stream (not implemented yet).
    #[allow(dead_code)]
    pub(crate) const CAPTURE: u32 = 1 << 1;
    /// Restore a migration stream into the calling task (not implemented yet).
    #[allow(dead_code)]
    pub(crate) const RESTORE: u32 = 1 << 2;
    /// Intercept a remote component's system calls without ptrace (not implemented yet).
    #[allow(dead_code)]
    pub(crate) const INTERCEPT: u32 = 1 << 3;
    /// What this build provides.
    pub(crate) const PROVIDED: u32 = 0;
}

/// Answer of [`MOSIX_IOC_VERSION`]. Any caller may ask, whatever ABI it was built for.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Version {
    /// [`ABI_VERSION`] of the module.
    pub(crate) abi: u32,
    /// [`feature`] bits provided.
    pub(crate) features: u32,
}

/// Argument of [`MOSIX_IOC_INFO`], read and written back.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Info {
    /// In: the ABI version the caller was built for; must equal [`ABI_VERSION`] (else `EPROTO`).
    /// Out: [`ABI_VERSION`].
    pub(crate) abi: u32,
    /// In: `sizeof(struct mosix_info)` as the caller knows it; must equal this struct's size
    /// (else `EINVAL`). Out: unchanged.
    pub(crate) size: u32,
    /// Out: [`feature`] bits provided.
    pub(crate) features: u32,
    /// Out: how many descriptors of `/dev/mosix` are open now (this one included).
    pub(crate) open_files: u32,
    /// In: must be zero (else `EINVAL`). Out: zero.
    pub(crate) reserved: u64,
}

// Layouts are part of the ABI: no padding anywhere.
const _: () = assert!(size_of::<Version>() == 8);
const _: () = assert!(size_of::<Info>() == 24);

// SAFETY: `Version` is two `u32`s: every bit pattern is valid and there is no padding.
unsafe impl FromBytes for Version {}
// SAFETY: as above, no padding, so every byte is initialised.
unsafe impl AsBytes for Version {}
// SAFETY: `Info` is four `u32`s and a `u64` with no padding (asserted): every bit pattern is valid.
unsafe impl FromBytes for Info {}
// SAFETY: as above, no padding, so every byte is initialised.
unsafe impl AsBytes for Info {}

/// `_IOR(0xB7, 0, struct mosix_version)`: the module's ABI version and features.
pub(crate) const MOSIX_IOC_VERSION: u32 = _IOR::<Version>(MAGIC, 0);
/// `_IOWR(0xB7, 1, struct mosix_info)`: checks the caller's ABI version, reports the module state.
pub(crate) const MOSIX_IOC_INFO: u32 = _IOWR::<Info>(MAGIC, 1);
