import Dispatch
import Foundation
import SyncPrimitives

/// What must be undone when the bench is interrupted (namespaces, children):
/// SIGINT, SIGTERM and SIGHUP run every registered cleanup, then exit 128 + signal.
final class BenchInterrupt: Sendable {
    static let shared = BenchInterrupt()
    private struct State {
        var cleanups: [(key: String, run: @Sendable () -> Void)] = []
        /// Set by the first signal: the bench's main thread may still start a child meanwhile.
        var stopping = false
    }
    private let state = LockedValue(State())
    private let sources = LockedValue<[DispatchSourceSignal]>([])

    /// Installs the handlers once; before that, a signal ends the bench the default way.
    func install() {
        sources.withLock { installed in
            guard installed.isEmpty else { return }
            for sig in [SIGINT, SIGTERM, SIGHUP] {
                signal(sig, SIG_IGN)  // delivered to the dispatch source instead
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler { [self] in interrupted(by: sig) }
                source.resume()
                installed.append(source)
            }
        }
    }

    /// After an interrupt, `cleanup` runs at once (a child started meanwhile is stopped as it starts).
    func register(_ key: String, _ cleanup: @escaping @Sendable () -> Void) {
        let late = state.withLock { s in
            if s.stopping { return true }
            s.cleanups.removeAll { $0.key == key }
            s.cleanups.append((key, cleanup))
            return false
        }
        if late { cleanup() }
    }

    func unregister(_ key: String) { state.withLock { $0.cleanups.removeAll { $0.key == key } } }

    private func interrupted(by sig: Int32) {
        FileHandle.standardError.write(Data("bench: interrupted (signal \(sig)): cleaning up\n".utf8))
        // Newest first: children stop before the namespaces they run in and the directory they write into go away.
        let pending = state.withLock { s in
            s.stopping = true
            defer { s.cleanups = [] }
            return s.cleanups.reversed()
        }
        for c in pending { c.run() }
        exit(128 + sig)
    }
}
