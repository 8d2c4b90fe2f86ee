// The Linux surface Swift's Glibc module hides (it is built without _GNU_SOURCE).
// Headers and one-line wrappers only; all logic lives in Swift.
#ifndef CEVBUS_LINUX_H
#define CEVBUS_LINUX_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <spawn.h>
#include <sys/un.h>
#include <malloc.h>

/// Mirrors glibc's `struct ucred`, which is only visible with _GNU_SOURCE (shim.c asserts the layout).
typedef struct {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} CEvbus_ucred;

// epoll's flags are an anonymous enum in glibc; give Swift plain constants.
static const uint32_t CEvbus_EPOLLIN = EPOLLIN;
static const uint32_t CEvbus_EPOLLOUT = EPOLLOUT;
static const uint32_t CEvbus_EPOLLERR = EPOLLERR;
static const uint32_t CEvbus_EPOLLHUP = EPOLLHUP;
static const uint32_t CEvbus_EPOLLRDHUP = EPOLLRDHUP;
static const uint32_t CEvbus_EPOLLET = EPOLLET;
static const int CEvbus_EFD_NONBLOCK = EFD_NONBLOCK;
static const int CEvbus_EFD_CLOEXEC = EFD_CLOEXEC;
static const int CEvbus_TFD_NONBLOCK = TFD_NONBLOCK;
static const int CEvbus_TFD_CLOEXEC = TFD_CLOEXEC;
static const int CEvbus_SOCK_NONBLOCK = SOCK_NONBLOCK;
static const int CEvbus_SOCK_CLOEXEC = SOCK_CLOEXEC;
static const int CEvbus_MSG_NOSIGNAL = MSG_NOSIGNAL;

/// accept4(2), hidden by glibc without _GNU_SOURCE.
int CEvbus_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

/// getsockopt(SO_PEERCRED) into a CEvbus_ucred. Returns 0 or -1 with errno set.
int CEvbus_peercred(int fd, CEvbus_ucred *out);
/// posix_spawn_file_actions_addclosefrom_np: the child closes every descriptor from `from` up,
/// so it inherits none that the parent opened without O_CLOEXEC (Foundation's files, for one).
int CEvbus_spawn_closefrom(posix_spawn_file_actions_t *actions, int from);
/// pipe2(fds, O_CLOEXEC): a pipe no concurrently spawned child inherits.
int CEvbus_pipe_cloexec(int fds[2]);
/// SO_PEERGROUPS: the peer's supplementary groups when it connected, up to `capacity`; returns
/// how many, or -1 (errno ERANGE: more than `capacity`).
int CEvbus_peergroups(int fd, gid_t *out, int capacity);

/// sendmsg(2) of an iovec array with MSG_NOSIGNAL: writev without SIGPIPE.
ssize_t CEvbus_sendv(int fd, const struct iovec *iov, int count);

/// Marks (1) or unmarks (0) the calling thread as running an evbus event loop; read back with
/// CEvbus_isLoopThread. A C thread-local: Swift has none short of pthread keys.
void CEvbus_setLoopThread(int on);
int CEvbus_isLoopThread(void);

/// Names the calling thread (shows in top, perf and gdb); names longer than 15 bytes are cut.
void CEvbus_setThreadName(const char *name);

#endif
