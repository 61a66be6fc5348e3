// SPDX-License-Identifier: GPL-2.0
/*
 * The C half of mosix.ko: only what 6.12's Rust bindings cannot express. <linux/miscdevice.h> is
 * not in kernel::bindings (and 6.12 has no kernel::miscdevice), so the miscdevice lives here,
 * where its layout is the compiler's business, not a hand-mirrored Rust struct's.
 */
#include <linux/fs.h>
#include <linux/module.h>
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

/*
 * The native engine's calls into C that 6.12's Rust bindings lack: task_work and the user regsets
 * are not in kernel::bindings; init_task_work, rcu_dereference and the
 * wait_event_*() family are inlines and macros. Each is a thin wrapper; the logic is in freeze.rs.
 */
#include <asm/fpu/api.h>
#include <linux/regset.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/task_work.h>
#include <linux/wait.h>

/* One wait queue for every frozen-process state change of the module (rare events): waiters
 * recheck their own state word. */
static DECLARE_WAIT_QUEUE_HEAD(mosix_wq);

int mosix_shim_is_parent(struct task_struct *child, struct task_struct *parent);
int mosix_shim_task_work_add(struct task_struct *t, struct callback_head *work);
void mosix_park(struct callback_head *work); /* freeze.rs */
int mosix_shim_park(u32 *state, u32 while_is);
long mosix_shim_wait_change(u32 *state, u32 while_is, unsigned int timeout_ms);
void mosix_shim_wake(void);
void mosix_shim_save_user_fpu(void);
int mosix_shim_regset(struct task_struct *t, unsigned int note_type, void *buf, unsigned int size);
long mosix_shim_peek_siginfo(struct task_struct *t, unsigned long skip, void *out, unsigned int max,
			     unsigned int slot, unsigned int *written);

/* Whether @child's real parent is a thread of @parent's process now. */
int mosix_shim_is_parent(struct task_struct *child, struct task_struct *parent)
{
	int r;

	rcu_read_lock();
	r = same_thread_group(rcu_dereference(child->real_parent), parent);
	rcu_read_unlock();
	return r;
}

static bool mosix_icpt_parking(void);

/* The task_work of a freeze: freeze.rs's mosix_park(), then the module reference taken when it
 * was queued is dropped, as a tail call, so that no instruction of the module runs after it. */
static void mosix_shim_work(struct callback_head *work)
{
	/* Task works run newest first: a freeze queued between the probe and the park of the call it
	 * skipped would run first and freeze the task with that call neither made nor withdrawn. It
	 * goes behind the park instead, queued again with TWA_SIGNAL, which also ends the park's
	 * interruptible wait for a call not yet received (the call is withdrawn, to be restarted):
	 * task_work_run() takes works queued meanwhile when its batch is done. The module reference
	 * stays with the queued work. */
	if (mosix_icpt_parking() && !task_work_add(current, work, TWA_SIGNAL))
		return;
	mosix_park(work);
	module_put(THIS_MODULE);
}

/* Queues mosix_park(@work) to run in @t's own context before it next returns to user mode,
 * kicking it out of an interruptible wait or system call as a signal would (TWA_SIGNAL). A queued
 * work holds a reference to the module (it cannot be unloaded while a task may still call into
 * it). -ESRCH if @t is exiting. */
int mosix_shim_task_work_add(struct task_struct *t, struct callback_head *work)
{
	int r;

	if (!try_module_get(THIS_MODULE))
		return -ENODEV;
	init_task_work(work, mosix_shim_work);
	r = task_work_add(t, work, TWA_SIGNAL);
	if (r)
		module_put(THIS_MODULE);
	return r;
}

/* Sleeps (killable only: no other signal ends it) while *@state == @while_is. 0, or -ERESTARTSYS
 * when the task was killed. */
int mosix_shim_park(u32 *state, u32 while_is)
{
	return wait_event_killable(mosix_wq, READ_ONCE(*state) != while_is);
}

/* Sleeps (interruptibly) while *@state == @while_is, at most @timeout_ms: > 0 when it changed,
 * 0 on timeout, -ERESTARTSYS when a signal came. */
