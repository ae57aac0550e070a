#ifndef VFIO_MIGRATE_CVFIO_SHIM_H
#define VFIO_MIGRATE_CVFIO_SHIM_H
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// ioctl numbers are _IO() macros Swift cannot import: re-exported here as
// `static const unsigned long` under a CVFIO_ prefix (the macro names themselves
// would be expanded by the preprocessor inside the declaration).
static const unsigned long CVFIO_GET_API_VERSION = VFIO_GET_API_VERSION;
static const unsigned long CVFIO_CHECK_EXTENSION = VFIO_CHECK_EXTENSION;
static const unsigned long CVFIO_SET_IOMMU = VFIO_SET_IOMMU;
static const unsigned long CVFIO_GROUP_GET_STATUS = VFIO_GROUP_GET_STATUS;
static const unsigned long CVFIO_GROUP_SET_CONTAINER = VFIO_GROUP_SET_CONTAINER;
static const unsigned long CVFIO_GROUP_UNSET_CONTAINER = VFIO_GROUP_UNSET_CONTAINER;
static const unsigned long CVFIO_GROUP_GET_DEVICE_FD = VFIO_GROUP_GET_DEVICE_FD;
static const unsigned long CVFIO_DEVICE_GET_INFO = VFIO_DEVICE_GET_INFO;
static const unsigned long CVFIO_DEVICE_GET_REGION_INFO = VFIO_DEVICE_GET_REGION_INFO;
static const unsigned long CVFIO_IOMMU_DIRTY_PAGES = VFIO_IOMMU_DIRTY_PAGES;
// Device migration uAPI v2 (Linux 5.18+). VFIO_MIG_GET_PRECOPY_INFO (6.2) is not in
// every installed header: VFIODevice computes it and tests compare the arithmetic.
static const unsigned long CVFIO_DEVICE_FEATURE = VFIO_DEVICE_FEATURE;
static const unsigned long CVFIO_DEVICE_RESET = VFIO_DEVICE_RESET;

// The uAPI constants the discovery code needs, as typed values.
static const unsigned int CVFIO_API_VERSION = VFIO_API_VERSION;
static const unsigned int CVFIO_TYPE1v2_IOMMU = VFIO_TYPE1v2_IOMMU;
static const unsigned int CVFIO_GROUP_FLAGS_VIABLE = VFIO_GROUP_FLAGS_VIABLE;
static const unsigned int CVFIO_REGION_INFO_FLAG_CAPS = VFIO_REGION_INFO_FLAG_CAPS;
static const unsigned int CVFIO_REGION_INFO_CAP_TYPE = VFIO_REGION_INFO_CAP_TYPE;
static const unsigned int CVFIO_IOMMU_DIRTY_PAGES_FLAG_START = VFIO_IOMMU_DIRTY_PAGES_FLAG_START;
static const unsigned int CVFIO_IOMMU_DIRTY_PAGES_FLAG_STOP = VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP;
static const unsigned int CVFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;

// Layout facts the Swift byte builders are checked against in tests.
static const unsigned long CVFIO_SIZEOF_REGION_INFO = sizeof(struct vfio_region_info);
static const unsigned long CVFIO_SIZEOF_DEVICE_INFO = sizeof(struct vfio_device_info);
static const unsigned long CVFIO_SIZEOF_DIRTY_BITMAP = sizeof(struct vfio_iommu_type1_dirty_bitmap);
static const unsigned long CVFIO_SIZEOF_DIRTY_BITMAP_GET = sizeof(struct vfio_iommu_type1_dirty_bitmap_get);
#include <stddef.h>
static const unsigned long CVFIO_SIZEOF_DEVICE_FEATURE = sizeof(struct vfio_device_feature);
static const unsigned long CVFIO_SIZEOF_FEATURE_MIGRATION = sizeof(struct vfio_device_feature_migration);
static const unsigned long CVFIO_SIZEOF_FEATURE_MIG_STATE = sizeof(struct vfio_device_feature_mig_state);
static const unsigned long CVFIO_OFFSETOF_MIG_STATE_DATA_FD = offsetof(struct vfio_device_feature_mig_state, data_fd);
static const unsigned long CVFIO_SIZEOF_DMA_LOGGING_CONTROL = sizeof(struct vfio_device_feature_dma_logging_control);
static const unsigned long CVFIO_OFFSETOF_DMA_LOGGING_CONTROL_RANGES = offsetof(struct vfio_device_feature_dma_logging_control, ranges);
static const unsigned long CVFIO_SIZEOF_DMA_LOGGING_RANGE = sizeof(struct vfio_device_feature_dma_logging_range);
static const unsigned long CVFIO_SIZEOF_DMA_LOGGING_REPORT = sizeof(struct vfio_device_feature_dma_logging_report);
static const unsigned long CVFIO_OFFSETOF_DMA_LOGGING_REPORT_BITMAP = offsetof(struct vfio_device_feature_dma_logging_report, bitmap);
static const unsigned int CVFIO_FEATURE_MIGRATION = VFIO_DEVICE_FEATURE_MIGRATION;
static const unsigned int CVFIO_FEATURE_MIG_DEVICE_STATE = VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
static const unsigned int CVFIO_FEATURE_DMA_LOGGING_START = VFIO_DEVICE_FEATURE_DMA_LOGGING_START;
static const unsigned int CVFIO_FEATURE_DMA_LOGGING_STOP = VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP;
static const unsigned int CVFIO_FEATURE_DMA_LOGGING_REPORT = VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT;

// glibc declares memfd_create only under _GNU_SOURCE, which the Glibc module
// does not set; the raw syscall keeps the module map free of feature macros.
static inline int cvfio_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

// SEEK_DATA is _GNU_SOURCE-only as well; its value is part of the Linux ABI.
static const int CVFIO_SEEK_DATA = 3;

// The file system's magic number (statfs.f_type), or -1 (errno set).
#include <sys/vfs.h>
static inline long cvfio_fs_type(int fd) {
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 ? (long)fs.f_type : -1;
}
#endif
