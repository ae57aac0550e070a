#ifndef VFIO_MIGRATE_CVFIO_SHIM_H
#define VFIO_MIGRATE_CVFIO_SHIM_H
#include <linux/vfio.h>
#include <sys/ioctl.h>
// ioctl numbers are _IO() macros: re-exported here as `static const unsigned long`.
#endif
