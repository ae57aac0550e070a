#ifndef VFIO_MIGRATE_COPENSSL_SHIM_H
#define VFIO_MIGRATE_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
// Shims for macros Swift cannot import are added here as `static inline` functions.
#endif
