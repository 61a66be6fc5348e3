/* memtouch MIB ITER [MS_PER_STEP]
 *
 * Memory workload for migration tests: mallocs MIB MiB, fills every page with distinct non-zero
 * data, prints a line, then ITER times touches a few pseudo-random pages, checksums a rotating
 * eighth of the whole area (so every byte is verified every 8 steps), optionally burns at least
 * MS_PER_STEP ms (busy loop on clock_gettime, never in the output) and prints a line. The last
 * line is a checksum of the whole area. Output is byte-identical between runs. Exit code 0.
 *
 * After the first line only write (stdout), clock_gettime (vDSO) and exit_group reach the kernel.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define PAGE 4096u
#define SLICES 8u
#define TOUCH_PER_STEP 16u

static volatile uint64_t burn_sink;

static uint64_t xorshift(uint64_t x) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t checksum(const uint64_t *w, size_t from, size_t to) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = from; i < to; i++) {
        h = (h ^ w[i]) * 0x100000001B3ull;
    }
    return h;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: memtouch MIB ITER [MS_PER_STEP]\n");
        return 2;
    }
    size_t mib = (size_t)strtoul(argv[1], NULL, 10);
    long iter = strtol(argv[2], NULL, 10);
    long ms = argc > 3 ? strtol(argv[3], NULL, 10) : 0;
    size_t bytes = mib << 20;
    size_t pages = bytes / PAGE;
    size_t words = bytes / 8;
    uint64_t *w = malloc(bytes);
    if (w == NULL || pages == 0) {
        fprintf(stderr, "memtouch: cannot allocate %zu MiB\n", mib);
        return 3;
    }
    for (size_t p = 0; p < pages; p++) {
        uint64_t v = ((uint64_t)p + 1) * 0x9E3779B97F4A7C15ull;
        for (size_t k = 0; k < PAGE / 8; k++) {
            v = xorshift(v);
            w[p * (PAGE / 8) + k] = v | 1; /* never zero: no page is skippable as a zero page */
        }
    }
    printf("filled %zu MiB pages=%zu\n", mib, pages);
    fflush(stdout);
    uint64_t x = 0x2545F4914F6CDD1Dull;
    size_t slice = (words + SLICES - 1) / SLICES;
    for (long step = 1; step <= iter; step++) {
        for (uint32_t t = 0; t < TOUCH_PER_STEP; t++) {
            x = xorshift(x);
            size_t p = (size_t)(x % pages);
            size_t k = (size_t)((x >> 40) % (PAGE / 8));
            w[p * (PAGE / 8) + k] ^= x | 1;
        }
        size_t from = (size_t)((step - 1) % SLICES) * slice;
        size_t to = from + slice < words ? from + slice : words;
        uint64_t h = checksum(w, from, to);
        if (ms > 0) {
            uint64_t end = now_ns() + (uint64_t)ms * 1000000ull;
            uint64_t y = (uint64_t)step;
            while (now_ns() < end) {
                for (int r = 0; r < 1000; r++) {
                    y = y * 2862933555777941757ull + 3037000493ull;
                }
                burn_sink = y;
            }
        }
        printf("step %ld x=%016llx slice=%llu sum=%016llx\n", step, (unsigned long long)x,
               (unsigned long long)((step - 1) % SLICES), (unsigned long long)h);
        fflush(stdout);
    }
    printf("total sum=%016llx\n", (unsigned long long)checksum(w, 0, words));
    fflush(stdout);
    return 0;
}