long mosix_shim_wait_change(u32 *state, u32 while_is, unsigned int timeout_ms)
{
	return wait_event_interruptible_timeout(mosix_wq, READ_ONCE(*state) != while_is, msecs_to_jiffies(timeout_ms));
}

void mosix_shim_wake(void)
{
	wake_up_all(&mosix_wq);
}

/* Copies up to @size bytes of @t's user regset @note_type (NT_PRSTATUS, NT_X86_XSTATE...) into
 * the kernel buffer @buf, as PTRACE_GETREGSET would: @t must be stopped or parked (not running).
 * Returns the bytes copied or -errno. */
/*
 * Copies the siginfo of @t's queued signals, its own queue then its process's (the order of
 * PTRACE_PEEKSIGINFO without and with PTRACE_PEEKSIGINFO_SHARED), skipping the first @skip, into
 * @out: room for @max, each in a zeroed @slot-byte slot (a kernel buffer: the copy is made under
 * the signal lock). Returns how many are queued in all (-ESRCH: the task is gone); *@written
 * says how many were copied. The lock is taken as __lock_task_sighand (not exported) does.
 */
long mosix_shim_peek_siginfo(struct task_struct *t, unsigned long skip, void *out, unsigned int max,
			     unsigned int slot, unsigned int *written)
{
	struct sighand_struct *sighand;
	struct sigpending *lists[2];
	struct sigqueue *q;
	unsigned long flags, i = 0;
	unsigned int n = 0;
	int k;

	*written = 0;
	if (slot < sizeof(kernel_siginfo_t))
		return -EINVAL;
	rcu_read_lock();
	for (;;) {
		sighand = rcu_dereference(t->sighand);
		if (!sighand) {
			rcu_read_unlock();
			return -ESRCH;
		}
		spin_lock_irqsave(&sighand->siglock, flags);
		if (likely(sighand == rcu_access_pointer(t->sighand)))
			break;
		spin_unlock_irqrestore(&sighand->siglock, flags);
	}
	rcu_read_unlock();
	lists[0] = &t->pending;
	lists[1] = &t->signal->shared_pending;
	for (k = 0; k < 2; k++) {
		list_for_each_entry(q, &lists[k]->list, list) {
			if (i >= skip && n < max) {
				memcpy((char *)out + (size_t)n * slot, &q->info, sizeof(q->info));
				n++;
			}
			i++;
		}
	}
	spin_unlock_irqrestore(&sighand->siglock, flags);
	*written = n;
	return i;
}

int mosix_shim_regset(struct task_struct *t, unsigned int note_type, void *buf, unsigned int size)
{
	const struct user_regset_view *view = task_user_regset_view(t);
	unsigned int i;

	for (i = 0; i < view->n; i++) {
		const struct user_regset *rs = &view->regsets[i];

		if (rs->core_note_type != note_type)
			continue;
		return regset_get(t, rs, size, buf);
	}
	return -EINVAL;
}

/* Saves the calling task's live user FPU registers to its fpstate (kernel_fpu_begin does that and
 * marks them to be reloaded on return to user mode). */
void mosix_shim_save_user_fpu(void)
{
	kernel_fpu_begin();
	kernel_fpu_end();
}

/*
 * The native engine's restore (restore.rs): thin wrappers over what the calling task may do to
 * itself. vm_mmap needs a struct file (fget/fput); pt_regs, rseq fields, TASK_SIZE_MAX and
 * sigset_t are reached only through macros and inlines.
 */
#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/mm.h>
#include <linux/rseq.h>
#include <linux/sched/task_stack.h>
#include <asm/ptrace.h>

int mosix_shim_current_tgid(void);
unsigned long mosix_shim_user_top(void);
long mosix_shim_mmap(unsigned long addr, unsigned long len, unsigned long prot, unsigned long flags, int fd, unsigned long off);
long mosix_shim_pread(int fd, void *buf, size_t len, u64 pos);
int mosix_shim_poke(unsigned long addr, void *buf, int len);
void mosix_shim_set_rseq(u64 ptr, u32 len, u32 sig);
void mosix_shim_set_blocked(u64 mask);
void mosix_shim_set_user_regs(const u64 *w);
void mosix_shim_close_fd(unsigned int fd);

