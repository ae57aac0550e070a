import Foundation

/// Starts a thread that owns `body` and everything it captured. `sending` makes the
/// compiler check that the caller keeps nothing of it: a non-Sendable value (a
/// `FrameReader`) can move to the new thread, and any later use by the caller is a
/// compile error. `Thread` itself only takes `@Sendable` closures, hence the one
/// unchecked hand-over below, which `sending` makes sound.
func startThread(named name: String, _ body: sending @escaping () -> Void) {
    nonisolated(unsafe) let owned = body
    let thread = Thread { owned() }
    thread.name = name
    thread.start()
}
