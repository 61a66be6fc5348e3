/* mosix-probe: checks /dev/mosix's ABI from userspace (runs inside the VMs, linked statically).
 * Prints one line per check and ends with "MOSIX_PROBE_OK abi=N features=0xF" or
 * "MOSIX_PROBE_FAIL (N failures)"; exit status 0 only when every check passed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <linux/seccomp.h>
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

static void on_usr1(int sig) { (void)sig; }

static void pause_ms(int ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* A window in which a frozen child must not count (absence cannot be polled for). */
static void window_ms(int ms) { pause_ms(ms); }

/* Whether *counter moves away from @from within 10 s (polled every millisecond). */
static int runs(volatile uint64_t *counter, uint64_t from) {
	for (int i = 0; i < 10000; i++) {
		if (*counter != from)
			return 1;
		pause_ms(1);
	}
	return 0;
}

/* The state letter of process @pid (/proc/PID/stat), '?' if unreadable. */
static char proc_state(pid_t pid) {
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return '?';
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

/* Whether @pid is asleep (state S) within 10 s: blocked in its pause(). */
static int sleeping(pid_t pid) {
	for (int i = 0; i < 10000; i++) {
		if (proc_state(pid) == 'S')
			return 1;
		pause_ms(1);
	}
	return 0;
}

/* A child that counts in shared memory, with a SIGUSR1 handler and an alternate stack. */
static pid_t counting_child(volatile uint64_t *counter) {
	pid_t p = fork();
	if (p == 0) {
		static char alt[SIGSTKSZ];
		stack_t ss = {.ss_sp = alt, .ss_size = sizeof alt};
		sigaltstack(&ss, NULL);
		struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART | SA_ONSTACK};
		sigaction(SIGUSR1, &sa, NULL);
		for (;;)
			(*counter)++;
	}
	return p;
}

/* The native engine and ptrace see the same context: a child blocked in pause() is frozen and
 * read natively, thawed, then interrupt-stopped and read with ptrace; registers, XSAVE image and
 * signal mask must be identical. */
static void same_as_ptrace(int fd) {
	pid_t c = fork();
	if (c == 0) {
		struct sigaction sa = {.sa_handler = on_usr1};
		sigaction(SIGUSR1, &sa, NULL);
		sigset_t m;
		sigemptyset(&m);
		sigaddset(&m, SIGUSR2);
		sigprocmask(SIG_BLOCK, &m, NULL);
		for (;;)
			pause();
	}
	check(sleeping(c), "a child blocked in pause()");
	static char xa[16384], xb[16384];
	static struct mosix_context ctx;
	memset(&ctx, 0, sizeof ctx);
	ctx.pid = c;
	ctx.xstate = (uintptr_t)xa;
	ctx.xstate_len = sizeof xa;
	struct mosix_target t = {.pid = c};
	int ok = ioctl(fd, MOSIX_IOC_FREEZE, &t) == 0 && ioctl(fd, MOSIX_IOC_CONTEXT, &ctx) == 0 && ioctl(fd, MOSIX_IOC_THAW, &t) == 0;
	check(ok, "native freeze + context + thaw of a child in pause()");
	check(sleeping(c), "back in its pause() after the thaw");
	struct user_regs_struct regs;
	struct iovec iov = {.iov_base = xb, .iov_len = sizeof xb};
	uint64_t mask = 0;
	int status;
	ok = ptrace(PTRACE_SEIZE, c, 0, 0) == 0 && ptrace(PTRACE_INTERRUPT, c, 0, 0) == 0 && waitpid(c, &status, __WALL) == c &&
	     ptrace(PTRACE_GETREGS, c, 0, &regs) == 0 && ptrace(PTRACE_GETREGSET, c, (void *)0x202, &iov) == 0 &&
	     ptrace(PTRACE_GETSIGMASK, c, (void *)8, &mask) == 0;
	check(ok, "the same child interrupt-stopped and read with ptrace");
	check(sizeof regs == sizeof ctx.regs && !memcmp(&regs, ctx.regs, sizeof regs), "same registers (27 words) from both engines");
	check(iov.iov_len == ctx.xstate_len && !memcmp(xa, xb, iov.iov_len), "same XSAVE image from both engines");
	check(mask == ctx.sigmask && (mask & (1u << (SIGUSR2 - 1))), "same signal mask from both engines");
	if (memcmp(&regs, ctx.regs, sizeof regs)) {
		uint64_t *r = (uint64_t *)&regs;
		for (int i = 0; i < 27; i++)
			if (r[i] != ctx.regs[i])
				printf("mosix-probe: register word %d: ptrace %#llx native %#llx\n", i, (unsigned long long)r[i], (unsigned long long)ctx.regs[i]);
	}
	kill(c, SIGKILL);
	waitpid(c, &status, __WALL);
}

