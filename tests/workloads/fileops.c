/* fileops ITER MS_PER_STEP DIR
 *
 * Computes like counter and, from step 3 on, does one file-system operation per step inside DIR
 * (which must exist and hold only a file `home-marker`): chdir, the marker read by relative path, mkdir, a file written through stdio by relative path and
 * read back, stat, rename, readdir, getcwd, pipe, dup, lseek, unlink, rmdir. It prints what each
 * operation saw; the output is deterministic. Every call it makes after step 2 is one the deputy
 * runs at home (or a local one), so a migrated fileops never has to come home. Exit code 5.
 */
#include <dirent.h>
#include <fcntl.h>
#include "common.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void op(long step, const char *dir) {
    char buf[512];
    struct stat st = {0};
    switch (step) {
    case 3: {
        printf("chdir %d\n", chdir(dir));
        FILE *f = fopen("home-marker", "r");
        printf("home-marker: %s", f && fgets(buf, sizeof buf, f) ? buf : "MISSING\n");
        if (f) fclose(f);
        break;
    }
    case 4: printf("mkdir %d\n", mkdir("sub", 0755)); break;
    case 5: {
        FILE *f = fopen("sub/data.txt", "w");
        for (int i = 0; i < 100; i++) fprintf(f, "line %d of the data file\n", i);
        printf("fclose %d\n", fclose(f));
        break;
    }
    case 6: {
        FILE *f = fopen("sub/data.txt", "r");
        int n = 0;
        while (fgets(buf, sizeof buf, f)) n++;
        fclose(f);
        printf("read back %d lines, last: %s", n, buf);
        break;
    }
    case 7: printf("stat %d size %lld\n", stat("sub/data.txt", &st), (long long)st.st_size); break;
    case 8: printf("rename %d\n", rename("sub/data.txt", "sub/moved.txt")); break;
    case 9: {
        DIR *d = opendir("sub");
        struct dirent *e;
        int n = 0;
        while ((e = readdir(d))) if (e->d_name[0] != '.') printf("entry %s\n", e->d_name), n++;
        printf("closedir %d, %d entries\n", closedir(d), n);
        break;
    }
    case 10: {
        char *c = getcwd(buf, sizeof buf);
        printf("getcwd ends with dir: %d\n", c && strcmp(c, dir) == 0);
        break;
    }
    case 11: {
        int p[2];
        printf("pipe %d\n", pipe(p));
        printf("pipe write %zd\n", write(p[1], "through a pipe", 14));
        ssize_t n = read(p[0], buf, sizeof buf);
        printf("pipe read %zd %.*s\n", n, (int)n, buf);
        close(p[0]);
        close(p[1]);
        break;
    }
    case 12: {
        int fd = open("sub/moved.txt", O_RDONLY);
        int fd2 = dup(fd);
        printf("lseek %lld\n", (long long)lseek(fd2, 25, SEEK_SET));
        ssize_t n = read(fd, buf, 24);
        printf("read after dup+lseek: %.*s\n", (int)n, buf);
        close(fd2);
        close(fd);
        break;
    }
    case 13: printf("unlink %d access %d\n", unlink("sub/moved.txt"), access("sub/moved.txt", F_OK)); break;
    case 14: printf("rmdir %d\n", rmdir("sub")); break;
    case 15: printf("unlink marker %d\n", unlink("home-marker")); break;
    default: break;
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: fileops ITER MS_PER_STEP DIR\n");
        return 2;
    }
    long iter = atol(argv[1]);
    uint64_t ms = (uint64_t)atol(argv[2]);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (long i = 0; i < iter; i++) {
        for (int k = 0; k < 100000; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        burn_ms(ms);
        op(i, argv[3]);
        printf("step %ld x=%016llx\n", i, (unsigned long long)x);
        fflush(stdout);
    }
    return 5;
}