void mosix_shim_close_fd(unsigned int fd)
{
	close_fd(fd);
}

int mosix_shim_current_tgid(void)
{
	return task_tgid_vnr(current);
}

unsigned long mosix_shim_user_top(void)
{
	return TASK_SIZE_MAX;
}

/* vm_mmap() in the calling task, of its descriptor @fd (anonymous when @fd < 0). */
long mosix_shim_mmap(unsigned long addr, unsigned long len, unsigned long prot, unsigned long flags, int fd, unsigned long off)
{
	struct file *f = NULL;
	unsigned long r;

	if (fd >= 0) {
		f = fget(fd);
		if (!f)
			return -EBADF;
	}
	r = vm_mmap(f, addr, len, prot, flags, off);
	if (f)
		fput(f);
	return (long)r;
}

/* kernel_read() of @len bytes at @pos of the calling task's descriptor @fd into @buf. */
long mosix_shim_pread(int fd, void *buf, size_t len, u64 pos)
{
	struct file *f = fget(fd);
	loff_t p = pos;
	ssize_t r;

	if (!f)
		return -EBADF;
	r = kernel_read(f, buf, len, &p);
	fput(f);
	return r;
}

/* Writes @len bytes of @buf at @addr of the calling task through page protections. */
int mosix_shim_poke(unsigned long addr, void *buf, int len)
{
	return access_process_vm(current, addr, buf, len, FOLL_FORCE | FOLL_WRITE);
}

/* The rseq system call's registration, without its checks of the area (the caller's). */
void mosix_shim_set_rseq(u64 ptr, u32 len, u32 sig)
{
#ifdef CONFIG_RSEQ
	current->rseq = (struct rseq __user *)ptr;
	current->rseq_len = len;
	current->rseq_sig = sig;
	rseq_set_notify_resume(current);
#endif
}

void mosix_shim_set_blocked(u64 mask)
{
	sigset_t set;

	sigemptyset(&set);
	set.sig[0] = mask & ~(sigmask(SIGKILL) | sigmask(SIGSTOP));
	sigprocmask(SIG_SETMASK, &set, NULL);
}

/* The general registers of a struct user_regs_struct @w (27 words) become the calling task's
 * user registers on its return from this system call; only the user-settable flags are taken
 * (as ptrace's putreg does); cs, ss, the segment selectors and the FS/GS bases stay. */
void mosix_shim_set_user_regs(const u64 *w)
{
	struct pt_regs *regs = task_pt_regs(current);
	const unsigned long user_flags = X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF | X86_EFLAGS_ZF |
		X86_EFLAGS_SF | X86_EFLAGS_DF | X86_EFLAGS_OF | X86_EFLAGS_RF | X86_EFLAGS_AC | X86_EFLAGS_NT;

	regs->r15 = w[0];
	regs->r14 = w[1];
	regs->r13 = w[2];
	regs->r12 = w[3];
	regs->bp = w[4];
	regs->bx = w[5];
	regs->r11 = w[6];
	regs->r10 = w[7];
	regs->r9 = w[8];
	regs->r8 = w[9];
	regs->ax = w[10];
	regs->cx = w[11];
	regs->dx = w[12];
	regs->si = w[13];
	regs->di = w[14];
	regs->orig_ax = w[15];
	regs->ip = w[16];
	regs->flags = (regs->flags & ~user_flags) | (w[18] & user_flags);
	regs->sp = w[19];
}

/*
 * The native engine's interception (intercept.rs): a probe on the sys_enter tracepoint, a table
 * of intercepted tasks, the task_work that parks an intercepted call, poll. The tracepoint is
 * found by name (for_each_kernel_tracepoint); the probe is registered while the table has an
 * entry (and a few seconds after, see MOSIX_PROBE_LINGER), so that no other task pays for it.
 */
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/tracepoint.h>
#include <linux/workqueue.h>

#define MOSIX_MAX_ICPT 64

