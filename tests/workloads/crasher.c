/* crasher ITER MS_PER_STEP BIG
 *
 * Step 2: writes BIG bytes (a pattern) to stdout with one write() call loop and one fwrite, then
 * prints their checksum (so writes larger than any transfer buffer must arrive whole and in
 * order). Then computes and prints until step ITER, where it dereferences a null pointer: the
 * process ends by SIGSEGV.
 */
#include "common.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: crasher ITER MS_PER_STEP BIG\n");
        return 2;
    }
    long iter = atol(argv[1]);
    uint64_t ms = (uint64_t)atol(argv[2]);
    size_t big = (size_t)atol(argv[3]);
    for (long i = 0;; i++) {
        burn_ms(ms);
        if (i == 2) {
            char *b = malloc(big);
            uint64_t sum = 0;
            for (size_t k = 0; k < big; k++) {
                b[k] = (char)('a' + (k * 7 + k / 4096) % 26);
                sum = sum * 31 + (unsigned char)b[k];
            }
            fflush(stdout);
            size_t off = 0;
            while (off < big) {
                ssize_t w = write(1, b + off, big - off);
                if (w <= 0) return 1;
                off += (size_t)w;
            }
            if (fwrite(b, 1, big, stdout) != big) return 1;
            printf("\nbig %zu sum %016llx\n", big, (unsigned long long)sum);
            free(b);
        }
        printf("step %ld\n", i);
        fflush(stdout);
        if (i == iter) {
            volatile int *p = NULL;
            *p = 1;
        }
    }
}
