#ifndef CGUESTLOOP_H
#define CGUESTLOOP_H

#include <stddef.h>
#include <stdint.h>

/* The Linux calls of the broker's epoll guest transport (Sources/Broker/Transport) that Swift's
 * Glibc module does not import: epoll (its event struct is packed), eventfd, accept4 with
 * TCP_NODELAY, and a listening socket bound from a host name. Every function returns -1 and
 * leaves errno set on failure, unless it says otherwise. */

/* Readiness bits, as epoll's. */
extern const uint32_t pbl_readable;
extern const uint32_t pbl_writable;
extern const uint32_t pbl_error;
extern const uint32_t pbl_hangup;

/* epoll_create1(EPOLL_CLOEXEC). */
int pbl_epoll_create(void);
/* Adds fd with `events` (pbl_readable | pbl_writable), level-triggered; with `exclusive`, one
 * waiter of several is woken (EPOLLEXCLUSIVE: a listening socket shared by loops). */
int pbl_epoll_add(int epoll, int fd, uint32_t events, int exclusive);
int pbl_epoll_modify(int epoll, int fd, uint32_t events);
int pbl_epoll_remove(int epoll, int fd);
/* epoll_wait into two arrays: the ready descriptors and their events. Returns the count, 0 on a
 * timeout, -1 (errno EINTR) when a signal interrupted it. `timeout_ms` -1 waits forever. */
int pbl_epoll_wait(int epoll, int32_t *fds, uint32_t *events, int capacity, int timeout_ms);

/* eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), its signal (add 1) and its drain (read to zero). */
int pbl_eventfd(void);
int pbl_eventfd_signal(int fd);
int pbl_eventfd_drain(int fd);

/* accept4(listener, SOCK_NONBLOCK | SOCK_CLOEXEC), then TCP_NODELAY; the peer's address goes
 * to `peer` as "address:port" ("[address]:port" for IPv6). -1 with EAGAIN when none waits. */
int pbl_accept(int listener, char *peer, size_t peer_capacity);

/* Makes fd non-blocking (a listening socket handed over by systemd). */
int pbl_set_nonblocking(int fd);

/* A listening TCP socket (non-blocking, close-on-exec, SO_REUSEADDR) bound to the first
 * address `host` resolves to (getaddrinfo, AI_PASSIVE) and `port`. On failure returns -1 with
 * the reason in `error` (getaddrinfo's or errno's words). */
int pbl_listen(const char *host, int port, int backlog, char *error, size_t error_capacity);

/* The socket's local address as text (no brackets) and port. */
int pbl_local_address(int fd, char *address, size_t address_capacity, int *port);

/* Names the calling thread (what top -H, perf and gdb show), cut to 15 characters. Returns 0
 * on success, else an errno value. */
int pbl_set_thread_name(const char *name);

#endif
