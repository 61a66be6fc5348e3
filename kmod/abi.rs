// SPDX-License-Identifier: GPL-2.0
//! The userspace ABI of `/dev/mosix`: ioctl numbers and the structures they carry.
//!
//! Every structure is `#[repr(C)]`, made of fixed-size little-endian integers, with no implicit
//! padding, so its C twin (`kmod/include/mosix.h`) has the same layout. Numbers and layouts of a
//! given [`ABI_VERSION`] never change; a change of either is a new version.

use core::mem::size_of;
use kernel::ioctl::{_IOR, _IOW, _IOWR};
use kernel::types::{AsBytes, FromBytes};

/// The version of this ABI. Userspace passes the version it was built for in [`Info::abi`].
pub(crate) const ABI_VERSION: u32 = 2;

/// The ioctl type byte of `/dev/mosix`.
pub(crate) const MAGIC: u32 = 0xB7;

/// Feature bits of [`Version::features`] and [`Info::features`]: which native-engine operations
/// this build of the module provides.
pub(crate) mod feature {
    /// Freeze and thaw a MOSIX process without ptrace ([`MOSIX_IOC_FREEZE`], [`MOSIX_IOC_THAW`]).
    pub(crate) const FREEZE: u32 = 1 << 0;
    /// Capture a frozen process's user context ([`MOSIX_IOC_CONTEXT`]); its pages are read by
    /// the caller (process_vm_readv) while it stays frozen.
    pub(crate) const CAPTURE: u32 = 1 << 1;
    /// Restore a staged migration stream into the calling task ([`MOSIX_IOC_RESTORE`]).
    pub(crate) const RESTORE: u32 = 1 << 2;
    /// Intercept a remote component's system calls without seccomp or ptrace
    /// ([`MOSIX_IOC_INTERCEPT`], then the seccomp user-notification ioctls on that descriptor).
    pub(crate) const INTERCEPT: u32 = 1 << 3;
    /// The queued signals of a frozen process with their siginfo ([`MOSIX_IOC_SIGINFO`]).
    pub(crate) const SIGINFO: u32 = 1 << 4;
    /// The kernel lane: register-only calls of an intercepted process sent on a socket by the
    /// module itself ([`MOSIX_IOC_LANE`]), and a deputy at home served by the module, taking
    /// such calls straight from that socket ([`MOSIX_IOC_DEPUTY`], [`MOSIX_IOC_DEPUTY_CALL`]).
    pub(crate) const LANE: u32 = 1 << 5;
    /// What this build provides on this kernel (interception and the lane need its tracepoints).
    pub(crate) fn provided() -> u32 {
        FREEZE | CAPTURE | RESTORE | SIGINFO | if crate::sys::can_intercept() { INTERCEPT | LANE } else { 0 }
    }
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

/// Argument of [`MOSIX_IOC_FREEZE`] and [`MOSIX_IOC_THAW`].
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Target {
    /// The process (in the caller's pid namespace).
    pub(crate) pid: i32,
    /// Freeze: how long to wait for the process to stop, in ms (0: 10 s). Thaw: must be 0.
    pub(crate) timeout_ms: u32,
    /// Must be zero (else `EINVAL`).
    pub(crate) reserved: u64,
}

/// One signal action of [`Context::sigactions`], as `rt_sigaction` reports it.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct SigAction {
    pub(crate) handler: u64,
    pub(crate) flags: u64,
    pub(crate) restorer: u64,
    pub(crate) mask: u64,
}

/// Argument of [`MOSIX_IOC_CONTEXT`]: the user context of the process frozen through this
/// descriptor, everything the portable engine learns with ptrace and injected system calls.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Context {
    /// In: the frozen process (it must be the one frozen through this descriptor).
    pub(crate) pid: i32,
    /// In: size of the buffer at `xstate`; out: bytes of NT_X86_XSTATE written there.
    pub(crate) xstate_len: u32,
    /// In: user address of a buffer for the XSAVE image (as PTRACE_GETREGSET NT_X86_XSTATE).
    pub(crate) xstate: u64,
    /// Out: `struct user_regs_struct` (as PTRACE_GETREGS), 27 words.
    pub(crate) regs: [u64; 27],
    /// Out: blocked signals.
    pub(crate) sigmask: u64,
    /// Out: the program break.
    pub(crate) brk: u64,
    /// Out: `set_tid_address` (clear_child_tid).
    pub(crate) tid_address: u64,
    /// Out: robust futex list head (0: none) and its length (24 when set).
    pub(crate) robust_list: u64,
    pub(crate) robust_len: u64,
    /// Out: registered rseq area, its length and signature (0, 0, 0: none).
    pub(crate) rseq: u64,
    pub(crate) rseq_len: u32,
    pub(crate) rseq_sig: u32,
    /// Out: alternate signal stack (as `sigaltstack` reports it; flags SS_DISABLE when none).
    pub(crate) altstack_sp: u64,
    pub(crate) altstack_size: u64,
    pub(crate) altstack_flags: i32,
    /// Out: zero.
    pub(crate) reserved0: u32,
    /// Out: the action of signal i + 1 (SIGKILL's and SIGSTOP's are zero).
    pub(crate) sigactions: [SigAction; 64],
    /// In: must be zero (else `EINVAL`).
    pub(crate) reserved: u64,
}

