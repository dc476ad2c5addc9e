// An LD_PRELOAD shim that gives floor-broker (../shared/peers) host discard's work, for
// scripts/bench-broker's DISCARD=host: before each SSL_write it makes PUNCH_BLOCKS
// fallocate(PUNCH_HOLE | KEEP_SIZE) calls of 2 MiB for every ReportResult in the buffer, on a
// sparse memfd it maps shared and never touches (as load's guests hold theirs), walking
// PUNCH_SLOTS slots. So the floor punches before it answers, on its one thread, as pagebrokerd
// punches before its OK: its CPU per report, p99 and reports/s are then the floor's plus the same
// fallocate calls, measured by the load client like the broker's. On SIGTERM it writes the number of
// calls made to $PUNCH_COUNT_FILE, which the script checks against the reports answered. Not part
// of the product.
//   cc -O2 -shared -fPIC -o floor-punch.so floor-punch.c -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct ssl_st SSL;

static int (*real_ssl_write)(SSL *, const void *, int);
static int memfd = -1;
static long blocks_per_report, slots, next_slot, calls;
static const long block_bytes = 2L << 20;
static const char *count_path;

// floor-broker is killed with SIGTERM, which runs no destructor: the count is written by a
// handler (async-signal-safe calls only), so the punch path itself writes nothing.
static void record_and_exit(int sig) {
    (void)sig;
    if (count_path) {
        char digits[24], *d = digits + sizeof digits;
        *--d = '\n';
        long v = calls;
        do { *--d = (char)('0' + v % 10); v /= 10; } while (v);
        int fd = open(count_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            if (write(fd, d, (size_t)(digits + sizeof digits - d)) < 0) _exit(71);
            close(fd);
        }
    }
    _exit(0);
}

__attribute__((constructor)) static void setup(void) {
    const char *b = getenv("PUNCH_BLOCKS"), *s = getenv("PUNCH_SLOTS");
    blocks_per_report = b ? atol(b) : 32;
    slots = s ? atol(s) : 2048;
    count_path = getenv("PUNCH_COUNT_FILE");
    real_ssl_write = (int (*)(SSL *, const void *, int))dlsym(RTLD_NEXT, "SSL_write");
    memfd = memfd_create("floor-punch", MFD_CLOEXEC);
    if (!real_ssl_write || memfd < 0 || ftruncate(memfd, block_bytes * slots) != 0 ||
        mmap(NULL, block_bytes * slots, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0) == MAP_FAILED) {
        perror("floor-punch: setup");
        _exit(70);
    }
    signal(SIGTERM, record_and_exit);
}

int SSL_write(SSL *ssl, const void *buf, int num) {
    const unsigned char *p = buf;
    long results = 0;
    // The floor's out buffer is whole frames: a 4-byte big-endian length, then the body, whose
    // first byte is the Frame field's key (0x22: ReportResult).
    for (long off = 0; off + 5 <= num;) {
        uint32_t n = ((uint32_t)p[off] << 24) | ((uint32_t)p[off + 1] << 16) | ((uint32_t)p[off + 2] << 8) | p[off + 3];
        if (p[off + 4] == 0x22) results++;
        off += 4 + (long)n;
    }
    for (long i = 0; i < results * blocks_per_report; i++) {
        if (fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, next_slot * block_bytes, block_bytes) != 0) {
            perror("floor-punch: fallocate");
            _exit(70);
        }
        next_slot = (next_slot + 1) % slots;
        calls++;
    }
    return real_ssl_write(ssl, buf, num);
}