int mosix_shim_task_work_add_resume(struct callback_head *work, int kind);
void mosix_shim_set_return(long v);
void mosix_shim_restart_call(long nr);
void mosix_shim_interrupted_call(long nr);
int mosix_shim_park_interruptible(u32 *state, u32 while_is);
int mosix_shim_intercept_add(struct task_struct *t, const void *l, int kind);
bool mosix_shim_intercept_remove(const void *l);
void mosix_shim_intercept_exit(void);
void mosix_shim_poll_wait(struct file *file, struct poll_table_struct *wait);
int mosix_shim_can_intercept(void);
bool mosix_intercept_enter(const void *l, long nr, const u64 *args, u64 ip); /* intercept.rs */
void mosix_icpt_park(struct callback_head *work);                          /* intercept.rs */
bool mosix_deputy_enter(const void *d, long nr, u64 ip);                     /* deputy.rs */
void mosix_dep_park(struct callback_head *work);                             /* deputy.rs */

/* Kinds of table entries: an intercepted remote process (intercept.rs), or a deputy at home
 * served by the module (deputy.rs). */
#define MOSIX_KIND_LISTENER 0
#define MOSIX_KIND_DEPUTY 1

int mosix_shim_can_intercept(void)
{
	return IS_ENABLED(CONFIG_TRACEPOINTS);
}

#ifdef CONFIG_TRACEPOINTS
static DEFINE_SPINLOCK(mosix_icpt_lock);
static struct {
	struct task_struct *task;
	const void *l;
	int kind;
	/* A listener's park is queued and has not ended (see mosix_shim_work). */
	bool parking;
} mosix_icpt[MOSIX_MAX_ICPT];
static int mosix_icpt_n;
static DEFINE_MUTEX(mosix_icpt_reg);
static struct tracepoint *mosix_tp_sys_enter;
static bool mosix_probe_on;

/* Under mosix_icpt_lock: the index of the calling task's entry (its first, the one the probe
 * serves), or -1. */
static int mosix_icpt_slot(void)
{
	int i;

	for (i = 0; i < MOSIX_MAX_ICPT; i++)
		if (mosix_icpt[i].task == current)
			return i;
	return -1;
}

static void mosix_probe(void *data, struct pt_regs *regs, long id)
{
	const void *l = NULL;
	unsigned long flags;
	int i, kind = 0;

	if (!READ_ONCE(mosix_icpt_n))
		return;
	/* Every task's calls pass here while anything is intercepted: a look without the lock first
	 * (only the current task's own entry can match, and it is rechecked under the lock). */
	for (i = 0; i < MOSIX_MAX_ICPT; i++)
		if (READ_ONCE(mosix_icpt[i].task) == current)
			break;
	if (i == MOSIX_MAX_ICPT)
		return;
	spin_lock_irqsave(&mosix_icpt_lock, flags);
	i = mosix_icpt_slot();
	if (i >= 0) {
		l = mosix_icpt[i].l;
		kind = mosix_icpt[i].kind;
	}
	if (l && kind == MOSIX_KIND_DEPUTY) {
		if (mosix_deputy_enter(l, id, regs->ip))
			regs->orig_ax = -1;
	} else if (l) {
		u64 args[6] = { regs->di, regs->si, regs->dx, regs->r10, regs->r8, regs->r9 };

		/* Skipped: the entry code re-reads the number after the tracepoint and runs nothing
		 * for -1; rax keeps -ENOSYS until the answer replaces it. */
		if (mosix_intercept_enter(l, id, args, regs->ip)) {
			regs->orig_ax = -1;
			mosix_icpt[i].parking = true;
		}
	}
	spin_unlock_irqrestore(&mosix_icpt_lock, flags);
}

/* Whether the calling task has an intercepted call whose park is queued or running. */
static bool mosix_icpt_parking(void)
{
	unsigned long flags;
	bool r;
	int i;

	spin_lock_irqsave(&mosix_icpt_lock, flags);
	i = mosix_icpt_slot();
	r = i >= 0 && mosix_icpt[i].kind == MOSIX_KIND_LISTENER && mosix_icpt[i].parking;
	spin_unlock_irqrestore(&mosix_icpt_lock, flags);
	return r;
}

