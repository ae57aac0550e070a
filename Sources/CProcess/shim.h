#ifndef VFIO_MIGRATE_CPROCESS_SHIM_H
#define VFIO_MIGRATE_CPROCESS_SHIM_H
// Process-wide knobs not in Swift's Glibc module (mallopt) or not usable from Swift 6 (stdout).
#include <malloc.h>
#include <stdio.h>

// Swift 6 cannot touch the C global `stdout` (shared mutable state).
static inline void cprocess_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

// The git commit a packaged build was made from: scripts/package-deb passes
// -Xcc -DVFIO_MIGRATE_GIT_COMMIT='"..."' (Swift's -D cannot carry a value).
#ifndef VFIO_MIGRATE_GIT_COMMIT
#define VFIO_MIGRATE_GIT_COMMIT "unknown"
#endif
static inline const char *cprocess_git_commit(void) { return VFIO_MIGRATE_GIT_COMMIT; }
#endif
