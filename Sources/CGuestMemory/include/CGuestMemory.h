#ifndef CGUESTMEMORY_H
#define CGUESTMEMORY_H

#include <stddef.h>
#include <stdint.h>

/* Thin wrappers over the Linux calls GuestMemory needs whose flags or prototypes Swift's Glibc
 * module does not import reliably (memfd_create, fallocate, the F_SEAL_* and MADV_* constants),
 * and the two tight loops (pattern fill and check) that must stay fast in debug builds. Every
 * function returns -1 and leaves errno set on failure, like the call it wraps. */

/* memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING [| MFD_HUGETLB]). */
int pb_memfd_create(const char *name, int hugetlb);

/* fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL). */
int pb_seal_size(int fd);

/* fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE): only for tests of the failure path. */
int pb_seal_write(int fd);

/* fcntl(fd, F_GET_SEALS). */
int pb_get_seals(int fd);

/* The seal bits, for callers that check them. */
int pb_seal_shrink_bit(void);
int pb_seal_grow_bit(void);
int pb_seal_write_bit(void);
int pb_seal_seal_bit(void);

/* fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length). */
int pb_punch_hole(int fd, int64_t offset, int64_t length);

/* madvise with MADV_DONTNEED, MADV_REMOVE or MADV_POPULATE_WRITE. */
int pb_madvise_dontneed(void *address, size_t length);
int pb_madvise_remove(void *address, size_t length);
int pb_madvise_populate_write(void *address, size_t length);

/* Counts the resident pages of [address, address + length) with mincore; address page aligned. */
int64_t pb_mincore_resident_pages(void *address, size_t length, size_t page_size);

/* Writes `value` to `count` 64-bit words from `words`. */
void pb_fill_words(uint64_t *words, size_t count, uint64_t value);

/* The index of the first of `count` words that is not `value`, or `count` if all are. */
size_t pb_find_mismatch(const uint64_t *words, size_t count, uint64_t value);

/* Writes the same byte back to one byte of every `stride` bytes: touches pages without
 * changing them (the fallback when MADV_POPULATE_WRITE is not available). */
void pb_touch_pages(void *address, size_t length, size_t stride);

/* lseek(fd, offset, SEEK_DATA) and SEEK_HOLE (GNU extensions). */
int64_t pb_seek_data(int fd, int64_t offset);
int64_t pb_seek_hole(int fd, int64_t offset);

/* The errno's name ("EPERM"), or NULL if glibc does not know it. */
const char *pb_errno_name(int error);

/* The huge page size hugetlbfs uses by default (from the system), or -1. */
int64_t pb_default_huge_page_size(void);

/* sendmsg(socket, buffer, length) with `fd` as SCM_RIGHTS ancillary data on the first byte
 * (MSG_NOSIGNAL): how the memfd reaches the broker's memory socket. Returns the bytes sent. */
int64_t pb_send_with_fd(int socket, const void *buffer, size_t length, int fd);

/* recvmsg(socket) into buffer, taking at most `max_fds` descriptors passed as SCM_RIGHTS
 * (MSG_CMSG_CLOEXEC) into fds; *fd_count says how many came (the rest of a larger batch is
 * closed). Returns the bytes read (0 at end of stream). For tests and small servers. */
int64_t pb_recv_with_fds(int socket, void *buffer, size_t length, int *fds, int max_fds, int *fd_count);

/* poll(fd, POLLIN|POLLRDHUP, 0): 1 if the peer closed its end or the socket failed (POLLHUP,
 * POLLRDHUP, POLLERR) , 0 if not, -1 on error. Never blocks and reads nothing. */
int pb_socket_peer_closed(int socket);

#endif
