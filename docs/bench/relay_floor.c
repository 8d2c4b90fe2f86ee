/* The floor of a relayed round trip on this machine: three processes, plain C, Unix sockets,
 * epoll -- client -> relay -> server -> relay -> client, 16 bytes, one at a time, exactly the
 * system calls evbus's `rpc` scenario makes (12 per round trip), with no protocol at all.
 * Build and run: cc -O2 -o relay_floor relay_floor.c && ./relay_floor [round-trips]
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

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 20000, warm = 200;
    int toClient[2], toServer[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, toClient);
    socketpair(AF_UNIX, SOCK_STREAM, 0, toServer);
    char buf[64];
    pid_t server = fork();
    if (server == 0) {  /* echoes what the relay sends */
        int ep = watch(toServer[1]);
        for (;;) {
            struct epoll_event e;
            epoll_wait(ep, &e, 1, -1);
            ssize_t got = read(toServer[1], buf, sizeof buf);
            if (got <= 0) _exit(0);
            write(toServer[1], buf, (size_t)got);
        }
    }
    pid_t relay = fork();
    if (relay == 0) {  /* forwards client -> server and server -> client */
        int ep = epoll_create1(0);
        struct epoll_event a = {.events = EPOLLIN, .data.fd = toClient[1]}, b = {.events = EPOLLIN, .data.fd = toServer[0]};
        epoll_ctl(ep, EPOLL_CTL_ADD, toClient[1], &a);
        epoll_ctl(ep, EPOLL_CTL_ADD, toServer[0], &b);
        for (;;) {
            struct epoll_event e;
            epoll_wait(ep, &e, 1, -1);
            ssize_t got = read(e.data.fd, buf, sizeof buf);
            if (got <= 0) _exit(0);
            write(e.data.fd == toClient[1] ? toServer[0] : toClient[1], buf, (size_t)got);
        }
    }
    int ep = watch(toClient[0]);
    double *rtt = malloc(sizeof(double) * (size_t)n);
    for (int i = -warm; i < n; i++) {
        double t0 = now_us();
        write(toClient[0], buf, 16);
        struct epoll_event e;
        epoll_wait(ep, &e, 1, -1);
        read(toClient[0], buf, sizeof buf);
        if (i >= 0) rtt[i] = now_us() - t0;
    }
    qsort(rtt, (size_t)n, sizeof(double), cmp);
    printf("relayed round trip (3 processes, epoll): p50 %.1f us  p99 %.1f us  (%d round trips)\n", rtt[n / 2], rtt[n * 99 / 100], n);
    kill(server, SIGKILL);
    kill(relay, SIGKILL);
    while (wait(NULL) > 0) {}
    return 0;
}
