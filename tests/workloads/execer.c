/* execer STEPS MS_PER_STEP
 *
 * A process that makes a call only its home node runs: prints STEPS numbered lines, each after
 * roughly MS_PER_STEP ms of CPU work, then execs itself as `execer done`, which prints one line
 * and exits 3. Moved away before the exec, it must be sent home with the exec made there (the
 * QEMU scenario `migrate`: the guest holds the execve, answers it "restart", and the module
 * freezes the process). Output is the same wherever it runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "done")) {
        printf("exec'd at home or away: done\n");
        return 3;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: execer STEPS MS_PER_STEP\n");
        return 2;
    }
    long steps = atol(argv[1]), ms = atol(argv[2]);
    volatile unsigned long sink = 0;
    for (long i = 0; i < steps; i++) {
        double t0 = now_ms();
        while (now_ms() - t0 < ms)
            sink++;
        printf("step %ld\n", i);
        fflush(stdout);
    }
    char *args[] = {argv[0], "done", NULL};
    execv(argv[0], args);
    perror("execer: execv");
    return 1;
}
