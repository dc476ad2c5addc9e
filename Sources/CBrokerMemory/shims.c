#define _GNU_SOURCE
#include "CBrokerMemory.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

int64_t pbm_recv_with_fds(int socket, void *buffer, size_t length, int *fds, int *fd_count, int *truncated) {
    union {
        char space[CMSG_SPACE(sizeof(int) * PBM_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buffer, .iov_len = length};
    struct msghdr message;
    memset(&message, 0, sizeof(message));
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control.space;
    message.msg_controllen = sizeof(control.space);
    *fd_count = 0;
    *truncated = 0;
    ssize_t received;
    do {
        received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    } while (received < 0 && errno == EINTR);
    if (received < 0) return -1;
    if (message.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *data = CMSG_DATA(header);
        for (size_t index = 0; index < count; index++) {
            int fd;
            memcpy(&fd, data + index * sizeof(int), sizeof(int));
            if (*fd_count < PBM_MAX_FDS) {
                fds[(*fd_count)++] = fd;
            } else {
                close(fd);
                *truncated = 1;
            }
        }
    }
    return received;
}

int pbm_accept(int socket) { return accept4(socket, NULL, NULL, SOCK_CLOEXEC); }

int64_t pbm_send(int socket, const void *buffer, size_t length) {
    ssize_t sent;
    do {
        sent = send(socket, buffer, length, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    return sent;
}

int pbm_peer_credentials(int socket, int32_t *pid, uint32_t *uid, uint32_t *gid) {
    struct ucred credentials;
    socklen_t size = sizeof(credentials);
    if (getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0) return -1;
    *pid = credentials.pid;
    *uid = credentials.uid;
    *gid = credentials.gid;
    return 0;
}

int pbm_filesystem_type(int fd, int64_t *type) {
    struct statfs info;
    if (fstatfs(fd, &info) != 0) return -1;
    *type = (int64_t)(uint32_t)info.f_type;
    return 0;
}

int64_t pbm_tmpfs_magic(void) { return (int64_t)(uint32_t)TMPFS_MAGIC; }
int64_t pbm_hugetlbfs_magic(void) { return (int64_t)(uint32_t)HUGETLBFS_MAGIC; }

int pbm_access_mode(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return flags & O_ACCMODE;
}

int pbm_o_rdonly(void) { return O_RDONLY; }
int pbm_o_wronly(void) { return O_WRONLY; }
int pbm_o_rdwr(void) { return O_RDWR; }

int pbm_get_seals(int fd) { return fcntl(fd, F_GET_SEALS); }
int pbm_seal_shrink_bit(void) { return F_SEAL_SHRINK; }
int pbm_seal_write_bit(void) { return F_SEAL_WRITE; }
int pbm_seal_future_write_bit(void) { return F_SEAL_FUTURE_WRITE; }

int pbm_file_figures(int fd, int64_t *size, int64_t *allocated_bytes, int64_t *block_size) {
    struct stat info;
    if (fstat(fd, &info) != 0) return -1;
    *size = (int64_t)info.st_size;
    *allocated_bytes = (int64_t)info.st_blocks * 512;
    *block_size = (int64_t)info.st_blksize;
    return 0;
}

int pbm_punch_hole(int fd, int64_t offset, int64_t length) {
    int result;
    do {
        result = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
    } while (result != 0 && errno == EINTR);
    return result;
}

const char *pbm_errno_name(int error) { return strerrorname_np(error); }