/* Freeze, context, thaw of a child; the refusals of bad requests. */
static void native_engine(int fd) {
	volatile uint64_t *counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t c = counting_child(counter);
	check(runs(counter, 0), "a counting child");
	struct mosix_target t = {.pid = c};
	check(ioctl(fd, MOSIX_IOC_FREEZE, &t) == 0, "MOSIX_IOC_FREEZE of a counting child");
	uint64_t a = *counter;
	window_ms(300);
	uint64_t b = *counter;
	check(a == b, "a frozen child does not run");
	FILE *st = NULL;
	char path[64], line[256], state = '?';
	snprintf(path, sizeof path, "/proc/%d/status", c);
	if ((st = fopen(path, "r"))) {
		while (fgets(line, sizeof line, st))
			if (!strncmp(line, "State:", 6))
				state = line[7];
		fclose(st);
	}
	check(state == 'D', "a frozen child is parked in the kernel (state D, not stopped or traced)");
	check(expect_errno(fd, MOSIX_IOC_FREEZE, &t, EBUSY), "a second FREEZE on the same descriptor -> EBUSY");

	static char xs[16384];
	static struct mosix_context ctx;
	memset(&ctx, 0, sizeof ctx);
	ctx.pid = c;
	ctx.xstate = (uintptr_t)xs;
	ctx.xstate_len = sizeof xs;
	int r = ioctl(fd, MOSIX_IOC_CONTEXT, &ctx);
	check(r == 0, "MOSIX_IOC_CONTEXT of the frozen child");
	/* user_regs_struct: rip is word 16, cs 17, rsp 19, fs_base 21 */
	check(ctx.regs[16] != 0 && ctx.regs[17] == 0x33 && ctx.regs[19] != 0 && ctx.regs[21] != 0,
	      "its registers: rip, cs 0x33, rsp, fs_base");
	check(ctx.xstate_len >= 576 && ctx.xstate_len <= sizeof xs, "its XSAVE image (at least legacy + header)");
	check(ctx.sigactions[SIGUSR1 - 1].handler == (uintptr_t)on_usr1 &&
	          (ctx.sigactions[SIGUSR1 - 1].flags & (SA_RESTART | SA_ONSTACK)) == (SA_RESTART | SA_ONSTACK),
	      "its SIGUSR1 handler and flags");
	check(ctx.altstack_size == SIGSTKSZ && ctx.altstack_sp != 0, "its alternate signal stack");
	check(ctx.brk != 0, "its program break");
	struct mosix_context bad = ctx;
	bad.pid = getpid();
	check(expect_errno(fd, MOSIX_IOC_CONTEXT, &bad, ESRCH), "CONTEXT of a process not frozen here -> ESRCH");
	bad = ctx;
	bad.reserved = 1;
	check(expect_errno(fd, MOSIX_IOC_CONTEXT, &bad, EINVAL), "CONTEXT with reserved != 0 -> EINVAL");

	check(ioctl(fd, MOSIX_IOC_THAW, &t) == 0, "MOSIX_IOC_THAW");
	check(runs(counter, b), "a thawed child runs again");
	check(expect_errno(fd, MOSIX_IOC_THAW, &t, ESRCH), "THAW of a process not frozen -> ESRCH");

	/* Closing the descriptor thaws. */
	int fd2 = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	check(fd2 >= 0 && ioctl(fd2, MOSIX_IOC_FREEZE, &t) == 0, "FREEZE through a second descriptor");
	a = *counter;
	window_ms(200);
	check(a == *counter, "frozen again");
	close(fd2);
	check(runs(counter, a), "closing the descriptor thaws it");

	/* SIGKILL ends a park; THAW then says so. */
	check(ioctl(fd, MOSIX_IOC_FREEZE, &t) == 0, "FREEZE before SIGKILL");
	kill(c, SIGKILL);
	int status = 0;
	check(waitpid(c, &status, 0) == c && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "SIGKILL ends a frozen child");
	check(expect_errno(fd, MOSIX_IOC_THAW, &t, ESRCH), "THAW of a child killed while frozen -> ESRCH");

	/* A stopped child never parks: the freeze gives up, the child is untouched. */
	a = *counter;
	c = counting_child(counter);
	check(runs(counter, a), "a second counting child");
	kill(c, SIGSTOP);
	waitpid(c, &status, WUNTRACED);
	struct mosix_target quick = {.pid = c, .timeout_ms = 300};
	check(expect_errno(fd, MOSIX_IOC_FREEZE, &quick, ETIMEDOUT), "FREEZE of a SIGSTOPped child -> ETIMEDOUT");
	a = *counter;
	kill(c, SIGCONT);
	check(runs(counter, a), "it runs after SIGCONT");

	struct mosix_target init = {.pid = 1};
	check(expect_errno(fd, MOSIX_IOC_FREEZE, &init, EPERM), "FREEZE of a process that is not our child (init) -> EPERM");
	struct mosix_target self = {.pid = getpid()};
	check(expect_errno(fd, MOSIX_IOC_FREEZE, &self, EINVAL) || expect_errno(fd, MOSIX_IOC_FREEZE, &self, EPERM),
	      "FREEZE of the caller itself is refused");
	struct mosix_target none = {.pid = 999999};
	check(expect_errno(fd, MOSIX_IOC_FREEZE, &none, ESRCH), "FREEZE of no process -> ESRCH");
	struct mosix_target res = {.pid = c, .reserved = 1};
	check(expect_errno(fd, MOSIX_IOC_FREEZE, &res, EINVAL), "FREEZE with reserved != 0 -> EINVAL");
	kill(c, SIGKILL);
	waitpid(c, &status, 0);
}

/* --pending: leaves a SIGSTOPped child whose freeze was abandoned (its task_work still queued)
 * and prints its pid: the module must refuse to unload until the child has run or dropped it. */
/* Interception (feature bit 3): a child's getppid is answered by the probe, or let through with
 * CONTINUE; getpid (local) runs untouched; closing the listener answers ENOSYS. The child
 * reports what its calls returned over a pipe. */