/* The calling task's park has ended. */
static void mosix_icpt_parked(void)
{
	unsigned long flags;
	int i;

	spin_lock_irqsave(&mosix_icpt_lock, flags);
	i = mosix_icpt_slot();
	if (i >= 0)
		mosix_icpt[i].parking = false;
	spin_unlock_irqrestore(&mosix_icpt_lock, flags);
}

/* The probe is unregistered a while after the table empties, not at once: unregistering waits
 * for grace periods (tracepoint_synchronize_unregister) and patches the kernel's text, which took
 * tens of milliseconds under TCG, and a table empties when a process goes home, while it is frozen
 * (it is registered again at once for its next stay). Until then a task that is not in the table
 * pays one look at the table per call. */
#define MOSIX_PROBE_LINGER (5 * HZ)

static void mosix_probe_off_fn(struct work_struct *w)
{
	mutex_lock(&mosix_icpt_reg);
	if (mosix_probe_on && !READ_ONCE(mosix_icpt_n)) {
		tracepoint_probe_unregister(mosix_tp_sys_enter, mosix_probe, NULL);
		tracepoint_synchronize_unregister();
		mosix_probe_on = false;
	}
	mutex_unlock(&mosix_icpt_reg);
}

static DECLARE_DELAYED_WORK(mosix_probe_off, mosix_probe_off_fn);

/* Under mosix_icpt_reg: an empty table turns the probe off later. */
static void mosix_probe_idle(void)
{
	if (mosix_probe_on && !READ_ONCE(mosix_icpt_n))
		mod_delayed_work(system_wq, &mosix_probe_off, MOSIX_PROBE_LINGER);
}

static void mosix_find_sys_enter(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, "sys_enter"))
		mosix_tp_sys_enter = tp;
}

int mosix_shim_intercept_add(struct task_struct *t, const void *l, int kind)
{
	unsigned long flags;
	int i, r = 0;

	mutex_lock(&mosix_icpt_reg);
	if (!mosix_probe_on) {
		if (!mosix_tp_sys_enter)
			for_each_kernel_tracepoint(mosix_find_sys_enter, NULL);
		if (!mosix_tp_sys_enter) {
			r = -ENOSYS;
			goto out;
		}
		r = tracepoint_probe_register(mosix_tp_sys_enter, mosix_probe, NULL);
		if (r)
			goto out;
		mosix_probe_on = true;
	}
	spin_lock_irqsave(&mosix_icpt_lock, flags);
	for (i = 0; i < MOSIX_MAX_ICPT; i++) {
		if (!mosix_icpt[i].task) {
			mosix_icpt[i].l = l;
			mosix_icpt[i].kind = kind;
			mosix_icpt[i].parking = false;
			WRITE_ONCE(mosix_icpt[i].task, t);
			WRITE_ONCE(mosix_icpt_n, mosix_icpt_n + 1);
			break;
		}
	}
	spin_unlock_irqrestore(&mosix_icpt_lock, flags);
	if (i == MOSIX_MAX_ICPT)
		r = -EBUSY;
out:
	if (r)
		mosix_probe_idle();
	mutex_unlock(&mosix_icpt_reg);
	return r;
}

bool mosix_shim_intercept_remove(const void *l)
{
	unsigned long flags;
	bool found = false;
	int i;

	mutex_lock(&mosix_icpt_reg);
	spin_lock_irqsave(&mosix_icpt_lock, flags);
	for (i = 0; i < MOSIX_MAX_ICPT; i++) {
		if (mosix_icpt[i].l == l) {
			WRITE_ONCE(mosix_icpt[i].task, NULL);
			mosix_icpt[i].l = NULL;
			WRITE_ONCE(mosix_icpt_n, mosix_icpt_n - 1);
			found = true;
		}
	}
	spin_unlock_irqrestore(&mosix_icpt_lock, flags);
	/* A probe that found the entry held the lock: none uses @l any more. */
	mosix_probe_idle();
	mutex_unlock(&mosix_icpt_reg);
	return found;
}

