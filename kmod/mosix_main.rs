// SPDX-License-Identifier: GPL-2.0
//! mosix.ko: the native-mode kernel module of MOS, a MOSIX-style cluster for Linux.
//!
//! Built out of tree against MOS's own Rust-enabled 6.12 kernel (`qemu-harness/run build`). It
//! provides the device, its versioned ABI and the native engine: freeze and capture
//! (`freeze.rs`), restore (`restore.rs`) and system-call interception (`intercept.rs`).
//!
//! # Userspace contract (ABI version 2; restore added as feature bit 2)
//!
//! * Loading the module creates `/dev/mosix`, a misc character device (dynamic minor), mode 0600.
//!   Opening it needs `CAP_SYS_ADMIN` (`EPERM` otherwise): only the MOS daemons drive it. While a
//!   descriptor is open the module cannot be unloaded (`rmmod` fails with `EBUSY`).
//! * All requests are ioctls of type `0xB7`; their argument structures are `#[repr(C)]`, little
//!   endian, without padding (C twin: `kmod/include/mosix.h`); numbers and layouts of a version
//!   never change:
//!   - `MOSIX_IOC_VERSION = _IOR(0xB7, 0, struct mosix_version { u32 abi; u32 features; })`:
//!     fills in the module's ABI version (2) and the feature bits it provides (bit 0 freeze/thaw,
//!     bit 1 context capture, bit 2 restore, bit 3 system-call interception, which needs a
//!     kernel with tracepoints, bit 4 the queued signals of a frozen process). Returns 0.
//!     Every client asks this first and uses only the version it knows.
//!   - `MOSIX_IOC_INFO = _IOWR(0xB7, 1, struct mosix_info { u32 abi; u32 size; u32 features;
//!     u32 open_files; u64 reserved; })`: the caller sets `abi` to the version it was built for
//!     (`EPROTO` if it differs from the module's), `size` to `sizeof(struct mosix_info)` and
//!     `reserved` to 0 (`EINVAL` otherwise); the module fills in `abi`, `features` and
//!     `open_files` (descriptors of `/dev/mosix` open now). Returns 0.
//!   - `MOSIX_IOC_FREEZE = _IOW(0xB7, 2, struct mosix_target { s32 pid; u32 timeout_ms; u64
//!     reserved; })`: freezes process `pid` without ptrace: it parks in the kernel on its way back
//!     to user mode (an interrupted system call is restarted when it is thawed, as after a ptrace
//!     interrupt), runs no user code, and only SIGKILL ends the park. Returns 0 once it is parked.
//!     The process must be a child of the caller (the program its mosrun runs: only MOSIX
//!     processes are touched; `EPERM` otherwise), single-threaded and not the caller (`EINVAL`),
//!     and alive (`ESRCH`). One process per descriptor (`EBUSY` while one is frozen through it).
//!     A process with an intercepted call (`MOSIX_IOC_INTERCEPT`) parks only once that call is
//!     answered or withdrawn (an interrupted call, restarted when it goes on). If it has not parked within `timeout_ms` (0: 10 s), for example because it is stopped by
//!     SIGSTOP, the freeze is abandoned and `ETIMEDOUT` returned; a signal to the caller abandons
//!     it too (`EINTR`/restart). `reserved` must be 0 (`EINVAL`).
//!   - `MOSIX_IOC_THAW = _IOW(0xB7, 3, struct mosix_target)`: lets the process frozen through this
//!     descriptor go on (`timeout_ms` and `reserved` 0, else `EINVAL`); `ESRCH` if `pid` is not
//!     frozen through it, or was killed while frozen. **Closing the descriptor thaws** a process
//!     still frozen through it, so a freezer that dies never leaves a process frozen.
//!   - `MOSIX_IOC_CONTEXT = _IOWR(0xB7, 4, struct mosix_context)`: the user context of the
//!     process frozen through this descriptor (`ESRCH` for any other): its registers as
//!     PTRACE_GETREGS, its XSAVE image as PTRACE_GETREGSET(NT_X86_XSTATE) into the caller's
//!     buffer (`xstate`, `xstate_len` in and out), blocked signals, brk, clear-tid address, robust
//!     list, rseq registration, alternate signal stack and all 64 signal actions: what the
//!     portable engine learns with ptrace and injected system calls. Its memory is read by the
//!     caller (process_vm_readv, /proc/PID/maps) while it stays frozen. `reserved` must be 0.
//!   - `MOSIX_IOC_RESTORE = _IOW(0xB7, 5, struct mosix_restore)`: the image staged by the
//!     **calling task** becomes its address space and registers (restore.rs has the steps): its
//!     areas (`struct mosix_area`: anonymous, stack, or a file by descriptor) are mapped with their
//!     protections after everything of the caller outside the `keep` ranges (its kernel areas,
//!     already moved where the image has them) is unmapped; the pages are copied from `pages_fd`
//!     (`struct mosix_run`: `len` bytes at offset `off` to `addr`), through the protections where
//!     an area is not writable; the rseq area and signal mask are set; the `close` descriptors
//!     closed; the registers (`regs`, as PTRACE_GETREGS; cs/ss must be the 64-bit user selectors;
//!     the FS/GS bases and the FPU state are the caller's to set first) replace the caller's, and
//!     the call returns the image's `rax` into the image. The restored process then parks before
//!     it runs a user instruction, frozen through this descriptor: the descriptor's other holder
//!     (the driver that forked the caller) calls `MOSIX_IOC_FREEZE` with its pid, which waits
//!     until it has parked, then THAWs it (or closes the descriptor). Bad requests (size, flags,
//!     reserved fields, segments, unaligned or overlapping areas, areas over kept ranges, pages
//!     outside the areas: `EINVAL`; more than 65536 areas, 2^20 runs, 8 kept ranges or 4096
//!     descriptors: `E2BIG`; bad pointers: `EFAULT`; a caller with threads: `EINVAL`; a
//!     descriptor with a frozen process: `EBUSY`) are refused before anything changes. A failure
//!     after the caller's memory is gone (a file that cannot be mapped, a short staging file)
//!     kills the caller.
//!   - `MOSIX_IOC_INTERCEPT = _IOW(0xB7, 6, struct mosix_intercept { s32 pid; u32 reserved0;
//!     u64 local[8]; u64 pass_ip; u64 reserved; })`: this descriptor becomes the listener of
//!     process `pid`'s system calls (the caller's single-threaded child, not the caller: `EPERM`,
//!     `EINVAL`; one per descriptor, `EBUSY`; `ENOSYS` on a kernel without tracepoints). A probe
//!     on the `sys_enter` tracepoint, registered while some process is intercepted (and 5 s
//!     after, so that a return home does not wait for its unregistration), lets a call
//!     in the `local` bitmap, or made from `pass_ip` (the address after the `syscall`
//!     instruction), run untouched; any other is skipped and the process parks, killable only,
//!     until the listener answers. The descriptor then speaks the **seccomp user-notification
//!     ioctls**, with their numbers and structures: `SECCOMP_IOCTL_NOTIF_RECV` (waits for a
//!     call; arch is always AUDIT_ARCH_X86_64), `_SEND` (the result, or `error`, or
//!     `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: the call is made again and let through once;
//!     `ENOENT` for a call not waiting), `_ID_VALID`, `_SET_FLAGS` (accepted, no effect), and
//!     poll() is readable while a call waits to be received. Closing it answers a waiting call
//!     with `ENOSYS` (as seccomp does) and ends the interception. Without `MOSIX_IOC_INTERCEPT`
//!     these requests give `EINVAL`.
//!   - `MOSIX_IOC_SIGINFO = _IOWR(0xB7, 7, struct mosix_siginfo { s32 pid; u32 count; u64 buf;
//!     u32 skip; u32 total; u64 reserved; })`: the signals queued on the process frozen through
//!     this descriptor (`ESRCH` for any other), its own queue then its process's (the order of
//!     PTRACE_PEEKSIGINFO without and with PTRACE_PEEKSIGINFO_SHARED): after the first `skip`, up
//!     to `count` (at most 64, else `EINVAL`) `siginfo_t` of 128 bytes each at `buf`; out: `count`
//!     written and `total` queued. What a move needs to carry a process's pending signals along.
//!   - **The kernel lane** (feature bit 5, `LANE`; intercept.rs and deputy.rs; records in
//!     `mos_proto::lane`):
//!     - `MOSIX_IOC_LANE = _IOW(0xB7, 8, struct mosix_lane { s32 fd; u32 reserved0; u64
//!       calls[8]; u64 reserved; })`, on a listener: its process's calls in `calls` (none of
//!       them local: `EINVAL`) are sent by the process itself, from its park, on the stream
//!       socket `fd` (`ENOTSOCK`, `EINVAL` for a socket that is not a stream; once, `EBUSY`),
//!       and it waits there (killable) for the result; the listener never sees them. A lane
//!       that cannot send, reaches its end or breaks the format is closed (one line in the
//!       kernel log) and its calls go to the listener again.
//!     - `MOSIX_IOC_DEPUTY = _IOW(0xB7, 9, struct mosix_deputy { s32 pid; s32 fd; u64
//!       marker_ip; u64 calls[8]; u64 reserved; })`: this descriptor serves the deputy `pid`
//!       (the caller's single-threaded child, as for a freeze), which runs the lane loop (a
//!       `pause` marker at `marker_ip`; deputy.rs) and takes calls from the lane `fd` (or none,
//!       -1): a call not in `calls` is answered -ENOSYS.
//!     - `MOSIX_IOC_DEPUTY_CALL = _IOWR(0xB7, 10, struct mosix_deputy_call { s64 nr; u64
//!       args[6]; s64 ret; u32 timeout_ms; u32 done; u64 reserved; })`: posts call `nr` in the
//!       served deputy (`EBUSY` while another is posted; the marker number, or a number outside
//!       0..512: `EINVAL`), or with `nr` = -1 waits on for it; `done` = 1 with `ret` once it ran,
//!       0 when `timeout_ms` passed (or a signal came) first. Closing the descriptor ends the
//!       service and the lane; the deputy's marker is then a real `pause()`.
//!   - Only one ioctl at a time per descriptor: a concurrent one gets `EBUSY` (the notification
//!     requests excepted: they do not take the descriptor's lock).
//!   - The module cannot be unloaded while a freeze's work is still queued on a process (one that
//!     was given up with `ETIMEDOUT` on a stopped process, for example): `rmmod` fails with
//!     `EBUSY` until that process has run it (it then goes on untouched) or ended.
//!   - A pointer the module cannot read or write gives `EFAULT`; any other request `ENOTTY`.
//! * Errors never leave a trace in the kernel log beyond one line per load/unload.

