// Plain OpenSSL, blocking-socket echo peer: the baseline the NIO TLS handler is measured
// against (tls-roundtrip-bench). Mutual TLS, TLS 1.2+, same certificates as the handler.
//
//   tls-echo-peer server CERT KEY CA
//       listens on 127.0.0.1 with an OS-picked port, prints "LISTENING <port>", then serves
//       connections one after another: each frame (4-byte big-endian length + body) is echoed.
//       After each connection it prints "CONN frames=.. segs_in=.. segs_out=.. data_segs_in=..
//       data_segs_out=.. records_in=.. records_out=.. reads=.. writes=.. cipher=.. version=..":
//       the kernel's TCP_INFO counters of the connection (so the client's segments, counted
//       exactly and per connection, whatever else the machine sends over loopback), the TLS
//       records each way (the message callback sees every record header), and the server's
//       own socket reads and writes (a BIO callback), so a client can be compared with another
//       on the same kernel work.
//   tls-echo-peer plain-server CERT KEY CA, tls-echo-peer plain-client PORT CERT KEY CA ROUNDS SIZE
//       the same over plain TCP (the certificate arguments are ignored): the transport's own
//       cost, so that what TLS adds on each side can be told from what the event loop costs.
//   tls-echo-peer client PORT CERT KEY CA ROUNDS SIZE
//       connects to 127.0.0.1:PORT, sends ROUNDS frames of SIZE body bytes one at a time,
//       waiting for each echo, and prints
//       "RESULT rounds=N p50_us=.. p99_us=.. mean_us=.. rate_per_s=.. cpu_us=.. sys_us=..", where
//       cpu_us is the client's CPU time (user + system) per measured round trip, sys_us the
//       system part of it, csw its context switches (voluntary + involuntary) per round trip.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/tcp.h>  // struct tcp_info with the segment counters (glibc's lacks them)
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <openssl/bio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WARMUP_ROUNDS 200

/// Plain TCP instead of TLS (plain-server, plain-client): every SSL * below is then NULL.
static int plain;

static void die(const char *what) {
    fprintf(stderr, "tls-echo-peer: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static SSL_CTX *make_context(int server, const char *cert, const char *key, const char *ca) {
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_num_tickets(ctx, 0);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) die("certificate");
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) die("key");
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) die("CA");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    return ctx;
}

/// Per-connection counters, reset at each accept.
static struct {
    unsigned long records_in, records_out, reads, writes;
} counters;

/// Every record header passes here (content type SSL3_RT_HEADER), in either direction.
static void count_records(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl, void *arg) {
    (void)version, (void)buf, (void)len, (void)ssl, (void)arg;
    if (content_type != SSL3_RT_HEADER) return;
    if (write_p) counters.records_out++;
    else counters.records_in++;
}

/// Counts the socket BIO's reads and writes, i.e. the server's read(2) and write(2) calls.
static long count_io(BIO *bio, int oper, const char *argp, size_t len, int argi, long argl, int ret, size_t *processed) {
    (void)bio, (void)argp, (void)len, (void)argi, (void)argl, (void)processed;
    if (oper == (BIO_CB_READ | BIO_CB_RETURN)) counters.reads++;
    if (oper == (BIO_CB_WRITE | BIO_CB_RETURN)) counters.writes++;
    return ret;
}

static void print_connection(SSL *ssl, int fd, unsigned long frames) {
    struct tcp_info info;
    socklen_t length = sizeof info;
    memset(&info, 0, sizeof info);
    getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length);
    printf("CONN frames=%lu segs_in=%u segs_out=%u data_segs_in=%u data_segs_out=%u records_in=%lu records_out=%lu "
           "reads=%lu writes=%lu cipher=%s version=%s\n",
           frames, info.tcpi_segs_in, info.tcpi_segs_out, info.tcpi_data_segs_in, info.tcpi_data_segs_out,
           counters.records_in, counters.records_out, counters.reads, counters.writes,
           ssl ? SSL_get_cipher_name(ssl) : "none", ssl ? SSL_get_version(ssl) : "plain-TCP");
    fflush(stdout);
}

static int read_full(SSL *ssl, int fd, unsigned char *buffer, size_t length) {
    size_t done = 0;
    while (done < length) {
        int n;
        if (ssl) {
            n = SSL_read(ssl, buffer + done, (int)(length - done));
        } else {
            n = (int)read(fd, buffer + done, length - done);
            counters.reads++;
        }
        if (n <= 0) return 0;
        done += (size_t)n;
    }
    return 1;
}

