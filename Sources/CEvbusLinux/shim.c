#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>
#include <spawn.h>
#include <sys/socket.h>
#include <string.h>
#include <pthread.h>
#include "CEvbusLinux.h"

_Static_assert(sizeof(struct ucred) == sizeof(CEvbus_ucred), "CEvbus_ucred must mirror struct ucred");

int CEvbus_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int CEvbus_peercred(int fd, CEvbus_ucred *out) {
    socklen_t len = sizeof(struct ucred);
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, out, &len);
}

int CEvbus_spawn_closefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

int CEvbus_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int CEvbus_peergroups(int fd, gid_t *out, int capacity) {
#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif
    socklen_t len = (socklen_t)(capacity * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, out, &len) != 0) return -1;
    return (int)(len / sizeof(gid_t));
}

ssize_t CEvbus_sendv(int fd, const struct iovec *iov, int count) {
    // One buffer (the usual case for small messages): send(2) skips copying in a msghdr and an iovec array.
    if (count == 1) return send(fd, iov->iov_base, iov->iov_len, MSG_NOSIGNAL);
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = (struct iovec *)iov;
    msg.msg_iovlen = (size_t)count;
    return sendmsg(fd, &msg, MSG_NOSIGNAL);
}

void CEvbus_setThreadName(const char *name) {
    char cut[16];
    strncpy(cut, name, 15);
    cut[15] = 0;
    pthread_setname_np(pthread_self(), cut);
}

static _Thread_local int onLoopThread;

void CEvbus_setLoopThread(int on) { onLoopThread = on; }

int CEvbus_isLoopThread(void) { return onLoopThread; }
