// Thin C wrappers for the parts of OpenSSL that Swift cannot import directly:
// function-like macros (SSL_CTX_set_min_proto_version, SSL_set_tlsext_host_name, ...),
// the typed STACK_OF(GENERAL_NAME) accessors, and a verify callback.
#ifndef PAGEBROKER_OPENSSL_SHIMS_H
#define PAGEBROKER_OPENSSL_SHIMS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

/// The verify result recorded when a peer certificate chains to the CA but carries no URI SAN.
/// It is OpenSSL's X509_V_ERR_APPLICATION_VERIFICATION, re-exported because Swift sees it as a macro.
extern const long pb_verify_error_missing_uri_san;

int pb_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version);
int pb_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int version);
long pb_ssl_ctx_set_mode(SSL_CTX *ctx, long mode);
long pb_ssl_ctx_get_mode(SSL_CTX *ctx);
/// Options every context gets: no renegotiation (a peer cannot make us process a handshake
/// mid-stream), no compression (CRIME), server cipher preference, and no TLS 1.3 session
/// tickets (nothing here resumes sessions, so they are only wasted bytes and CPU).
void pb_ssl_ctx_set_hardened_options(SSL_CTX *ctx);
int pb_ssl_set_tlsext_host_name(SSL *ssl, const char *name);

/// Sets up peer verification on `ctx`: `mode` is SSL_VERIFY_* and, when `require_uri_san` is
/// non-zero, the leaf certificate must carry at least one URI subjectAltName or the handshake
/// fails with verify result `pb_verify_error_missing_uri_san` (and an alert to the peer).
void pb_ssl_ctx_set_verify(SSL_CTX *ctx, int mode, int require_uri_san);

/// Restricts the expected peer name for certificate verification: an IP address literal is
/// matched against IP SANs, anything else against DNS SANs / CN. Returns 1 on success.
int pb_ssl_set_expected_peer_name(SSL *ssl, const char *name);

/// Moves outgoing ciphertext from `bio` into `dst`; returns the byte count (0 when empty).
int pb_bio_read(BIO *bio, void *dst, int capacity);
/// Tells a memory BIO to report EOF (not "retry") once it is empty.
void pb_bio_set_mem_eof_return(BIO *bio, int value);

/// Number of URI subjectAltNames in `cert`; `pb_x509_uri_san_at` copies the i-th one.
/// The whole extension is decoded once into `*names`, which the caller frees with
/// `pb_general_names_free`.
int pb_x509_uri_san_count(X509 *cert, void **names);
int pb_x509_uri_san_at(void *names, int index, const unsigned char **data, int *length);
void pb_general_names_free(void *names);

/// RFC 2253 form of the subject name, malloc'd by OpenSSL; free with `pb_openssl_free`.
char *pb_x509_subject_string(X509 *cert);
/// notAfter as seconds since the Unix epoch. Returns 1 on success.
int pb_x509_not_after(X509 *cert, int64_t *seconds);
void pb_openssl_free(void *pointer);

/// Lets `pb_ssl_seal_tls13_alert` work on connections made from `ctx` (a server that may refuse
/// a peer after the handshake): captures each connection's server application traffic secret
/// during the handshake. Returns 1 on success.
int pb_ssl_ctx_enable_post_handshake_alerts(SSL_CTX *ctx);
/// Wipes the secret captured for `ssl` (once the handshake has been judged).
void pb_ssl_forget_traffic_secret(SSL *ssl);
/// Seals a fatal alert `description` (e.g. 49, access_denied) as the first record under the
/// server's TLS 1.3 application traffic keys, into `out`. Returns the record's length, or -1
/// when it cannot be made (not TLS 1.3, no captured secret, session tickets on, unknown AEAD):
/// the caller then closes without an alert.
int pb_ssl_seal_tls13_alert(SSL *ssl, unsigned char description, unsigned char *out, size_t capacity);

/// A socket BIO on `fd` (not closed with the BIO) like BIO_new_socket's, except that writes use
/// send(MSG_NOSIGNAL): a peer that reset the connection gives EPIPE, never SIGPIPE.
BIO *pb_bio_new_socket_nosignal(int fd);

int pb_err_get_lib(unsigned long code);
int pb_err_get_reason(unsigned long code);

#endif
