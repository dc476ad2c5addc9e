// A fatal alert after a completed TLS 1.3 handshake, for a server that refuses the peer's
// identity once it has seen the certificate (access_denied, RFC 8446 section 6.2).
//
// OpenSSL sends alerts only from inside its own state machine and has no call to send one
// later. After the handshake the alert must be protected with the server's application traffic
// keys, so it is sealed here: the secret is captured during the handshake with the keylog
// callback (SERVER_TRAFFIC_SECRET_0), the key and IV are derived with HKDF-Expand-Label, and the
// record is sealed with the negotiated AEAD at sequence number 0. That number is right only
// while the server has sent nothing under those keys: no session tickets (the hardened options
// turn them off) and no application data (the handler holds writes until the peer is accepted).
// The captured secret is wiped as soon as the handshake is judged.

#include "CPagebrokerOpenSSLShims.h"

#include <pthread.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

typedef struct {
    size_t length;
    unsigned char bytes[EVP_MAX_MD_SIZE];
} traffic_secret;

static int secret_index = -1;
static pthread_once_t secret_index_once = PTHREAD_ONCE_INIT;

static void free_secret(void *parent, void *pointer, CRYPTO_EX_DATA *data, int index, long argl, void *argp) {
    (void)parent; (void)data; (void)index; (void)argl; (void)argp;
    if (pointer != NULL) OPENSSL_clear_free(pointer, sizeof(traffic_secret));
}

static void make_secret_index(void) {
    secret_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_secret);
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void keylog(const SSL *ssl, const char *line) {
    static const char label[] = "SERVER_TRAFFIC_SECRET_0 ";
    if (strncmp(line, label, sizeof(label) - 1) != 0 || secret_index < 0) return;
    const char *hex = strrchr(line, ' ');
    if (hex == NULL) return;
    hex += 1;
    size_t digits = strlen(hex);
    if (digits % 2 != 0 || digits / 2 > EVP_MAX_MD_SIZE) return;
    traffic_secret *secret = OPENSSL_zalloc(sizeof(traffic_secret));
    if (secret == NULL) return;
    secret->length = digits / 2;
    for (size_t i = 0; i < secret->length; i++) {
        int high = hex_value(hex[2 * i]), low = hex_value(hex[2 * i + 1]);
        if (high < 0 || low < 0) {
            OPENSSL_clear_free(secret, sizeof(traffic_secret));
            return;
        }
        secret->bytes[i] = (unsigned char)(high << 4 | low);
    }
    SSL *mutable_ssl = (SSL *)ssl;
    traffic_secret *old = SSL_get_ex_data(mutable_ssl, secret_index);
    if (old != NULL) OPENSSL_clear_free(old, sizeof(traffic_secret));
    SSL_set_ex_data(mutable_ssl, secret_index, secret);
}

int pb_ssl_ctx_enable_post_handshake_alerts(SSL_CTX *ctx) {
    pthread_once(&secret_index_once, make_secret_index);
    if (secret_index < 0) return 0;
    SSL_CTX_set_keylog_callback(ctx, keylog);
    return 1;
}

void pb_ssl_forget_traffic_secret(SSL *ssl) {
    if (secret_index < 0) return;
    traffic_secret *secret = SSL_get_ex_data(ssl, secret_index);
    if (secret == NULL) return;
    SSL_set_ex_data(ssl, secret_index, NULL);
    OPENSSL_clear_free(secret, sizeof(traffic_secret));
}

