#ifndef VFIO_MIGRATE_CZSTD_SHIM_H
#define VFIO_MIGRATE_CZSTD_SHIM_H
#include <zstd.h>
#include <zstd_errors.h>
// ZSTD_CONTENTSIZE_UNKNOWN/ERROR are casts Swift cannot import as constants.
static const unsigned long long CZSTD_CONTENTSIZE_UNKNOWN = ZSTD_CONTENTSIZE_UNKNOWN;
static const unsigned long long CZSTD_CONTENTSIZE_ERROR = ZSTD_CONTENTSIZE_ERROR;
// ZSTD_paramSwitch_e (ZSTD_ps_enable/disable) is in zstd.h's static-linking-only part;
// ZSTD_c_enableLongDistanceMatching takes these values.
static const int CZSTD_PS_ENABLE = 1;
// "Off" is 0, not ZSTD_ps_disable (2): libzstd before 1.5.1 (Ubuntu 22.04 has 1.4.8)
// takes 0..1 for long-distance matching, and 0 ("auto") is off at the lanes' window.
static const int CZSTD_PS_DISABLE = 0;
#endif