/// Argument of [`MOSIX_IOC_RESTORE`]: a migration image staged by the calling task, to become its
/// address space and registers (restore.rs says what the caller prepares first).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Restore {
    /// `sizeof(struct mosix_restore)` (else `EINVAL`).
    pub(crate) size: u32,
    /// Must be zero.
    pub(crate) flags: u32,
    /// A descriptor of the caller on the staging file holding the pages (read with kernel_read).
    pub(crate) pages_fd: i32,
    /// Number of `struct mosix_area` at `areas` (sorted by address, not overlapping).
    pub(crate) n_areas: u32,
    pub(crate) areas: u64,
    /// `struct mosix_run` records at `runs`: `len` bytes at file offset `off` go to `addr`.
    pub(crate) runs: u64,
    pub(crate) n_runs: u32,
    /// Number of `[start, end)` pairs at `keep`: ranges left mapped (the kernel areas, already
    /// where the image has them).
    pub(crate) n_keep: u32,
    pub(crate) keep: u64,
    /// `struct user_regs_struct` of the image (cs/ss must be the 64-bit user selectors; the FS/GS
    /// bases and segment selectors are the caller's business and ignored here).
    pub(crate) regs: [u64; 27],
    /// Blocked signals after the restore (SIGKILL and SIGSTOP are never blocked).
    pub(crate) sigmask: u64,
    /// The image's rseq registration (0: none).
    pub(crate) rseq: u64,
    pub(crate) rseq_len: u32,
    pub(crate) rseq_sig: u32,
    /// `n_close` descriptors (s32 each) at `close`, closed once the image is in place.
    pub(crate) close: u64,
    pub(crate) n_close: u32,
    /// Must be zero.
    pub(crate) reserved0: u32,
    /// Must be zero.
    pub(crate) reserved: u64,
}

/// Bytes of one `struct mosix_area { u64 start, end, offset; u32 prot, kind; s32 fd; u32 reserved; }`
/// (kind 0 anonymous, 1 stack, 2 file at `fd`).
pub(crate) const RESTORE_AREA_SIZE: usize = 40;
/// Bytes of one `struct mosix_run { u64 addr, len, off; }`.
pub(crate) const RESTORE_RUN_SIZE: usize = 24;

/// Argument of [`MOSIX_IOC_INTERCEPT`].
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Intercept {
    /// The process (the caller's single-threaded child).
    pub(crate) pid: i32,
    /// Must be zero.
    pub(crate) reserved0: u32,
    /// Bitmap of the x86-64 system calls (0..512) that run untouched.
    pub(crate) local: [u64; 8],
    /// Calls made from this address (the instruction after `syscall`: the engine's injection
    /// gadget) run untouched.
    pub(crate) pass_ip: u64,
    /// Must be zero.
    pub(crate) reserved: u64,
}

/// Argument of [`MOSIX_IOC_LANE`], on a listener's descriptor.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Lane {
    /// The caller's descriptor of a connected stream socket to the process's deputy (the module
    /// keeps its own reference: the caller may close it).
    pub(crate) fd: i32,
    /// Must be zero.
    pub(crate) reserved0: u32,
    /// Bitmap of the calls (0..512) sent on the lane: register-only calls whose result is all the
    /// caller would do with them. Must not meet the listener's local set.
    pub(crate) calls: [u64; 8],
    /// Must be zero.
    pub(crate) reserved: u64,
}

