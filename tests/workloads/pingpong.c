/* pingpong: the floors under a forwarded call, measured where the call is measured.
 *
 *   pingpong serve PORT          echo every byte received on TCP PORT (one client at a time)
 *   pingpong tcp ADDR PORT N     N one-byte round trips to a server; prints "tcp_rtt_ns MEAN"
 *   pingpong pipe N              N one-byte round trips between two processes of this machine
 *                                through two pipes (two wake-ups each); prints "pipe_rtt_ns MEAN"
 *
 * Used by the QEMU scenario `callbench`: a forwarded call is one network round trip plus the
 * hand-overs between the tasks on each side, and these two figures say how much of its time each
 * part takes on the same VMs. Exit code 0, 1 on an error (with its reason on stderr).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int die(const char *what) {
    perror(what);
    return 1;
}

static int nodelay(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int serve(int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY};
    if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0)
        return die("pingpong serve");
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0)
            return die("pingpong accept");
        nodelay(c);
        char b;
        while (read(c, &b, 1) == 1 && write(c, &b, 1) == 1) {
        }
        close(c);
    }
}

static int tcp(const char *addr, int port, long n) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (s < 0 || inet_pton(AF_INET, addr, &a.sin_addr) != 1)
        return die("pingpong tcp: address");
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0)
        return die("pingpong tcp: connect");
    nodelay(s);
    char b = 'x';
    long long t0 = 0;
    for (long i = -10; i < n; i++) { /* 10 warm-up round trips */
        if (i == 0)
            t0 = now_ns();
        if (write(s, &b, 1) != 1 || read(s, &b, 1) != 1)
            return die("pingpong tcp: round trip");
    }
    printf("tcp_rtt_ns %lld\n", (now_ns() - t0) / n);
    return 0;
}

static int pipes(long n) {
    int there[2], back[2];
    if (pipe(there) < 0 || pipe(back) < 0)
        return die("pingpong pipe");
    pid_t child = fork();
    if (child < 0)
        return die("pingpong fork");
    char b = 'x';
    if (child == 0) {
        close(there[1]);
        close(back[0]);
        while (read(there[0], &b, 1) == 1 && write(back[1], &b, 1) == 1) {
        }
        _exit(0);
    }
    long long t0 = 0;
    for (long i = -10; i < n; i++) {
        if (i == 0)
            t0 = now_ns();
        if (write(there[1], &b, 1) != 1 || read(back[0], &b, 1) != 1)
            return die("pingpong pipe: round trip");
    }
    printf("pipe_rtt_ns %lld\n", (now_ns() - t0) / n);
    fflush(stdout);
    close(there[1]);
    waitpid(child, NULL, 0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "serve"))
        return serve(atoi(argv[2]));
    if (argc == 5 && !strcmp(argv[1], "tcp") && atol(argv[4]) > 0)
        return tcp(argv[2], atoi(argv[3]), atol(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "pipe") && atol(argv[2]) > 0)
        return pipes(atol(argv[2]));
    fprintf(stderr, "usage: pingpong serve PORT | pingpong tcp ADDR PORT N | pingpong pipe N\n");
    return 2;
}
