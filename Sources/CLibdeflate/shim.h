#ifndef VFIO_MIGRATE_CLIBDEFLATE_SHIM_H
#define VFIO_MIGRATE_CLIBDEFLATE_SHIM_H
#include <libdeflate.h>
#endif
