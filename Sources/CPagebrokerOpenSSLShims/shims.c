#define _GNU_SOURCE  // timegm

#include "CPagebrokerOpenSSLShims.h"

#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

const long pb_verify_error_missing_uri_san = X509_V_ERR_APPLICATION_VERIFICATION;

int pb_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

int pb_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}

long pb_ssl_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }

long pb_ssl_ctx_get_mode(SSL_CTX *ctx) { return SSL_CTX_get_mode(ctx); }

void pb_ssl_ctx_set_hardened_options(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_num_tickets(ctx, 0);
}

int pb_ssl_set_tlsext_host_name(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }

static int has_uri_san(X509 *cert) {
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    if (names == NULL) return 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
        if (name->type == GEN_URI && ASN1_STRING_length(name->d.uniformResourceIdentifier) > 0) {
            found = 1;
            break;
        }
    }
    GENERAL_NAMES_free(names);
    return found;
}

// Runs after OpenSSL's own chain checks for each certificate; only the leaf (depth 0) is
// asked for a URI SAN, and only once the chain itself is fine, so an untrusted or expired
// certificate keeps its own, more useful, verify result.
static int verify_require_uri_san(int preverify_ok, X509_STORE_CTX *store) {
    if (!preverify_ok) return 0;
    if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;
    X509 *leaf = X509_STORE_CTX_get_current_cert(store);
    if (leaf != NULL && has_uri_san(leaf)) return 1;
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

void pb_ssl_ctx_set_verify(SSL_CTX *ctx, int mode, int require_uri_san) {
    SSL_CTX_set_verify(ctx, mode, require_uri_san ? verify_require_uri_san : NULL);
}

int pb_ssl_set_expected_peer_name(SSL *ssl, const char *name) {
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    // set1_ip_asc fails for anything that is not an IP literal; that is how we tell them apart.
    if (X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1) return 1;
    return X509_VERIFY_PARAM_set1_host(param, name, 0);
}

int pb_bio_read(BIO *bio, void *dst, int capacity) {
    int n = BIO_read(bio, dst, capacity);
    return n > 0 ? n : 0;
}

void pb_bio_set_mem_eof_return(BIO *bio, int value) { BIO_set_mem_eof_return(bio, value); }

int pb_x509_uri_san_count(X509 *cert, void **out) {
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    *out = names;
    if (names == NULL) return 0;
    int count = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        if (sk_GENERAL_NAME_value(names, i)->type == GEN_URI) count++;
    }
    return count;
}

int pb_x509_uri_san_at(void *opaque, int index, const unsigned char **data, int *length) {
    GENERAL_NAMES *names = opaque;
    if (names == NULL) return 0;
    int seen = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
        if (name->type != GEN_URI) continue;
        if (seen++ == index) {
            *data = ASN1_STRING_get0_data(name->d.uniformResourceIdentifier);
            *length = ASN1_STRING_length(name->d.uniformResourceIdentifier);
            return 1;
        }
    }
    return 0;
}

void pb_general_names_free(void *names) {
    if (names != NULL) GENERAL_NAMES_free((GENERAL_NAMES *)names);
}

char *pb_x509_subject_string(X509 *cert) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL) return NULL;
    char *result = NULL;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
        char *data = NULL;
        long length = BIO_get_mem_data(bio, &data);
        if (length >= 0) {
            result = OPENSSL_malloc((size_t)length + 1);
            if (result != NULL) {
                memcpy(result, data, (size_t)length);
                result[length] = '\0';
            }
        }
    }
    BIO_free(bio);
    return result;
}

int pb_x509_not_after(X509 *cert, int64_t *seconds) {
    const ASN1_TIME *time = X509_get0_notAfter(cert);
    struct tm tm;
    if (time == NULL || ASN1_TIME_to_tm(time, &tm) != 1) return 0;
    *seconds = (int64_t)timegm(&tm);
    return 1;
}

void pb_openssl_free(void *pointer) { OPENSSL_free(pointer); }

int pb_err_get_lib(unsigned long code) { return ERR_GET_LIB(code); }

int pb_err_get_reason(unsigned long code) { return ERR_GET_REASON(code); }
