#ifndef CBROKERMEMORY_H
#define CBROKERMEMORY_H

#include <stddef.h>
#include <stdint.h>

/* The Linux calls the broker's memory socket needs that Swift's Glibc module does not import
 * reliably: recvmsg with SCM_RIGHTS (CMSG_* are macros), SO_PEERCRED, fstatfs magic numbers,
 * the F_SEAL_* bits and fallocate's PUNCH_HOLE flags. The broker never maps guest memory, so
 * there is no mmap here. Every function returns -1 and leaves errno set on failure. */

/* The most descriptors one recvmsg accepts; more are closed by the kernel (MSG_CTRUNC). */
#define PBM_MAX_FDS 8

/* recvmsg(socket, buffer, length) with room for PBM_MAX_FDS descriptors (MSG_CMSG_CLOEXEC).
 * Received descriptors go to fds[0..*fd_count); *truncated is set when the kernel dropped
 * ancillary data that did not fit. Returns the bytes read (0 at end of stream). */
int64_t pbm_recv_with_fds(int socket, void *buffer, size_t length, int *fds, int *fd_count, int *truncated);

/* accept4(socket, NULL, NULL, SOCK_CLOEXEC): a blocking connection, not inherited by children. */
int pbm_accept(int socket);

/* send(socket, buffer, length, MSG_NOSIGNAL): a peer that went away must not SIGPIPE us. */
int64_t pbm_send(int socket, const void *buffer, size_t length);

/* getsockopt(SO_PEERCRED). */
int pbm_peer_credentials(int socket, int32_t *pid, uint32_t *uid, uint32_t *gid);

/* fstatfs(fd).f_type. */
int pbm_filesystem_type(int fd, int64_t *type);
int64_t pbm_tmpfs_magic(void);
int64_t pbm_hugetlbfs_magic(void);

/* fcntl(fd, F_GETFL) & O_ACCMODE, and the O_* access modes. */
int pbm_access_mode(int fd);
int pbm_o_rdonly(void);
int pbm_o_wronly(void);
int pbm_o_rdwr(void);

/* fcntl(fd, F_GET_SEALS) (EINVAL: a file that does not support sealing), and the bits. */
int pbm_get_seals(int fd);
int pbm_seal_shrink_bit(void);
int pbm_seal_write_bit(void);
int pbm_seal_future_write_bit(void);

/* fstat(fd): size, st_blocks * 512 (the kernel's allocated bytes) and st_blksize. */
int pbm_file_figures(int fd, int64_t *size, int64_t *allocated_bytes, int64_t *block_size);

/* fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length). */
int pbm_punch_hole(int fd, int64_t offset, int64_t length);

/* The errno's name ("EPERM"), or NULL if glibc does not know it. */
const char *pbm_errno_name(int error);

#endif