void mosix_shim_intercept_exit(void)
{
	cancel_delayed_work_sync(&mosix_probe_off);
	mosix_probe_off_fn(NULL);
}
#else
/* A kernel without tracepoints: no interception (the feature bit says so). */
int mosix_shim_intercept_add(struct task_struct *t, const void *l, int kind)
{
	return -ENOSYS;
}

bool mosix_shim_intercept_remove(const void *l)
{
	return false;
}

void mosix_shim_intercept_exit(void)
{
}

static bool mosix_icpt_parking(void)
{
	return false;
}

static void mosix_icpt_parked(void)
{
}
#endif

/* The task_work of an intercepted call: intercept.rs's mosix_icpt_park(), then the module
 * reference taken when it was queued is dropped (tail call, as for a freeze). */
static void mosix_shim_icpt_work(struct callback_head *work)
{
	mosix_icpt_park(work);
	mosix_icpt_parked();
	module_put(THIS_MODULE);
}

/* The task_work of a deputy's marker call: deputy.rs's mosix_dep_park(), then the module
 * reference is dropped (tail call). */
static void mosix_shim_dep_work(struct callback_head *work)
{
	mosix_dep_park(work);
	module_put(THIS_MODULE);
}

int mosix_shim_task_work_add_resume(struct callback_head *work, int kind)
{
	int r;

	if (!try_module_get(THIS_MODULE))
		return -ENODEV;
	init_task_work(work, kind == MOSIX_KIND_DEPUTY ? mosix_shim_dep_work : mosix_shim_icpt_work);
	/* TWA_SIGNAL, not TWA_RESUME: get_signal() runs task works before it dequeues a signal, so
	 * the call is answered (or withdrawn) before a signal that came meanwhile is delivered, and
	 * the handler's frame saves the call's result, not -ENOSYS. */
	r = task_work_add(current, work, TWA_SIGNAL);
	if (r)
		module_put(THIS_MODULE);
	return r;
}

void mosix_shim_set_return(long v)
{
	task_pt_regs(current)->ax = v;
}

void mosix_shim_interrupted_call(long nr)
{
	struct pt_regs *regs = task_pt_regs(current);

	regs->orig_ax = nr;
	regs->ax = -ERESTARTSYS;
}

int mosix_shim_park_interruptible(u32 *state, u32 while_is)
{
	/* At a ptrace stop, ptrace_notify() runs task works with TIF_NOTIFY_SIGNAL still set (get_signal()
	 * clears it first), which would end this wait at once: a process traced with PTRACE_SYSCALL
	 * would have its call withdrawn at every exit stop and made again forever. With no task work
	 * queued and no signal pending the flag announces nothing: it is cleared as get_signal() does,
	 * and set again if a work (a freeze) was queued meanwhile (task_work_add() queues, then sets
	 * it; clear_notify_signal() orders the clearing before the look). */
	if (test_thread_flag(TIF_NOTIFY_SIGNAL) && !task_sigpending(current) && !task_work_pending(current)) {
		clear_notify_signal();
		if (task_work_pending(current))
			set_thread_flag(TIF_NOTIFY_SIGNAL);
	}
	return wait_event_interruptible(mosix_wq, READ_ONCE(*state) != while_is);
}

void mosix_shim_restart_call(long nr)
{
	struct pt_regs *regs = task_pt_regs(current);

	regs->ax = nr;
	regs->ip -= 2;
}

void mosix_shim_poll_wait(struct file *file, struct poll_table_struct *wait)
{
	poll_wait(file, &mosix_wq, wait);
}

/*
 * The kernel lane (intercept.rs, deputy.rs): a stream socket between a remote process's module
 * and its deputy's module, which carries register-only calls and their results without either
 * daemon. The module holds a file reference on the socket; it sends and receives only without
 * blocking, and waits with mosix_shim_sock_wait().
 */
#include <linux/net.h>
#include <net/sock.h>

void *mosix_shim_sock_get(int fd, int *err);
void mosix_shim_sock_put(void *sock);
long mosix_shim_sock_send(void *sock, const void *buf, size_t len);
long mosix_shim_sock_recv(void *sock, void *buf, size_t len);
void mosix_shim_sock_shutdown(void *sock);
int mosix_shim_sock_wait(void *sock, u32 *state, u32 while_is, int killable);
void mosix_shim_set_call(long nr, const u64 *args);
u64 mosix_shim_arg0(void);

