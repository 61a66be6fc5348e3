/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The userspace ABI of /dev/mosix (mosix.ko), version 1. The Rust side is kmod/abi.rs; the
 * contract is the doc comment of kmod/mosix_main.rs.
 */
#ifndef MOSIX_H
#define MOSIX_H
#include <linux/ioctl.h>
#include <linux/types.h>

#define MOSIX_ABI_VERSION 1
#define MOSIX_IOC_MAGIC 0xB7

#define MOSIX_FEATURE_FREEZE (1u << 0)
#define MOSIX_FEATURE_CAPTURE (1u << 1)
#define MOSIX_FEATURE_RESTORE (1u << 2)
#define MOSIX_FEATURE_INTERCEPT (1u << 3)

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

#define MOSIX_IOC_VERSION _IOR(MOSIX_IOC_MAGIC, 0, struct mosix_version)
#define MOSIX_IOC_INFO _IOWR(MOSIX_IOC_MAGIC, 1, struct mosix_info)

#endif
