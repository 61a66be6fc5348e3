/* opener ITER MS_PER_STEP PATH [busy]
 *
 * Computes like counter (one checksum line per step, ~MS_PER_STEP ms of CPU each), and at step
 * ITER/2 opens PATH, reads it, prints its contents and closes it (forwarded to the deputy: the
 * process stays where it is); at step 3*ITER/4 calls sysinfo(), which the remote side does not
 * run, so the process is brought home first (under `mosrun -e`/`-w` it fails with ENOSYS there
 * instead, and the line shows the error). With `busy`, sysinfo is also called all the time
 * while it computes (so one comes right after every move); the line `sysinfo-busy ok N failed M`
 * with M > 0 / N > 0 as 0/1 ends the run. Exit code 3.
 */
#include <errno.h>
#include <fcntl.h>
#include "common.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/sysinfo.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: opener ITER MS_PER_STEP PATH\n");
        return 2;
    }
    long iter = atol(argv[1]);
    uint64_t ms = (uint64_t)atol(argv[2]);
    int busy = argc > 4 && !strcmp(argv[4], "busy");
    long busy_ok = 0, busy_failed = 0;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (long i = 0; i < iter; i++) {
        for (int k = 0; k < 100000; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        if (busy) {
            uint64_t t0 = now_ns();
            while (now_ns() - t0 < ms * 1000000ull) {
                struct sysinfo si;
                if (sysinfo(&si) == 0)
                    busy_ok++;
                else
                    busy_failed++;
            }
        } else {
            burn_ms(ms);
        }
        if (i == iter / 2) {
            char buf[256];
            int fd = open(argv[3], O_RDONLY);
            if (fd < 0) {
                perror("open");
                return 1;
            }
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            buf[n > 0 ? n : 0] = 0;
            printf("file: %s\n", buf);
        }
        if (i == 3 * iter / 4) {
            struct sysinfo si;
            printf("sysinfo %s\n", sysinfo(&si) == 0 ? "ok" : strerror(errno));
        }
        printf("step %ld x=%016llx\n", i, (unsigned long long)x);
        fflush(stdout);
    }
    if (busy) printf("sysinfo-busy ok %d failed %d\n", busy_ok > 0, busy_failed > 0);
    return 3;
}