/// Argument of [`MOSIX_IOC_DEPUTY`].
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DeputyReg {
    /// The deputy (the caller's single-threaded child), running the lane loop: `pause()`
    /// (the marker call) at `marker_ip`, whose rdi holds the last call's result.
    pub(crate) pid: i32,
    /// A connected stream socket to the remote process's module (the lane), or -1 for none.
    pub(crate) fd: i32,
    /// The address after the loop's `syscall` instruction.
    pub(crate) marker_ip: u64,
    /// Bitmap of the calls (0..512) the lane may ask for; any other is answered -ENOSYS.
    pub(crate) calls: [u64; 8],
    /// Must be zero.
    pub(crate) reserved: u64,
}

/// Argument of [`MOSIX_IOC_DEPUTY_CALL`], read and written back.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DeputyCall {
    /// In: the call to make in the deputy, or -1 to wait on for the one posted before.
    pub(crate) nr: i64,
    /// In: its arguments.
    pub(crate) args: [u64; 6],
    /// Out: its result, when `done`.
    pub(crate) ret: i64,
    /// In: how long to wait for the result, in ms (at most 60,000).
    pub(crate) timeout_ms: u32,
    /// Out: 1 when the call was made (`ret` holds its result), 0 when it still runs (ask again
    /// with `nr` = -1, after looking at the deputy's stops).
    pub(crate) done: u32,
    /// Must be zero.
    pub(crate) reserved: u64,
}

/// Bytes of a lane call (remote module -> deputy module): `seq` u64, `nr` u32, zero u32,
/// `args` 6 x u64, little-endian (mos_proto::lane).
pub(crate) const LANE_CALL_LEN: usize = 64;
/// Bytes of a lane reply (deputy module -> remote module): `seq` u64, `ret` i64.
pub(crate) const LANE_REPLY_LEN: usize = 16;

/// Argument of [`MOSIX_IOC_SIGINFO`].
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SigInfo {
    /// In: the process frozen through this descriptor.
    pub(crate) pid: i32,
    /// In: room at `buf`, in siginfo slots of [`SIGINFO_SLOT`] bytes (at most [`SIGINFO_MAX`]).
    /// Out: slots written.
    pub(crate) count: u32,
    /// In: user address of the slots (each a `siginfo_t`, as PTRACE_PEEKSIGINFO writes it).
    pub(crate) buf: u64,
    /// In: queued signals to skip (a caller reads a long queue in steps).
    pub(crate) skip: u32,
    /// Out: signals queued in all.
    pub(crate) total: u32,
    /// Must be zero (else `EINVAL`).
    pub(crate) reserved: u64,
}

/// Bytes of one siginfo slot of [`SigInfo::buf`] (`sizeof(siginfo_t)`).
pub(crate) const SIGINFO_SLOT: usize = 128;
/// Largest [`SigInfo::count`] taken in one call.
pub(crate) const SIGINFO_MAX: u32 = 64;

/// `struct seccomp_notif` (include/uapi/linux/seccomp.h), as `SECCOMP_IOCTL_NOTIF_RECV` fills it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SeccompNotif {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    pub(crate) flags: u32,
    pub(crate) nr: i32,
    pub(crate) arch: u32,
    pub(crate) ip: u64,
    pub(crate) args: [u64; 6],
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SeccompResp {
    pub(crate) id: u64,
    pub(crate) val: i64,
    pub(crate) error: i32,
    pub(crate) flags: u32,
}

/// `AUDIT_ARCH_X86_64`.
pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

// Layouts are part of the ABI: no padding anywhere.
const _: () = assert!(size_of::<Intercept>() == 88);
const _: () = assert!(size_of::<SigInfo>() == 32);
const _: () = assert!(size_of::<Lane>() == 80);
const _: () = assert!(size_of::<DeputyReg>() == 88);
const _: () = assert!(size_of::<DeputyCall>() == 80);
const _: () = assert!(size_of::<SeccompNotif>() == 80);
const _: () = assert!(size_of::<SeccompResp>() == 24);
const _: () = assert!(size_of::<Restore>() == 312);
const _: () = assert!(size_of::<Target>() == 16);
const _: () = assert!(size_of::<SigAction>() == 32);
const _: () = assert!(size_of::<Context>() == 16 + 27 * 8 + 5 * 8 + 16 + 24 + 64 * 32 + 8);
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