static void intercept(int fd) {
	int p[2], go[2];
	if (pipe(p) || pipe(go)) {
		check(0, "intercept: pipes");
		return;
	}
	pid_t me = getpid();
	pid_t c = fork();
	if (c == 0) {
		char b;
		if (read(go[0], &b, 1) != 1)
			_exit(2);
		long r[4];
		r[0] = syscall(SYS_getpid);
		r[1] = syscall(SYS_getppid); /* answered 4242 */
		r[2] = syscall(SYS_getppid); /* CONTINUE: the real parent */
		r[3] = syscall(SYS_getppid); /* the listener closes: -1 ENOSYS */
		if (r[3] == -1)
			r[3] = -errno;
		_exit(write(p[1], r, sizeof r) == sizeof r ? 0 : 3);
	}
	/* Registered once the child blocks in its read: that call entered before (not intercepted). */
	check(sleeping(c), "the child to intercept blocks in its read");
	int l = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	struct mosix_intercept req = {.pid = c};
	req.local[SYS_getpid / 64] |= 1ull << (SYS_getpid % 64);
	int r = ioctl(l, MOSIX_IOC_INTERCEPT, &req);
	check(r == 0, "MOSIX_IOC_INTERCEPT on a child");
	check(expect_errno(l, MOSIX_IOC_INTERCEPT, &req, EBUSY), "a second MOSIX_IOC_INTERCEPT on the descriptor -> EBUSY");
	struct mosix_intercept self = {.pid = me};
	int l2 = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	check(expect_errno(l2, MOSIX_IOC_INTERCEPT, &self, EINVAL), "MOSIX_IOC_INTERCEPT on the caller -> EINVAL");
	struct mosix_intercept init = {.pid = 1};
	check(expect_errno(l2, MOSIX_IOC_INTERCEPT, &init, EPERM), "MOSIX_IOC_INTERCEPT on a process not our child -> EPERM");
	close(l2);
	if (write(go[1], "g", 1) != 1)
		check(0, "intercept: start the child");
	struct pollfd pf = {.fd = l, .events = POLLIN};
	check(poll(&pf, 1, 10000) == 1 && (pf.revents & POLLIN), "the listener polls readable when a call waits");
	struct seccomp_notif n;
	memset(&n, 0, sizeof n);
	r = ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &n);
	check(r == 0 && n.data.nr == SYS_getppid && (pid_t)n.pid == c && n.data.arch == 0xc000003e,
	      "NOTIF_RECV: the child's getppid (getpid ran untouched)");
	if (n.data.nr != SYS_getppid)
		printf("mosix-probe: NOTIF_RECV returned %d, call %d of pid %u\n", r, n.data.nr, n.pid);
	__u64 id = n.id;
	check(ioctl(l, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0, "NOTIF_ID_VALID while the call waits");
	struct seccomp_notif_resp a = {.id = n.id, .val = 4242};
	check(ioctl(l, SECCOMP_IOCTL_NOTIF_SEND, &a) == 0, "NOTIF_SEND 4242");
	check(expect_errno(l, SECCOMP_IOCTL_NOTIF_SEND, &a, ENOENT), "a second answer -> ENOENT");
	check(poll(&pf, 1, 10000) == 1, "the second getppid is posted");
	memset(&n, 0, sizeof n);
	r = ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &n);
	struct seccomp_notif_resp cont = {.id = n.id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
	r = r == 0 && n.data.nr == SYS_getppid ? ioctl(l, SECCOMP_IOCTL_NOTIF_SEND, &cont) : -2;
	check(r == 0, "NOTIF_SEND CONTINUE");
	if (r)
		printf("mosix-probe: second call %d, SEND CONTINUE gave %d (%s)\n", n.data.nr, r, strerror(errno));
	/* As the guest does: poll first (RECV waits for one change only, and the CONTINUE's own
	 * end, ANSWERED -> IDLE, can be that change: ENOENT then). */
	check(poll(&pf, 1, 10000) == 1, "the third getppid is posted");
	memset(&n, 0, sizeof n);
	r = ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &n);
	check(r == 0 && n.data.nr == SYS_getppid, "the third getppid waits");
	close(l); /* answers it ENOSYS */
	long got[4] = {0};
	check(read(p[0], got, sizeof got) == sizeof got, "the child reports its results");
	check(got[0] == c, "getpid ran untouched");
	check(got[1] == 4242, "getppid returned the listener's answer");
	check(got[2] == me, "getppid with CONTINUE returned the real parent");
	check(got[3] == -ENOSYS, "a call waiting when the listener closes fails with ENOSYS");
	int st;
	check(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the intercepted child exits normally");
	close(p[0]), close(p[1]), close(go[0]), close(go[1]);
}

/* Interception, a call not yet received: a signal withdraws it (-ERESTARTSYS). With SA_RESTART
 * the handler runs and the call is made again, intercepted again; the answer then arrives. */
static volatile sig_atomic_t handled;
static void on_usr2_count(int sig) { (void)sig; handled++; }

