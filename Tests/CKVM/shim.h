#ifndef VFIO_MIGRATE_CKVM_SHIM_H
#define VFIO_MIGRATE_CKVM_SHIM_H
// The KVM uAPI for the test VMM (Tests/TestVMM): the installed <linux/kvm.h>,
// nothing vendored. Its ioctl numbers are _IO()/_IOW() macros Swift cannot
// import: re-exported as `static const unsigned long` under a CKVM_ prefix.
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_DIRTY_LOG = KVM_GET_DIRTY_LOG;

// The constants the wrapper needs, as typed values.
static const int CKVM_API_VERSION = KVM_API_VERSION;
static const unsigned int CKVM_MEM_LOG_DIRTY_PAGES = KVM_MEM_LOG_DIRTY_PAGES;
static const unsigned int CKVM_EXIT_IO = KVM_EXIT_IO;
static const unsigned int CKVM_EXIT_HLT = KVM_EXIT_HLT;
static const unsigned int CKVM_EXIT_IO_OUT = KVM_EXIT_IO_OUT;

// kvm_run's exit details live in an anonymous union: read them here.
static inline unsigned short ckvm_run_io_port(const struct kvm_run *run) { return run->io.port; }
static inline unsigned char ckvm_run_io_direction(const struct kvm_run *run) { return run->io.direction; }
static inline unsigned char ckvm_run_io_size(const struct kvm_run *run) { return run->io.size; }
/// The first byte the guest wrote with `out` (data sits at data_offset inside the kvm_run mapping).
static inline unsigned char ckvm_run_io_byte(const struct kvm_run *run) {
    return *((const unsigned char *)run + run->io.data_offset);
}
static inline unsigned long long ckvm_run_hardware_exit_reason(const struct kvm_run *run) { return run->fail_entry.hardware_entry_failure_reason; }

// kvm_dirty_log's bitmap pointer is in an anonymous union too.
static inline struct kvm_dirty_log ckvm_dirty_log(unsigned int slot, void *bitmap) {
    struct kvm_dirty_log log = {0};
    log.slot = slot;
    log.dirty_bitmap = bitmap;
    return log;
}

// glibc declares memfd_create only under _GNU_SOURCE (see CVFIO's shim).
static inline int ckvm_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}
#endif
