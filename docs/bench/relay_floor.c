/* The floor of a relayed round trip on this machine: processes in a chain, plain C, Unix sockets,
 * epoll -- client -> relay -> server -> relay -> client, 16 bytes, one at a time, exactly the
 * system calls evbus's `rpc` scenario makes (12 per round trip), with no protocol at all.
 * With more relays the chain stands for a longer path: 5 relays make the 12 process-to-process
 * transfers of a request bridged across NATS (caller, broker B, bridge B, nats-server, bridge A,
 * broker A, responder, and back).
 * Build and run: cc -O2 -o relay_floor relay_floor.c && ./relay_floor [round-trips] [relays]
 * Prints p50/p99 of the round trip in microseconds. */
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int watch(int fd) {
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
    return ep;
}

/* Forwards whatever arrives on one side to the other, one read and one write per wake-up. */
static void relay(int left, int right) {
    char buf[64];
    int ep = epoll_create1(0);
    struct epoll_event a = {.events = EPOLLIN, .data.fd = left}, b = {.events = EPOLLIN, .data.fd = right};
    epoll_ctl(ep, EPOLL_CTL_ADD, left, &a);
    epoll_ctl(ep, EPOLL_CTL_ADD, right, &b);
    for (;;) {
        struct epoll_event e;
        epoll_wait(ep, &e, 1, -1);
        ssize_t got = read(e.data.fd, buf, sizeof buf);
        if (got <= 0) _exit(0);
        write(e.data.fd == left ? right : left, buf, (size_t)got);
    }
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 20000, relays = argc > 2 ? atoi(argv[2]) : 1, warm = 200;
    if (n < 1 || relays < 1 || relays > 64) {
        fprintf(stderr, "usage: relay_floor [round-trips >= 1] [relays 1...64]\n");
        return 64;
    }
    /* link[i] joins process i (0 the client, 1...relays the relays) to process i + 1 (the last is the server). */
    int link[65][2];
    for (int i = 0; i <= relays; i++) socketpair(AF_UNIX, SOCK_STREAM, 0, link[i]);
    char buf[64];
    pid_t children[66];
    int forked = 0;
    if ((children[forked++] = fork()) == 0) {  /* the server echoes what reaches it */
        int fd = link[relays][1], ep = watch(fd);
        for (;;) {
            struct epoll_event e;
            epoll_wait(ep, &e, 1, -1);
            ssize_t got = read(fd, buf, sizeof buf);
            if (got <= 0) _exit(0);
            write(fd, buf, (size_t)got);
        }
    }
    for (int r = 1; r <= relays; r++)
        if ((children[forked++] = fork()) == 0) relay(link[r - 1][1], link[r][0]);
    int ep = watch(link[0][0]);
    double *rtt = malloc(sizeof(double) * (size_t)n);
    for (int i = -warm; i < n; i++) {
        double t0 = now_us();
        write(link[0][0], buf, 16);
        struct epoll_event e;
        epoll_wait(ep, &e, 1, -1);
        read(link[0][0], buf, sizeof buf);
        if (i >= 0) rtt[i] = now_us() - t0;
    }
    qsort(rtt, (size_t)n, sizeof(double), cmp);
    printf("relayed round trip (%d processes, %d transfers, epoll): p50 %.1f us  p99 %.1f us  (%d round trips)\n",
           relays + 2, 2 * (relays + 1), rtt[n / 2], rtt[n * 99 / 100], n);
    for (int i = 0; i < forked; i++) kill(children[i], SIGKILL);
    while (wait(NULL) > 0) {}
    return 0;
}
