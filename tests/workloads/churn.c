/* churn MIB STEPS STEP_US PAGES_PER_STEP [ts]
 *
 * Workload for live (pre-copy) migration: fills MIB MiB with data that depends on each page's
 * number and version, then runs STEPS steps paced at one every STEP_US microseconds (absolute
 * deadlines: after a stall it catches up). Each step rewrites PAGES_PER_STEP whole pages (so with
 * 25 pages per 2000 us it dirties about 50 MB/s) and keeps the memory map moving:
 *   - every 16 steps it maps a new area (16..271 pages), fills it, and unmaps the oldest of 8;
 *   - every 8 steps it grows the heap with sbrk and fills the new pages; every 64 steps it gives
 *     half of that growth back;
 *   - every 4 steps it drops a page of the last sixteenth of the main area (which is never
 *     rewritten) with madvise(MADV_DONTNEED): from then on that page must read as zero.
 * With `ts`, each step prints the process's CLOCK_MONOTONIC time in microseconds (`t <us>`);
 * without, a deterministic line every 100 steps. At the end it checks every page of every area
 * against what it wrote and prints `verify ok` and a checksum of everything (or `verify FAILED`
 * and exits 1). Without `ts` the output is byte-identical between runs.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)
#define RING 8u

static uint64_t xorshift(uint64_t x) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

/* The content of page `p` of area `a` at version `v` (v = 0 means a dropped page: zero). */
static void fill(uint64_t *w, uint64_t a, uint64_t p, uint32_t v) {
    if (v == 0) {
        memset(w, 0, PAGE);
        return;
    }
    uint64_t x = (a * 0x9E3779B97F4A7C15ull) ^ ((p + 1) * 0xBF58476D1CE4E5B9ull) ^ ((uint64_t)v * 0x94D049BB133111EBull);
    for (unsigned k = 0; k < WORDS; k++) {
        x = xorshift(x);
        w[k] = x | 1;
    }
}

static uint64_t hash(uint64_t h, const uint64_t *w, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h = (h ^ w[i]) * 0x100000001B3ull;
    }
    return h;
}

static int check(const uint64_t *w, uint64_t a, uint64_t p, uint32_t v, const char *what) {
    static uint64_t want[WORDS];
    fill(want, a, p, v);
    if (memcmp(w, want, PAGE) != 0) {
        printf("verify FAILED: %s area %llu page %llu version %u\n", what, (unsigned long long)a, (unsigned long long)p, v);
        return 1;
    }
    return 0;
}

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000u;
}