static void intercept_withdrawn(void) {
	int p[2], go[2];
	if (pipe(p) || pipe(go)) {
		check(0, "withdraw: pipes");
		return;
	}
	pid_t c = fork();
	if (c == 0) {
		struct sigaction sa = {.sa_handler = on_usr2_count, .sa_flags = SA_RESTART};
		sigaction(SIGUSR2, &sa, NULL);
		char b;
		if (read(go[0], &b, 1) != 1)
			_exit(2);
		long r[2];
		r[0] = syscall(SYS_getppid); /* withdrawn by SIGUSR2, made again, answered 99 */
		r[1] = handled;
		_exit(write(p[1], r, sizeof r) == sizeof r ? 0 : 3);
	}
	check(sleeping(c), "withdraw: the child blocks in its read");
	int l = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	struct mosix_intercept req = {.pid = c};
	/* The handler's return, the report and the exit run locally. */
	req.local[SYS_rt_sigreturn / 64] |= 1ull << (SYS_rt_sigreturn % 64);
	req.local[SYS_write / 64] |= 1ull << (SYS_write % 64);
	req.local[SYS_exit_group / 64] |= 1ull << (SYS_exit_group % 64);
	check(ioctl(l, MOSIX_IOC_INTERCEPT, &req) == 0, "withdraw: MOSIX_IOC_INTERCEPT");
	if (write(go[1], "g", 1) != 1)
		check(0, "withdraw: start the child");
	struct pollfd pf = {.fd = l, .events = POLLIN};
	check(poll(&pf, 1, 10000) == 1, "withdraw: a call waits");
	kill(c, SIGUSR2); /* before NOTIF_RECV: the call is withdrawn */
	/* The handler's return and the restarted getppid post it again. */
	struct seccomp_notif n;
	int got = 0;
	for (int i = 0; i < 50 && !got; i++) {
		memset(&n, 0, sizeof n);
		if (poll(&pf, 1, 200) == 1 && ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &n) == 0)
			got = 1;
	}
	check(got && n.data.nr == SYS_getppid, "withdraw: the call is made again after the handler");
	if (got && n.data.nr != SYS_getppid)
		printf("mosix-probe: withdraw: call %d came instead\n", n.data.nr);
	struct seccomp_notif_resp a = {.id = n.id, .val = 99};
	check(ioctl(l, SECCOMP_IOCTL_NOTIF_SEND, &a) == 0, "withdraw: NOTIF_SEND 99");
	close(p[1]);
	long res[2] = {0};
	check(read(p[0], res, sizeof res) == sizeof res, "withdraw: the child reports");
	close(l);
	check(res[0] == 99 && res[1] == 1, "withdraw: getppid returned the answer, the handler ran once");
	int st;
	check(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "withdraw: the child exits normally");
	close(p[0]), close(go[0]), close(go[1]);
}

/* An intercepted process traced with PTRACE_SYSCALL: its call's park runs in ptrace_notify()
 * (task works run there before the exit stop) with TIF_NOTIFY_SIGNAL still set, and must still
 * wait for the listener's answer, not withdraw the call at once (which made it again forever). */
static void intercept_traced(void) {
	int p[2];
	if (pipe(p)) {
		check(0, "traced: a pipe");
		return;
	}
	pid_t c = fork();
	if (c == 0) {
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		raise(SIGSTOP);
		long r = syscall(SYS_getppid); /* answered 55 */
		_exit(write(p[1], &r, sizeof r) == sizeof r ? 0 : 3);
	}
	int st;
	check(waitpid(c, &st, 0) == c && WIFSTOPPED(st), "traced: a traced child stops");
	int l = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	struct mosix_intercept req = {.pid = c};
	int local[] = {SYS_rt_sigprocmask, SYS_getpid, SYS_gettid, SYS_tgkill, SYS_write, SYS_exit_group};
	for (unsigned i = 0; i < sizeof local / sizeof local[0]; i++)
		req.local[local[i] / 64] |= 1ull << (local[i] % 64);
	check(ioctl(l, MOSIX_IOC_INTERCEPT, &req) == 0, "traced: MOSIX_IOC_INTERCEPT");
	/* Entry and exit stops alternate from here; count getppid's entries. */
	struct user_regs_struct regs;
	int entry = 1, entries = 0;
	for (int i = 0; i < 40 && !entries; i++, entry = !entry) {
		if (ptrace(PTRACE_SYSCALL, c, 0, 0) || waitpid(c, &st, 0) != c || !WIFSTOPPED(st))
			break;
		ptrace(PTRACE_GETREGS, c, 0, &regs);
		entries += entry && regs.orig_rax == SYS_getppid;
	}
	check(entries == 1, "traced: the child stops at getppid's entry");
	ptrace(PTRACE_SYSCALL, c, 0, 0);
	/* Its park waits for the answer (asleep), before the exit stop ('t'). */
	char state = '?';
	for (int i = 0; i < 10000 && state != 'S' && state != 't'; i++) {
		pause_ms(1);
		state = proc_state(c);
	}
	check(state == 'S', "traced: the call waits for the listener, not withdrawn at the exit stop");
	if (state != 'S')
		printf("mosix-probe: traced: the child is in state %c\n", state);
	struct pollfd pf = {.fd = l, .events = POLLIN};
	struct seccomp_notif n;
	memset(&n, 0, sizeof n);
	int got = state == 'S' && poll(&pf, 1, 10000) == 1 && ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &n) == 0 && n.data.nr == SYS_getppid;
	struct seccomp_notif_resp a = {.id = n.id, .val = 55};
	check(got && ioctl(l, SECCOMP_IOCTL_NOTIF_SEND, &a) == 0, "traced: NOTIF_RECV getppid, NOTIF_SEND 55");
	/* Then to the end, counting getppid's entries (a withdrawn call would enter again). */
	int exited = 0;
	for (int i = 0; i < 200 && !exited; i++) {
		if (waitpid(c, &st, 0) != c)
			break;
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			exited = 1;
			break;
		}
		if (ptrace(PTRACE_GETREGS, c, 0, &regs) == 0 && regs.orig_rax == SYS_getppid && (long)regs.rax == -ENOSYS)
			entries++;
		ptrace(PTRACE_SYSCALL, c, 0, 0);
	}
	check(exited && WIFEXITED(st) && WEXITSTATUS(st) == 0, "traced: the child exits normally");
	check(entries == 1, "traced: getppid was entered once");
	long r = 0;
	close(p[1]);
	check(read(p[0], &r, sizeof r) == sizeof r && r == 55, "traced: the child's getppid returned 55");
	close(l), close(p[0]);
}

