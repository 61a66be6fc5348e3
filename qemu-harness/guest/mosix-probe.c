/* mosix-probe: checks /dev/mosix's ABI from userspace (runs inside the VMs, linked statically).
 * Prints one line per check and ends with "MOSIX_PROBE_OK abi=N features=0xF" or
 * "MOSIX_PROBE_FAIL (N failures)"; exit status 0 only when every check passed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "mosix.h"

static int failures;

static void check(int ok, const char *what) {
	printf("mosix-probe: %s: %s\n", ok ? "ok  " : "FAIL", what);
	if (!ok)
		failures++;
}

static int expect_errno(int fd, unsigned long cmd, void *arg, int want) {
	errno = 0;
	int r = ioctl(fd, cmd, arg);
	return r == -1 && errno == want;
}

int main(void) {
	int fd = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("mosix-probe: cannot open /dev/mosix: %s\nMOSIX_PROBE_FAIL (no device)\n", strerror(errno));
		return 1;
	}
	struct mosix_version v;
	memset(&v, 0xff, sizeof v);
	int r = ioctl(fd, MOSIX_IOC_VERSION, &v);
	check(r == 0 && v.abi == MOSIX_ABI_VERSION, "MOSIX_IOC_VERSION answers ABI version 1");

	struct mosix_info in = {.abi = MOSIX_ABI_VERSION, .size = sizeof in};
	r = ioctl(fd, MOSIX_IOC_INFO, &in);
	check(r == 0 && in.abi == MOSIX_ABI_VERSION && in.open_files == 1 && in.features == v.features,
	      "MOSIX_IOC_INFO with the right version: one open file, same features");

	struct mosix_info wrong = {.abi = 999, .size = sizeof wrong};
	check(expect_errno(fd, MOSIX_IOC_INFO, &wrong, EPROTO), "MOSIX_IOC_INFO with ABI version 999 -> EPROTO");
	struct mosix_info badsize = {.abi = MOSIX_ABI_VERSION, .size = 7};
	check(expect_errno(fd, MOSIX_IOC_INFO, &badsize, EINVAL), "MOSIX_IOC_INFO with a wrong size -> EINVAL");
	struct mosix_info reserved = {.abi = MOSIX_ABI_VERSION, .size = sizeof reserved, .reserved = 1};
	check(expect_errno(fd, MOSIX_IOC_INFO, &reserved, EINVAL), "MOSIX_IOC_INFO with reserved != 0 -> EINVAL");
	check(expect_errno(fd, MOSIX_IOC_VERSION, (void *)8, EFAULT), "MOSIX_IOC_VERSION to a bad pointer -> EFAULT");
	check(expect_errno(fd, MOSIX_IOC_INFO, NULL, EFAULT), "MOSIX_IOC_INFO from a NULL pointer -> EFAULT");
	check(expect_errno(fd, _IO(MOSIX_IOC_MAGIC, 77), NULL, ENOTTY), "an unknown request -> ENOTTY");
	check(expect_errno(fd, TCGETS, &v, ENOTTY), "a tty request -> ENOTTY");

	int fd2 = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	struct mosix_info two = {.abi = MOSIX_ABI_VERSION, .size = sizeof two};
	check(fd2 >= 0 && ioctl(fd2, MOSIX_IOC_INFO, &two) == 0 && two.open_files == 2, "a second descriptor: two open files");
	if (fd2 >= 0)
		close(fd2);
	close(fd);
	if (failures) {
		printf("MOSIX_PROBE_FAIL (%d failures)\n", failures);
		return 1;
	}
	printf("MOSIX_PROBE_OK abi=%u features=%#x\n", v.abi, v.features);
	return 0;
}
