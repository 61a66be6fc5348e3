// SPDX-License-Identifier: GPL-2.0
/*
 * The C half of mosix.ko: only what 6.12's Rust bindings cannot express. <linux/miscdevice.h> is
 * not in kernel::bindings (and 6.12 has no kernel::miscdevice), so the miscdevice lives here,
 * where its layout is the compiler's business, not a hand-mirrored Rust struct's.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>

int mosix_shim_misc_register(const struct file_operations *fops);
void mosix_shim_misc_deregister(void);

static struct miscdevice mosix_miscdev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "mosix",
	.mode = 0600,
};

/* Registers /dev/mosix with @fops, which must stay valid until mosix_shim_misc_deregister(). */
int mosix_shim_misc_register(const struct file_operations *fops)
{
	mosix_miscdev.fops = fops;
	return misc_register(&mosix_miscdev);
}

void mosix_shim_misc_deregister(void)
{
	misc_deregister(&mosix_miscdev);
}