/* A freeze queued between the probe and the park of the call it skipped runs behind that park
 * (task works run newest first: the module queues the freeze again). The window is made on the
 * VM's single CPU: a SCHED_FIFO thread polls the listener, so the probe's wake-up of it preempts
 * the child on its way back to user mode, where a reschedule comes before task works; the thread
 * freezes the child there. The frozen child's call must be withdrawn as an interrupted one
 * (orig_rax getppid, rax -ERESTARTSYS), not lost (orig_rax -1, rax -ENOSYS), and after the thaw
 * it is made again and answered. */
struct freezer {
	int fd, listener;
	pid_t pid;
	int fifo, polled, r, err;
	volatile pid_t tid;
};
static void *freeze_thread(void *arg) {
	struct freezer *f = arg;
	struct sched_param sp = {.sched_priority = 10};
	f->fifo = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
	struct pollfd pf = {.fd = f->listener, .events = POLLIN};
	f->tid = syscall(SYS_gettid);
	f->polled = poll(&pf, 1, 10000) == 1;
	struct mosix_target t = {.pid = f->pid, .timeout_ms = 10000};
	f->r = ioctl(f->fd, MOSIX_IOC_FREEZE, &t);
	f->err = errno;
	return NULL;
}

static void freeze_behind_park(int fd) {
	int p[2], go[2];
	if (pipe(p) || pipe(go)) {
		check(0, "behind: pipes");
		return;
	}
	pid_t c = fork();
	if (c == 0) {
		char b;
		if (read(go[0], &b, 1) != 1)
			_exit(2);
		long r = syscall(SYS_getppid); /* frozen behind its park, made again, answered 77 */
		_exit(write(p[1], &r, sizeof r) == sizeof r ? 0 : 3);
	}
	check(sleeping(c), "behind: the child blocks in its read");
	int l = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	struct mosix_intercept req = {.pid = c};
	req.local[SYS_write / 64] |= 1ull << (SYS_write % 64);
	req.local[SYS_exit_group / 64] |= 1ull << (SYS_exit_group % 64);
	check(ioctl(l, MOSIX_IOC_INTERCEPT, &req) == 0, "behind: MOSIX_IOC_INTERCEPT");
	struct freezer f = {.fd = fd, .listener = l, .pid = c, .r = -2};
	pthread_t th;
	check(pthread_create(&th, NULL, freeze_thread, &f) == 0, "behind: a freezing thread");
	for (int i = 0; i < 10000 && !f.tid; i++)
		pause_ms(1);
	check(f.tid && sleeping(f.tid), "behind: the thread sleeps in its poll");
	if (write(go[1], "g", 1) != 1)
		check(0, "behind: start the child");
	pthread_join(th, NULL);
	check(f.fifo && f.polled, "behind: the SCHED_FIFO thread saw the call posted");
	check(f.r == 0, "behind: MOSIX_IOC_FREEZE parks the child");
	if (f.r)
		printf("mosix-probe: behind: FREEZE gave %d (%s)\n", f.r, strerror(f.err));
	static struct mosix_context ctx;
	memset(&ctx, 0, sizeof ctx);
	ctx.pid = c;
	int r = f.r == 0 ? ioctl(fd, MOSIX_IOC_CONTEXT, &ctx) : -1;
	/* user_regs_struct: rax is word 10, orig_rax 15 */
	check(r == 0 && ctx.regs[15] == SYS_getppid && (long)ctx.regs[10] == -512,
	      "behind: the frozen child's getppid was withdrawn (orig_rax getppid, rax -ERESTARTSYS)");
	if (r == 0 && ctx.regs[15] != SYS_getppid)
		printf("mosix-probe: behind: frozen with orig_rax %lld rax %lld\n", (long long)ctx.regs[15], (long long)ctx.regs[10]);
	struct mosix_target t = {.pid = c};
	check(f.r != 0 || ioctl(fd, MOSIX_IOC_THAW, &t) == 0, "behind: MOSIX_IOC_THAW");
	struct pollfd pf = {.fd = l, .events = POLLIN};
	struct seccomp_notif n;
	memset(&n, 0, sizeof n);
	check(poll(&pf, 1, 10000) == 1 && ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &n) == 0 && n.data.nr == SYS_getppid,
	      "behind: after the thaw the getppid is made again");
	struct seccomp_notif_resp a = {.id = n.id, .val = 77};
	check(ioctl(l, SECCOMP_IOCTL_NOTIF_SEND, &a) == 0, "behind: NOTIF_SEND 77");
	long got = 0;
	close(p[1]);
	check(read(p[0], &got, sizeof got) == sizeof got && got == 77, "behind: the child's getppid returned 77");
	int st;
	check(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "behind: the child exits normally");
	close(l), close(p[0]), close(go[0]), close(go[1]);
}

