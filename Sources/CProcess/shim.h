#ifndef VFIO_MIGRATE_CPROCESS_SHIM_H
#define VFIO_MIGRATE_CPROCESS_SHIM_H
// Process-wide knobs not in Swift's Glibc module (mallopt).
#include <malloc.h>
#endif
