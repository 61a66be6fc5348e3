/* threads ITER [MS_PER_STEP]
 *
 * A process with two threads (the second one blocks on a condition variable until the end), for
 * the test that such a process is refused by migration. The main thread prints deterministic
 * lines like counter.c (busy loop of about MS_PER_STEP ms per step, never in the output).
 * Exit code 7.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int done;
static uint64_t helper_result;
static volatile uint64_t burn_sink;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *helper(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    while (!done) {
        pthread_cond_wait(&cond, &lock);
    }
    helper_result = 0x5eed;
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: threads ITER [MS_PER_STEP]\n");
        return 2;
    }
    long iter = strtol(argv[1], NULL, 10);
    long ms = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
    pthread_t th;
    if (pthread_create(&th, NULL, helper, NULL) != 0) {
        fprintf(stderr, "threads: pthread_create failed\n");
        return 3;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (long step = 1; step <= iter; step++) {
        for (int k = 0; k < 100000; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
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
        printf("step %ld x=%016llx\n", step, (unsigned long long)x);
        fflush(stdout);
    }
    pthread_mutex_lock(&lock);
    done = 1;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(th, NULL);
    printf("joined helper=%llx\n", (unsigned long long)helper_result);
    fflush(stdout);
    return 7;
}