/* The kernel lane (feature bit 5): a deputy served by the module (MOSIX_IOC_DEPUTY) runs the
 * lane loop below; an intercepted child's lane calls (MOSIX_IOC_LANE) reach it over a socket
 * pair with no daemon in between; calls posted with MOSIX_IOC_DEPUTY_CALL run in it too. */
extern char mosix_probe_marker_end[];
static void lane_loop(void) {
	__asm__ volatile("1: mov $34, %%eax\n\t"
			 "syscall\n\t"
			 ".globl mosix_probe_marker_end\n"
			 "mosix_probe_marker_end:\n\t"
			 "mov %%rax, %%rdi\n\t"
			 "jmp 1b"
			 ::: "rax", "rdi", "rcx", "r11", "memory");
}

static void set_bit(__u64 *m, int nr) { m[nr / 64] |= 1ull << (nr % 64); }

static void lane(void) {
	int sv[2], p[2], go[2], dgo[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(p) || pipe(go) || pipe(dgo)) {
		check(0, "lane: sockets and pipes");
		return;
	}
	pid_t d = fork();
	if (d == 0) { /* the deputy: its own process group, so getpgid(0) names it */
		char b;
		setpgid(0, 0);
		if (read(dgo[0], &b, 1) != 1)
			_exit(2);
		lane_loop();
		_exit(4);
	}
	pid_t c = fork();
	if (c == 0) { /* the remote process */
		char b;
		if (read(go[0], &b, 1) != 1)
			_exit(2);
		long r[4];
		r[0] = syscall(SYS_getpgid, 0); /* on the lane: the deputy's group */
		r[1] = syscall(SYS_getsid, 0);  /* on the lane, not allowed by the deputy: ENOSYS */
		if (r[1] == -1)
			r[1] = -errno;
		if (write(p[1], r, 2 * sizeof(long)) != 2 * sizeof(long))
			_exit(3);
		if (read(go[0], &b, 1) != 1)    /* the deputy's descriptor is closed meanwhile */
			_exit(2);
		r[2] = syscall(SYS_getpgid, 0); /* the lane is gone: to the listener, answered 77 */
		r[3] = syscall(SYS_getpgid, 0); /* and again, without trying the lane */
		_exit(write(p[1], r + 2, 2 * sizeof(long)) == 2 * sizeof(long) ? 0 : 3);
	}
	check(sleeping(d) && sleeping(c), "lane: the deputy and the process wait to start");
	int dep = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	struct mosix_deputy dr = {.pid = d, .fd = sv[1], .marker_ip = (__u64)mosix_probe_marker_end};
	set_bit(dr.calls, SYS_getpgid);
	struct mosix_deputy bad = dr;
	bad.pid = 1;
	check(expect_errno(dep, MOSIX_IOC_DEPUTY, &bad, EPERM), "MOSIX_IOC_DEPUTY on a process not our child -> EPERM");
	bad = dr;
	bad.fd = p[0];
	check(expect_errno(dep, MOSIX_IOC_DEPUTY, &bad, ENOTSOCK), "MOSIX_IOC_DEPUTY with a pipe for a lane -> ENOTSOCK");
	check(ioctl(dep, MOSIX_IOC_DEPUTY, &dr) == 0, "MOSIX_IOC_DEPUTY on a child");
	check(expect_errno(dep, MOSIX_IOC_DEPUTY, &dr, EBUSY), "a second MOSIX_IOC_DEPUTY on the descriptor -> EBUSY");
	if (write(dgo[1], "g", 1) != 1)
		check(0, "lane: start the deputy");
	/* A posted call: getpid in the deputy. */
	struct mosix_deputy_call dc = {.nr = SYS_getpid, .timeout_ms = 5000};
	int r = ioctl(dep, MOSIX_IOC_DEPUTY_CALL, &dc);
	check(r == 0 && dc.done == 1 && dc.ret == d, "MOSIX_IOC_DEPUTY_CALL: getpid ran in the deputy");
	struct mosix_deputy_call marker = {.nr = 34, .timeout_ms = 10};
	check(expect_errno(dep, MOSIX_IOC_DEPUTY_CALL, &marker, EINVAL), "MOSIX_IOC_DEPUTY_CALL of the marker call -> EINVAL");
	int l = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	struct mosix_intercept req = {.pid = c};
	set_bit(req.local, SYS_read);
	set_bit(req.local, SYS_write);
	set_bit(req.local, SYS_exit_group);
	check(ioctl(l, MOSIX_IOC_INTERCEPT, &req) == 0, "lane: MOSIX_IOC_INTERCEPT");
	struct mosix_lane ln = {.fd = sv[0]};
	set_bit(ln.calls, SYS_read);
	check(expect_errno(l, MOSIX_IOC_LANE, &ln, EINVAL), "MOSIX_IOC_LANE of a local call -> EINVAL");
	memset(ln.calls, 0, sizeof ln.calls);
	set_bit(ln.calls, SYS_getpgid);
	set_bit(ln.calls, SYS_getsid);
	ln.fd = p[0];
	check(expect_errno(l, MOSIX_IOC_LANE, &ln, ENOTSOCK), "MOSIX_IOC_LANE on a pipe -> ENOTSOCK");
	ln.fd = sv[0];
	check(ioctl(l, MOSIX_IOC_LANE, &ln) == 0, "MOSIX_IOC_LANE");
	check(expect_errno(l, MOSIX_IOC_LANE, &ln, EBUSY), "a second MOSIX_IOC_LANE -> EBUSY");
	close(sv[0]), close(sv[1]); /* the module holds its own references */
	if (write(go[1], "g", 1) != 1)
		check(0, "lane: start the process");
	struct pollfd pf = {.fd = l, .events = POLLIN};
	long got[4] = {0};
	struct pollfd pr = {.fd = p[0], .events = POLLIN};
	check(poll(&pr, 1, 10000) == 1 && read(p[0], got, 2 * sizeof(long)) == 2 * sizeof(long), "lane: the process reports its lane calls");
	/* Both lane calls were answered without the listener: nothing to receive here. */
	check(poll(&pf, 1, 0) == 0, "lane calls never reach the listener");
	close(dep); /* the deputy is no longer served: its lane ends */
	if (write(go[1], "g", 1) != 1)
		check(0, "lane: resume the process");
	struct seccomp_notif n;
	for (int i = 0; i < 2; i++) {
		memset(&n, 0, sizeof n);
		r = poll(&pf, 1, 10000) == 1 ? ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &n) : -2;
		check(r == 0 && n.data.nr == SYS_getpgid, "with the lane gone, the call comes to the listener");
		if (r != 0 || n.data.nr != SYS_getpgid)
			printf("mosix-probe: lane: RECV gave %d, call %d\n", r, n.data.nr);
		struct seccomp_notif_resp a = {.id = n.id, .val = 77};
		check(r == 0 && ioctl(l, SECCOMP_IOCTL_NOTIF_SEND, &a) == 0, "lane: NOTIF_SEND 77");
	}
	check(read(p[0], got + 2, 2 * sizeof(long)) == 2 * sizeof(long), "lane: the process reports");
	check(got[0] == d, "getpgid on the lane ran in the deputy (its group)");
	check(got[1] == -ENOSYS, "a lane call the deputy does not allow -> ENOSYS");
	check(got[2] == 77 && got[3] == 77, "after the lane ended, calls went to the listener");
	if (got[0] != d || got[1] != -ENOSYS || got[2] != 77)
		printf("mosix-probe: lane results %ld %ld %ld %ld (deputy %d)\n", got[0], got[1], got[2], got[3], d);
	close(l);
	int st;
	check(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "lane: the process exits normally");
	/* No longer served, the deputy's marker is a real pause(). */
	check(sleeping(d), "lane: the deputy sleeps in pause() once no longer served");
	kill(d, SIGKILL);
	check(waitpid(d, &st, 0) == d && WIFSIGNALED(st), "lane: the deputy is killed");
	close(p[0]), close(p[1]), close(go[0]), close(go[1]), close(dgo[0]), close(dgo[1]);
}