/* The caller's descriptor @fd as a stream socket, with a file reference (NULL and *@err set:
 * -EBADF, -ENOTSOCK, or -EINVAL for a socket that is not a stream). */
void *mosix_shim_sock_get(int fd, int *err)
{
	struct socket *sock = sockfd_lookup(fd, err);

	if (!sock)
		return NULL;
	if (sock->type != SOCK_STREAM) {
		sockfd_put(sock);
		*err = -EINVAL;
		return NULL;
	}
	return sock;
}

void mosix_shim_sock_put(void *sock)
{
	struct socket *s = sock;

	sockfd_put(s);
}

/* Sends @len bytes without blocking: the bytes sent (all, or fewer when the socket's buffer is
 * full) or -errno. */
long mosix_shim_sock_send(void *sock, const void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct kvec v = { .iov_base = (void *)buf, .iov_len = len };

	return kernel_sendmsg(sock, &msg, &v, 1, len);
}

/* Receives at most @len bytes without blocking: the bytes received, 0 at the end of the stream,
 * -EAGAIN when none are there, or -errno. */
long mosix_shim_sock_recv(void *sock, void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
	struct kvec v = { .iov_base = buf, .iov_len = len };

	return kernel_recvmsg(sock, &msg, &v, 1, len, MSG_DONTWAIT);
}

/* Ends both directions: a task waiting on the socket wakes and reads its end. */
void mosix_shim_sock_shutdown(void *sock)
{
	kernel_sock_shutdown(sock, SHUT_RDWR);
}

/*
 * Sleeps until @sock (if not NULL) is readable or at its end or in error, or *@state (if not
 * NULL) no longer holds @while_is (a change announced by mosix_shim_wake()). Killable only, or
 * interruptible by any signal: 0, or -ERESTARTSYS when a (fatal) signal ended the wait.
 */
/* Socket callbacks wake only interruptible sleepers (wake_up_interruptible*): this entry wakes
 * its task in a killable sleep too. */
static int mosix_wake_any(struct wait_queue_entry *w, unsigned int mode, int flags, void *key)
{
	return default_wake_function(w, TASK_NORMAL, flags, key);
}

int mosix_shim_sock_wait(void *s, u32 *state, u32 while_is, int killable)
{
	struct socket *sock = s;
	struct wait_queue_entry ws, wm;
	int r = 0;

	init_waitqueue_entry(&wm, current);
	add_wait_queue(&mosix_wq, &wm);
	if (sock) {
		init_waitqueue_func_entry(&ws, mosix_wake_any);
		ws.private = current;
		add_wait_queue(&sock->wq.wait, &ws);
	}
	for (;;) {
		set_current_state(killable ? TASK_KILLABLE : TASK_INTERRUPTIBLE);
		if (state && READ_ONCE(*state) != while_is)
			break;
		if (sock && (vfs_poll(sock->file, NULL) & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
			break;
		if (killable ? fatal_signal_pending(current) : signal_pending(current)) {
			r = -ERESTARTSYS;
			break;
		}
		schedule();
	}
	__set_current_state(TASK_RUNNING);
	if (sock)
		remove_wait_queue(&sock->wq.wait, &ws);
	remove_wait_queue(&mosix_wq, &wm);
	return r;
}

/* On its return to user mode the calling task makes system call @nr with @args (six words):
 * its `syscall` instruction is executed again with these registers. */
void mosix_shim_set_call(long nr, const u64 *args)
{
	struct pt_regs *regs = task_pt_regs(current);

	regs->di = args[0];
	regs->si = args[1];
	regs->dx = args[2];
	regs->r10 = args[3];
	regs->r8 = args[4];
	regs->r9 = args[5];
	regs->ax = nr;
	regs->ip -= 2;
}

/* The calling task's first argument register (rdi) as it made its current system call. */
u64 mosix_shim_arg0(void)
{
	return task_pt_regs(current)->di;
}
