#ifndef VFIO_MIGRATE_CXXHASH_SHIM_H
#define VFIO_MIGRATE_CXXHASH_SHIM_H
// The system libxxhash (libxxhash-dev): XXH3-128, the version-5 device digest.
#include <xxhash.h>
#endif
