/* callbench ROUNDS [GATE]
 *
 * Prints one line per round with the mean cost of: getppid (2000 calls), read of 4 KiB from
 * /dev/zero and write of 4 KiB to /dev/null (500 each, descriptors opened at start), and the time
 * of a fixed compute loop with clock_gettime and malloc/free, and raise() of a signal it catches
 * (200 calls, handler counting). Used by the deputy benchmark, which
 * migrates it between rounds and compares rounds at home with rounds away. With GATE, after GATE
 * rounds it prints "gate" and waits for SIGUSR1 (sent once it has been moved).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t caught;
static void on_usr2(int s) {
    (void)s;
    caught++;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: callbench ROUNDS\n");
        return 2;
    }
    long rounds = atol(argv[1]);
    long gate = argc > 2 ? atol(argv[2]) : -1;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    signal(SIGUSR2, on_usr2);
    int fz = open("/dev/zero", O_RDONLY), fn = open("/dev/null", O_WRONLY);
    static char buf[4096];
    uint64_t x = 88172645463325252ull;
    for (long r = 0; r < rounds; r++) {
        if (r == gate) {
            printf("gate\n");
            fflush(stdout);
            int sig;
            sigwait(&usr1, &sig);
        }
        int64_t t = now_ns();
        for (int i = 0; i < 2000; i++) syscall(SYS_getppid);
        int64_t g = (now_ns() - t) / 2000;
        t = now_ns();
        for (int i = 0; i < 500; i++)
            if (read(fz, buf, sizeof buf) != sizeof buf) return 1;
        int64_t rd = (now_ns() - t) / 500;
        t = now_ns();
        for (int i = 0; i < 500; i++)
            if (write(fn, buf, sizeof buf) != sizeof buf) return 1;
        int64_t wr = (now_ns() - t) / 500;
        t = now_ns();
        for (int i = 0; i < 200; i++) {
            char *p = malloc(4096 + (i & 7) * 64);
            memset(p, i, 4096);
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            for (int k = 0; k < 20000; k++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            x += (uint64_t)p[100] + (uint64_t)ts.tv_nsec % 2;
            free(p);
        }
        int64_t c = (now_ns() - t) / 1000;
        t = now_ns();
        for (int i = 0; i < 200; i++) raise(SIGUSR2);
        int64_t rs = (now_ns() - t) / 200;
        printf("round %ld getppid_ns %lld read4k_ns %lld write4k_ns %lld compute_us %lld raise_ns %lld x %llu\n", r, (long long)g,
               (long long)rd, (long long)wr, (long long)c, (long long)rs, (unsigned long long)(x & 1));
        fflush(stdout);
    }
    return 0;
}
