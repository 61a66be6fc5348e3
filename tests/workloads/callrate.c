/* callrate BATCHES CALLS
 *
 * Forwarded-call latency probe: BATCHES times, makes CALLS getppid system calls (forwarded to the
 * deputy when the process runs away from home) and prints the mean time of one call in ns (one
 * line per batch, flushed). Used by the QEMU scenario `callbench` to compare the native engine's
 * interception with the portable engine's seccomp listener. Exit code 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    long batches = argc > 1 ? atol(argv[1]) : 100;
    long calls = argc > 2 ? atol(argv[2]) : 100;
    if (batches <= 0 || calls <= 0) {
        fprintf(stderr, "usage: callrate BATCHES CALLS\n");
        return 2;
    }
    for (long b = 0; b < batches; b++) {
        long long t0 = now_ns();
        for (long i = 0; i < calls; i++)
            syscall(SYS_getppid);
        long long t1 = now_ns();
        printf("%lld\n", (t1 - t0) / calls);
        fflush(stdout);
    }
    return 0;
}