static int write_all(SSL *ssl, int fd, const unsigned char *buffer, size_t length) {
    if (ssl) return SSL_write(ssl, buffer, (int)length) > 0;
    size_t done = 0;
    while (done < length) {
        ssize_t n = write(fd, buffer + done, length - done);
        counters.writes++;
        if (n <= 0) return 0;
        done += (size_t)n;
    }
    return 1;
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int serve(const char *cert, const char *key, const char *ca) {
    SSL_CTX *ctx = plain ? NULL : make_context(1, cert, key, ca);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0) die("bind");
    if (listen(listener, 16) != 0) die("listen");
    socklen_t length = sizeof address;
    getsockname(listener, (struct sockaddr *)&address, &length);
    printf("LISTENING %d\n", ntohs(address.sin_port));
    fflush(stdout);

    unsigned char *frame = malloc(4 + (1u << 20));
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) continue;
        nodelay(fd);
        memset(&counters, 0, sizeof counters);
        SSL *ssl = NULL;
        if (!plain) {
            ssl = SSL_new(ctx);
            SSL_set_fd(ssl, fd);
            SSL_set_msg_callback(ssl, count_records);
            BIO_set_callback_ex(SSL_get_rbio(ssl), count_io);  // one socket BIO for both directions
        }
        unsigned long frames = 0;
        if (plain || SSL_accept(ssl) == 1) {
            while (read_full(ssl, fd, frame, 4)) {
                uint32_t body = ((uint32_t)frame[0] << 24) | ((uint32_t)frame[1] << 16) | ((uint32_t)frame[2] << 8) | frame[3];
                if (body > (1u << 20) || !read_full(ssl, fd, frame + 4, body)) break;
                if (!write_all(ssl, fd, frame, 4 + body)) break;
                frames++;
            }
            print_connection(ssl, fd, frames);
            if (ssl) SSL_shutdown(ssl);
        } else {
            ERR_print_errors_fp(stderr);
        }
        if (ssl) SSL_free(ssl);
        close(fd);
    }
    return 0;  // not reached: the bench stops the server with a signal
}

static double cpu_us(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

/// Voluntary (blocked) plus involuntary (preempted) context switches so far.
static long context_switches(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_nvcsw + usage.ru_nivcsw;
}

/// System (kernel) CPU time so far, to split cpu_us into user and system.
static double system_us(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_stime.tv_sec * 1e6 + (double)usage.ru_stime.tv_usec;
}

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int run_client(int port, const char *cert, const char *key, const char *ca, int rounds, int size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) die("connect");
    nodelay(fd);
    SSL *ssl = NULL;
    if (!plain) {
        ssl = SSL_new(make_context(0, cert, key, ca));
        SSL_set_fd(ssl, fd);
        SSL_set1_host(ssl, "localhost");
        if (SSL_connect(ssl) != 1) die("SSL_connect");
    }

    unsigned char *frame = malloc(4 + (size_t)size), *echo = malloc(4 + (size_t)size);
    frame[0] = (unsigned char)(size >> 24);
    frame[1] = (unsigned char)(size >> 16);
    frame[2] = (unsigned char)(size >> 8);
    frame[3] = (unsigned char)size;
    for (int i = 0; i < size; i++) frame[4 + i] = (unsigned char)i;
    uint64_t *latency = malloc(sizeof(uint64_t) * (size_t)rounds);

    uint64_t started = 0;
    double cpu_started = 0, system_started = 0;
    long switches_started = 0;
    for (int i = -WARMUP_ROUNDS; i < rounds; i++) {
        if (i == 0) {
            started = now_ns();
            cpu_started = cpu_us();
            system_started = system_us();
            switches_started = context_switches();
        }
        uint64_t t0 = now_ns();
        if (!write_all(ssl, fd, frame, 4 + (size_t)size)) die("write");
        if (!read_full(ssl, fd, echo, 4 + (size_t)size)) die("read");
        if (i >= 0) latency[i] = now_ns() - t0;
    }
    uint64_t total = now_ns() - started;
    double cpu = (cpu_us() - cpu_started) / rounds;
    double system = (system_us() - system_started) / rounds;
    double switches = (double)(context_switches() - switches_started) / rounds;
    if (memcmp(frame, echo, 4 + (size_t)size) != 0) die("echo differs");
    if (ssl) SSL_shutdown(ssl);

    qsort(latency, (size_t)rounds, sizeof(uint64_t), compare);
    printf("RESULT rounds=%d p50_us=%.2f p99_us=%.2f mean_us=%.2f rate_per_s=%.0f cpu_us=%.2f sys_us=%.2f csw=%.3f\n", rounds,
           latency[rounds / 2] / 1000.0, latency[(size_t)rounds * 99 / 100] / 1000.0,
           (double)total / rounds / 1000.0, rounds / (total / 1e9), cpu, system, switches);
    return 0;
}

int main(int argc, char **argv) {
    plain = argc > 1 && strncmp(argv[1], "plain-", 6) == 0;
    const char *mode = plain ? argv[1] + 6 : argc > 1 ? argv[1] : "";
    if (argc == 5 && strcmp(mode, "server") == 0) return serve(argv[2], argv[3], argv[4]);
    if (argc == 8 && strcmp(mode, "client") == 0)
        return run_client(atoi(argv[2]), argv[3], argv[4], argv[5], atoi(argv[6]), atoi(argv[7]));
    fprintf(stderr, "usage: tls-echo-peer [plain-]server CERT KEY CA | [plain-]client PORT CERT KEY CA ROUNDS SIZE\n");
    return 2;
}