use core::mem::size_of;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

mod abi;
mod deputy;
mod freeze;
mod intercept;
mod lane;
mod restore;
mod sys;

use abi::*;
use freeze::FileState;

module! {
    type: Mosix,
    name: "mosix",
    author: "MOS project",
    description: "MOS native mode: /dev/mosix (ABI version 2)",
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
    type File = FileState;

    fn open() -> Result<KBox<FileState>> {
        if !sys::capable_sys_admin() {
            return Err(EPERM);
        }
        let state = KBox::new(FileState::new(), GFP_KERNEL)?;
        OPEN_FILES.fetch_add(1, Ordering::Relaxed);
        Ok(state)
    }

    fn release(file: KBox<FileState>) {
        freeze::release(&file);
        OPEN_FILES.fetch_sub(1, Ordering::Relaxed);
    }

    fn ioctl(file: &FileState, cmd: u32, arg: usize) -> Result<i64> {
        let r = match cmd {
            MOSIX_IOC_VERSION => version(arg),
            MOSIX_IOC_INFO => info(arg),
            MOSIX_IOC_FREEZE => freeze::freeze(file, arg),
            MOSIX_IOC_THAW => freeze::thaw(file, arg),
            MOSIX_IOC_CONTEXT => freeze::context(file, arg),
            MOSIX_IOC_RESTORE => return restore::restore(file, arg),
            MOSIX_IOC_INTERCEPT => intercept::intercept(file, arg),
            MOSIX_IOC_SIGINFO => freeze::siginfo(file, arg),
            MOSIX_IOC_LANE => intercept::lane(file, arg),
            MOSIX_IOC_DEPUTY => deputy::register(file, arg),
            // Waits for the deputy's call: not under the descriptor's lock.
            MOSIX_IOC_DEPUTY_CALL => deputy::call(&*file.deputy_ref().ok_or(EINVAL)?, arg),
            SECCOMP_IOCTL_NOTIF_RECV
            | SECCOMP_IOCTL_NOTIF_SEND
            | SECCOMP_IOCTL_NOTIF_ID_VALID
            | SECCOMP_IOCTL_NOTIF_ID_VALID_OLD
            | SECCOMP_IOCTL_NOTIF_SET_FLAGS => {
                // The listener's calls block (RECV): not under the descriptor's lock.
                let l = file.listener_ref().ok_or(EINVAL)?;
                match cmd {
                    SECCOMP_IOCTL_NOTIF_RECV => intercept::recv(&l, arg),
                    SECCOMP_IOCTL_NOTIF_SEND => intercept::send(&l, arg),
                    SECCOMP_IOCTL_NOTIF_SET_FLAGS => Ok(0),
                    _ => intercept::id_valid(&l, arg),
                }
            }
            _ => Err(ENOTTY),
        };
        r.map(i64::from)
    }

    fn readable(file: &FileState) -> bool {
        file.listener_ref().is_some_and(|l| intercept::readable(&l))
    }
}

/// `MOSIX_IOC_VERSION`: writes a [`Version`] to `arg`.
fn version(arg: usize) -> Result<i32> {
    let v = Version { abi: ABI_VERSION, features: abi::feature::provided() };
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
        features: abi::feature::provided(),
        open_files: OPEN_FILES.load(Ordering::Relaxed),
        reserved: 0,
    };
    writer.write(&answer)?;
    Ok(0)
}
