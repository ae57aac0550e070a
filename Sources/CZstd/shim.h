#ifndef VFIO_MIGRATE_CZSTD_SHIM_H
#define VFIO_MIGRATE_CZSTD_SHIM_H
#include <zstd.h>
// ZSTD_CONTENTSIZE_UNKNOWN/ERROR are casts Swift cannot import as constants.
static const unsigned long long CZSTD_CONTENTSIZE_UNKNOWN = ZSTD_CONTENTSIZE_UNKNOWN;
static const unsigned long long CZSTD_CONTENTSIZE_ERROR = ZSTD_CONTENTSIZE_ERROR;
#endif
