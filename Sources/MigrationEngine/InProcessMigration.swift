import Foundation
import MigrationTLS
import SyncPrimitives

/// Both ends of a migration in one process over a TLS listener: the receiver
/// on a thread of its own, the sender on the calling thread. For the demo,
/// tests and embedding; the two ends still speak the full protocol over a
/// real socket.
public enum InProcessMigration {
    public struct Outcome: Sendable {
        public var source: Result<MigrationStats, any Error>
        public var destination: Result<MigrationStats, any Error>
    }

    /// `connected` is told the peer once the sender's handshake is done.
    public static func run(sender: Sender, receiver: Receiver, serverContext: TLSContext, clientContext: TLSContext,
                           endpoint: Endpoint = .tcp(host: "127.0.0.1", port: 0), timeoutSeconds: Double = 30,
                           connected: (@Sendable (String) -> Void)? = nil) throws -> Outcome {
        let listener = try TLSListener(endpoint: endpoint, context: serverContext)
        defer { listener.close() }
        let destination = OutcomeBox()
        Thread {
            do {
                let stream = try listener.accept(timeoutSeconds: timeoutSeconds)
                destination.set(.success(try receiver.run(stream: stream)))
            } catch { destination.set(.failure(error)) }
        }.start()
        let source: Result<MigrationStats, any Error>
        do {
            let stream = try TLSConnector.connect(to: listener.boundEndpoint, context: clientContext, timeoutSeconds: timeoutSeconds)
            connected?("\(listener.boundEndpoint) (\(stream.peerName))")
            source = .success(try sender.run(stream: stream))
        } catch {
            source = .failure(error)
            // The receiver may still wait for a source that never came.
            listener.close()
        }
        return Outcome(source: source, destination: destination.wait())
    }
}

/// One result handed from a thread to its waiter.
final class OutcomeBox: Sendable {
    private let value = ConditionValue<Result<MigrationStats, any Error>?>(nil)
    func set(_ v: Result<MigrationStats, any Error>) { value.withLock { $0 = v } }
    func wait() -> Result<MigrationStats, any Error> { value.wait(until: { $0 != nil }) { v, _ in v! } }
}
