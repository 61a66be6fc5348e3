/* zdtm CASE ROOT
 *
 * CRIU-ZDTM-style behaviours for the migration suite (tests/tests/zdtm.rs): one case per
 * behaviour, chosen by CASE. ROOT must hold two empty directories, `work` (the case's scratch
 * space) and `ctl` (where the test opens the gates).
 *
 * Every case runs the same protocol:
 *   before()    at home: sets up state (files, fds, children, handlers, limits ...);
 *   "gate 1"    printed, then the case waits until ROOT/ctl/go1 exists: the test migrates the
 *               process to another node meanwhile;
 *   phase(1)    the behaviour, on the other node; "[1] phase done";
 *   "gate 2"    waits for ROOT/ctl/go2: the test brings the process home meanwhile;
 *   phase(2)    the behaviour again, at home; "[2] phase done";
 *   finish()    its return value is the exit status.
 * Output lines start with the phase ([0] before, [1] away, [2] home) and are deterministic: no
 * pids, fd numbers that depend on the parent, inode numbers, times or absolute paths (the
 * scratch directory prints as $W), so the output under MOS must equal a run without MOS.
 * The test runs ROOT on a directory hidden on the remote node: a call wrongly executed there
 * fails.
 */
#define _GNU_SOURCE
#include "common.h"
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>
#include <stddef.h>

extern char **environ;

static const char *ROOT;
static char W[2048], CTL[2048];
static int PH;
static char **ARGV;
static unsigned char *STACKBUF; /* 64 KiB in main's frame (memory case) */
#define STACKBUF_SIZE 65536

/* ------------------------------------------------------------------------------------------ */
/* Output helpers */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    va_list ap;
    printf("[%d] ", PH);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* Prints `label = r`, with the errno text when r < 0; returns r. */
static long show(const char *label, long r) {
    int e = errno;
    if (r < 0)
        say("%s = %ld (%s)\n", label, r, strerror(e));
    else
        say("%s = %ld\n", label, r);
    errno = e;
    return r;
}
#define SHOW(e) show(#e, (long)(e))

static void die(const char *what) {
    fprintf(stderr, "zdtm: %s: %s\n", what, strerror(errno));
    fflush(stdout);
    exit(97);
}

/* W/name (8 rotating buffers). */
static const char *wp(const char *name) {
    static char bufs[8][4096];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, 4096, "%s/%s", W, name);
    return b;
}

/* A path with the scratch directory shown as $W. */
static const char *rel(const char *p) {
    static char b[4096];
    size_t n = strlen(W);
    if (p && strncmp(p, W, n) == 0 && (p[n] == 0 || p[n] == '/'))
        snprintf(b, sizeof b, "$W%s", p + n);
    else
        snprintf(b, sizeof b, "%s", p ? p : "(null)");
    return b;
}

static uint64_t fnv(const void *p, size_t n) {
    const unsigned char *c = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ull;
    return h;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Waits until *flag >= want (set by a signal handler), at most 20 s; says whether it happened. */
static int wait_flag(volatile sig_atomic_t *flag, int want) {
    for (int i = 0; i < 20000 && *flag < want; i++) sleep_ms(1);
    return *flag >= want;
}

/* Writes all of buf (looping over short writes). */
static ssize_t write_all(int fd, const void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, (const char *)buf + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        done += (size_t)w;
    }
    return (ssize_t)done;
}

/* Reads exactly n bytes unless EOF or error comes first. */
static ssize_t read_full(int fd, void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = read(fd, (char *)buf + done, n - done);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* Reads one line (without the newline) byte by byte; returns its length, -1 at EOF/error. */
static ssize_t read_line(int fd, char *buf, size_t cap) {
    size_t n = 0;
    while (n + 1 < cap) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return n ? (ssize_t)n : -1;
        if (c == '\n') break;
        buf[n++] = c;
    }
    buf[n] = 0;
    return (ssize_t)n;
}

static void put_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write_all(fd, text, strlen(text)) < 0 || close(fd) != 0) die(path);
}

/* Prints the contents of a (small) file, one output line per line of the file. */
static void show_file(const char *label, const char *path) {
    char buf[8192];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        say("%s: open failed (%s)\n", label, strerror(errno));
        return;
    }
    ssize_t n = read_full(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    say("%s: %zd bytes\n", label, n);
    for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) say("  | %s\n", l);
}

/* The gate signal, blocked from the start: the test sends it once the process has moved. Waiting
 * for it is a local call, so no forwarded call is in flight while the test moves the process. */
#define GATE_SIGNAL SIGWINCH
static void block_gate_signal(void) {
    sigset_t w;
    sigemptyset(&w);
    sigaddset(&w, GATE_SIGNAL);
    if (sigprocmask(SIG_BLOCK, &w, NULL) != 0) die("sigprocmask");
}
static void gate(int n) {
    sigset_t w;
    sigemptyset(&w);
    sigaddset(&w, GATE_SIGNAL);
    printf("gate %d\n", n);
    fflush(stdout);
    struct timespec t = {300, 0};
    for (;;) {
        int s = sigtimedwait(&w, NULL, &t);
        if (s == GATE_SIGNAL) return;
        if (s < 0 && errno == EINTR) continue; /* a handler ran (the interval timer's) */
        fprintf(stderr, "zdtm: gate %d never opened: %s\n", n, strerror(errno));
        exit(98);
    }
}

/* Forks a helper child that runs fn(arg) and exits with its result. */
static pid_t spawn(int (*fn)(long), long arg) {
    fflush(stdout);
    fflush(stderr);
    pid_t p = fork();
    if (p < 0) die("fork");
    if (p == 0) _exit(fn(arg));
    return p;
}

