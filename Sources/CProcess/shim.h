#ifndef VFIO_MIGRATE_CPROCESS_SHIM_H
#define VFIO_MIGRATE_CPROCESS_SHIM_H
// Process-wide knobs not in Swift's Glibc module (mallopt) or not usable from Swift 6 (stdout).
#include <malloc.h>
#include <stdio.h>

// Swift 6 cannot touch the C global `stdout` (shared mutable state).
static inline void cprocess_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

// The git commit a packaged build was made from. scripts/package-deb links a small
// object defining this symbol; any other build leaves the weak reference null. A
// linker input, not a compiler flag, so stamping a new commit only relinks.
extern const char vfio_migrate_git_commit[] __attribute__((weak));
static inline const char *cprocess_git_commit(void) {
    return vfio_migrate_git_commit ? vfio_migrate_git_commit : "unknown";
}
#endif
