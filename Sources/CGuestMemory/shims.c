#define _GNU_SOURCE
#include "CGuestMemory.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

int pb_memfd_create(const char *name, int hugetlb) {
    unsigned int flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
    if (hugetlb) flags |= MFD_HUGETLB;
    return memfd_create(name, flags);
}

int pb_seal_size(int fd) { return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL); }
int pb_seal_write(int fd) { return fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE); }
int pb_get_seals(int fd) { return fcntl(fd, F_GET_SEALS); }
int pb_seal_shrink_bit(void) { return F_SEAL_SHRINK; }
int pb_seal_grow_bit(void) { return F_SEAL_GROW; }
int pb_seal_write_bit(void) { return F_SEAL_WRITE; }
int pb_seal_seal_bit(void) { return F_SEAL_SEAL; }

int pb_punch_hole(int fd, int64_t offset, int64_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

int pb_madvise_dontneed(void *address, size_t length) { return madvise(address, length, MADV_DONTNEED); }
int pb_madvise_remove(void *address, size_t length) { return madvise(address, length, MADV_REMOVE); }
int pb_madvise_populate_write(void *address, size_t length) {
    return madvise(address, length, MADV_POPULATE_WRITE);
}

int64_t pb_mincore_resident_pages(void *address, size_t length, size_t page_size) {
    /* In chunks, so the vector stays small whatever the length. */
    enum { chunk_pages = 65536 };
    unsigned char vector[chunk_pages];
    int64_t resident = 0;
    size_t pages = (length + page_size - 1) / page_size;
    for (size_t done = 0; done < pages;) {
        size_t now = pages - done < chunk_pages ? pages - done : chunk_pages;
        if (mincore((char *)address + done * page_size, now * page_size, vector) != 0) return -1;
        for (size_t i = 0; i < now; i++) resident += vector[i] & 1;
        done += now;
    }
    return resident;
}

void pb_fill_words(uint64_t *words, size_t count, uint64_t value) {
    for (size_t i = 0; i < count; i++) words[i] = value;
}

size_t pb_find_mismatch(const uint64_t *words, size_t count, uint64_t value) {
    for (size_t i = 0; i < count; i++) {
        if (words[i] != value) return i;
    }
    return count;
}

void pb_touch_pages(void *address, size_t length, size_t stride) {
    volatile unsigned char *bytes = address;
    for (size_t offset = 0; offset < length; offset += stride) bytes[offset] = bytes[offset];
}

const char *pb_errno_name(int error) { return strerrorname_np(error); }

int64_t pb_default_huge_page_size(void) {
    /* /proc/meminfo's Hugepagesize is what MFD_HUGETLB without a size flag uses. */
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buffer[8192];
    ssize_t length = read(fd, buffer, sizeof buffer - 1);
    close(fd);
    if (length <= 0) return -1;
    buffer[length] = 0;
    const char *line = strstr(buffer, "Hugepagesize:");
    if (!line) return -1;
    return strtoll(line + strlen("Hugepagesize:"), NULL, 10) * 1024;
}

int64_t pb_seek_data(int fd, int64_t offset) { return lseek(fd, offset, SEEK_DATA); }
int64_t pb_seek_hole(int fd, int64_t offset) { return lseek(fd, offset, SEEK_HOLE); }

int64_t pb_send_with_fd(int socket, const void *buffer, size_t length, int fd) {
    struct iovec iov = {.iov_base = (void *)buffer, .iov_len = length};
    union {
        char buffer[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    struct msghdr message = {0};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof(control.buffer);
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &fd, sizeof(int));
    return sendmsg(socket, &message, MSG_NOSIGNAL);
}

int64_t pb_recv_with_fds(int socket, void *buffer, size_t length, int *fds, int max_fds, int *fd_count) {
    struct iovec iov = {.iov_base = buffer, .iov_len = length};
    union {
        char buffer[CMSG_SPACE(16 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr message = {0};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof(control.buffer);
    *fd_count = 0;
    ssize_t got = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    if (got < 0) return -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t index = 0; index < count; index++) {
            int received;
            memcpy(&received, CMSG_DATA(header) + index * sizeof(int), sizeof(int));
            if (*fd_count < max_fds) {
                fds[(*fd_count)++] = received;
            } else {
                close(received);
            }
        }
    }
    return got;
}

int pb_socket_peer_closed(int socket) {
    struct pollfd entry = {.fd = socket, .events = POLLIN | POLLRDHUP};
    int ready = poll(&entry, 1, 0);
    if (ready < 0) return -1;
    return (entry.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) ? 1 : 0;
}
