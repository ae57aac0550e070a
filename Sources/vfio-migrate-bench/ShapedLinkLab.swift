import Foundation
import SyncPrimitives

/// The two namespaces of the shaped links, from creation to removal. One pair
/// serves every shaped link of an invocation (the tbf rate is replaced between
/// links); it is removed at the end, on an error, and on SIGINT/SIGTERM.
final class ShapedLinkLab: Sendable {
    private enum State { case down, up(NamespacePair) }
    private let state = LockedValue(State.down)
    private let say: @Sendable (String) -> Void

    init(say: @escaping @Sendable (String) -> Void) { self.say = say }

    /// Why shaped links cannot run here, or nil: they need root, `ip` and `tc`.
    static func unavailableReason() -> String? {
        if geteuid() != 0 { return "shaped links need root (ip netns, veth, tc): run the bench as root" }
        for tool in ["ip", "tc"] where !BenchCommand.onPath(tool) { return "shaped links need `\(tool)` (iproute2) on PATH" }
        return nil
    }

    /// Removes what killed earlier benches left, then builds this bench's pair.
    func bringUp() throws(BenchError) -> NamespacePair {
        if case .up(let pair) = state.current { return pair }
        removeLeftovers()
        let pair = NamespacePair(owner: getpid())
        state.withLock { $0 = .up(pair) }  // before the first command: a half-built pair is torn down too
        BenchInterrupt.shared.register("namespaces") { [self] in tearDown() }
        for command in pair.setupCommands {
            do { try BenchCommand.run(command) } catch { tearDown(); throw error }
        }
        say("namespaces \(pair.source) (\(NamespacePair.sourceAddress)) <-veth-> \(pair.destination) (\(NamespacePair.destinationAddress))")
        return pair
    }

    func shape(_ link: BenchLink) throws(BenchError) -> LinkEndpoints {
        guard let bits = link.bitsPerSecond else { return .loopback }
        let pair = try bringUp()
        try BenchCommand.run(pair.shapeCommand(bitsPerSecond: bits))
        say("link \(link.name): tbf rate \(NamespacePair.tcRate(bits)) burst 512kb latency 20ms on \(pair.sourceVeth)")
        return pair.endpoints
    }

    /// Idempotent; reports what it could not remove instead of throwing (it runs on the way out).
    func tearDown() {
        let pair: NamespacePair? = state.withLock { s in
            defer { s = .down }
            if case .up(let p) = s { return p }
            return nil
        }
        guard let pair else { return }
        // Only the namespaces that exist: a pair may be half-built.
        let present = (try? BenchCommand.run(["ip", "netns", "list"])) ?? ""
        for command in pair.teardownCommands where NamespacePair.names(inNetnsList: present).contains(command[3]) {
            do { try BenchCommand.run(command) } catch { say("warning: \(error)") }
        }
        BenchInterrupt.shared.unregister("namespaces")
    }

    private func removeLeftovers() {
        guard let listing = try? BenchCommand.run(["ip", "netns", "list"]) else { return }
        for name in NamespacePair.leftovers(inNetnsList: listing, isRunning: { kill($0, 0) == 0 || errno == EPERM }) {
            say("removing namespace \(name), left by a bench that is no longer running")
            do { try BenchCommand.run(["ip", "netns", "del", name]) } catch { say("warning: \(error)") }
        }
    }
}
