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

/* Whether @child's real parent is a thread of @parent's process now. */
int mosix_shim_is_parent(struct task_struct *child, struct task_struct *parent)
{
	int r;

	rcu_read_lock();
	r = same_thread_group(rcu_dereference(child->real_parent), parent);
	rcu_read_unlock();
	return r;
}

/* The task_work of a freeze: freeze.rs's mosix_park(), then the module reference taken when it
 * was queued is dropped, as a tail call, so that no instruction of the module runs after it. */
static void mosix_shim_work(struct callback_head *work)
{
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