/* MOSIX_IOC_SIGINFO (feature bit 4): the signals queued on a frozen child, its own queue then its
 * process's, with their siginfo; bounds and a process not frozen here are refused. */
static void siginfo(int fd) {
	volatile uint64_t *counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGRTMIN);
	sigaddset(&block, SIGUSR2);
	sigset_t old;
	sigprocmask(SIG_BLOCK, &block, &old); /* inherited by the child: its signals stay queued */
	pid_t c = counting_child(counter);
	sigprocmask(SIG_SETMASK, &old, NULL);
	check(runs(counter, 0), "siginfo: a counting child");
	struct mosix_target t = {.pid = c};
	check(ioctl(fd, MOSIX_IOC_FREEZE, &t) == 0, "siginfo: FREEZE");
	union sigval v1 = {.sival_int = 11}, v2 = {.sival_int = 22};
	sigqueue(c, SIGRTMIN, v1);
	sigqueue(c, SIGRTMIN, v2);
	syscall(SYS_tgkill, c, c, SIGUSR2);
	siginfo_t si[4];
	memset(si, 0, sizeof si);
	struct mosix_siginfo q = {.pid = c, .count = 4, .buf = (uintptr_t)si};
	int r = ioctl(fd, MOSIX_IOC_SIGINFO, &q);
	check(r == 0 && q.count == 3 && q.total == 3, "MOSIX_IOC_SIGINFO: three queued signals");
	check(si[0].si_signo == SIGUSR2 && si[0].si_code == SI_TKILL && si[0].si_pid == getpid(),
	      "the thread's own queue first: SIGUSR2 from tgkill, sender our pid");
	check(si[1].si_signo == SIGRTMIN && si[1].si_code == SI_QUEUE && si[1].si_value.sival_int == 11 &&
	      si[2].si_signo == SIGRTMIN && si[2].si_value.sival_int == 22, "then the process's: both SIGRTMIN with their values, in order");
	memset(si, 0, sizeof si);
	struct mosix_siginfo q2 = {.pid = c, .count = 1, .buf = (uintptr_t)si, .skip = 2};
	check(ioctl(fd, MOSIX_IOC_SIGINFO, &q2) == 0 && q2.count == 1 && q2.total == 3 && si[0].si_value.sival_int == 22,
	      "SIGINFO with skip 2, count 1: the last one");
	struct mosix_siginfo big = {.pid = c, .count = 65, .buf = (uintptr_t)si};
	check(expect_errno(fd, MOSIX_IOC_SIGINFO, &big, EINVAL), "SIGINFO with count 65 -> EINVAL");
	struct mosix_siginfo res = {.pid = c, .count = 1, .buf = (uintptr_t)si, .reserved = 1};
	check(expect_errno(fd, MOSIX_IOC_SIGINFO, &res, EINVAL), "SIGINFO with reserved != 0 -> EINVAL");
	struct mosix_siginfo other = {.pid = 1, .count = 1, .buf = (uintptr_t)si};
	check(expect_errno(fd, MOSIX_IOC_SIGINFO, &other, ESRCH), "SIGINFO of a process not frozen here -> ESRCH");
	struct mosix_siginfo badbuf = {.pid = c, .count = 1, .buf = 8};
	check(expect_errno(fd, MOSIX_IOC_SIGINFO, &badbuf, EFAULT), "SIGINFO into a bad buffer -> EFAULT");
	check(ioctl(fd, MOSIX_IOC_THAW, &t) == 0, "siginfo: THAW");
	check(expect_errno(fd, MOSIX_IOC_SIGINFO, &q, ESRCH), "SIGINFO after the thaw -> ESRCH");
	kill(c, SIGKILL);
	int st;
	waitpid(c, &st, 0);
	munmap((void *)counter, 4096);
}