static void show_wait(const char *label, pid_t child, int flags) {
    int st = 0;
    pid_t w = waitpid(child, &st, flags);
    if (w < 0)
        say("%s: waitpid failed (%s)\n", label, strerror(errno));
    else if (w == 0)
        say("%s: still running\n", label);
    else if (WIFEXITED(st))
        say("%s: right pid %d, exit %d\n", label, w == child, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        say("%s: right pid %d, signal %d\n", label, w == child, WTERMSIG(st));
    else
        say("%s: right pid %d, status %#x\n", label, w == child, st);
}

/* ------------------------------------------------------------------------------------------ */
/* Files */

static int rw_fd;
static void file_rw_before(void) {
    rw_fd = open(wp("a.txt"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (rw_fd < 0) die("open a.txt");
    SHOW(write(rw_fd, "opened before\n", 14));
}
static void file_rw_phase(int n) {
    char name[64], buf[8192];
    snprintf(buf, sizeof buf, "phase %d through the fd opened before\n", n);
    SHOW(write(rw_fd, buf, strlen(buf)));
    snprintf(name, sizeof name, "p%d.txt", n);
    int fd = SHOW(open(wp(name), O_WRONLY | O_CREAT | O_EXCL, 0644));
    for (int i = 0; i < 50; i++) dprintf(fd, "phase %d line %d\n", n, i);
    SHOW(close(fd));
    SHOW(open(wp(name), O_WRONLY | O_CREAT | O_EXCL, 0644));
    fd = SHOW(open(wp(name), O_RDONLY));
    ssize_t r = read_full(fd, buf, sizeof buf);
    say("read back %zd bytes, fnv %016llx\n", r, (unsigned long long)fnv(buf, r > 0 ? (size_t)r : 0));
    SHOW(read(fd, buf, sizeof buf));
    SHOW(close(fd));
    SHOW(read(fd, buf, 1));
    r = pread(rw_fd, buf, sizeof buf - 1, 0);
    buf[r > 0 ? r : 0] = 0;
    say("pread of a.txt: %zd bytes\n%s", r, buf);
    SHOW(open(wp("no-such-file"), O_RDONLY));
}
static int file_rw_finish(void) {
    SHOW(close(rw_fd));
    show_file("a.txt", wp("a.txt"));
    return 0;
}

static int app_fd;
static void append_before(void) {
    app_fd = open(wp("log"), O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
    if (app_fd < 0) die("open log");
    SHOW(write(app_fd, "line before\n", 12));
}
static void append_phase(int n) {
    char buf[64];
    struct stat st;
    SHOW(lseek(app_fd, 0, SEEK_SET));
    snprintf(buf, sizeof buf, "line of phase %d\n", n);
    SHOW(write(app_fd, buf, strlen(buf)));
    SHOW(lseek(app_fd, 0, SEEK_CUR));
    SHOW((fcntl(app_fd, F_GETFL) & O_APPEND) != 0);
    SHOW(fstat(app_fd, &st));
    say("size %lld\n", (long long)st.st_size);
    FILE *f = fopen(wp("log"), "a");
    say("fopen a: %d\n", f != NULL);
    if (f) {
        fprintf(f, "stdio line of phase %d\n", n);
        SHOW(fclose(f));
    }
    show_file("log", wp("log"));
}

static int sk_fd;
static void lseek_before(void) {
    char buf[8192];
    for (int i = 0; i < 8192; i++) buf[i] = (char)('a' + i % 26);
    sk_fd = open(wp("seek"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (sk_fd < 0 || write_all(sk_fd, buf, sizeof buf) < 0) die("seek file");
    SHOW(lseek(sk_fd, 1000, SEEK_SET));
}
static void lseek_phase(int n) {
    char buf[64] = {0};
    SHOW(lseek(sk_fd, 0, SEEK_CUR));
    SHOW(read(sk_fd, buf, 10));
    say("read: %.10s\n", buf);
    SHOW(lseek(sk_fd, 5, SEEK_CUR));
    SHOW(lseek(sk_fd, -10, SEEK_END));
    SHOW(read(sk_fd, buf, 20));
    SHOW(read(sk_fd, buf, 20));
    SHOW(pread(sk_fd, buf, 7, 4000));
    say("pread: %.7s\n", buf);
    SHOW(lseek(sk_fd, 0, SEEK_CUR));
    SHOW(pwrite(sk_fd, "XYZ", 3, 5000 + n));
    memset(buf, 0, sizeof buf);
    SHOW(pread(sk_fd, buf, 8, 4998));
    say("after pwrite: %.8s\n", buf);
    SHOW(lseek(sk_fd, 0, SEEK_CUR));
    SHOW(lseek(sk_fd, -1, SEEK_SET));
    SHOW(lseek(sk_fd, 20000, SEEK_SET));
    SHOW(write(sk_fd, "hole", 4));
    struct stat st;
    fstat(sk_fd, &st);
    say("size %lld\n", (long long)st.st_size);
    SHOW(pread(sk_fd, buf, 4, 10000));
    say("hole reads zeros: %d\n", buf[0] == 0 && buf[3] == 0);
    SHOW(ftruncate(sk_fd, 8192));
    SHOW(lseek(sk_fd, 2000 + n, SEEK_SET));
}

/* ------------------------------------------------------------------------------------------ */
/* Directories and names */

/* Sorts strings in place. (Not qsort: for arrays over 1 KiB glibc's qsort asks sysinfo how much
 * memory the machine has, a call that brings a migrated process home.) */
static void sort_strs(char **v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
            char *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

/* Prints the sorted names of a directory stream (from its start), dot entries excluded. */
static void list_dir(const char *label, DIR *d) {
    char *names[512];
    int n = 0, dots = 0;
    struct dirent *e;
    rewinddir(d);
    errno = 0;
    while ((e = readdir(d)) && n < 512) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            dots++;
        else
            names[n++] = strdup(e->d_name);
    }
    sort_strs(names, n);
    say("%s: %d entries + %d dots:", label, n, dots);
    for (int i = 0; i < n && i < 12; i++) printf(" %s", names[i]);
    printf("%s\n", n > 12 ? " ..." : "");
    for (int i = 0; i < n; i++) free(names[i]);
}

static DIR *pre_dir;
static void dirs_before(void) {
    SHOW(mkdir(wp("d"), 0755));
    put_file(wp("d/one"), "1");
    put_file(wp("d/two"), "2");
    put_file(wp("d/three"), "3");
    pre_dir = opendir(wp("d"));
    if (!pre_dir) die("opendir");
}
static void dirs_phase(int n) {
    char name[128];
    list_dir("dir opened before", pre_dir);
    snprintf(name, sizeof name, "d/sub%d", n);
    SHOW(mkdir(wp(name), 0755));
    SHOW(mkdir(wp(name), 0755));
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "d/sub%d/file-with-a-longish-name-%03d", n, i);
        int fd = open(wp(name), O_CREAT | O_WRONLY, 0644);
        if (fd < 0) die(name);
        close(fd);
    }
    snprintf(name, sizeof name, "d/sub%d", n);
    DIR *d = opendir(wp(name));
    say("opendir sub: %d\n", d != NULL);
    if (d) {
        list_dir("sub", d);
        SHOW(closedir(d));
    }
    list_dir("dir opened before", pre_dir);
    SHOW(rmdir(wp(name)));
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "d/sub%d/file-with-a-longish-name-%03d", n, i);
        if (unlink(wp(name)) != 0) die(name);
    }
    snprintf(name, sizeof name, "d/sub%d", n);
    SHOW(rmdir(wp(name)));
    struct stat st;
    SHOW(stat(wp(name), &st));
    int dfd = dirfd(pre_dir);
    snprintf(name, sizeof name, "at%d", n);
    SHOW(mkdirat(dfd, name, 0700));
    SHOW(fstatat(dfd, name, &st, 0));
    say("mkdirat made a directory: %d, mode %o\n", S_ISDIR(st.st_mode), st.st_mode & 0777);
    list_dir("dir opened before", pre_dir);
    SHOW(unlinkat(dfd, name, AT_REMOVEDIR));
    SHOW(rmdir(wp("d")));
    SHOW(rmdir(wp("nothing-here")));
}
static int dirs_finish(void) {
    SHOW(closedir(pre_dir));
    return 0;
}

static void links_before(void) {
    if (chdir(W) != 0) die("chdir W");
}
static void links_phase(int n) {
    char o[32], h[32], s[32], r[32], buf[256] = {0};
    struct stat st;
    snprintf(o, sizeof o, "orig%d", n);
    snprintf(h, sizeof h, "hard%d", n);
    snprintf(s, sizeof s, "sym%d", n);
    snprintf(r, sizeof r, "renamed%d", n);
    put_file(o, "the original content\n");
    SHOW(link(o, h));
    SHOW(stat(o, &st));
    say("nlink %ld\n", (long)st.st_nlink);
    SHOW(symlink(o, s));
    SHOW(readlink(s, buf, sizeof buf));
    say("readlink: %s\n", buf);
    SHOW(lstat(s, &st));
    say("lstat: link %d size %lld\n", S_ISLNK(st.st_mode), (long long)st.st_size);
    SHOW(stat(s, &st));
    say("stat through link: reg %d size %lld\n", S_ISREG(st.st_mode), (long long)st.st_size);
    SHOW(rename(h, r));
    SHOW(access(h, F_OK));
    SHOW(renameat2(AT_FDCWD, o, AT_FDCWD, r, RENAME_NOREPLACE));
    SHOW(unlink(o));
    SHOW(stat(s, &st));
    SHOW(lstat(s, &st));
    show_file("renamed", r);
    SHOW(linkat(AT_FDCWD, r, AT_FDCWD, o, 0));
    SHOW(symlinkat("/nonexistent/target", AT_FDCWD, "dangling"));
    memset(buf, 0, sizeof buf);
    SHOW(readlinkat(AT_FDCWD, "dangling", buf, sizeof buf));
    say("readlinkat: %s\n", buf);
    SHOW(readlink(o, buf, sizeof buf));
    SHOW(renameat(AT_FDCWD, o, AT_FDCWD, h));
    SHOW(stat(r, &st));
    say("nlink %ld\n", (long)st.st_nlink);
    SHOW(unlink(h));
    SHOW(unlink(r));
    SHOW(unlink(s));
    SHOW(unlinkat(AT_FDCWD, "dangling", 0));
    SHOW(unlink("never-existed"));
}

static int up_fd;
static void chdir_before(void) {
    SHOW(mkdir(wp("a"), 0755));
    SHOW(mkdir(wp("a/b"), 0755));
    SHOW(chdir(wp("a/b")));
    put_file("rel.txt", "made before the move\n");
    up_fd = open("..", O_RDONLY | O_DIRECTORY);
    if (up_fd < 0) die("open ..");
}
static void chdir_phase(int n) {
    char name[64], buf[256];
    struct stat st;
    show_file("rel.txt", "rel.txt");
    snprintf(name, sizeof name, "../up%d.txt", n);
    snprintf(buf, sizeof buf, "written by phase %d through ..\n", n);
    put_file(name, buf);
    SHOW(stat(name, &st));
    say("size %lld\n", (long long)st.st_size);
    SHOW(chdir(".."));
    SHOW(access("b/rel.txt", R_OK));
    snprintf(name, sizeof name, "./b/../up%d.txt", n);
    show_file("up", name);
    SHOW(chdir("b"));
    SHOW(openat(AT_FDCWD, "rel.txt", O_RDONLY) >= 0);
    snprintf(name, sizeof name, "up%d.txt", n);
    SHOW(faccessat(up_fd, name, F_OK, 0));
    SHOW(fchdir(up_fd));
    SHOW(access("b/rel.txt", F_OK));
    SHOW(chdir("b"));
    SHOW(chdir("no-such-dir"));
    SHOW(access("rel.txt", F_OK));
}

static int cwd_fd;
static void getcwd_before(void) {
    SHOW(mkdir(wp("x"), 0755));
    SHOW(mkdir(wp("x/y"), 0755));
    SHOW(mkdir(wp("x/y/z"), 0755));
    cwd_fd = open(wp("x"), O_RDONLY | O_DIRECTORY);
    if (cwd_fd < 0) die("open x");
    SHOW(chdir(wp("x/y/z")));
}
static void show_cwd(void) {
    char buf[4096];
    char *c = getcwd(buf, sizeof buf);
    say("getcwd: %s\n", c ? rel(c) : strerror(errno));
}
static void getcwd_phase(int n) {
    char small[4];
    (void)n;
    show_cwd();
    SHOW(fchdir(cwd_fd));
    show_cwd();
    SHOW(chdir("y/z"));
    show_cwd();
    SHOW(chdir("/"));
    show_cwd();
    SHOW(chdir(wp("x/y/z")));
    show_cwd();
    char *c = getcwd(small, sizeof small);
    say("getcwd into 4 bytes: %s\n", c ? c : strerror(errno));
    char *m = getcwd(NULL, 0);
    say("getcwd(NULL): %s\n", m ? rel(m) : strerror(errno));
    free(m);
}

/* ------------------------------------------------------------------------------------------ */
/* Metadata */

static int st_fd;
static struct stat st_before;
static void stat_before(void) {
    char buf[1234];
    memset(buf, 'q', sizeof buf);
    if (chdir(W) != 0) die("chdir");
    st_fd = open("s.txt", O_RDWR | O_CREAT | O_TRUNC, 0640);
    if (st_fd < 0 || write_all(st_fd, buf, sizeof buf) < 0) die("s.txt");
    SHOW(mkdir("sd", 0711));
    SHOW(symlink("s.txt", "sl"));
    SHOW(fstat(st_fd, &st_before));
}
static void stat_phase(int n) {
    struct stat a, b;
    struct statx x;
    (void)n;
    SHOW(stat("s.txt", &a));
    say("stat: reg %d mode %o nlink %ld size %lld blocks>0 %d\n", S_ISREG(a.st_mode), a.st_mode & 07777, (long)a.st_nlink,
        (long long)a.st_size, a.st_blocks > 0);
    SHOW(fstat(st_fd, &b));
    say("fstat: same inode %d, same dev %d, same mtime %d, same as before %d\n", a.st_ino == b.st_ino, a.st_dev == b.st_dev,
        a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec, b.st_ino == st_before.st_ino);
    SHOW(lstat("sl", &a));
    say("lstat: link %d size %lld\n", S_ISLNK(a.st_mode), (long long)a.st_size);
    SHOW(fstatat(AT_FDCWD, "sl", &a, AT_SYMLINK_NOFOLLOW));
    say("fstatat nofollow: link %d\n", S_ISLNK(a.st_mode));
    SHOW(fstatat(AT_FDCWD, "sl", &a, 0));
    say("fstatat: reg %d\n", S_ISREG(a.st_mode));
    SHOW(statx(AT_FDCWD, "s.txt", 0, STATX_BASIC_STATS, &x));
    say("statx: size %llu mask has size %d reg %d mode %o ino same %d\n", (unsigned long long)x.stx_size, (x.stx_mask & STATX_SIZE) != 0,
        S_ISREG(x.stx_mode), x.stx_mode & 07777, x.stx_ino == (uint64_t)st_before.st_ino);
    SHOW(statx(st_fd, "", AT_EMPTY_PATH, STATX_SIZE, &x));
    say("statx(fd): size %llu\n", (unsigned long long)x.stx_size);
    SHOW(stat("sd", &a));
    say("dir: %d mode %o nlink %ld\n", S_ISDIR(a.st_mode), a.st_mode & 07777, (long)a.st_nlink);
    SHOW(stat("missing", &a));
    SHOW(stat("s.txt/not-a-dir", &a));
    SHOW(access("s.txt", R_OK | W_OK));
    SHOW(access("sd", X_OK));
    SHOW(faccessat(AT_FDCWD, "sl", R_OK, AT_EACCESS));
    SHOW(fstat(-1, &a));
}

static int tr_fd;
static void truncate_before(void) {
    char buf[10000];
    memset(buf, 'x', sizeof buf);
    tr_fd = open(wp("t"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (tr_fd < 0 || write_all(tr_fd, buf, sizeof buf) < 0) die("t");
}
static void truncate_phase(int n) {
    struct stat st;
    char buf[400];
    SHOW(truncate(wp("t"), 3000 + n));
    SHOW(fstat(tr_fd, &st));
    say("size %lld\n", (long long)st.st_size);
    SHOW(ftruncate(tr_fd, 12000));
    SHOW(stat(wp("t"), &st));
    say("size %lld\n", (long long)st.st_size);
    SHOW(pread(tr_fd, buf, 10, 2995));
    say("bytes around the old end: %.10s\n", buf[5 + n] == 0 ? "(zeros after the cut)" : buf);
    SHOW(pread(tr_fd, buf, 200, 11900));
    int zeros = 0;
    for (int i = 0; i < 100; i++) zeros += buf[i] == 0;
    say("zeros %d\n", zeros);
    SHOW(ftruncate(tr_fd, 100));
    SHOW(pread(tr_fd, buf, 400, 0));
    SHOW(truncate(wp("t-missing"), 0));
    SHOW(ftruncate(tr_fd, -1));
    SHOW(ftruncate(tr_fd, 10000));
}

static int cm_fd;
static void chmod_before(void) {
    cm_fd = open(wp("m.txt"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (cm_fd < 0) die("m.txt");
    SHOW(symlink("m.txt", wp("m.link")));
    struct timespec ts[2] = {{900000000, 0}, {900000001, 0}};
    SHOW(utimensat(AT_FDCWD, wp("m.txt"), ts, 0));
    SHOW(utimensat(AT_FDCWD, wp("m.link"), ts, AT_SYMLINK_NOFOLLOW));
}
static void show_mode(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0)
        say("lstat failed: %s\n", strerror(errno));
    else
        say("mode %o atime %lld.%09ld mtime %lld.%09ld\n", st.st_mode & 07777, (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
            (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}
static void chmod_phase(int n) {
    SHOW(chmod(wp("m.txt"), 0600));
    show_mode(wp("m.txt"));
    SHOW(fchmod(cm_fd, 0640));
    show_mode(wp("m.txt"));
    SHOW(fchmodat(AT_FDCWD, wp("m.txt"), 04751, 0));
    show_mode(wp("m.txt"));
    struct timespec ts[2] = {{1000000000 + n, 0}, {1500000000 + n, 500}};
    SHOW(utimensat(AT_FDCWD, wp("m.txt"), ts, 0));
    show_mode(wp("m.txt"));
    struct timespec keep_m[2] = {{1200000000, 7}, {0, UTIME_OMIT}};
    SHOW(futimens(cm_fd, keep_m));
    show_mode(wp("m.txt"));
    struct timespec lt[2] = {{1300000000, 0}, {1300000001, 0}};
    SHOW(utimensat(AT_FDCWD, wp("m.link"), lt, AT_SYMLINK_NOFOLLOW));
    show_mode(wp("m.link"));
    SHOW(chown(wp("m.txt"), getuid(), getgid()));
    SHOW(fchown(cm_fd, (uid_t)-1, getgid()));
    SHOW(lchown(wp("m.link"), getuid(), (gid_t)-1));
    SHOW(chmod(wp("missing"), 0600));
    show_mode(wp("m.txt"));
}

static void umask_before(void) {
    say("umask was %o\n", umask(022));
    say("umask was %o\n", umask(027));
}
static void umask_phase(int n) {
    char name[32];
    struct stat st;
    say("umask was %o\n", umask(077));
    snprintf(name, sizeof name, "u%d", n);
    int fd = SHOW(open(wp(name), O_CREAT | O_WRONLY, 0666));
    close(fd);
    SHOW(stat(wp(name), &st));
    say("file mode %o\n", st.st_mode & 0777);
    snprintf(name, sizeof name, "ud%d", n);
    SHOW(mkdir(wp(name), 0777));
    SHOW(stat(wp(name), &st));
    say("dir mode %o\n", st.st_mode & 0777);
    say("umask was %o\n", umask(027));
    snprintf(name, sizeof name, "v%d", n);
    fd = SHOW(open(wp(name), O_CREAT | O_WRONLY, 0666));
    close(fd);
    SHOW(stat(wp(name), &st));
    say("file mode %o\n", st.st_mode & 0777);
}

/* ------------------------------------------------------------------------------------------ */
/* Descriptors */

static int df_fd, df_dup;
static void dup_before(void) {
    df_fd = open(wp("dup.txt"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (df_fd < 0) die("dup.txt");
    df_dup = dup(df_fd);
    SHOW(dup2(df_fd, 40));
    SHOW(fcntl(40, F_SETFD, FD_CLOEXEC));
}
static void dup_phase(int n) {
    char buf[64] = {0};
    SHOW(fcntl(40, F_GETFD));
    SHOW(fcntl(df_dup, F_GETFD));
    SHOW(write(df_fd, "0123456789", 10));
    SHOW(lseek(df_dup, 0, SEEK_CUR) == lseek(df_fd, 0, SEEK_CUR));
    SHOW(lseek(40, 3, SEEK_SET));
    SHOW(read(df_dup, buf, 4));
    say("shared offset read: %s\n", buf);
    SHOW(dup2(df_fd, 41));
    SHOW(dup3(df_fd, 42, O_CLOEXEC));
    SHOW(fcntl(42, F_GETFD));
    SHOW(fcntl(df_fd, F_DUPFD, 50));
    SHOW(fcntl(df_fd, F_DUPFD_CLOEXEC, 50));
    SHOW(fcntl(51, F_GETFD));
    SHOW(fcntl(df_fd, F_GETFL) & O_ACCMODE);
    SHOW(fcntl(df_fd, F_SETFL, O_NONBLOCK | O_APPEND));
    SHOW(fcntl(41, F_GETFL) & (O_NONBLOCK | O_APPEND));
    SHOW(fcntl(df_fd, F_SETFL, 0));
    SHOW(dup2(df_fd, df_fd) == df_fd);
    SHOW(dup3(df_fd, df_fd, 0));
    for (int fd = 41; fd <= 51; fd++)
        if (fd == 41 || fd == 42 || fd == 50 || fd == 51) SHOW(close(fd));
    SHOW(fcntl(41, F_GETFD));
    SHOW(close(41));
    SHOW(dup(1000));
    SHOW(ftruncate(df_fd, 0));
    (void)n;
}

static int ul_fd;
static void unlinked_before(void) {
    ul_fd = open(wp("gone.txt"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (ul_fd < 0) die("gone");
    SHOW(write(ul_fd, "still here\n", 11));
    SHOW(unlink(wp("gone.txt")));
}
static void unlinked_phase(int n) {
    struct stat st;
    char buf[128] = {0};
    SHOW(fstat(ul_fd, &st));
    say("nlink %ld size %lld\n", (long)st.st_nlink, (long long)st.st_size);
    SHOW(stat(wp("gone.txt"), &st));
    snprintf(buf, sizeof buf, "and phase %d\n", n);
    SHOW(write(ul_fd, buf, strlen(buf)));
    memset(buf, 0, sizeof buf);
    SHOW(pread(ul_fd, buf, sizeof buf - 1, 0));
    say("content:\n%s", buf);
}

static int ff_fd = -1, ff_ctl;
static pid_t ff_child;
static int fifo_writer(long ctl) {
    close(ff_ctl);
    int fd = open(wp("fifo"), O_WRONLY);
    char c;
    int k = 0;
    if (fd < 0) return 1;
    while (read((int)ctl, &c, 1) == 1) dprintf(fd, "message %d through the fifo\n", ++k);
    return 5;
}
static void fifo_before(void) {
    int p[2];
    SHOW(mkfifo(wp("fifo"), 0600));
    if (pipe(p) != 0) die("pipe");
    ff_ctl = p[1];
    ff_child = spawn(fifo_writer, p[0]);
    close(p[0]);
}
static void fifo_phase(int n) {
    char buf[128];
    struct stat st;
    /* Phase 1 opens the reading end while away: the open blocks at home until the writer's. */
    if (n == 1) ff_fd = open(wp("fifo"), O_RDONLY);
    say("fifo open: %d\n", ff_fd >= 0);
    SHOW(fstat(ff_fd, &st));
    say("is fifo %d\n", S_ISFIFO(st.st_mode));
    SHOW(write(ff_ctl, "x", 1));
    SHOW(read_line(ff_fd, buf, sizeof buf));
    say("got: %s\n", buf);
}
static int fifo_finish(void) {
    char c;
    SHOW(close(ff_ctl));
    show_wait("writer", ff_child, 0);
    SHOW(read(ff_fd, &c, 1));
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Output, pipes and children */

static void stdio_phase(int n) {
    for (int k = 0; k < 300; k++) printf("[%d] buffered line %d\n", n, k);
    fflush(stdout);
    char a[32], b[] = " middle ", c[] = "end\n";
    snprintf(a, sizeof a, "[%d] writev:", n);
    struct iovec iov[3] = {{a, strlen(a)}, {b, strlen(b)}, {c, strlen(c)}};
    SHOW(writev(1, iov, 3));
    fprintf(stderr, "[%d] to stderr through stdio\n", n);
    SHOW(write(2, "raw stderr line\n", 16));
    static char big[100000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (i % 80 == 79) ? '\n' : (char)('A' + (i * 7 + (size_t)n) % 26);
    say("fwrite %zu\n", fwrite(big, 1, sizeof big, stdout));
    putchar('\n');
    fflush(stdout);
    SHOW(fileno(stdout));
}

static int pc_to, pc_from, pc_cin, pc_cout;
static pid_t pc_child;
static int upper_child(long unused) {
    char buf[256];
    (void)unused;
    close(pc_to);
    close(pc_from);
    while (read_line(pc_cin, buf, sizeof buf) >= 0) {
        for (char *p = buf; *p; p++)
            if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 32);
        dprintf(pc_cout, "%s\n", buf);
    }
    return 3;
}
static void pipe_exchange(const char *msg) {
    char buf[256];
    dprintf(pc_to, "%s\n", msg);
    ssize_t r = read_line(pc_from, buf, sizeof buf);
    say("sent '%s', the home child answered %zd '%s'\n", msg, r, buf);
}
static void pipe_child_before(void) {
    int a[2], b[2];
    if (pipe(a) || pipe(b)) die("pipe");
    pc_to = a[1], pc_from = b[0], pc_cin = a[0], pc_cout = b[1];
    pc_child = spawn(upper_child, 0);
    close(pc_cin);
    close(pc_cout);
    pipe_exchange("hello before");
}
static void pipe_child_phase(int n) {
    char msg[64], buf[16];
    for (int k = 0; k < 3; k++) {
        snprintf(msg, sizeof msg, "message %d of phase %d", k, n);
        pipe_exchange(msg);
    }
    int p[2];
    SHOW(pipe2(p, O_NONBLOCK | O_CLOEXEC));
    SHOW(read(p[0], buf, sizeof buf));
    SHOW(write(p[1], "abc", 3));
    SHOW(read(p[0], buf, sizeof buf));
    SHOW(fcntl(p[0], F_GETFD));
    SHOW(close(p[1]));
    SHOW(read(p[0], buf, sizeof buf));
    SHOW(close(p[0]));
}
static int pipe_child_finish(void) {
    char c;
    SHOW(close(pc_to));
    show_wait("uppercase child", pc_child, 0);
    SHOW(read(pc_from, &c, 1));
    return 0;
}

static int cb_pa[2], cb_pb[2];
static pid_t cb_a, cb_b, cb_z;
static int wait_byte(long fd) {
    char c;
    return read((int)fd, &c, 1) == 1 ? (c == 'a' ? 7 : 8) : 1;
}
static int exit9(long unused) {
    (void)unused;
    return 9;
}
static void child_before_before(void) {
    if (pipe(cb_pa) || pipe(cb_pb)) die("pipe");
    cb_a = spawn(wait_byte, cb_pa[0]);
    cb_b = spawn(wait_byte, cb_pb[0]);
    cb_z = spawn(exit9, 0);
    siginfo_t si;
    for (int i = 0; i < 20000; i++) {
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)cb_z, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == cb_z) break;
        sleep_ms(1);
    }
    say("the third child is a zombie: %d\n", si.si_pid == cb_z);
}
static void child_before_phase(int n) {
    int st;
    if (n == 1) {
        show_wait("zombie", cb_z, WNOHANG);
        show_wait("first", cb_a, WNOHANG);
        SHOW(write(cb_pa[1], "a", 1));
        show_wait("first", cb_a, 0);
        SHOW(waitpid(-1, &st, WNOHANG));
    } else {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        SHOW(write(cb_pb[1], "b", 1));
        SHOW(waitid(P_PID, (id_t)cb_b, &si, WEXITED));
        say("waitid: right pid %d exited %d status %d\n", si.si_pid == cb_b, si.si_code == CLD_EXITED, si.si_status);
        SHOW(waitpid(-1, &st, 0));
    }
}

static pid_t ca_parent;
static void child_after_before(void) { ca_parent = getpid(); }
static void child_after_phase(int n) {
    char name[32], text[64];
    snprintf(name, sizeof name, "child%d", n);
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        say("child of phase %d: its parent is the migrated process: %d\n", n, getppid() == ca_parent);
        snprintf(text, sizeof text, "written by the child of phase %d\n", n);
        put_file(wp(name), text);
        fflush(stdout);
        _exit(20 + n);
    }
    /* Nothing printed before the child has ended: the output order is fixed. */
    show_wait("child", p, 0);
    say("fork: %d\n", p > 0);
    show_file(name, wp(name));
    say("getpid unchanged: %d\n", getpid() == ca_parent);
}

/* Case fork_away: fork while away; the child (on node 2 too) checks its pid and parent, raises a
 * signal it handles, writes a home file by a relative path, forks a grandchild (also away) and
 * waits for it; the parent meanwhile writes a home file, then waits for the child (SIGCHLD
 * handler, status). */
static pid_t fa_parent;
static volatile sig_atomic_t fa_chld, fa_usr2;
static void fa_on_chld(int s) {
    (void)s;
    fa_chld++;
}
static void fa_on_usr2(int s) {
    (void)s;
    fa_usr2++;
}
static void fork_away_before(void) {
    fa_parent = getpid();
    struct sigaction sa = {0};
    sa.sa_handler = fa_on_chld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    SHOW(sigaction(SIGCHLD, &sa, NULL));
    SHOW(chdir(W));
}
static void fork_away_phase(int n) {
    int to_child[2], from_child[2];
    char name[32], text[64];
    if (pipe(to_child) || pipe(from_child)) die("pipe");
    fflush(stdout);
    pid_t p = fork();
    if (p < 0) die("fork");
    if (p == 0) {
        close(to_child[1]);
        close(from_child[0]);
        pid_t told = 0;
        if (read(to_child[0], &told, sizeof told) != (ssize_t)sizeof told) die("read pid");
        say("child %d: getpid is what fork returned: %d\n", n, getpid() == told);
        say("child: its parent is the forking process: %d\n", getppid() == fa_parent);
        struct sigaction sa = {0};
        sa.sa_handler = fa_on_usr2;
        SHOW(sigaction(SIGUSR2, &sa, NULL));
        SHOW(raise(SIGUSR2));
        say("child: SIGUSR2 handled %d time(s)\n", (int)fa_usr2);
        snprintf(name, sizeof name, "fa_child%d.txt", n);
        snprintf(text, sizeof text, "written by the child, phase %d\n", n);
        put_file(name, text);
        fflush(stdout);
        pid_t g = fork();
        if (g < 0) die("fork grandchild");
        if (g == 0) {
            say("grandchild: its parent is the child: %d\n", getppid() == told);
            snprintf(name, sizeof name, "fa_grand%d.txt", n);
            put_file(name, "written by the grandchild\n");
            fflush(stdout);
            _exit(7);
        }
        show_wait("grandchild", g, 0);
        say("child: done\n");
        fflush(stdout);
        /* Nothing printed after this: the parent prints from here on. */
        if (write(from_child[1], "x", 1) != 1) _exit(99);
        _exit(30 + n);
    }
    close(to_child[0]);
    close(from_child[1]);
    if (write(to_child[1], &p, sizeof p) != (ssize_t)sizeof p) die("write pid");
    /* The parent works at the same time as the child. */
    snprintf(name, sizeof name, "fa_parent%d.txt", n);
    int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (int i = 0; i < 200; i++)
        if (write(fd, "p", 1) != 1) die("write");
    close(fd);
    char c = 0;
    SHOW(read(from_child[0], &c, 1));
    show_wait("child", p, 0);
    say("SIGCHLD handled: %d\n", wait_flag(&fa_chld, n));
    snprintf(name, sizeof name, "fa_child%d.txt", n);
    show_file(name, wp(name));
    snprintf(name, sizeof name, "fa_grand%d.txt", n);
    show_file(name, wp(name));
    struct stat st;
    snprintf(name, sizeof name, "fa_parent%d.txt", n);
    SHOW(stat(name, &st));
    say("parent's file: %lld bytes\n", (long long)st.st_size);
    close(to_child[1]);
    close(from_child[0]);
}

/* Case fork_exec: fork while away, the child execs (it comes home for that) a program that
 * writes a home file and ends with a status the parent waits for. */
static char fe_self[4096];
static void fork_exec_before(void) {
    fa_parent = getpid();
    ssize_t r = readlink("/proc/self/exe", fe_self, sizeof fe_self - 1);
    if (r < 0) die("readlink exe");
    fe_self[r] = 0;
}
static void fork_exec_phase(int n) {
    char ph[8], parent[32];
    snprintf(ph, sizeof ph, "%d", n);
    snprintf(parent, sizeof parent, "%d", (int)fa_parent);
    fflush(stdout);
    pid_t p = fork();
    if (p < 0) die("fork");
    if (p == 0) {
        char *args[] = {ARGV[0], "fork_exec_post", (char *)ROOT, ph, parent, NULL};
        execv(fe_self, args);
        _exit(98);
    }
    show_wait("exec'd child", p, 0);
    char name[32];
    snprintf(name, sizeof name, "fe%d.txt", n);
    show_file(name, wp(name));
}
/* The program the child of case fork_exec runs. */
static int fork_exec_post(const char *ph, const char *parent) {
    PH = atoi(ph);
    say("exec'd child: its parent is the forking process: %d\n", getppid() == atoi(parent));
    char name[32];
    snprintf(name, sizeof name, "fe%s.txt", ph);
    put_file(wp(name), "written by the exec'd child\n");
    fflush(stdout);
    return 40 + PH;
}

/* Case fork_outlives: a child forked away waits while its parent is brought home, is then moved
 * home itself by the test, and is woken by its parent at home (signal), reads what it wrote. */
static int fo_pipe[2];
static pid_t fo_child;
static void fork_outlives_phase(int n) {
    if (n == 1) {
        if (pipe(fo_pipe)) die("pipe");
        fflush(stdout);
        fo_child = fork();
        if (fo_child < 0) die("fork");
        if (fo_child == 0) {
            close(fo_pipe[1]);
            /* Waits with a local call (a forwarded one in flight would hold its mosrun). */
            sigset_t w;
            sigemptyset(&w);
            sigaddset(&w, GATE_SIGNAL);
            struct timespec t = {120, 0};
            int s;
            while ((s = sigtimedwait(&w, NULL, &t)) < 0 && errno == EINTR) {
            }
            say("child: woken by its parent: %d\n", s == GATE_SIGNAL);
            char c = 0;
            ssize_t r = read(fo_pipe[0], &c, 1);
            say("child: read %zd byte(s): %c\n", r, r == 1 ? c : '-');
            put_file(wp("fo.txt"), "written by the child after its parent moved\n");
            fflush(stdout);
            _exit(9);
        }
        close(fo_pipe[0]);
        say("forked: %d\n", fo_child > 0);
        return;
    }
    say("waiting for the child's move\n");
    /* The test moves the child home and creates ctl/home2. */
    char path[4200];
    snprintf(path, sizeof path, "%s/home2", CTL);
    for (int i = 0; i < 60000 && access(path, F_OK) != 0; i++) sleep_ms(1);
    SHOW(write(fo_pipe[1], "x", 1));
    /* Printed only once the child has ended: the output order is fixed. */
    int k = kill(fo_child, GATE_SIGNAL);
    show_wait("child", fo_child, 0);
    say("kill: %d\n", k);
    show_file("fo.txt", wp("fo.txt"));
}

static volatile sig_atomic_t chld;
static int sc_p1[2], sc_p2[2];
static pid_t sc_c1, sc_c2;
static void on_chld(int s) {
    (void)s;
    chld++;
}
static void sigchld_before(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    SHOW(sigaction(SIGCHLD, &sa, NULL));
    if (pipe(sc_p1) || pipe(sc_p2)) die("pipe");
    sc_c1 = spawn(wait_byte, sc_p1[0]);
    sc_c2 = spawn(wait_byte, sc_p2[0]);
}
static void sigchld_phase(int n) {
    SHOW(write(n == 1 ? sc_p1[1] : sc_p2[1], n == 1 ? "a" : "b", 1));
    say("SIGCHLD handled: %d\n", wait_flag(&chld, n));
    show_wait("child", n == 1 ? sc_c1 : sc_c2, 0);
    say("handler count %d\n", (int)chld);
}

static char ex_self[4096];
static void execve_before(void) {
    SHOW(setenv("ZDTM_EXEC", "kept across exec", 1));
    int fd = open(wp("exec.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    SHOW(dup2(fd, 60));
    close(fd);
    fd = open(wp("cloexec.txt"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    SHOW(dup3(fd, 61, O_CLOEXEC));
    close(fd);
    signal(SIGUSR2, SIG_IGN);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    SHOW(sigprocmask(SIG_BLOCK, &m, NULL));
    SHOW(write(60, "before exec\n", 12));
    ssize_t r = readlink("/proc/self/exe", ex_self, sizeof ex_self - 1);
    if (r < 0) die("readlink exe");
    ex_self[r] = 0;
}
static void execve_phase(int n) {
    char pid[32];
    if (n == 2) {
        say("not reached\n");
        return;
    }
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    char *args[] = {ARGV[0], "execve_post", (char *)ROOT, pid, NULL};
    say("exec now\n");
    execv(ex_self, args);
    say("execv failed: %s\n", strerror(errno));
}
/* The program after the exec of case execve: phase 1 continued, then gate 2 and phase 2. */
static int execve_post(const char *pid) {
    PH = 1;
    block_gate_signal();
    say("after exec: same pid %d\n", getpid() == atoi(pid));
    SHOW(fcntl(60, F_GETFD));
    SHOW(fcntl(61, F_GETFD));
    SHOW(write(60, "after exec\n", 11));
    say("ZDTM_EXEC=%s\n", getenv("ZDTM_EXEC"));
    struct sigaction old;
    sigaction(SIGUSR2, NULL, &old);
    say("SIGUSR2 still ignored: %d\n", old.sa_handler == SIG_IGN);
    sigset_t m;
    sigprocmask(SIG_BLOCK, NULL, &m);
    say("SIGUSR1 still blocked: %d\n", sigismember(&m, SIGUSR1));
    say("phase done\n");
    gate(2);
    PH = 2;
    SHOW(write(60, "at home\n", 8));
    show_file("exec.txt", wp("exec.txt"));
    say("phase done\n");
    return 0;
}

/* Case execve_away: exec while away (the process comes home for it), then the new program is
 * migrated again (gate 3) and works there: it is still a migratable process. */
static void execve_away_before(void) {
    int fd = open(wp("exec_away.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    SHOW(dup2(fd, 60));
    close(fd);
    SHOW(write(60, "before exec\n", 12));
    ssize_t r = readlink("/proc/self/exe", ex_self, sizeof ex_self - 1);
    if (r < 0) die("readlink exe");
    ex_self[r] = 0;
}
static void execve_away_phase(int n) {
    char pid[32];
    if (n == 2) {
        say("not reached\n");
        return;
    }
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    char *args[] = {ARGV[0], "execve_away_post", (char *)ROOT, pid, NULL};
    say("exec now\n");
    execv(ex_self, args);
    say("execv failed: %s\n", strerror(errno));
}
/* The program after the exec of case execve_away: gate 3 (moved out again), work away, gate 2
 * (brought home), work at home. */
static int execve_away_post(const char *pid) {
    PH = 1;
    block_gate_signal();
    say("after exec: same pid %d\n", getpid() == atoi(pid));
    SHOW(fcntl(60, F_GETFD));
    gate(3);
    say("moved again: same pid %d\n", getpid() == atoi(pid));
    SHOW(write(60, "after exec, away\n", 17));
    put_file(wp("new_away.txt"), "made by the new program away\n");
    show_file("new_away.txt", wp("new_away.txt"));
    show_file("exec_away.txt", wp("exec_away.txt"));
    say("phase done\n");
    gate(2);
    PH = 2;
    SHOW(write(60, "at home\n", 8));
    show_file("exec_away.txt", wp("exec_away.txt"));
    say("phase done\n");
    return 21;
}

/* ------------------------------------------------------------------------------------------ */
/* Signals */

static volatile sig_atomic_t usr1, usr1_code, usr1_pid_ok, usr1_alt;
static pid_t usr1_expect_pid;
static void on_usr1(int s, siginfo_t *si, void *ctx) {
    (void)s;
    (void)ctx;
    usr1++;
    usr1_code = si->si_code;
    usr1_pid_ok = si->si_pid == usr1_expect_pid;
}
static void handler_usr1(int flags) {
    struct sigaction sa = {0};
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | flags;
    SHOW(sigaction(SIGUSR1, &sa, NULL));
}
static void sig_handler_before(void) { handler_usr1(0); }
static void sig_handler_phase(int n) {
    say("waiting for SIGUSR1 %d\n", n);
    say("handler ran for the signal sent from outside: %d\n", wait_flag(&usr1, 3 * n - 2));
    SHOW(kill(getpid(), SIGUSR1));
    say("handler ran for kill to itself: %d\n", wait_flag(&usr1, 3 * n - 1));
    SHOW(raise(SIGUSR1));
    say("handler ran for raise: %d\n", wait_flag(&usr1, 3 * n));
    struct sigaction old;
    SHOW(sigaction(SIGUSR1, NULL, &old));
    say("handler still installed: %d, count %d\n", old.sa_sigaction == on_usr1, (int)usr1);
}

static void siginfo_before(void) {
    const char *s = getenv("ZDTM_SENDER");
    usr1_expect_pid = s ? atoi(s) : -1;
    handler_usr1(0);
}
static void siginfo_phase(int n) {
    say("waiting for SIGUSR1 %d\n", n);
    wait_flag(&usr1, 3 * n - 2);
    say("from the test: SI_USER %d, si_pid is the sender %d\n", usr1_code == SI_USER, (int)usr1_pid_ok);
    usr1_expect_pid = getpid();
    kill(getpid(), SIGUSR1);
    wait_flag(&usr1, 3 * n - 1);
    say("kill to itself: SI_USER %d, si_pid is itself %d\n", usr1_code == SI_USER, (int)usr1_pid_ok);
    raise(SIGUSR1);
    wait_flag(&usr1, 3 * n);
    say("raise: SI_TKILL %d, si_pid is itself %d\n", usr1_code == SI_TKILL, (int)usr1_pid_ok);
    const char *s = getenv("ZDTM_SENDER");
    usr1_expect_pid = s ? atoi(s) : -1;
}

static volatile sig_atomic_t usr2;
static void on_usr2(int s) {
    (void)s;
    usr2++;
}
static void sigmask_before(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_usr2;
    SHOW(sigaction(SIGUSR2, &sa, NULL));
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    SHOW(sigprocmask(SIG_BLOCK, &m, NULL));
}
static void sigmask_phase(int n) {
    sigset_t m, pend, empty;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    sigemptyset(&empty);
    SHOW(sigprocmask(SIG_BLOCK, NULL, &pend));
    say("blocked at start: %d\n", sigismember(&pend, SIGUSR2));
    SHOW(kill(getpid(), SIGUSR2));
    int seen = 0;
    for (int i = 0; i < 20000 && !seen; i++) {
        sigemptyset(&pend);
        sigpending(&pend);
        seen = sigismember(&pend, SIGUSR2);
        if (!seen) sleep_ms(1);
    }
    say("pending: %d, delivered while blocked: %d\n", seen, usr2 != 2 * (n - 1));
    SHOW(sigprocmask(SIG_UNBLOCK, &m, NULL));
    say("delivered on unblock: %d\n", usr2 == 2 * n - 1);
    SHOW(sigprocmask(SIG_BLOCK, &m, NULL));
    SHOW(kill(getpid(), SIGUSR2));
    SHOW(sigsuspend(&empty));
    say("delivered in sigsuspend: %d\n", usr2 == 2 * n);
    SHOW(sigprocmask(SIG_BLOCK, NULL, &pend));
    say("still blocked after sigsuspend: %d\n", sigismember(&pend, SIGUSR2));
}

/* POSIX: a signal a process sends to itself, unblocked, is delivered before kill() returns. */
static void self_signal_before(void) { handler_usr1(0); }
static void self_signal_phase(int n) {
    SHOW(kill(getpid(), SIGUSR1));
    say("delivered before kill returned: %d\n", usr1 == 2 * n - 1);
    SHOW(raise(SIGUSR1));
    say("delivered before raise returned: %d\n", usr1 == 2 * n);
    wait_flag(&usr1, 2 * n);
}

static volatile sig_atomic_t rt1;
static void on_rt1(int s) {
    (void)s;
    rt1++;
}
static int pending_of(int sig) {
    sigset_t p;
    sigemptyset(&p);
    sigpending(&p);
    return sigismember(&p, sig);
}
/* Waits (at most 10 s) until sig is pending. */
static int wait_pending(int sig) {
    for (int i = 0; i < 10000; i++) {
        if (pending_of(sig)) return 1;
        sleep_ms(1);
    }
    return 0;
}
static void block_one(int how, int sig) {
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, sig);
    SHOW(sigprocmask(how, &m, NULL));
}
static void usr2_setup(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_usr2;
    SHOW(sigaction(SIGUSR2, &sa, NULL));
    block_one(SIG_BLOCK, SIGUSR2);
}
static void usr2_deliver(void) {
    int u = usr2;
    block_one(SIG_UNBLOCK, SIGUSR2);
    say("delivered on unblock: %d\n", usr2 - u);
    block_one(SIG_BLOCK, SIGUSR2);
}
/* A signal pending (blocked) at home when the process leaves is pending on the other node. */
static void pending_away_before(void) {
    usr2_setup();
    SHOW(kill(getpid(), SIGUSR2));
    say("pending before the move: %d\n", pending_of(SIGUSR2));
}
static void pending_away_phase(int n) {
    if (n == 2) SHOW(kill(getpid(), SIGUSR2));
    int pend = wait_pending(SIGUSR2);
    say("pending: %d, nothing delivered while blocked: %d\n", pend, usr2 == n - 1);
    usr2_deliver();
}
/* A signal made pending (blocked) on the other node is still pending when the process comes home. */
static void pending_home_phase(int n) {
    if (n == 1) {
        SHOW(kill(getpid(), SIGUSR2));
        say("pending: %d\n", wait_pending(SIGUSR2));
        return;
    }
    say("still pending after coming home: %d\n", pending_of(SIGUSR2));
    usr2_deliver();
}
/* Real-time signals queue: two raised before the move and one after are delivered three times. */
static void rt_signals_before(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_rt1;
    SHOW(sigaction(SIGRTMIN + 1, &sa, NULL));
    block_one(SIG_BLOCK, SIGRTMIN + 1);
    SHOW(kill(getpid(), SIGRTMIN + 1));
    SHOW(kill(getpid(), SIGRTMIN + 1));
}
static void rt_signals_phase(int n) {
    int r = rt1;
    SHOW(kill(getpid(), SIGRTMIN + 1));
    say("pending: %d\n", wait_pending(SIGRTMIN + 1));
    block_one(SIG_UNBLOCK, SIGRTMIN + 1);
    say("delivered on unblock: %d times\n", rt1 - r);
    block_one(SIG_BLOCK, SIGRTMIN + 1);
    (void)n;
}

/* sigtimedwait for a signal sent from outside and for one sent to itself. */
static void sigwait_before(void) {
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    SHOW(sigprocmask(SIG_BLOCK, &m, NULL));
}
static void sigwait_phase(int n) {
    sigset_t m;
    siginfo_t si;
    struct timespec t = {20, 0};
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    say("waiting for SIGUSR1 %d\n", n);
    SHOW(sigtimedwait(&m, &si, &t));
    say("SI_USER %d\n", si.si_code == SI_USER);
    SHOW(kill(getpid(), SIGUSR1));
    SHOW(sigtimedwait(&m, &si, &t));
    struct timespec z = {0, 0};
    SHOW(sigtimedwait(&m, &si, &z));
}

static char altstack[65536];
static void on_usr1_alt(int s, siginfo_t *si, void *ctx) {
    char here;
    (void)s;
    (void)si;
    (void)ctx;
    usr1_alt = &here >= altstack && &here < altstack + sizeof altstack;
    usr1++;
}
static void sigaltstack_before(void) {
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    SHOW(sigaltstack(&ss, NULL));
    struct sigaction sa = {0};
    sa.sa_sigaction = on_usr1_alt;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    SHOW(sigaction(SIGUSR1, &sa, NULL));
}
static void sigaltstack_phase(int n) {
    usr1_alt = 0;
    SHOW(kill(getpid(), SIGUSR1));
    int ran = wait_flag(&usr1, n);
    say("handler ran %d on the alternate stack %d\n", ran, (int)usr1_alt);
    stack_t cur;
    SHOW(sigaltstack(NULL, &cur));
    say("altstack: same %d size %zu flags %d\n", cur.ss_sp == altstack, cur.ss_size, cur.ss_flags);
}

static volatile sig_atomic_t conts;
static void on_cont(int s) {
    (void)s;
    conts++;
}
static void sigstop_before(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_cont;
    sa.sa_flags = SA_RESTART;
    SHOW(sigaction(SIGCONT, &sa, NULL));
}
static void sigstop_phase(int n) {
    say("stop me %d\n", n);
    say("continued: %d\n", wait_flag(&conts, n));
}

static volatile sig_atomic_t alrm;
static void on_alrm(int s) {
    (void)s;
    alrm++;
}
static void on_alrm_install(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_alrm;
    sa.sa_flags = SA_RESTART;
    SHOW(sigaction(SIGALRM, &sa, NULL));
}
static void itimer_before(void) {
    on_alrm_install();
    struct itimerval it = {{0, 5000}, {0, 5000}};
    SHOW(setitimer(ITIMER_REAL, &it, NULL));
}
static void itimer_phase(int n) {
    int c0 = alrm;
    say("the interval timer set before keeps ticking: %d\n", wait_flag(&alrm, c0 + 3));
    if (n == 2) {
        struct itimerval off = {{0, 0}, {0, 0}};
        SHOW(setitimer(ITIMER_REAL, &off, NULL));
        int c = alrm;
        sleep_ms(200);
        say("stopped: %d\n", alrm == c);
    }
}

static void alarm_before(void) { on_alrm_install(); }
static void alarm_phase(int n) {
    SHOW(alarm(1));
    say("SIGALRM arrived: %d\n", wait_flag(&alrm, n));
    SHOW(alarm(0));
}

/* ------------------------------------------------------------------------------------------ */
/* Sockets and waiting */

static int tcp_listen(int *port) {
    struct sockaddr_in a = {0};
    socklen_t l = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 8) || getsockname(s, (struct sockaddr *)&a, &l)) die("listen");
    *port = ntohs(a.sin_port);
    return s;
}
static int tcp_connect(int port) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return -1;
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        return -1;
    }
    return s;
}
/* Receives one line with recv(). */
static ssize_t recv_line(int s, char *buf, size_t cap) {
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(s, buf + n, 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (buf[n] == '\n') break;
        n++;
    }
    buf[n] = 0;
    return (ssize_t)n;
}
static void tcp_exchange(int s, const char *msg) {
    char buf[256];
    int n = snprintf(buf, sizeof buf, "%s\n", msg);
    ssize_t w = send(s, buf, (size_t)n, 0);
    ssize_t r = recv_line(s, buf, sizeof buf);
    say("sent %d: %s; reply %zd: %s\n", w == n, msg, r, buf);
}

static int tc_srv, tc_c1, tc_port;
static pid_t tc_server;
static int echo_conn(int c) {
    char buf[256];
    while (recv_line(c, buf, sizeof buf) > 0) dprintf(c, "pong: %s\n", buf);
    return 0;
}
static int tcp_server_proc(long unused) {
    (void)unused;
    signal(SIGCHLD, SIG_IGN);
    for (;;) {
        int c = accept(tc_srv, NULL, NULL);
        if (c < 0) continue;
        if (fork() == 0) _exit(echo_conn(c));
        close(c);
    }
}
static void tcp_client_before(void) {
    tc_srv = tcp_listen(&tc_port);
    tc_server = spawn(tcp_server_proc, 0);
    close(tc_srv);
    tc_c1 = tcp_connect(tc_port);
    say("connected before: %d\n", tc_c1 >= 0);
    tcp_exchange(tc_c1, "hello before");
}
static void tcp_client_phase(int n) {
    char msg[64], buf[16];
    int one = 1;
    snprintf(msg, sizeof msg, "ping %d on the connection made before", n);
    tcp_exchange(tc_c1, msg);
    int s = tcp_connect(tc_port);
    say("new connection: %d\n", s >= 0);
    SHOW(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    snprintf(msg, sizeof msg, "hello on the connection of phase %d", n);
    tcp_exchange(s, msg);
    tcp_exchange(s, "second line");
    SHOW(shutdown(s, SHUT_WR));
    SHOW(recv(s, buf, sizeof buf, 0));
    SHOW(close(s));
    SHOW(send(s, "x", 1, 0));
}
static int tcp_client_finish(void) {
    SHOW(close(tc_c1));
    SHOW(kill(tc_server, SIGTERM));
    show_wait("server", tc_server, 0);
    return 0;
}

static int ts_srv, ts_port, ts_ctl[2];
static pid_t ts_client;
static int tcp_client_proc(long unused) {
    char buf[256], want[64];
    char c;
    int good = 0, k = 0;
    (void)unused;
    close(ts_ctl[1]);
    close(ts_srv);
    while (read(ts_ctl[0], &c, 1) == 1) {
        k++;
        int s = tcp_connect(ts_port);
        if (s < 0) continue;
        dprintf(s, "client message %d\n", k);
        snprintf(want, sizeof want, "served %d", k);
        if (read_line(s, buf, sizeof buf) > 0 && !strcmp(buf, want)) good++;
        close(s);
    }
    return good;
}
static void tcp_server_before(void) {
    ts_srv = tcp_listen(&ts_port);
    if (pipe(ts_ctl)) die("pipe");
    ts_client = spawn(tcp_client_proc, 0);
    close(ts_ctl[0]);
}
static void tcp_server_phase(int n) {
    char buf[256];
    SHOW(fcntl(ts_srv, F_SETFL, O_NONBLOCK));
    SHOW(accept(ts_srv, NULL, NULL));
    SHOW(fcntl(ts_srv, F_SETFL, 0));
    SHOW(write(ts_ctl[1], "c", 1));
    int c = accept(ts_srv, NULL, NULL);
    say("accepted: %d\n", c >= 0);
    SHOW(recv_line(c, buf, sizeof buf));
    say("client said: %s\n", buf);
    int len = snprintf(buf, sizeof buf, "served %d\n", n);
    SHOW(send(c, buf, (size_t)len, 0));
    SHOW(close(c));
    /* A second listener made in each phase (away in phase 1), on a Unix socket in the scratch
     * directory: socket, bind, listen, connect and accept all run at home. */
    struct sockaddr_un a = {0};
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", wp(n == 1 ? "sock1" : "sock2"));
    int s = SHOW(socket(AF_UNIX, SOCK_STREAM, 0)) ;
    SHOW(bind(s, (struct sockaddr *)&a, sizeof a));
    SHOW(listen(s, 1));
    struct stat st;
    SHOW(stat(a.sun_path, &st));
    say("is a socket %d\n", S_ISSOCK(st.st_mode));
    int cl = socket(AF_UNIX, SOCK_STREAM, 0);
    SHOW(connect(cl, (struct sockaddr *)&a, sizeof a));
    int sc = accept(s, NULL, NULL);
    say("accepted: %d\n", sc >= 0);
    SHOW(send(cl, "self\n", 5, 0));
    SHOW(recv_line(sc, buf, sizeof buf));
    say("got: %s\n", buf);
    close(sc);
    close(cl);
    SHOW(close(s));
    SHOW(unlink(a.sun_path));
}
static int tcp_server_finish(void) {
    SHOW(close(ts_ctl[1]));
    show_wait("client (exit code = good replies)", ts_client, 0);
    SHOW(close(ts_srv));
    return 0;
}

static int up_sv[2];
static pid_t up_child;
static int reverse_child(long unused) {
    char buf[256];
    (void)unused;
    close(up_sv[0]);
    while (read_line(up_sv[1], buf, sizeof buf) >= 0) {
        size_t l = strlen(buf);
        for (size_t i = 0; i < l / 2; i++) {
            char t = buf[i];
            buf[i] = buf[l - 1 - i];
            buf[l - 1 - i] = t;
        }
        dprintf(up_sv[1], "%s\n", buf);
    }
    return 6;
}
static void unix_pair_before(void) {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, up_sv)) die("socketpair");
    up_child = spawn(reverse_child, 0);
    close(up_sv[1]);
}
static void unix_pair_phase(int n) {
    char buf[256];
    dprintf(up_sv[0], "phase %d says hello\n", n);
    SHOW(read_line(up_sv[0], buf, sizeof buf));
    say("reversed by the home child: %s\n", buf);
    int sv[2];
    SHOW(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv));
    SHOW(send(sv[0], "datagram", 8, 0));
    memset(buf, 0, sizeof buf);
    SHOW(recv(sv[1], buf, sizeof buf, 0));
    say("got: %s\n", buf);
    SHOW(shutdown(sv[0], SHUT_RDWR));
    SHOW(close(sv[0]));
    SHOW(close(sv[1]));
}
static int unix_pair_finish(void) {
    SHOW(shutdown(up_sv[0], SHUT_WR));
    show_wait("reversing child", up_child, 0);
    return 0;
}

/* A home child writing "data K" to pa when told through pb (poll, select, epoll). */
static int wt_pa[2], wt_pb[2];
static pid_t wt_child;
static int data_child(long unused) {
    char c;
    int k = 0;
    (void)unused;
    close(wt_pa[0]);
    close(wt_pb[1]);
    while (read(wt_pb[0], &c, 1) == 1) dprintf(wt_pa[1], "data %d\n", ++k);
    return 4;
}
static void waiter_before(void) {
    if (pipe(wt_pa) || pipe(wt_pb)) die("pipe");
    wt_child = spawn(data_child, 0);
    close(wt_pa[1]);
    close(wt_pb[0]);
}
static int waiter_finish(void) {
    SHOW(close(wt_pb[1]));
    show_wait("data child", wt_child, 0);
    return 0;
}
static void read_data(void) {
    char buf[64];
    read_line(wt_pa[0], buf, sizeof buf);
    say("read: %s\n", buf);
}

static void poll_phase(int n) {
    struct pollfd f = {.fd = wt_pa[0], .events = POLLIN};
    (void)n;
    SHOW(poll(&f, 1, 0));
    SHOW(poll(&f, 1, 50));
    SHOW(write(wt_pb[1], "x", 1));
    SHOW(poll(&f, 1, -1));
    say("revents %#x\n", f.revents);
    read_data();
    struct timespec z = {0, 0};
    SHOW(ppoll(&f, 1, &z, NULL));
    struct pollfd w[2] = {{.fd = wt_pb[1], .events = POLLOUT}, {.fd = 999, .events = POLLIN}};
    SHOW(poll(w, 2, 0));
    say("revents %#x %#x\n", w[0].revents, w[1].revents);
    SHOW(poll(NULL, 0, 30));
}

static void select_phase(int n) {
    fd_set r, w;
    struct timeval tv = {0, 50000};
    (void)n;
    FD_ZERO(&r);
    FD_SET(wt_pa[0], &r);
    SHOW(select(wt_pa[0] + 1, &r, NULL, NULL, &tv));
    say("timeout left %ld.%06ld, set %d\n", (long)tv.tv_sec, (long)tv.tv_usec, FD_ISSET(wt_pa[0], &r));
    SHOW(write(wt_pb[1], "x", 1));
    FD_ZERO(&r);
    FD_SET(wt_pa[0], &r);
    SHOW(select(wt_pa[0] + 1, &r, NULL, NULL, NULL));
    say("readable %d\n", FD_ISSET(wt_pa[0], &r));
    read_data();
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(wt_pa[0], &r);
    FD_SET(wt_pb[1], &w);
    int mx = wt_pa[0] > wt_pb[1] ? wt_pa[0] : wt_pb[1];
    tv.tv_sec = 0;
    tv.tv_usec = 0;
    SHOW(select(mx + 1, &r, &w, NULL, &tv));
    say("readable %d writable %d\n", FD_ISSET(wt_pa[0], &r), FD_ISSET(wt_pb[1], &w));
}

static int ep_fd;
static void epoll_before(void) {
    waiter_before();
    ep_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1122334455667788ull};
    SHOW(epoll_ctl(ep_fd, EPOLL_CTL_ADD, wt_pa[0], &ev));
}
static void epoll_phase(int n) {
    struct epoll_event ev[4];
    (void)n;
    SHOW(epoll_wait(ep_fd, ev, 4, 0));
    SHOW(epoll_wait(ep_fd, ev, 4, 50));
    SHOW(write(wt_pb[1], "x", 1));
    SHOW(epoll_wait(ep_fd, ev, 4, -1));
    say("events %#x data %llx\n", ev[0].events, (unsigned long long)ev[0].data.u64);
    read_data();
    int e2 = SHOW(epoll_create1(0));
    int efd = eventfd(0, 0);
    struct epoll_event one = {.events = EPOLLIN, .data.u32 = 77};
    SHOW(epoll_ctl(e2, EPOLL_CTL_ADD, efd, &one));
    SHOW(epoll_ctl(e2, EPOLL_CTL_ADD, efd, &one));
    uint64_t v = 1;
    SHOW(write(efd, &v, sizeof v));
    memset(ev, 0, sizeof ev);
    SHOW(epoll_wait(e2, ev, 4, 1000));
    say("events %#x data %u\n", ev[0].events, ev[0].data.u32);
    one.events = EPOLLOUT;
    SHOW(epoll_ctl(e2, EPOLL_CTL_MOD, efd, &one));
    SHOW(epoll_wait(e2, ev, 4, 0));
    say("events %#x\n", ev[0].events);
    SHOW(epoll_ctl(e2, EPOLL_CTL_DEL, efd, NULL));
    SHOW(epoll_wait(e2, ev, 4, 0));
    SHOW(close(efd));
    SHOW(close(e2));
}

static int ev_fd;
static void eventfd_before(void) { ev_fd = eventfd(5, 0); }
static void eventfd_phase(int n) {
    uint64_t v = 3;
    (void)n;
    SHOW(write(ev_fd, &v, sizeof v));
    v = 0;
    SHOW(read(ev_fd, &v, sizeof v));
    say("value %llu\n", (unsigned long long)v);
    int e2 = eventfd(0, EFD_NONBLOCK);
    SHOW(read(e2, &v, sizeof v));
    v = 2;
    SHOW(write(e2, &v, sizeof v));
    struct pollfd f = {.fd = e2, .events = POLLIN};
    SHOW(poll(&f, 1, 0));
    SHOW(read(e2, &v, sizeof v));
    say("value %llu\n", (unsigned long long)v);
    int e3 = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
    for (int i = 0; i < 3; i++) {
        v = 0;
        SHOW(read(e3, &v, sizeof v));
        say("semaphore value %llu\n", (unsigned long long)v);
    }
    SHOW(read(e3, &v, 4));
    close(e2);
    close(e3);
}

/* ------------------------------------------------------------------------------------------ */
/* Terminal input, big writes, environment, limits, memory */

static void stdin_phase(int n) {
    char buf[256];
    say("prompt %d\n", n);
    SHOW(read_line(0, buf, sizeof buf));
    say("got: %s\n", buf);
    SHOW(isatty(0));
    if (n == 2) SHOW(read(0, buf, sizeof buf));
}

static void fill_lines(char *b, size_t n, int seed) {
    for (size_t i = 0; i < n; i++) b[i] = (i % 64 == 63) ? '\n' : (char)('a' + (i / 64 * 7 + i + (size_t)seed) % 26);
}
static void large_write_phase(int n) {
    size_t size = (size_t)(n == 1 ? 8 : 3) << 20;
    char *a = malloc(size), *b = malloc(size);
    char name[32];
    if (!a || !b) die("malloc");
    fill_lines(a, size, n);
    fflush(stdout);
    SHOW(write_all(1, a, size));
    say("fnv of what was written %016llx\n", (unsigned long long)fnv(a, size));
    snprintf(name, sizeof name, "big%d", n);
    int fd = open(wp(name), O_RDWR | O_CREAT | O_TRUNC, 0644);
    SHOW(write_all(fd, a, size));
    SHOW(fsync(fd));
    struct stat st;
    SHOW(fstat(fd, &st));
    say("size %lld\n", (long long)st.st_size);
    SHOW(lseek(fd, 0, SEEK_SET));
    SHOW(read_full(fd, b, size));
    say("read back equal: %d\n", memcmp(a, b, size) == 0);
    size_t half = 256 << 10;
    struct iovec iov[2] = {{b, half}, {b + half, half}};
    memset(b, 0, 2 * half);
    SHOW(lseek(fd, (off_t)half, SEEK_SET));
    SHOW(readv(fd, iov, 2));
    say("readv equal: %d\n", memcmp(a + half, b, 2 * half) == 0);
    FILE *f = fdopen(dup(fd), "w");
    say("fwrite %zu\n", fwrite(a, 1, 2 << 20, f));
    SHOW(fclose(f));
    SHOW(fstat(fd, &st));
    say("size %lld\n", (long long)st.st_size);
    SHOW(close(fd));
    free(a);
    free(b);
}

/* One write() and one read() call of 8 MiB: a program may rely on their full counts. */
static void big_single_phase(int n) {
    size_t size = 8 << 20;
    char *a = malloc(size), *b = malloc(size);
    char name[32];
    if (!a || !b) die("malloc");
    fill_lines(a, size, n);
    fflush(stdout);
    ssize_t w = write(1, a, size);
    say("one write of 8 MiB to stdout returned %zd\n", w);
    snprintf(name, sizeof name, "single%d", n);
    int fd = open(wp(name), O_RDWR | O_CREAT | O_TRUNC, 0644);
    SHOW(write(fd, a, size));
    SHOW(pread(fd, b, size, 0));
    struct iovec iov[2] = {{a, size / 2}, {a + size / 2, size / 2}};
    SHOW(lseek(fd, 0, SEEK_SET));
    SHOW(writev(fd, iov, 2));
    SHOW(close(fd));
    free(a);
    free(b);
}

static void env_before(void) {
    SHOW(setenv("ZDTM_BEFORE", "set before the move", 1));
    SHOW(unsetenv("ZDTM_UNSET"));
}
static void env_phase(int n) {
    char name[32];
    say("ZDTM_FROM_TEST=%s\n", getenv("ZDTM_FROM_TEST") ? getenv("ZDTM_FROM_TEST") : "(null)");
    say("ZDTM_BEFORE=%s\n", getenv("ZDTM_BEFORE") ? getenv("ZDTM_BEFORE") : "(null)");
    say("ZDTM_UNSET=%s\n", getenv("ZDTM_UNSET") ? getenv("ZDTM_UNSET") : "(null)");
    snprintf(name, sizeof name, "ZDTM_PHASE_%d", n);
    SHOW(setenv(name, "yes", 0));
    SHOW(putenv(n == 1 ? "ZDTM_PUT=one" : "ZDTM_PUT=two"));
    char *names[64];
    int k = 0;
    for (char **e = environ; *e && k < 64; e++)
        if (!strncmp(*e, "ZDTM_", 5)) names[k++] = *e;
    sort_strs(names, k);
    for (int i = 0; i < k; i++) say("env %s\n", names[i]);
    say("PATH is set: %d\n", getenv("PATH") != NULL);
}

static void show_limit(const char *label, int res) {
    struct rlimit r;
    if (getrlimit(res, &r) != 0)
        say("%s: getrlimit failed %s\n", label, strerror(errno));
    else if (r.rlim_cur == RLIM_INFINITY)
        say("%s: soft unlimited\n", label);
    else
        say("%s: soft %llu\n", label, (unsigned long long)r.rlim_cur);
}
static void rlimits_before(void) {
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    r.rlim_cur = 64;
    SHOW(setrlimit(RLIMIT_NOFILE, &r));
}
static void rlimits_phase(int n) {
    struct rlimit r, old;
    int fds[128], k = 0, last = -1;
    (void)n;
    show_limit("nofile", RLIMIT_NOFILE);
    for (; k < 128; k++) {
        fds[k] = open("/dev/null", O_RDONLY);
        if (fds[k] < 0) break;
        last = fds[k];
    }
    say("opened until fd %d, then: %s\n", last, strerror(errno));
    for (int i = 0; i < k; i++) close(fds[i]);
    getrlimit(RLIMIT_NOFILE, &r);
    r.rlim_cur = 48;
    SHOW(setrlimit(RLIMIT_NOFILE, &r));
    SHOW(prlimit(0, RLIMIT_NOFILE, NULL, &old));
    say("prlimit: soft %llu\n", (unsigned long long)old.rlim_cur);
    SHOW(dup2(0, 50));
    r.rlim_cur = 64;
    SHOW(prlimit(0, RLIMIT_NOFILE, &r, &old));
    say("prlimit: old soft %llu\n", (unsigned long long)old.rlim_cur);
    show_limit("as", RLIMIT_AS);
    show_limit("stack", RLIMIT_STACK);
    show_limit("cpu", RLIMIT_CPU);
    show_limit("fsize", RLIMIT_FSIZE);
    /* Nothing is printed while the file-size limit holds: stdout may be a file. */
    getrlimit(RLIMIT_FSIZE, &r);
    r.rlim_cur = 1000;
    signal(SIGXFSZ, SIG_IGN);
    int fd = open(wp("fsize"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char buf[1500] = {0};
    int set = setrlimit(RLIMIT_FSIZE, &r);
    ssize_t w1 = write(fd, buf, sizeof buf);
    ssize_t w2 = write(fd, buf, sizeof buf);
    int e2 = errno;
    r.rlim_cur = r.rlim_max;
    int reset = setrlimit(RLIMIT_FSIZE, &r);
    close(fd);
    say("file size limit 1000: set %d, writes of 1500 bytes: %zd, then %zd (%s); reset %d\n", set, w1, w2, strerror(e2), reset);
    show_limit("core", RLIMIT_CORE);
    getrlimit(RLIMIT_CORE, &r);
    r.rlim_cur = 0;
    SHOW(setrlimit(RLIMIT_CORE, &r));
    show_limit("core", RLIMIT_CORE);
}
/* Limits on memory set after the move act on the process wherever it runs. */
static void rlimit_as_phase(int n) {
    struct rlimit r;
    (void)n;
    show_limit("as", RLIMIT_AS);
    getrlimit(RLIMIT_AS, &r);
    r.rlim_cur = 512ull << 20;
    SHOW(setrlimit(RLIMIT_AS, &r));
    void *p = mmap(NULL, 1ull << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    say("1 GiB mmap under a 512 MiB address-space limit: %s\n", p == MAP_FAILED ? strerror(errno) : "succeeded");
    if (p != MAP_FAILED) munmap(p, 1ull << 30);
    r.rlim_cur = RLIM_INFINITY;
    SHOW(setrlimit(RLIMIT_AS, &r));
    p = mmap(NULL, 1ull << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    say("1 GiB mmap without it: %s\n", p == MAP_FAILED ? strerror(errno) : "succeeded");
    if (p != MAP_FAILED) munmap(p, 1ull << 30);
}

static unsigned char *mem_heap, *mem_anon, *mem_brk;
static size_t mem_heap_size = 4 << 20;
static uint64_t mem_sum[4];
static void fill_rand(unsigned char *p, size_t n, uint64_t seed) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)x;
    }
}
static void mem_fill(int seed) {
    fill_rand(mem_heap, 4 << 20, (uint64_t)seed * 4 + 1);
    fill_rand(mem_anon, 2 << 20, (uint64_t)seed * 4 + 2);
    fill_rand(STACKBUF, STACKBUF_SIZE, (uint64_t)seed * 4 + 3);
    fill_rand(mem_brk, 65536, (uint64_t)seed * 4 + 4);
    mem_sum[0] = fnv(mem_heap, 4 << 20);
    mem_sum[1] = fnv(mem_anon, 2 << 20);
    mem_sum[2] = fnv(STACKBUF, STACKBUF_SIZE);
    mem_sum[3] = fnv(mem_brk, 65536);
}
static void memory_before(void) {
    mem_heap = malloc(mem_heap_size);
    mem_anon = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mem_brk = sbrk(65536);
    if (!mem_heap || mem_anon == MAP_FAILED || mem_brk == (void *)-1) die("memory");
    mem_fill(0);
}
static void memory_phase(int n) {
    say("heap %d anon %d stack %d brk %d\n", fnv(mem_heap, 4 << 20) == mem_sum[0], fnv(mem_anon, 2 << 20) == mem_sum[1],
        fnv(STACKBUF, STACKBUF_SIZE) == mem_sum[2], fnv(mem_brk, 65536) == mem_sum[3]);
    mem_fill(n);
    unsigned char *h = realloc(mem_heap, 12 << 20);
    say("realloc: %d, kept %d\n", h != NULL, h && fnv(h, 4 << 20) == mem_sum[0]);
    if (h) mem_heap = h;
    SHOW(mprotect(mem_anon, 4096, PROT_READ));
    say("read-only page readable: %d\n", fnv(mem_anon, 4096) == fnv(mem_anon, 4096));
    SHOW(mprotect(mem_anon, 4096, PROT_READ | PROT_WRITE));
    SHOW(madvise(mem_anon + 8192, 4096, MADV_DONTNEED));
    int zero = 1;
    for (int i = 0; i < 4096; i++) zero &= mem_anon[8192 + i] == 0;
    say("MADV_DONTNEED page reads zeros: %d\n", zero);
    fill_rand(mem_anon + 8192, 4096, (uint64_t)n * 4 + 2);
    void *extra = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    say("mmap: %d\n", extra != MAP_FAILED);
    fill_rand(extra, 1 << 20, 99);
    say("fresh mapping fnv %016llx\n", (unsigned long long)fnv(extra, 1 << 20));
    SHOW(munmap(extra, 1 << 20));
    mem_fill(n);
}

/* Forwarded calls back to back while the test brings the process home (it creates ctl/home
 * once the process is there): the return must not wait for a call in flight. */
static void busy_calls_phase(int n) {
    char p[4200];
    long calls = 0;
    snprintf(p, sizeof p, "%s/home%d", CTL, n);
    say("busy %d\n", n);
    /* A short sleep between calls: the remote side is often idle when the recall comes. At least
     * one call is made whoever is first (the test creating the file, or this loop), so the line
     * printed does not depend on timing. */
    struct timespec pause = {0, 50000};
    do {
        calls++;
        nanosleep(&pause, NULL);
    } while (access(p, F_OK) != 0 && calls < 100000000);
    say("calls made: %d\n", calls > 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Ends */

static void on_exit_say(void) { say("atexit handler ran\n"); }
static void exit_before(void) { SHOW(atexit(on_exit_say)); }
static void exit_away_phase(int n) {
    say("exiting with 41 in phase %d\n", n);
    exit(41);
}
static void exit_code_phase(int n) { say("phase %d, exit 37 at the end\n", n); }
static int exit_code_finish(void) { return 37; }

static void no_core(void) {
    struct rlimit r = {0, 0};
    SHOW(setrlimit(RLIMIT_CORE, &r));
}
static void abort_phase(int n) {
    say("abort in phase %d\n", n);
    abort();
}
static volatile uintptr_t BAD = 8;
static void on_segv(int s, siginfo_t *si, void *ctx) {
    (void)s;
    (void)ctx;
    const char *m = (uintptr_t)si->si_addr == BAD ? "[1] caught SIGSEGV at the bad address\n" : "[1] caught SIGSEGV elsewhere\n";
    if (write(1, m, strlen(m)) < 0) _exit(96);
}
static void segv_before(void) {
    no_core();
    struct sigaction sa = {0};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    SHOW(sigaction(SIGSEGV, &sa, NULL));
}
static void segv_phase(int n) {
    say("fault in phase %d\n", n);
    *(volatile int *)BAD = 1;
    say("not reached\n");
}
static void term_phase(int n) {
    say("waiting for SIGTERM %d\n", n);
    for (int i = 0; i < 30000; i++) sleep_ms(2);
    say("no SIGTERM came\n");
}

/* ------------------------------------------------------------------------------------------ */
/* Identity, time, host, /proc */

static pid_t id_pid, id_ppid, id_pgrp, id_sid, id_tid;
static uid_t id_uid, id_euid;
static gid_t id_gid, id_egid;
static void ids_before(void) {
    id_pid = getpid();
    id_ppid = getppid();
    id_pgrp = getpgrp();
    id_sid = getsid(0);
    id_tid = (pid_t)syscall(SYS_gettid);
    id_uid = getuid();
    id_euid = geteuid();
    id_gid = getgid();
    id_egid = getegid();
}
static void ids_phase(int n) {
    (void)n;
    say("pid %d tid %d ppid %d pgrp %d sid %d\n", getpid() == id_pid, (pid_t)syscall(SYS_gettid) == id_tid, getppid() == id_ppid,
        getpgrp() == id_pgrp, getsid(0) == id_sid);
    say("pgid %d sid(pid) %d tid is pid %d\n", getpgid(0) == id_pgrp, getsid(getpid()) == id_sid, id_tid == id_pid);
    say("uid %d euid %d gid %d egid %d\n", getuid() == id_uid, geteuid() == id_euid, getgid() == id_gid, getegid() == id_egid);
    SHOW(kill(getpid(), 0));
    SHOW(kill(getppid(), 0));
    SHOW(getpgid(999999));
}

static struct timespec ck_mono0;
static void clock_before(void) { clock_gettime(CLOCK_MONOTONIC, &ck_mono0); }
static int64_t ts_ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }
static void clock_phase(int n) {
    struct timespec a, b, r;
    struct timeval tv;
    (void)n;
    clock_gettime(CLOCK_MONOTONIC, &a);
    say("monotonic since before > 0: %d\n", ts_ns(a) > ts_ns(ck_mono0));
    struct timespec d = {0, 100000000};
    SHOW(nanosleep(&d, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    say("nanosleep 100 ms took at least 100 ms: %d\n", ts_ns(b) - ts_ns(a) >= 100000000);
    struct timespec until = b;
    until.tv_nsec += 50000000;
    if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
    SHOW(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL));
    clock_gettime(CLOCK_MONOTONIC, &a);
    say("absolute sleep reached its time: %d\n", ts_ns(a) >= ts_ns(until));
    clock_gettime(CLOCK_REALTIME, &a);
    time_t t = time(NULL);
    gettimeofday(&tv, NULL);
    say("time(), gettimeofday and CLOCK_REALTIME agree: %d %d\n", llabs((long long)t - a.tv_sec) <= 1, llabs((long long)tv.tv_sec - a.tv_sec) <= 1);
    SHOW(clock_getres(CLOCK_MONOTONIC, &r));
    say("resolution %ld ns\n", r.tv_nsec);
    clock_gettime(CLOCK_BOOTTIME, &b);
    clock_gettime(CLOCK_MONOTONIC, &a);
    say("boottime >= monotonic: %d\n", ts_ns(b) >= ts_ns(a) - 1000000);
}

static int64_t cpu_ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return ts_ns(t);
}
static int64_t cpu0, thr0;
static void cpu_clock_before(void) {
    burn_ms(300);
    cpu0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
    thr0 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
}
static void cpu_clock_phase(int n) {
    (void)n;
    burn_ms(50);
    int64_t c = cpu_ns(CLOCK_PROCESS_CPUTIME_ID), t = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    say("process CPU time kept what it used before: %d\n", c >= cpu0 + 40000000);
    say("thread CPU time kept what it used before: %d\n", t >= thr0 + 40000000);
    cpu0 = c;
    thr0 = t;
}

static struct utsname un0;
static char host0[256];
static void uname_before(void) {
    SHOW(uname(&un0));
    SHOW(gethostname(host0, sizeof host0));
}
static void uname_phase(int n) {
    struct utsname u;
    char h[256];
    (void)n;
    SHOW(uname(&u));
    say("sysname %s machine %s\n", u.sysname, u.machine);
    say("same sysname %d nodename %d release %d version %d machine %d\n", !strcmp(u.sysname, un0.sysname), !strcmp(u.nodename, un0.nodename),
        !strcmp(u.release, un0.release), !strcmp(u.version, un0.version), !strcmp(u.machine, un0.machine));
    SHOW(gethostname(h, sizeof h));
    say("same hostname %d\n", !strcmp(h, host0));
}

static char ps_exe[4096], ps_fds[1024];
static int ps_fd;
static void list_fds(char *out, size_t cap) {
    int fds[256], k = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    out[0] = 0;
    if (!d) {
        snprintf(out, cap, "(cannot list: %s)", strerror(errno));
        return;
    }
    while ((e = readdir(d)) && k < 256)
        if (e->d_name[0] != '.') fds[k++] = atoi(e->d_name);
    closedir(d);
    for (int i = 0; i < k; i++)
        for (int j = i + 1; j < k; j++)
            if (fds[j] < fds[i]) {
                int t = fds[i];
                fds[i] = fds[j];
                fds[j] = t;
            }
    for (int i = 0; i < k; i++) snprintf(out + strlen(out), cap - strlen(out), " %d", fds[i]);
}
static ssize_t slurp(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read_full(fd, buf, cap - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return n;
}
static void proc_self_before(void) {
    ps_fd = open(wp("marker"), O_RDWR | O_CREAT, 0644);
    ssize_t r = readlink("/proc/self/exe", ps_exe, sizeof ps_exe - 1);
    if (ps_fd < 0 || r < 0) die("proc_self setup");
    ps_exe[r] = 0;
    list_fds(ps_fds, sizeof ps_fds);
}
static void proc_self_phase(int n) {
    static char buf[1 << 16];
    char fds[1024], link[4096];
    (void)n;
    ssize_t r = readlink("/proc/self/exe", link, sizeof link - 1);
    link[r > 0 ? r : 0] = 0;
    say("exe same %d\n", !strcmp(link, ps_exe));
    snprintf(fds, sizeof fds, "/proc/self/fd/%d", ps_fd);
    r = readlink(fds, link, sizeof link - 1);
    link[r > 0 ? r : 0] = 0;
    say("fd link: %s\n", rel(link));
    list_fds(fds, sizeof fds);
    say("open fds same as before %d\n", !strcmp(fds, ps_fds));
    r = readlink("/proc/self/cwd", link, sizeof link - 1);
    say("cwd link same as getcwd %d\n", r > 0 && (link[r] = 0, getcwd(buf, sizeof buf)) && !strcmp(buf, link));
    r = slurp("/proc/self/status", buf, sizeof buf);
    char want[64];
    snprintf(want, sizeof want, "\nPid:\t%d\n", (int)getpid());
    say("status: Pid is getpid %d\n", r > 0 && strstr(buf, want) != NULL);
    snprintf(want, sizeof want, "\nPPid:\t%d\n", (int)getppid());
    say("status: PPid is getppid %d\n", r > 0 && strstr(buf, want) != NULL);
    say("status: running or sleeping %d\n", r > 0 && (strstr(buf, "\nState:\tR") || strstr(buf, "\nState:\tS")));
    say("status: one thread %d\n", r > 0 && strstr(buf, "\nThreads:\t1\n") != NULL);
    r = slurp("/proc/self/stat", buf, sizeof buf);
    say("stat: first field is getpid %d\n", r > 0 && atoi(buf) == getpid());
    r = slurp("/proc/self/limits", buf, sizeof buf);
    say("limits readable %d\n", r > 0 && strstr(buf, "Max open files") != NULL);
}
/* The files of /proc/self that show the process's memory. */
static void proc_self_mem_phase(int n) {
    static char buf[1 << 16];
    (void)n;
    ssize_t r = slurp("/proc/self/cmdline", buf, sizeof buf);
    size_t off = 0;
    int i = 0, same = r > 0;
    for (; same && ARGV[i]; i++) {
        same = off < (size_t)r && !strcmp(buf + off, ARGV[i]);
        off += strlen(ARGV[i]) + 1;
    }
    say("cmdline is argv %d\n", same && off == (size_t)r);
    r = slurp("/proc/self/environ", buf, sizeof buf);
    say("environ has PATH %d\n", r > 0 && memmem(buf, (size_t)r, "PATH=", 5) != NULL);
    r = slurp("/proc/self/maps", buf, sizeof buf);
    say("maps show the program %d and the stack %d\n", r > 0 && strstr(buf, ps_exe) != NULL, r > 0 && strstr(buf, "[stack]") != NULL);
    r = slurp("/proc/self/stat", buf, sizeof buf);
    char *p = r > 0 ? strrchr(buf, ')') : NULL;
    unsigned long long vsize = 0;
    /* Field 23 (vsize); the scan starts at field 3. */
    if (p) sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %*u %llu", &vsize);
    say("stat: virtual size above 1 MiB %d\n", vsize > (1u << 20));
}

/* ------------------------------------------------------------------------------------------ */
/* Socket options and addresses, messages, peer addresses, credentials, locks, ioctls */

static int so_srv, so_port;
static void sockopt_before(void) { so_srv = tcp_listen(&so_port); }
static void sockopt_phase(int n) {
    int v = 0, one = 1;
    socklen_t l = sizeof v;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    say("socket: %d\n", s >= 0);
    SHOW(getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &l));
    say("SO_TYPE is SOCK_STREAM %d, optlen %d\n", v == SOCK_STREAM, (int)l);
    SHOW(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    v = 0;
    l = sizeof v;
    SHOW(getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &l));
    say("TCP_NODELAY %d\n", v != 0);
    v = 65536;
    SHOW(setsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, sizeof v));
    v = 0;
    l = sizeof v;
    SHOW(getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, &l));
    say("SO_RCVBUF doubled by the kernel %d\n", v == 2 * 65536);
    struct linger lg = {1, 7}, lg2 = {0, 0};
    SHOW(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    l = sizeof lg2;
    SHOW(getsockopt(s, SOL_SOCKET, SO_LINGER, &lg2, &l));
    say("linger %d %d, optlen %d\n", lg2.l_onoff != 0, lg2.l_linger, (int)l);
    /* A too small option buffer: the length comes back as what fits. */
    char small = 0x55;
    l = 1;
    SHOW(getsockopt(s, SOL_SOCKET, SO_TYPE, &small, &l));
    say("optlen %d\n", (int)l);
    SHOW(getsockopt(s, SOL_SOCKET, 9999, &v, &l));
    SHOW(connect(s, (struct sockaddr *)&(struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)so_port),
                                                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)},
                 sizeof(struct sockaddr_in)));
    struct sockaddr_in me = {0}, peer = {0};
    l = sizeof me;
    SHOW(getsockname(s, (struct sockaddr *)&me, &l));
    say("getsockname: inet %d loopback %d len %d\n", me.sin_family == AF_INET, me.sin_addr.s_addr == htonl(INADDR_LOOPBACK), (int)l);
    l = sizeof peer;
    SHOW(getpeername(s, (struct sockaddr *)&peer, &l));
    say("getpeername: the listener's port %d len %d\n", ntohs(peer.sin_port) == so_port, (int)l);
    int c = accept(so_srv, NULL, NULL);
    struct sockaddr_in cpeer = {0};
    l = sizeof cpeer;
    SHOW(getpeername(c, (struct sockaddr *)&cpeer, &l));
    say("accepted side sees our port %d\n", cpeer.sin_port == me.sin_port);
    close(c);
    close(s);
    /* A Unix socket bound in the scratch directory (at home): its name and SO_PEERCRED. */
    struct sockaddr_un a = {0}, got = {0};
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", wp(n == 1 ? "so1" : "so2"));
    int ls = socket(AF_UNIX, SOCK_STREAM, 0);
    SHOW(bind(ls, (struct sockaddr *)&a, sizeof a));
    SHOW(listen(ls, 1));
    l = sizeof got;
    SHOW(getsockname(ls, (struct sockaddr *)&got, &l));
    say("unix name %s, len is offsetof+strlen+1 %d\n", rel(got.sun_path), (size_t)l == offsetof(struct sockaddr_un, sun_path) + strlen(a.sun_path) + 1);
    int cl = socket(AF_UNIX, SOCK_STREAM, 0);
    SHOW(connect(cl, (struct sockaddr *)&a, sizeof a));
    int sc = accept(ls, NULL, NULL);
    struct ucred cr = {0};
    l = sizeof cr;
    SHOW(getsockopt(sc, SOL_SOCKET, SO_PEERCRED, &cr, &l));
    say("peer credentials: pid is getpid %d, uid %d, gid %d\n", cr.pid == getpid(), cr.uid == getuid(), cr.gid == getgid());
    memset(&got, 0, sizeof got);
    l = sizeof got;
    SHOW(getpeername(cl, (struct sockaddr *)&got, &l));
    say("peer name %s\n", rel(got.sun_path));
    close(sc);
    close(cl);
    close(ls);
    SHOW(unlink(a.sun_path));
}

static int mg_dgram[2], mg_stream[2], mg_big[2];
static pid_t mg_child;
/* 3 MiB and a bit: a sendmsg far larger than one deputy buffer. */
#define MG_BIG ((3 << 20) + 123)
static unsigned char mg_buf[MG_BIG];
/* A home child: reads MG_BIG bytes at a time and answers with their hash. */
static int big_reader(long unused) {
    (void)unused;
    close(mg_big[0]);
    for (;;) {
        ssize_t n = read_full(mg_big[1], mg_buf, MG_BIG);
        if (n <= 0) return 0;
        dprintf(mg_big[1], "got %zd hash %016llx\n", n, (unsigned long long)fnv(mg_buf, (size_t)n));
    }
}
static void msg_before(void) {
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, mg_dgram) || socketpair(AF_UNIX, SOCK_STREAM, 0, mg_stream) ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, mg_big))
        die("socketpair");
    put_file(wp("passed"), "a file opened at home, passed with SCM_RIGHTS\n");
    mg_child = spawn(big_reader, 0);
    close(mg_big[1]);
}
static int msg_finish(void) {
    SHOW(shutdown(mg_big[0], SHUT_WR));
    show_wait("big reader", mg_child, 0);
    return 0;
}
/* Sends fd over mg_stream[0] with one data byte. */
static void send_fd(int fd) {
    char c = 'F';
    struct iovec iov = {&c, 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof u.buf;
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &fd, sizeof fd);
    SHOW(sendmsg(mg_stream[0], &m, 0));
}
static int recv_fd(void) {
    char c = 0;
    struct iovec iov = {&c, 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof u.buf;
    SHOW(recvmsg(mg_stream[1], &m, 0));
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    int fd = -1;
    say("byte %c, controllen %d, rights %d\n", c, (int)m.msg_controllen, h && h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS);
    if (h) memcpy(&fd, CMSG_DATA(h), sizeof fd);
    return fd;
}
static void msg_phase(int n) {
    char a[] = "scattered ", b[] = "over three ", c[] = "iovecs";
    struct iovec out[3] = {{a, strlen(a)}, {b, strlen(b)}, {c, strlen(c)}};
    struct msghdr m = {0};
    m.msg_iov = out;
    m.msg_iovlen = 3;
    SHOW(sendmsg(mg_dgram[0], &m, 0));
    char x[8], y[64];
    memset(x, 0, sizeof x);
    memset(y, 0, sizeof y);
    struct iovec in[2] = {{x, sizeof x - 1}, {y, sizeof y - 1}};
    struct msghdr r = {0};
    r.msg_iov = in;
    r.msg_iovlen = 2;
    SHOW(recvmsg(mg_dgram[1], &r, 0));
    say("gathered into two: '%s' + '%s', flags %d\n", x, y, r.msg_flags);
    /* A datagram longer than the buffer: MSG_TRUNC in msg_flags. */
    SHOW(sendmsg(mg_dgram[0], &m, 0));
    memset(x, 0, sizeof x);
    struct iovec one = {x, 4};
    r.msg_iov = &one;
    r.msg_iovlen = 1;
    SHOW(recvmsg(mg_dgram[1], &r, 0));
    say("truncated: '%s', MSG_TRUNC %d\n", x, (r.msg_flags & MSG_TRUNC) != 0);
    /* Named datagram sockets in the scratch directory: the sender's name comes back. */
    struct sockaddr_un ra = {0}, sa = {0}, from;
    ra.sun_family = sa.sun_family = AF_UNIX;
    snprintf(ra.sun_path, sizeof ra.sun_path, "%s", wp(n == 1 ? "rcv1" : "rcv2"));
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", wp(n == 1 ? "snd1" : "snd2"));
    int rs = socket(AF_UNIX, SOCK_DGRAM, 0), ss = socket(AF_UNIX, SOCK_DGRAM, 0);
    SHOW(bind(rs, (struct sockaddr *)&ra, sizeof ra));
    SHOW(bind(ss, (struct sockaddr *)&sa, sizeof sa));
    struct msghdr named = {0};
    named.msg_name = &ra;
    named.msg_namelen = sizeof ra;
    named.msg_iov = out;
    named.msg_iovlen = 3;
    SHOW(sendmsg(ss, &named, 0));
    memset(&from, 0, sizeof from);
    memset(y, 0, sizeof y);
    struct iovec iy = {y, sizeof y - 1};
    struct msghdr rn = {0};
    rn.msg_name = &from;
    rn.msg_namelen = sizeof from;
    rn.msg_iov = &iy;
    rn.msg_iovlen = 1;
    SHOW(recvmsg(rs, &rn, 0));
    say("from %s: '%s', namelen is offsetof+strlen+1 %d\n", rel(from.sun_path), y,
        (size_t)rn.msg_namelen == offsetof(struct sockaddr_un, sun_path) + strlen(sa.sun_path) + 1);
    close(rs);
    close(ss);
    unlink(ra.sun_path);
    unlink(sa.sun_path);
    /* A descriptor of a home file passed to ourselves with SCM_RIGHTS. */
    int fd = open(wp("passed"), O_RDONLY);
    say("opened: %d\n", fd >= 0);
    send_fd(fd);
    close(fd);
    int got = recv_fd();
    say("received a descriptor: %d\n", got >= 0);
    char buf[128] = {0};
    SHOW(read(got, buf, sizeof buf - 1));
    say("through it: %s", buf);
    SHOW(close(got));
    /* One sendmsg of 3 MiB over three iovecs on a stream: all of it is sent. */
    for (size_t i = 0; i < MG_BIG; i++) mg_buf[i] = (unsigned char)(i * 7 + (size_t)n);
    struct iovec big[3] = {{mg_buf, 1 << 20}, {mg_buf + (1 << 20), 1 << 20}, {mg_buf + (2 << 20), (1 << 20) + 123}};
    struct msghdr bm = {0};
    bm.msg_iov = big;
    bm.msg_iovlen = 3;
    SHOW(sendmsg(mg_big[0], &bm, 0));
    char line[128], want[128];
    snprintf(want, sizeof want, "got %d hash %016llx", MG_BIG, (unsigned long long)fnv(mg_buf, MG_BIG));
    read_line(mg_big[0], line, sizeof line);
    say("the home child got it all: %d\n", !strcmp(line, want));
}

static int pa_srv, pa_port;
static void peer_addr_before(void) { pa_srv = tcp_listen(&pa_port); }
static void peer_addr_phase(int n) {
    (void)n;
    int s = tcp_connect(pa_port);
    struct sockaddr_in me = {0}, peer = {0};
    socklen_t l = sizeof me;
    getsockname(s, (struct sockaddr *)&me, &l);
    l = sizeof peer;
    int c = accept(pa_srv, (struct sockaddr *)&peer, &l);
    say("accept: ok %d, peer is the client %d, len %d\n", c >= 0, peer.sin_port == me.sin_port && peer.sin_addr.s_addr == me.sin_addr.s_addr,
        (int)l);
    close(c);
    close(s);
    s = tcp_connect(pa_port);
    getsockname(s, (struct sockaddr *)&me, &l);
    memset(&peer, 0, sizeof peer);
    l = 4; /* too small: cut, and the full length comes back */
    int c2 = accept4(pa_srv, (struct sockaddr *)&peer, &l, SOCK_CLOEXEC);
    say("accept4: ok %d, len %d, port cut off %d, cloexec %d\n", c2 >= 0, (int)l, peer.sin_port == me.sin_port && peer.sin_addr.s_addr == 0,
        fcntl(c2, F_GETFD) == FD_CLOEXEC);
    close(c2);
    close(s);
    /* UDP: sendto an address, recvfrom with the sender's address. */
    int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a1 = {0}, a2 = {0}, from = {0};
    a1.sin_family = a2.sin_family = AF_INET;
    a1.sin_addr.s_addr = a2.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    SHOW(bind(u1, (struct sockaddr *)&a1, sizeof a1));
    SHOW(bind(u2, (struct sockaddr *)&a2, sizeof a2));
    l = sizeof a1;
    getsockname(u1, (struct sockaddr *)&a1, &l);
    l = sizeof a2;
    getsockname(u2, (struct sockaddr *)&a2, &l);
    SHOW(sendto(u1, "udp datagram", 12, 0, (struct sockaddr *)&a2, sizeof a2));
    char buf[64] = {0};
    l = sizeof from;
    SHOW(recvfrom(u2, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &l));
    say("got '%s' from u1 %d, len %d\n", buf, from.sin_port == a1.sin_port, (int)l);
    SHOW(sendto(u2, "reply", 5, 0, (struct sockaddr *)&from, l));
    memset(buf, 0, sizeof buf);
    SHOW(recvfrom(u1, buf, sizeof buf - 1, MSG_WAITALL, NULL, NULL));
    say("reply '%s'\n", buf);
    close(u1);
    close(u2);
}

static gid_t cr_groups[64];
static int cr_ngroups;
static void creds_before(void) {
    cr_ngroups = getgroups(64, cr_groups);
    put_file(wp("secret"), "for root only\n");
    if (chmod(wp("secret"), 0600)) die("chmod");
}
static void show_ids(void) {
    uid_t r, e, s;
    gid_t gr, ge, gs;
    SHOW(getresuid(&r, &e, &s));
    SHOW(getresgid(&gr, &ge, &gs));
    say("uids %d %d %d gids %d %d %d\n", (int)r, (int)e, (int)s, (int)gr, (int)ge, (int)gs);
}
static void creds_phase(int n) {
    (void)n;
    gid_t g[64];
    say("groups as before %d\n", getgroups(64, g) == cr_ngroups && !memcmp(g, cr_groups, sizeof(gid_t) * (size_t)cr_ngroups));
    show_ids();
    if (getuid() != 0) {
        say("not root: nothing more\n");
        return;
    }
    gid_t nobody = 65534;
    SHOW(setgroups(1, &nobody));
    SHOW(getgroups(0, NULL));
    SHOW(setresgid((gid_t)-1, 65534, (gid_t)-1));
    SHOW(setresuid((uid_t)-1, 65534, (uid_t)-1));
    show_ids();
    SHOW(setfsuid((uid_t)-1));
    struct __user_cap_header_struct { uint32_t version; int pid; } hdr = {0x20080522, 0};
    struct { uint32_t effective, permitted, inheritable; } caps[2];
    memset(caps, 0xff, sizeof caps);
    SHOW(syscall(SYS_capget, &hdr, caps));
    say("no effective capabilities %d, permitted kept %d\n", caps[0].effective == 0 && caps[1].effective == 0, caps[0].permitted != 0);
    /* The home task's identity decides at home: the secret file is closed to nobody. */
    SHOW(open(wp("secret"), O_RDONLY));
    SHOW(setuid(0));
    SHOW(setresuid((uid_t)-1, 0, (uid_t)-1));
    SHOW(setresgid((gid_t)-1, 0, (gid_t)-1));
    SHOW(setgroups((size_t)cr_ngroups, cr_groups));
    show_ids();
    int fd = SHOW(open(wp("secret"), O_RDONLY));
    close(fd);
    SHOW(setreuid((uid_t)-1, 0));
    SHOW(setregid((gid_t)-1, 0));
    SHOW(setgid(0));
}

/* The identity on the node where the process runs follows the one set at home: the test looks
 * at the remote task's /proc status while it waits for SIGUSR1 with euid/egid nobody. */
static void creds_stub_before(void) {
    cr_ngroups = getgroups(64, cr_groups);
    block_one(SIG_BLOCK, SIGUSR1);
}
static void creds_stub_phase(int n) {
    gid_t nobody = 65534;
    int sig = 0;
    sigset_t w;
    if (getuid() != 0) {
        say("not root: nothing to do\n");
        return;
    }
    SHOW(setgroups(1, &nobody));
    SHOW(setresgid((gid_t)-1, 65534, (gid_t)-1));
    SHOW(setresuid((uid_t)-1, 65534, (uid_t)-1));
    say("dropped %d\n", n);
    sigemptyset(&w);
    sigaddset(&w, SIGUSR1);
    SHOW(sigwait(&w, &sig));
    SHOW(setresuid((uid_t)-1, 0, (uid_t)-1));
    SHOW(setresgid((gid_t)-1, 0, (gid_t)-1));
    SHOW(setgroups((size_t)cr_ngroups, cr_groups));
}

static int lk_fd, lk_to[2], lk_from[2];
static pid_t lk_child;
/* A home child: for each request byte, reports the conflicting lock it sees on the file. */
static int lock_checker(long unused) {
    (void)unused;
    char c;
    close(lk_to[1]);
    close(lk_from[0]);
    int fd = open(wp("locked"), O_RDWR);
    while (read(lk_to[0], &c, 1) == 1) {
        struct flock f = {0};
        f.l_type = F_WRLCK;
        f.l_whence = SEEK_SET;
        f.l_start = c == 'o' ? 20 : 0;
        f.l_len = 10;
        int r = fcntl(fd, F_GETLK, &f);
        dprintf(lk_from[1], "r %d type %s start %ld len %ld pid is parent %d\n", r,
                f.l_type == F_WRLCK ? "W" : f.l_type == F_RDLCK ? "R" : "U", (long)f.l_start, (long)f.l_len,
                f.l_pid == getppid() ? 1 : f.l_pid == -1 ? -1 : 0);
        f.l_type = F_RDLCK;
        dprintf(lk_from[1], "try read lock: %d\n", fcntl(fd, F_SETLK, &f) == 0 ? 0 : errno == EAGAIN || errno == EACCES ? 1 : 2);
        f.l_type = F_UNLCK;
        fcntl(fd, F_SETLK, &f);
    }
    return 0;
}
static void ask_checker(char what) {
    char buf[256];
    if (write(lk_to[1], &what, 1) != 1) die("write");
    read_line(lk_from[0], buf, sizeof buf);
    say("checker: %s\n", buf);
    read_line(lk_from[0], buf, sizeof buf);
    say("checker: %s\n", buf);
}
static void flock_before(void) {
    put_file(wp("locked"), "0123456789abcdefghijklmnopqrstuvwxyz\n");
    lk_fd = open(wp("locked"), O_RDWR);
    if (lk_fd < 0 || pipe(lk_to) || pipe(lk_from)) die("flock setup");
    lk_child = spawn(lock_checker, 0);
    close(lk_to[0]);
    close(lk_from[1]);
}
static void flock_phase(int n) {
    (void)n;
    struct flock f = {0};
    f.l_type = F_WRLCK;
    f.l_whence = SEEK_SET;
    f.l_start = 0;
    f.l_len = 10;
    SHOW(fcntl(lk_fd, F_SETLK, &f));
    struct flock q = f;
    SHOW(fcntl(lk_fd, F_GETLK, &q));
    say("own lock does not conflict: %d\n", q.l_type == F_UNLCK);
    ask_checker('p');
    /* An open file description lock on another descriptor of the file. */
    int o = open(wp("locked"), O_RDWR);
    struct flock d = {0};
    d.l_type = F_WRLCK;
    d.l_whence = SEEK_SET;
    d.l_start = 20;
    d.l_len = 10;
    SHOW(fcntl(o, F_OFD_SETLK, &d));
    struct flock dq = d;
    SHOW(fcntl(lk_fd, F_OFD_GETLK, &dq));
    say("OFD lock seen from the other descriptor: type %s pid %d\n", dq.l_type == F_WRLCK ? "W" : "U", dq.l_pid);
    ask_checker('o');
    d.l_type = F_UNLCK;
    SHOW(fcntl(o, F_OFD_SETLKW, &d));
    close(o);
    f.l_type = F_UNLCK;
    SHOW(fcntl(lk_fd, F_SETLKW, &f));
    ask_checker('p');
    SHOW(fcntl(lk_fd, F_SETOWN, getpid()));
    say("F_GETOWN is getpid %d\n", fcntl(lk_fd, F_GETOWN) == getpid());
}
static int flock_finish(void) {
    close(lk_to[1]);
    show_wait("lock checker", lk_child, 0);
    return 0;
}

static void ioctls_phase(int n) {
    (void)n;
    int p[2], v = 0;
    SHOW(pipe(p));
    SHOW(write(p[1], "hello", 5));
    SHOW(ioctl(p[0], FIONREAD, &v));
    say("FIONREAD %d\n", v);
    v = 1;
    SHOW(ioctl(p[0], FIONBIO, &v));
    say("O_NONBLOCK set %d\n", (fcntl(p[0], F_GETFL) & O_NONBLOCK) != 0);
    char buf[16];
    SHOW(read(p[0], buf, sizeof buf));
    SHOW(read(p[0], buf, sizeof buf));
    v = 0;
    SHOW(ioctl(p[0], FIONBIO, &v));
    say("O_NONBLOCK cleared %d\n", (fcntl(p[0], F_GETFL) & O_NONBLOCK) == 0);
    SHOW(ioctl(p[0], FIOCLEX));
    SHOW(fcntl(p[0], F_GETFD));
    SHOW(ioctl(p[0], FIONCLEX));
    SHOW(fcntl(p[0], F_GETFD));
    SHOW(fcntl(p[1], F_SETPIPE_SZ, 1 << 16));
    SHOW(fcntl(p[1], F_GETPIPE_SZ));
    struct winsize ws;
    SHOW(ioctl(p[0], TIOCGWINSZ, &ws));
    struct termios t;
    SHOW(tcgetattr(p[0], &t));
    int sv[2];
    SHOW(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    SHOW(send(sv[0], "0123456789", 10, 0));
    v = 0;
    SHOW(ioctl(sv[1], FIONREAD, &v));
    say("FIONREAD on a socket %d\n", v);
    int fd = open(wp("blocks"), O_RDWR | O_CREAT, 0644);
    v = 0;
    SHOW(ioctl(fd, FIGETBSZ, &v));
    say("block size > 0: %d\n", v > 0);
    v = 0;
    SHOW(ioctl(fd, FIONREAD, &v));
    close(fd);
    close(sv[0]);
    close(sv[1]);
    close(p[0]);
    close(p[1]);
}

/* ------------------------------------------------------------------------------------------ */

struct zcase {
    const char *name;
    void (*before)(void);
    void (*phase)(int);
    int (*finish)(void);
};

static const struct zcase CASES[] = {
    {"file_rw", file_rw_before, file_rw_phase, file_rw_finish},
    {"append", append_before, append_phase, NULL},
    {"lseek", lseek_before, lseek_phase, NULL},
    {"dirs", dirs_before, dirs_phase, dirs_finish},
    {"links", links_before, links_phase, NULL},
    {"chdir", chdir_before, chdir_phase, NULL},
    {"getcwd", getcwd_before, getcwd_phase, NULL},
    {"stat", stat_before, stat_phase, NULL},
    {"truncate", truncate_before, truncate_phase, NULL},
    {"chmod_utime", chmod_before, chmod_phase, NULL},
    {"umask", umask_before, umask_phase, NULL},
    {"dup_fcntl", dup_before, dup_phase, NULL},
    {"unlinked_open", unlinked_before, unlinked_phase, NULL},
    {"fifo", fifo_before, fifo_phase, fifo_finish},
    {"stdio_out", NULL, stdio_phase, NULL},
    {"pipe_child", pipe_child_before, pipe_child_phase, pipe_child_finish},
    {"child_before", child_before_before, child_before_phase, NULL},
    {"child_after", child_after_before, child_after_phase, NULL},
    {"fork_away", fork_away_before, fork_away_phase, NULL},
    {"fork_exec", fork_exec_before, fork_exec_phase, NULL},
    {"fork_outlives", NULL, fork_outlives_phase, NULL},
    {"sigchld", sigchld_before, sigchld_phase, NULL},
    {"execve", execve_before, execve_phase, NULL},
    {"execve_away", execve_away_before, execve_away_phase, NULL},
    {"sig_handler", sig_handler_before, sig_handler_phase, NULL},
    {"siginfo", siginfo_before, siginfo_phase, NULL},
    {"sigmask", sigmask_before, sigmask_phase, NULL},
    {"self_signal", self_signal_before, self_signal_phase, NULL},
    {"pending_away", pending_away_before, pending_away_phase, NULL},
    {"pending_home", usr2_setup, pending_home_phase, NULL},
    {"rt_signals", rt_signals_before, rt_signals_phase, NULL},
    {"sigwait", sigwait_before, sigwait_phase, NULL},
    {"sigaltstack", sigaltstack_before, sigaltstack_phase, NULL},
    {"sigstop", sigstop_before, sigstop_phase, NULL},
    {"itimer", itimer_before, itimer_phase, NULL},
    {"alarm", alarm_before, alarm_phase, NULL},
    {"tcp_client", tcp_client_before, tcp_client_phase, tcp_client_finish},
    {"tcp_server", tcp_server_before, tcp_server_phase, tcp_server_finish},
    {"unix_pair", unix_pair_before, unix_pair_phase, unix_pair_finish},
    {"poll", waiter_before, poll_phase, waiter_finish},
    {"select", waiter_before, select_phase, waiter_finish},
    {"epoll", epoll_before, epoll_phase, waiter_finish},
    {"eventfd", eventfd_before, eventfd_phase, NULL},
    {"stdin", NULL, stdin_phase, NULL},
    {"large_write", NULL, large_write_phase, NULL},
    {"big_single_write", NULL, big_single_phase, NULL},
    {"env", env_before, env_phase, NULL},
    {"rlimits", rlimits_before, rlimits_phase, NULL},
    {"rlimit_as", NULL, rlimit_as_phase, NULL},
    {"memory", memory_before, memory_phase, NULL},
    {"busy_calls", NULL, busy_calls_phase, NULL},
    {"exit_away", exit_before, exit_away_phase, NULL},
    {"exit_code", exit_before, exit_code_phase, exit_code_finish},
    {"fatal_abort", no_core, abort_phase, NULL},
    {"fatal_segv", segv_before, segv_phase, NULL},
    {"fatal_term", NULL, term_phase, NULL},
    {"ids", ids_before, ids_phase, NULL},
    {"clock", clock_before, clock_phase, NULL},
    {"cpu_clock", cpu_clock_before, cpu_clock_phase, NULL},
    {"uname", uname_before, uname_phase, NULL},
    {"proc_self", proc_self_before, proc_self_phase, NULL},
    {"proc_self_mem", proc_self_before, proc_self_mem_phase, NULL},
    {"sockopt", sockopt_before, sockopt_phase, NULL},
    {"msg", msg_before, msg_phase, msg_finish},
    {"peer_addr", peer_addr_before, peer_addr_phase, NULL},
    {"creds", creds_before, creds_phase, NULL},
    {"creds_stub", creds_stub_before, creds_stub_phase, NULL},
    {"flock", flock_before, flock_phase, flock_finish},
    {"ioctls", NULL, ioctls_phase, NULL},
};

int main(int argc, char **argv) {
    unsigned char stackbuf[STACKBUF_SIZE];
    if (argc < 3) {
        fprintf(stderr, "usage: zdtm CASE ROOT\n");
        return 2;
    }
    ARGV = argv;
    STACKBUF = stackbuf;
    ROOT = argv[2];
    snprintf(W, sizeof W, "%s/work", ROOT);
    snprintf(CTL, sizeof CTL, "%s/ctl", ROOT);
    block_gate_signal();
    if (!strcmp(argv[1], "execve_post")) return execve_post(argc > 3 ? argv[3] : "0");
    if (!strcmp(argv[1], "execve_away_post")) return execve_away_post(argc > 3 ? argv[3] : "0");
    if (!strcmp(argv[1], "fork_exec_post")) return fork_exec_post(argc > 3 ? argv[3] : "0", argc > 4 ? argv[4] : "0");
    const struct zcase *c = NULL;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        if (!strcmp(CASES[i].name, argv[1])) c = &CASES[i];
    if (!c) {
        fprintf(stderr, "zdtm: no case %s\n", argv[1]);
        return 2;
    }
    PH = 0;
    if (c->before) c->before();
    gate(1);
    PH = 1;
    c->phase(1);
    say("phase done\n");
    gate(2);
    PH = 2;
    c->phase(2);
    say("phase done\n");
    return c->finish ? c->finish() : 0;
}