// SAFETY: integers only, no padding (asserted): every bit pattern is valid.
unsafe impl FromBytes for Target {}
// SAFETY: as above, no padding, so every byte is initialised.
unsafe impl AsBytes for Target {}
// SAFETY: integers and arrays of integer structs, no padding (asserted).
unsafe impl FromBytes for Context {}
// SAFETY: integers and integer arrays, no padding (asserted): every bit pattern is valid.
unsafe impl FromBytes for Restore {}
// SAFETY: as above.
unsafe impl FromBytes for Intercept {}
// SAFETY: integers only, no padding (asserted): every bit pattern is valid.
unsafe impl FromBytes for Lane {}
// SAFETY: as above.
unsafe impl FromBytes for DeputyReg {}
// SAFETY: as above.
unsafe impl FromBytes for DeputyCall {}
// SAFETY: as above, so every byte is initialised.
unsafe impl AsBytes for DeputyCall {}
// SAFETY: integers only, no padding (asserted): every bit pattern is valid.
unsafe impl FromBytes for SigInfo {}
// SAFETY: as above, so every byte is initialised.
unsafe impl AsBytes for SigInfo {}
// SAFETY: as above.
unsafe impl FromBytes for SeccompResp {}
// SAFETY: integers only, no padding (asserted), so every byte is initialised.
unsafe impl AsBytes for SeccompNotif {}
// SAFETY: as above, no padding, so every byte is initialised.
unsafe impl AsBytes for Context {}

/// `_IOR(0xB7, 0, struct mosix_version)`: the module's ABI version and features.
pub(crate) const MOSIX_IOC_VERSION: u32 = _IOR::<Version>(MAGIC, 0);
/// `_IOWR(0xB7, 1, struct mosix_info)`: checks the caller's ABI version, reports the module state.
pub(crate) const MOSIX_IOC_INFO: u32 = _IOWR::<Info>(MAGIC, 1);
/// `_IOW(0xB7, 2, struct mosix_target)`: freezes a process (see the module doc).
pub(crate) const MOSIX_IOC_FREEZE: u32 = _IOW::<Target>(MAGIC, 2);
/// `_IOW(0xB7, 3, struct mosix_target)`: lets the process frozen through this descriptor go on.
pub(crate) const MOSIX_IOC_THAW: u32 = _IOW::<Target>(MAGIC, 3);
/// `_IOWR(0xB7, 4, struct mosix_context)`: the frozen process's user context.
pub(crate) const MOSIX_IOC_CONTEXT: u32 = _IOWR::<Context>(MAGIC, 4);
/// `_IOW(0xB7, 5, struct mosix_restore)`: the staged image becomes the caller (see restore.rs).
pub(crate) const MOSIX_IOC_RESTORE: u32 = _IOW::<Restore>(MAGIC, 5);
/// `_IOW(0xB7, 6, struct mosix_intercept)`: this descriptor becomes the listener of a process's
/// system calls (see intercept.rs).
pub(crate) const MOSIX_IOC_INTERCEPT: u32 = _IOW::<Intercept>(MAGIC, 6);
/// `_IOWR(0xB7, 7, struct mosix_siginfo)`: the queued signals of the process frozen through this
/// descriptor, with their siginfo.
pub(crate) const MOSIX_IOC_SIGINFO: u32 = _IOWR::<SigInfo>(MAGIC, 7);
/// `_IOW(0xB7, 8, struct mosix_lane)`: on a listener, its lane calls go on a socket (intercept.rs).
pub(crate) const MOSIX_IOC_LANE: u32 = _IOW::<Lane>(MAGIC, 8);
/// `_IOW(0xB7, 9, struct mosix_deputy)`: this descriptor serves a deputy (deputy.rs).
pub(crate) const MOSIX_IOC_DEPUTY: u32 = _IOW::<DeputyReg>(MAGIC, 9);
/// `_IOWR(0xB7, 10, struct mosix_deputy_call)`: a call made in the deputy served here.
pub(crate) const MOSIX_IOC_DEPUTY_CALL: u32 = _IOWR::<DeputyCall>(MAGIC, 10);
/// The seccomp user-notification ioctls an intercepting descriptor answers (same numbers).
pub(crate) const SECCOMP_IOCTL_NOTIF_RECV: u32 = 0xc050_2100;
pub(crate) const SECCOMP_IOCTL_NOTIF_SEND: u32 = 0xc018_2101;
pub(crate) const SECCOMP_IOCTL_NOTIF_ID_VALID: u32 = 0x4008_2102;
/// The number Linux 5.0-5.6 headers gave ID_VALID (still accepted by the kernel).
pub(crate) const SECCOMP_IOCTL_NOTIF_ID_VALID_OLD: u32 = 0x8008_2102;
pub(crate) const SECCOMP_IOCTL_NOTIF_SET_FLAGS: u32 = 0x4008_2104;
