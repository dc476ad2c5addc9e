// The system OpenSSL (Debian's libssl-dev, OpenSSL 3.0) as one Clang module.
#ifndef PAGEBROKER_COPENSSL_SHIM_H
#define PAGEBROKER_COPENSSL_SHIM_H

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/x509_vfy.h>

#endif
