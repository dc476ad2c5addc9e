#define _GNU_SOURCE
#include "CGuestLoop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <pthread.h>
#include <unistd.h>

const uint32_t pbl_readable = EPOLLIN;
const uint32_t pbl_writable = EPOLLOUT;
const uint32_t pbl_error = EPOLLERR;
const uint32_t pbl_hangup = EPOLLHUP;

int pbl_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int pbl_epoll_add(int epoll, int fd, uint32_t events, int exclusive) {
    struct epoll_event event = {.events = events | (exclusive ? EPOLLEXCLUSIVE : 0), .data.fd = fd};
    return epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
}

int pbl_epoll_modify(int epoll, int fd, uint32_t events) {
    struct epoll_event event = {.events = events, .data.fd = fd};
    return epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &event);
}

int pbl_epoll_remove(int epoll, int fd) { return epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL); }

int pbl_epoll_wait(int epoll, int32_t *fds, uint32_t *events, int capacity, int timeout_ms) {
    struct epoll_event ready[256];
    if (capacity > 256) capacity = 256;
    int count = epoll_wait(epoll, ready, capacity, timeout_ms);
    for (int i = 0; i < count; i++) {
        fds[i] = ready[i].data.fd;
        events[i] = ready[i].events;
    }
    return count;
}

int pbl_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int pbl_eventfd_signal(int fd) {
    uint64_t one = 1;
    /* EAGAIN: the counter is at its maximum, so the loop is woken anyway. */
    if (write(fd, &one, sizeof one) < 0 && errno != EAGAIN) return -1;
    return 0;
}

int pbl_eventfd_drain(int fd) {
    uint64_t value;
    if (read(fd, &value, sizeof value) < 0 && errno != EAGAIN) return -1;
    return 0;
}

static void format_address(const struct sockaddr_storage *storage, char *out, size_t capacity, int brackets,
                           int *port) {
    char text[INET6_ADDRSTRLEN] = "";
    int number = 0;
    if (storage->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)storage;
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        number = ntohs(in->sin_port);
        if (port) *port = number;
        if (out && !port) snprintf(out, capacity, "%s:%d", text, number);
        if (out && port) snprintf(out, capacity, "%s", text);
    } else if (storage->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)storage;
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
        number = ntohs(in6->sin6_port);
        if (port) *port = number;
        if (out && !port) snprintf(out, capacity, brackets ? "[%s]:%d" : "%s:%d", text, number);
        if (out && port) snprintf(out, capacity, "%s", text);
    } else if (out && capacity > 0) {
        snprintf(out, capacity, "unknown");
    }
}

int pbl_accept(int listener, char *peer, size_t peer_capacity) {
    struct sockaddr_storage storage;
    socklen_t length = sizeof storage;
    int fd = accept4(listener, (struct sockaddr *)&storage, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return -1;
    int one = 1;
    /* Results are small and answered at once: Nagle would hold each behind the previous ack. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    format_address(&storage, peer, peer_capacity, 1, NULL);
    return fd;
}

int pbl_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int pbl_listen(const char *host, int port, int backlog, char *error, size_t error_capacity) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *found = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int status = getaddrinfo(host, service, &hints, &found);
    if (status != 0) {
        snprintf(error, error_capacity, "cannot resolve %s: %s", host, gai_strerror(status));
        errno = EINVAL;
        return -1;
    }
    int fd = socket(found->ai_family, found->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, found->ai_protocol);
    if (fd < 0) {
        snprintf(error, error_capacity, "socket: %s", strerror(errno));
        freeaddrinfo(found);
        return -1;
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, found->ai_addr, found->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
        int saved = errno;
        snprintf(error, error_capacity, "%s", strerror(saved));
        close(fd);
        freeaddrinfo(found);
        errno = saved;
        return -1;
    }
    freeaddrinfo(found);
    return fd;
}

int pbl_local_address(int fd, char *address, size_t address_capacity, int *port) {
    struct sockaddr_storage storage;
    socklen_t length = sizeof storage;
    if (getsockname(fd, (struct sockaddr *)&storage, &length) < 0) return -1;
    format_address(&storage, address, address_capacity, 0, port);
    return 0;
}

int pbl_set_thread_name(const char *name) {
    char truncated[16];
    snprintf(truncated, sizeof truncated, "%s", name);
    return pthread_setname_np(pthread_self(), truncated);
}
