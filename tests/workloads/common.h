/* Shared by the test workloads: a monotonic clock through the vDSO and a CPU burn that never
 * sleeps (so a workload stays runnable and migratable, and its output never contains time). */
#ifndef MOS_WORKLOAD_COMMON_H
#define MOS_WORKLOAD_COMMON_H
#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Burns about `ms` milliseconds of CPU. */
static inline void burn_ms(uint64_t ms) {
    uint64_t t0 = now_ns();
    volatile uint64_t sink = 0;
    while (now_ns() - t0 < ms * 1000000ull) sink += 1;
}
#endif
