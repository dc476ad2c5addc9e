// A socket BIO whose writes cannot raise SIGPIPE.
//
// OpenSSL's own socket BIO writes with write(2): a write to a connection the peer has reset
// raises SIGPIPE, whose default action ends the process. A server (or a library embedded in one)
// must not die because one peer went away, and must not depend on its host process ignoring
// the signal. This BIO is OpenSSL's socket BIO with one change: writes go through
// send(MSG_NOSIGNAL), so the failure is EPIPE, returned like any other. Reads, controls and
// the end-of-stream flag OpenSSL 3 uses to tell an unexpected EOF stay the socket BIO's own.
#include "CPagebrokerOpenSSLShims.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>

static BIO_METHOD *nosignal_method;

static int nosignal_write(BIO *bio, const char *data, int length) {
    int fd = (int)BIO_get_fd(bio, NULL);
    errno = 0;
    ssize_t written = send(fd, data, (size_t)length, MSG_NOSIGNAL);
    BIO_clear_retry_flags(bio);
    if (written <= 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        BIO_set_retry_write(bio);
    }
    return (int)written;
}

static int nosignal_puts(BIO *bio, const char *text) {
    return nosignal_write(bio, text, (int)strlen(text));
}

static BIO_METHOD *make_method(void) {
    const BIO_METHOD *socket = BIO_s_socket();
    BIO_METHOD *method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                      "socket (send with MSG_NOSIGNAL)");
    if (method == NULL) return NULL;
    if (!BIO_meth_set_write(method, nosignal_write) || !BIO_meth_set_puts(method, nosignal_puts)
        || !BIO_meth_set_read(method, BIO_meth_get_read(socket))
        || !BIO_meth_set_ctrl(method, BIO_meth_get_ctrl(socket))
        || !BIO_meth_set_create(method, BIO_meth_get_create(socket))
        || !BIO_meth_set_destroy(method, BIO_meth_get_destroy(socket))) {
        BIO_meth_free(method);
        return NULL;
    }
    return method;
}

BIO *pb_bio_new_socket_nosignal(int fd) {
    // Made once; when two first callers race, the loser frees its copy.
    BIO_METHOD *method = __atomic_load_n(&nosignal_method, __ATOMIC_ACQUIRE);
    if (method == NULL) {
        method = make_method();
        if (method == NULL) return NULL;
        BIO_METHOD *expected = NULL;
        if (!__atomic_compare_exchange_n(&nosignal_method, &expected, method, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            BIO_meth_free(method);
            method = expected;
        }
    }
    BIO *bio = BIO_new(method);
    if (bio == NULL) return NULL;
    BIO_set_fd(bio, fd, BIO_NOCLOSE);
    return bio;
}