struct ring_area {
    uint64_t *w;
    size_t pages;
    uint64_t id;
};

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: churn MIB STEPS STEP_US PAGES_PER_STEP [ts]\n");
        return 2;
    }
    size_t pages = ((size_t)strtoul(argv[1], NULL, 10) << 20) / PAGE;
    long steps = strtol(argv[2], NULL, 10);
    long step_us = strtol(argv[3], NULL, 10);
    unsigned per_step = (unsigned)strtoul(argv[4], NULL, 10);
    int ts = argc > 5 && strcmp(argv[5], "ts") == 0;
    uint64_t *main_area = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* No malloc from here on: the heap's break belongs to this program (stdio gets a static buffer). */
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    uint32_t *ver = mmap(NULL, (pages ? pages : 1) * sizeof(uint32_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (main_area == MAP_FAILED || ver == MAP_FAILED || pages == 0) {
        fprintf(stderr, "churn: cannot allocate\n");
        return 3;
    }
    for (size_t p = 0; p < pages; p++) {
        ver[p] = 1;
        fill(main_area + p * WORDS, 0, p, 1);
    }
    /* The heap: pages grown with sbrk, each at version 1 of area 1. */
    uint8_t *brk0 = sbrk(0);
    size_t brk_pages = 0;
    brk0 = (uint8_t *)(((uintptr_t)brk0 + PAGE - 1) & ~(uintptr_t)(PAGE - 1));
    if (sbrk((intptr_t)(brk0 - (uint8_t *)sbrk(0))) == (void *)-1) {
        fprintf(stderr, "churn: sbrk\n");
        return 3;
    }
    struct ring_area ring[RING];
    memset(ring, 0, sizeof ring);
    uint64_t next_id = 2;
    uint64_t sum = 0xcbf29ce484222325ull;
    printf("filled %zu pages\n", pages);
    fflush(stdout);
    uint64_t x = 0x2545F4914F6CDD1Dull;
    size_t drop_zone = pages / 16 ? pages / 16 : 1;
    if (pages < 2) {
        fprintf(stderr, "churn: at least 2 pages\n");
        return 2;
    }
    uint64_t start = now_us();
    for (long s = 1; s <= steps; s++) {
        for (unsigned i = 0; i < per_step; i++) {
            x = xorshift(x);
            size_t p = (size_t)(x % (pages - drop_zone));
            ver[p] = ver[p] + 1 ? ver[p] + 1 : 1;
            fill(main_area + p * WORDS, 0, p, ver[p]);
        }
        if (s % 16 == 0) {
            struct ring_area *r = &ring[(s / 16) % RING];
            if (r->w != NULL) {
                for (size_t p = 0; p < r->pages; p++) {
                    if (check(r->w + p * WORDS, r->id, p, 1, "ring")) {
                        return 1;
                    }
                }
                sum = hash(sum, r->w, r->pages * WORDS);
                munmap(r->w, r->pages * PAGE);
            }
            x = xorshift(x);
            r->pages = 16 + (size_t)(x % 256);
            r->id = next_id++;
            r->w = mmap(NULL, r->pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (r->w == MAP_FAILED) {
                fprintf(stderr, "churn: mmap\n");
                return 3;
            }
            for (size_t p = 0; p < r->pages; p++) {
                fill(r->w + p * WORDS, r->id, p, 1);
            }
        }
        if (s % 8 == 0) {
            size_t grow = 1 + (size_t)(s / 8 % 5);
            if (sbrk((intptr_t)(grow * PAGE)) == (void *)-1) {
                fprintf(stderr, "churn: sbrk grow\n");
                return 3;
            }
            for (size_t p = brk_pages; p < brk_pages + grow; p++) {
                fill((uint64_t *)(brk0 + p * PAGE), 1, p, 1);
            }
            brk_pages += grow;
        }
        if (s % 64 == 0 && brk_pages > 1) {
            size_t back = brk_pages / 2;
            sum = hash(sum, (uint64_t *)(brk0 + (brk_pages - back) * PAGE), back * WORDS);
            if (sbrk(-(intptr_t)(back * PAGE)) == (void *)-1) {
                fprintf(stderr, "churn: sbrk shrink\n");
                return 3;
            }
            brk_pages -= back;
        }
        if (s % 4 == 0) {
            x = xorshift(x);
            size_t p = pages - drop_zone + (size_t)(x % drop_zone);
            madvise(main_area + p * WORDS, PAGE, MADV_DONTNEED);
            ver[p] = 0;
        }
        if (ts) {
            printf("t %llu\n", (unsigned long long)now_us());
            fflush(stdout);
        } else if (s % 100 == 0) {
            printf("step %ld brk=%zu sum=%016llx\n", s, brk_pages, (unsigned long long)sum);
            fflush(stdout);
        }
        uint64_t deadline = start + (uint64_t)s * (uint64_t)step_us;
        uint64_t t = now_us();
        if (t < deadline) {
            struct timespec d = {(time_t)((deadline - t) / 1000000u), (long)((deadline - t) % 1000000u) * 1000};
            nanosleep(&d, NULL);
        }
    }
    int bad = 0;
    for (size_t p = 0; p < pages && !bad; p++) {
        bad |= check(main_area + p * WORDS, 0, p, ver[p], "main");
    }
    for (size_t p = 0; p < brk_pages && !bad; p++) {
        bad |= check((uint64_t *)(brk0 + p * PAGE), 1, p, 1, "heap");
    }
    for (unsigned i = 0; i < RING && !bad; i++) {
        for (size_t p = 0; ring[i].w != NULL && p < ring[i].pages && !bad; p++) {
            bad |= check(ring[i].w + p * WORDS, ring[i].id, p, 1, "ring");
        }
    }
    if (bad) {
        fflush(stdout);
        return 1;
    }
    sum = hash(sum, main_area, pages * WORDS);
    sum = hash(sum, (uint64_t *)brk0, brk_pages * WORDS);
    printf("verify ok steps=%ld sum=%016llx\n", steps, (unsigned long long)sum);
    fflush(stdout);
    return 0;
}