static int pending_mode(void) {
	int fd = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return 1;
	int ready[2];
	if (pipe(ready))
		return 1;
	pid_t c = fork();
	if (c == 0) {
		/* Off the caller's pipes: $(mosix-probe --pending) must not wait for this child. */
		int dn = open("/dev/null", O_RDWR);
		dup2(dn, 0);
		dup2(dn, 1);
		dup2(dn, 2);
		setsid();
		close(ready[0]);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		close(ready[1]);
		for (;;)
			pause();
	}
	close(ready[1]);
	char r1;
	/* Stopped only once it has left the caller's pipes. */
	if (read(ready[0], &r1, 1) != 1)
		return 1;
	close(ready[0]);
	kill(c, SIGSTOP);
	int status;
	waitpid(c, &status, WUNTRACED);
	struct mosix_target quick = {.pid = c, .timeout_ms = 200};
	int r = ioctl(fd, MOSIX_IOC_FREEZE, &quick);
	int e = errno;
	close(fd);
	printf("%d\n", c);
	return !(r == -1 && e == ETIMEDOUT);
}

int main(int argc, char **argv) {
	if (argc > 1 && !strcmp(argv[1], "--pending"))
		return pending_mode();
	int fd = open("/dev/mosix", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("mosix-probe: cannot open /dev/mosix: %s\nMOSIX_PROBE_FAIL (no device)\n", strerror(errno));
		return 1;
	}
	struct mosix_version v;
	memset(&v, 0xff, sizeof v);
	int r = ioctl(fd, MOSIX_IOC_VERSION, &v);
	check(r == 0 && v.abi == MOSIX_ABI_VERSION, "MOSIX_IOC_VERSION answers ABI version 2");
	check(v.features == (MOSIX_FEATURE_FREEZE | MOSIX_FEATURE_CAPTURE | MOSIX_FEATURE_RESTORE | MOSIX_FEATURE_INTERCEPT | MOSIX_FEATURE_SIGINFO |
			     MOSIX_FEATURE_LANE),
	      "features: freeze, capture, restore, intercept, siginfo and lane");

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
	/* Restore requests the module refuses before touching the caller (which goes on). */
	struct mosix_restore rs = {.size = sizeof rs, .pages_fd = -1, .regs = {[17] = 0x33, [20] = 0x2b}};
	struct mosix_restore bad = rs;
	bad.size = 8;
	check(expect_errno(fd, MOSIX_IOC_RESTORE, &bad, EINVAL), "MOSIX_IOC_RESTORE with a wrong size -> EINVAL");
	bad = rs;
	bad.regs[17] = 0x23;
	check(expect_errno(fd, MOSIX_IOC_RESTORE, &bad, EINVAL), "MOSIX_IOC_RESTORE with a 32-bit code segment -> EINVAL");
	bad = rs;
	bad.n_areas = 1u << 20;
	check(expect_errno(fd, MOSIX_IOC_RESTORE, &bad, E2BIG), "MOSIX_IOC_RESTORE with a million areas -> E2BIG");
	struct mosix_area a = {.start = 0x10000, .end = 0x20000, .prot = 3, .kind = 0, .fd = -1};
	__u64 keep[2] = {0x18000, 0x19000};
	bad = rs;
	bad.n_areas = 1, bad.areas = (__u64)&a, bad.n_keep = 1, bad.keep = (__u64)keep;
	check(expect_errno(fd, MOSIX_IOC_RESTORE, &bad, EINVAL), "MOSIX_IOC_RESTORE with an area over a kept range -> EINVAL");
	struct mosix_run run = {.addr = 0x30000, .len = 4096, .off = 0};
	bad = rs;
	bad.n_areas = 1, bad.areas = (__u64)&a, bad.n_runs = 1, bad.runs = (__u64)&run;
	check(expect_errno(fd, MOSIX_IOC_RESTORE, &bad, EINVAL), "MOSIX_IOC_RESTORE with pages outside the map -> EINVAL");
	bad = rs;
	bad.n_areas = 1, bad.areas = 8;
	check(expect_errno(fd, MOSIX_IOC_RESTORE, &bad, EFAULT), "MOSIX_IOC_RESTORE with a bad area pointer -> EFAULT");
	native_engine(fd);
	same_as_ptrace(fd);
	intercept(fd);
	intercept_withdrawn();
	freeze_behind_park(fd);
	intercept_traced();
	lane();
	siginfo(fd);
	close(fd);
	if (failures) {
		printf("MOSIX_PROBE_FAIL (%d failures)\n", failures);
		return 1;
	}
	printf("MOSIX_PROBE_OK abi=%u features=%#x\n", v.abi, v.features);
	return 0;
}
