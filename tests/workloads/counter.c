/* counter ITER [MS_PER_STEP]
 *
 * Deterministic computing workload for migration tests. State: a 1 MiB heap array mutated by a
 * xorshift64 chain, a floating-point accumulator and a __thread counter. Each step does a fixed
 * amount of state work, then burns roughly MS_PER_STEP ms of CPU (busy loop timed with
 * clock_gettime(CLOCK_MONOTONIC), i.e. the vDSO; the time never reaches the output), then prints
 * one line and flushes. Output is byte-identical between runs with the same ITER. Exit code 7.
 *
 * After the first line only write (stdout), clock_gettime (vDSO) and exit_group reach the kernel.
 * wl_rust.rs prints the same lines for the same arguments.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORDS ((1u << 20) / 8u)
#define UPDATES_PER_STEP 65536u

static __thread uint64_t tls_steps;
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

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: counter ITER [MS_PER_STEP]\n");
        return 2;
    }
    long iter = strtol(argv[1], NULL, 10);
    long ms = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
    uint64_t *a = malloc(WORDS * sizeof(uint64_t));
    if (a == NULL) {
        fprintf(stderr, "counter: out of memory\n");
        return 3;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint32_t i = 0; i < WORDS; i++) {
        x = xorshift(x);
        a[i] = x;
    }
    double facc = 0.0;
    for (long step = 1; step <= iter; step++) {
        for (uint32_t k = 0; k < UPDATES_PER_STEP; k++) {
            x = xorshift(x);
            uint32_t j = (uint32_t)(x % WORDS);
            a[j] = (a[j] * 6364136223846793005ull + 1442695040888963407ull) ^ x;
            facc += (double)(a[j] >> 11) * 0x1p-53;
        }
        tls_steps++;
        uint64_t sum = 0;
        for (uint32_t i = 0; i < WORDS; i++) {
            sum = (sum ^ a[i]) * 0x100000001B3ull;
        }
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
        uint64_t fbits;
        memcpy(&fbits, &facc, sizeof fbits);
        printf("step %ld x=%016llx sum=%016llx f=%016llx tls=%llu\n", step, (unsigned long long)x, (unsigned long long)sum,
               (unsigned long long)fbits, (unsigned long long)tls_steps);
        fflush(stdout);
    }
    return 7;
}
