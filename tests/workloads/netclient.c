/* netclient ITER MS_PER_STEP PORT
 *
 * Forks a child at start (it exits 42 at once), then computes one step at a time. Step 3: TCP
 * connect to 127.0.0.1:PORT; from then on each step sends "ping N" and prints the reply line.
 * Step 5: poll on a pipe before and after writing to it. Step 6: installs a SIGUSR1 handler and
 * kills itself; step 7 prints whether the handler ran. Step 8: wait4 for the child. Exit code 4.
 * Used to show that sockets, poll, signals and children keep their home meaning while away.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include "common.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static void on_usr1(int s) { got = s; }

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: netclient ITER MS_PER_STEP PORT\n");
        return 2;
    }
    long iter = atol(argv[1]);
    uint64_t ms = (uint64_t)atol(argv[2]);
    int port = atoi(argv[3]);
    pid_t child = fork();
    if (child == 0) _exit(42);
    int s = -1;
    char buf[256];
    for (long i = 0; i < iter; i++) {
        burn_ms(ms);
        if (i == 3) {
            struct sockaddr_in a = {0};
            a.sin_family = AF_INET;
            a.sin_port = htons((uint16_t)port);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            s = socket(AF_INET, SOCK_STREAM, 0);
            printf("connect %d\n", connect(s, (struct sockaddr *)&a, sizeof a));
        }
        if (s >= 0) {
            int n = snprintf(buf, sizeof buf, "ping %ld\n", i);
            if (send(s, buf, (size_t)n, 0) != n) return 1;
            ssize_t got_n = recv(s, buf, sizeof buf - 1, 0);
            buf[got_n > 0 ? got_n : 0] = 0;
            printf("reply: %s", buf);
        }
        if (i == 5) {
            int p[2];
            if (pipe(p)) return 1;
            struct pollfd f = {.fd = p[0], .events = POLLIN};
            int before = poll(&f, 1, 0);
            if (write(p[1], "x", 1) != 1) return 1;
            int after = poll(&f, 1, 1000);
            printf("poll before %d after %d revents %d\n", before, after, f.revents);
            close(p[0]);
            close(p[1]);
        }
        if (i == 6) {
            signal(SIGUSR1, on_usr1);
            printf("kill %d\n", kill(getpid(), SIGUSR1));
        }
        if (i == 7) {
            uint64_t t = now_ns();
            volatile uint64_t spin = 0;
            while (!got && now_ns() - t < 5000000000ull) spin += 1;
            printf("handler got %d\n", (int)got);
        }
        if (i == 8) {
            int st = 0;
            pid_t w = waitpid(child, &st, 0);
            printf("waited child %d status %d\n", w == child, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        }
        printf("step %ld\n", i);
        fflush(stdout);
    }
    if (s >= 0) close(s);
    return 4;
}
