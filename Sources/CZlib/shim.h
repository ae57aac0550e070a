#ifndef VFIO_MIGRATE_CZLIB_SHIM_H
#define VFIO_MIGRATE_CZLIB_SHIM_H
#include <zlib.h>
// deflateInit2/inflateInit2 are macros: shims go here as `static inline` functions.
#endif