// HKDF-Expand-Label(secret, label, "", length) of RFC 8446 section 7.1.
static int expand_label(const EVP_MD *md, const traffic_secret *secret, const char *label, unsigned char *out,
                        size_t length) {
    unsigned char info[2 + 1 + 6 + 16 + 1];
    size_t label_length = strlen(label);
    if (label_length > 16) return 0;
    size_t n = 0;
    info[n++] = (unsigned char)(length >> 8);
    info[n++] = (unsigned char)length;
    info[n++] = (unsigned char)(6 + label_length);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, label_length);
    n += label_length;
    info[n++] = 0;  // empty context

    EVP_PKEY_CTX *kdf = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    if (kdf == NULL) return 0;
    size_t out_length = length;
    int ok = EVP_PKEY_derive_init(kdf) > 0 && EVP_PKEY_CTX_set_hkdf_md(kdf, md) > 0
             && EVP_PKEY_CTX_set_hkdf_mode(kdf, EVP_PKEY_HKDEF_MODE_EXPAND_ONLY) > 0
             && EVP_PKEY_CTX_set1_hkdf_key(kdf, secret->bytes, (int)secret->length) > 0
             && EVP_PKEY_CTX_add1_hkdf_info(kdf, info, (int)n) > 0 && EVP_PKEY_derive(kdf, out, &out_length) > 0
             && out_length == length;
    EVP_PKEY_CTX_free(kdf);
    return ok;
}

int pb_ssl_seal_tls13_alert(SSL *ssl, unsigned char description, unsigned char *out, size_t capacity) {
    enum { header = 5, inner = 3, tag = 16, iv_length = 12 };
    if (capacity < header + inner + tag || secret_index < 0) return -1;
    if (SSL_version(ssl) != TLS1_3_VERSION || SSL_get_num_tickets(ssl) != 0) return -1;
    traffic_secret *secret = SSL_get_ex_data(ssl, secret_index);
    const SSL_CIPHER *suite = SSL_get_current_cipher(ssl);
    if (secret == NULL || suite == NULL) return -1;
    const EVP_MD *md = SSL_CIPHER_get_handshake_digest(suite);
    int nid = SSL_CIPHER_get_cipher_nid(suite);
    // The AEADs TLS 1.3 defines with a 16-byte tag; CCM_8 (8-byte tag) is never enabled here.
    if (md == NULL || (nid != NID_aes_128_gcm && nid != NID_aes_256_gcm && nid != NID_chacha20_poly1305)) return -1;
    const EVP_CIPHER *cipher = EVP_get_cipherbynid(nid);
    if (cipher == NULL) return -1;
    int key_length = EVP_CIPHER_get_key_length(cipher);
    unsigned char key[EVP_MAX_KEY_LENGTH], iv[iv_length];
    if (key_length <= 0 || key_length > EVP_MAX_KEY_LENGTH) return -1;
    int result = -1;
    EVP_CIPHER_CTX *seal = NULL;
    if (!expand_label(md, secret, "key", key, (size_t)key_length) || !expand_label(md, secret, "iv", iv, iv_length))
        goto done;
    // Sequence number 0: the nonce is the IV itself.
    const unsigned char plaintext[inner] = {2 /* fatal */, description, 21 /* alert */};
    const unsigned char additional[header] = {23 /* application_data */, 3, 3, 0, inner + tag};
    memcpy(out, additional, header);
    int written = 0, final = 0;
    seal = EVP_CIPHER_CTX_new();
    if (seal == NULL || EVP_EncryptInit_ex(seal, cipher, NULL, NULL, NULL) != 1
        || EVP_CIPHER_CTX_ctrl(seal, EVP_CTRL_AEAD_SET_IVLEN, iv_length, NULL) != 1
        || EVP_EncryptInit_ex(seal, NULL, NULL, key, iv) != 1
        || EVP_EncryptUpdate(seal, NULL, &written, additional, header) != 1
        || EVP_EncryptUpdate(seal, out + header, &written, plaintext, inner) != 1 || written != inner
        || EVP_EncryptFinal_ex(seal, out + header + inner, &final) != 1
        || EVP_CIPHER_CTX_ctrl(seal, EVP_CTRL_AEAD_GET_TAG, tag, out + header + inner) != 1)
        goto done;
    result = header + inner + tag;
done:
    EVP_CIPHER_CTX_free(seal);
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(iv, sizeof(iv));
    return result;
}
