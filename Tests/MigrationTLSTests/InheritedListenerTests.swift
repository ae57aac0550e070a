import Foundation
import Glibc
import Testing
@testable import MigrationTLS
import TestSupport

/// Socket activation: a listener adopts a socket someone else bound and listens on,
/// under the same rules as one it opens itself.
extension TLSTests {
    @Suite struct InheritedListener {
        /// A socket of `type` bound to `host`:0, listening if asked: what a service manager hands over.
        static func socketFD(type: Int32 = Int32(SOCK_STREAM.rawValue), host: String = "127.0.0.1", listening: Bool = true) throws -> Int32 {
            let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
            try #require(fd >= 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, host, &addr.sin_addr)
            let bound = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            try #require(bound == 0)
            if listening { try #require(listen(fd, 8) == 0) }
            return fd
        }

        @Test func adoptsAListeningSocketAndAcceptsOnIt() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let client = try TLSContext(configuration: pki.clientConfig(), role: .client)
            let listener = try TLSListener(inheritedDescriptor: try Self.socketFD(), context: server)
            defer { listener.close() }
            guard case let .tcp(host, port) = listener.boundEndpoint else { Issue.record("not TCP: \(listener.boundEndpoint)"); return }
            #expect(host == "127.0.0.1" && port != 0)
            let accepted = background { try listener.accept(timeoutSeconds: 10) }
            let c = try TLSConnector.connect(to: listener.boundEndpoint, context: client, timeoutSeconds: 5)
            let s = try accepted.join()
            defer { s.close(); c.close() }
            try c.write([1, 2, 3])
            #expect(try s.read(maxCount: 3) == [1, 2, 3])
        }

        @Test func refusesWhatIsNotAListeningStreamSocket() throws {
            let pki = try TestPKI.get()
            let server = try TLSContext(configuration: pki.serverConfig(), role: .server)
            let cases: [(Int32, String)] = [
                (try Self.socketFD(listening: false), "not listening"),
                (try Self.socketFD(type: Int32(SOCK_DGRAM.rawValue), listening: false), "a datagram socket"),
                (open("/dev/null", O_RDONLY | O_CLOEXEC), "not a socket"),
            ]
            for (fd, reason) in cases {
                do {
                    _ = try TLSListener(inheritedDescriptor: fd, context: server)
                    Issue.record("descriptor \(fd) (\(reason)) was adopted")
                } catch let TLSError.notAListeningSocket(descriptor, why) {
                    #expect(descriptor == fd && why.contains(reason), "\(why)")
                }
            }
        }

        @Test func developmentCertificatesStayOnLoopback() throws {
            let server = try TLSContext(configuration: CertificatePolicy.devConfig("destination", peer: "source", allow: true), role: .server)
            let anyAddress = try Self.socketFD(host: "0.0.0.0")
            do {
                _ = try TLSListener(inheritedDescriptor: anyAddress, context: server)
                Issue.record("development certificates accepted on 0.0.0.0")
            } catch let TLSError.developmentCertificatesOffLoopback(endpoint) {
                guard case let .tcp(host, _) = endpoint else { Issue.record("\(endpoint)"); return }
                #expect(host == "0.0.0.0")
            }
            let listener = try TLSListener(inheritedDescriptor: try Self.socketFD(), context: server)
            listener.close()
        }
    }
}
