#ifndef VFIO_MIGRATE_COPENSSL_SHIM_H
#define VFIO_MIGRATE_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
// Shims for macros Swift cannot import, as `static inline` functions (no C target needed).

static inline int copenssl_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}
static inline int copenssl_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}
static inline long copenssl_SSL_CTX_set_read_ahead(SSL_CTX *ctx, long yes) {
    return SSL_CTX_set_read_ahead(ctx, yes);
}
static inline long copenssl_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline long copenssl_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}
static inline int copenssl_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}
// Write coalescing (TLSStream): a BIO_f_buffer in front of the socket BIO, flushed per write call.
static inline int copenssl_BIO_set_write_buffer_size(BIO *b, long size) {
    return (int)BIO_set_write_buffer_size(b, size);
}
static inline int copenssl_BIO_flush(BIO *b) { return BIO_flush(b); }
static inline int copenssl_BIO_should_retry(BIO *b) { return BIO_should_retry(b) != 0; }
static const long COPENSSL_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
static const long COPENSSL_SSL_SESS_CACHE_OFF = SSL_SESS_CACHE_OFF;
// The SSL* a verify callback's X509_STORE_CTX belongs to.
static inline SSL *copenssl_SSL_from_store_ctx(X509_STORE_CTX *store) {
    return (SSL *)X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
}
#endif
