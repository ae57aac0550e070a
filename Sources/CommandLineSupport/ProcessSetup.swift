internal import CProcess
import Foundation

/// Process-wide settings every command that moves data applies first. The
/// benchmark's baseline processes apply them too, so that they are measured
/// under the same allocator as the migrations they are compared with.
public enum ProcessSetup {
    public static func apply() {
        signal(SIGPIPE, SIG_IGN)
        // Lines on stdout appear when written, in order with stderr's progress,
        // also when an orchestrator reads them through a pipe.
        cprocess_line_buffer_stdout()
        // The pipeline allocates and frees ~1 MiB buffers at a high rate. glibc
        // serves those with mmap/munmap (or trims the heap after each free),
        // so every buffer costs page faults and kernel page clearing (a third of
        // the receiver's CPU, docs/PERFORMANCE.md). Keep them on the heap and keep
        // the heap: memory stays bounded by the pipeline window all the same.
        mallopt(M_MMAP_THRESHOLD, 64 << 20)
        mallopt(M_TRIM_THRESHOLD, 32 << 20)
        // Buffers are made on one thread and freed on another; with an arena per
        // thread, variable-size compressed outputs fragment every arena and the
        // resident heap creeps up with the length of the run (see
        // docs/PERFORMANCE.md). About one allocation per MiB moved, so one
        // arena's lock costs nothing.
        mallopt(M_ARENA_MAX, 1)
    }
}
