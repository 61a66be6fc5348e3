/* cpujob WORK MEM_MB [STEPS]
 *
 * Fixed-work CPU job for the balancing benchmark: WORK million rounds of integer work split in
 * STEPS steps (default 20). Over the first half of the steps it grows a heap area to MEM_MB MiB
 * (touching every page), so that memory pressure builds up gradually; every step re-reads a slice
 * of that area. Each step prints one line; the last line is a checksum. The amount of CPU work
 * does not depend on time or placement, so makespans compare. Output is deterministic. Exit 0.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096u

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: cpujob WORK_MILLIONS MEM_MB [STEPS]\n");
        return 2;
    }
    uint64_t work = strtoull(argv[1], NULL, 10) * 1000000ull;
    size_t mem = (size_t)strtoull(argv[2], NULL, 10) << 20;
    unsigned steps = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 20u;
    if (steps == 0) {
        steps = 1;
    }
    unsigned grow_steps = steps / 2 ? steps / 2 : 1;
    size_t chunk = mem / grow_steps;
    chunk -= chunk % PAGE;
    unsigned char *area = mem ? malloc(mem) : NULL;
    if (mem && !area) {
        fprintf(stderr, "cpujob: cannot allocate %zu MiB\n", mem >> 20);
        return 3;
    }
    size_t grown = 0;
    uint64_t x = 0x9e3779b97f4a7c15ull, acc = 0;
    for (unsigned s = 0; s < steps; s++) {
        if (s < grow_steps && mem) {
            size_t to = s + 1 == grow_steps ? mem : grown + chunk;
            for (size_t o = grown; o < to; o += PAGE) {
                area[o] = (unsigned char)(o / PAGE * 31 + 7);
            }
            grown = to;
        }
        for (uint64_t i = 0; i < work / steps; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            acc += x * (i | 1);
        }
        for (size_t o = 0; o < grown; o += PAGE * 64) {
            acc += area[o];
        }
        printf("step %u/%u grown %zu MiB\n", s + 1, steps, grown >> 20);
        fflush(stdout);
    }
    printf("done %016llx\n", (unsigned long long)acc);
    free(area);
    return 0;
}
