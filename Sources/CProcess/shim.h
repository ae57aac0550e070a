#ifndef VFIO_MIGRATE_CPROCESS_SHIM_H
#define VFIO_MIGRATE_CPROCESS_SHIM_H
// Process-wide knobs not in Swift's Glibc module (mallopt) or not usable from Swift 6 (stdout).
#include <malloc.h>
#include <stdio.h>

// Swift 6 cannot touch the C global `stdout` (shared mutable state).
static inline void cprocess_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }
#endif
