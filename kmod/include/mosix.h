/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The userspace ABI of /dev/mosix (mosix.ko), version 2. The Rust side is kmod/abi.rs; the
 * contract is the doc comment of kmod/mosix_main.rs.
 */
#ifndef MOSIX_H
#define MOSIX_H
#include <linux/ioctl.h>
#include <linux/types.h>

#define MOSIX_ABI_VERSION 2
#define MOSIX_IOC_MAGIC 0xB7

#define MOSIX_FEATURE_FREEZE (1u << 0)
#define MOSIX_FEATURE_CAPTURE (1u << 1)
#define MOSIX_FEATURE_RESTORE (1u << 2)
#define MOSIX_FEATURE_INTERCEPT (1u << 3)
#define MOSIX_FEATURE_LANE (1u << 5)
#define MOSIX_FEATURE_SIGINFO (1u << 4)

struct mosix_version {
	__u32 abi;
	__u32 features;
};

struct mosix_info {
	__u32 abi;        /* in: the caller's MOSIX_ABI_VERSION; out: the module's */
	__u32 size;       /* in: sizeof(struct mosix_info) */
	__u32 features;   /* out */
	__u32 open_files; /* out */
	__u64 reserved;   /* in: 0 */
};

struct mosix_target {
	__s32 pid;
	__u32 timeout_ms; /* freeze: how long to wait for it to park (0: 10 s); thaw: 0 */
	__u64 reserved;   /* 0 */
};

struct mosix_sigaction {
	__u64 handler;
	__u64 flags;
	__u64 restorer;
	__u64 mask;
};

struct mosix_context {
	__s32 pid;          /* in: the process frozen through this descriptor */
	__u32 xstate_len;   /* in: size of the buffer at xstate; out: bytes written */
	__u64 xstate;       /* in: user address of the XSAVE buffer */
	__u64 regs[27];     /* out: struct user_regs_struct */
	__u64 sigmask;
	__u64 brk;
	__u64 tid_address;
	__u64 robust_list;
	__u64 robust_len;
	__u64 rseq;
	__u32 rseq_len;
	__u32 rseq_sig;
	__u64 altstack_sp;
	__u64 altstack_size;
	__s32 altstack_flags;
	__u32 reserved0;
	struct mosix_sigaction sigactions[64]; /* signal i + 1 */
	__u64 reserved;     /* in: 0 */
};

/* MOSIX_IOC_RESTORE: the image staged by the calling task becomes its address space and
 * registers (see kmod/restore.rs for what the caller prepares first). */
struct mosix_area {
	__u64 start, end, offset;
	__u32 prot;
	__u32 kind;         /* 0 anonymous, 1 stack, 2 file at fd */
	__s32 fd;
	__u32 reserved;
};

struct mosix_run {
	__u64 addr, len, off; /* len bytes at offset off of pages_fd go to addr */
};

struct mosix_restore {
	__u32 size;         /* sizeof(struct mosix_restore) */
	__u32 flags;        /* 0 */
	__s32 pages_fd;
	__u32 n_areas;
	__u64 areas;        /* struct mosix_area[n_areas], sorted, not overlapping */
	__u64 runs;         /* struct mosix_run[n_runs] */
	__u32 n_runs;
	__u32 n_keep;
	__u64 keep;         /* __u64 [n_keep][2]: ranges left mapped (the kernel areas) */
	__u64 regs[27];     /* struct user_regs_struct; cs/ss must be the 64-bit user selectors */
	__u64 sigmask;
	__u64 rseq;
	__u32 rseq_len;
	__u32 rseq_sig;
	__u64 close;        /* __s32 [n_close]: descriptors closed at the end */
	__u32 n_close;
	__u32 reserved0;
	__u64 reserved;
};

/* MOSIX_IOC_INTERCEPT: this descriptor becomes the listener of process pid's system calls; it
 * then answers the seccomp user-notification ioctls (SECCOMP_IOCTL_NOTIF_RECV, _SEND, _ID_VALID,
 * _SET_FLAGS, same numbers and structures) and poll(). */
struct mosix_intercept {
	__s32 pid;          /* the caller's single-threaded child */
	__u32 reserved0;
	__u64 local[8];     /* bitmap of the calls (0..511) that run untouched */
	__u64 pass_ip;      /* calls made from here (address after `syscall`) run untouched */
	__u64 reserved;
};

/* MOSIX_IOC_SIGINFO: the signals queued on the process frozen through this descriptor. */
struct mosix_siginfo {
	__s32 pid;
	__u32 count;        /* in: room at buf (at most 64); out: written */
	__u64 buf;          /* count siginfo_t of 128 bytes */
	__u32 skip;         /* in: queued signals to skip */
	__u32 total;        /* out: queued in all */
	__u64 reserved;
};

/* MOSIX_IOC_LANE (on a listener): its calls in `calls` are sent by the module itself on the
 * stream socket fd (the kernel lane to the deputy's module; records of mos_proto::lane). */
struct mosix_lane {
	__s32 fd;
	__u32 reserved0;
	__u64 calls[8];     /* bitmap of the calls (0..511) sent on the lane; none of them local */
	__u64 reserved;
};

/* MOSIX_IOC_DEPUTY: this descriptor serves a deputy (the caller's single-threaded child) running
 * the lane loop: `mov eax,34; syscall` (marker_ip: after it) `mov rdi,rax; jmp` back. */
struct mosix_deputy {
	__s32 pid;
	__s32 fd;           /* the lane socket, or -1 */
	__u64 marker_ip;
	__u64 calls[8];     /* bitmap of the calls the lane may ask for (others: -ENOSYS) */
	__u64 reserved;
};

/* MOSIX_IOC_DEPUTY_CALL: post a call in the deputy (nr >= 0) or wait on (nr = -1). */
struct mosix_deputy_call {
	__s64 nr;
	__u64 args[6];
	__s64 ret;          /* out, when done */
	__u32 timeout_ms;   /* at most 60000 */
	__u32 done;         /* in: 0; out: 1 when ret holds the result */
	__u64 reserved;
};

#define MOSIX_IOC_VERSION _IOR(MOSIX_IOC_MAGIC, 0, struct mosix_version)
#define MOSIX_IOC_INFO _IOWR(MOSIX_IOC_MAGIC, 1, struct mosix_info)
#define MOSIX_IOC_FREEZE _IOW(MOSIX_IOC_MAGIC, 2, struct mosix_target)
#define MOSIX_IOC_THAW _IOW(MOSIX_IOC_MAGIC, 3, struct mosix_target)
#define MOSIX_IOC_CONTEXT _IOWR(MOSIX_IOC_MAGIC, 4, struct mosix_context)
#define MOSIX_IOC_RESTORE _IOW(MOSIX_IOC_MAGIC, 5, struct mosix_restore)
#define MOSIX_IOC_INTERCEPT _IOW(MOSIX_IOC_MAGIC, 6, struct mosix_intercept)
#define MOSIX_IOC_SIGINFO _IOWR(MOSIX_IOC_MAGIC, 7, struct mosix_siginfo)
#define MOSIX_IOC_LANE _IOW(MOSIX_IOC_MAGIC, 8, struct mosix_lane)
#define MOSIX_IOC_DEPUTY _IOW(MOSIX_IOC_MAGIC, 9, struct mosix_deputy)
#define MOSIX_IOC_DEPUTY_CALL _IOWR(MOSIX_IOC_MAGIC, 10, struct mosix_deputy_call)

#endif
