import Foundation
import MigrationControl
import SyncPrimitives
import Testing

@Suite struct ControlConnections {
    @Test func aSecondControllerGetsAnErrorAndIsClosed() throws {
        let rig = try Rig()
        let second = try ControlClient(path: rig.scratch.socketPath)
        #expect(try second.nextMessage().errorText == "another controller is connected; one at a time")
        #expect(throws: ControlError.serverClosed) { try second.nextMessage() }
        #expect(try rig.client.execute("query")["return"] != nil)
        #expect(rig.logs.current.contains { $0.contains("refused a controller") && $0.contains("one at a time") })
        rig.server.close()
    }

    @Test func theNextControllerIsWelcomeOnceTheFirstLeaves() throws {
        let scratch = Scratch()
        let server = try ControlServer(.init(address: .unix(path: scratch.socketPath)), handler: RecordingHandler())
        do {
            let first = try ControlClient(path: scratch.socketPath)
            _ = try first.nextMessage()
        }
        // The server notices the first one's end asynchronously.
        var reply: JSONValue?
        for _ in 0..<100 where reply?["return"] == nil {
            let next = try ControlClient(path: scratch.socketPath)
            if try next.nextMessage()["QMP"] != nil { reply = try next.execute("query") } else { usleep(10_000) }
        }
        #expect(reply?["return"] != nil)
        server.close()
    }

    @Test func theSocketFileIsCreatedMode0600() throws {
        let rig = try Rig()
        var st = stat()
        #expect(lstat(rig.scratch.socketPath, &st) == 0)
        #expect(st.st_mode & S_IFMT == S_IFSOCK)
        #expect(st.st_mode & 0o777 == 0o600)
        rig.server.close()
    }

    @Test func anExistingRegularFileAtThePathIsRefusedAndKept() throws {
        let scratch = Scratch()
        try Data("precious".utf8).write(to: URL(fileURLWithPath: scratch.socketPath))
        #expect(throws: ControlError.pathIsNotASocket(path: scratch.socketPath)) {
            try ControlServer(.init(address: .unix(path: scratch.socketPath)), handler: RecordingHandler())
        }
        #expect(try String(contentsOfFile: scratch.socketPath, encoding: .utf8) == "precious")
    }

    @Test func aLiveSocketAtThePathIsRefusedAndAStaleOneReplaced() throws {
        let rig = try Rig()
        #expect(throws: ControlError.socketInUse(path: rig.scratch.socketPath)) {
            try ControlServer(.init(address: .unix(path: rig.scratch.socketPath)), handler: RecordingHandler())
        }
        // A socket file nobody listens on (its server died without cleaning up).
        let stale = rig.scratch.directory + "/stale.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { dst in for (i, b) in stale.utf8.enumerated() { dst[i] = b } }
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        close(fd)
        let replacing = try ControlServer(.init(address: .unix(path: stale)), handler: RecordingHandler())
        replacing.close()
        rig.server.close()
    }

    @Test func shutdownClosesTheControllerRemovesTheSocketAndClosesPassedDescriptors() throws {
        let rig = try Rig()
        var pipeEnds: [Int32] = [-1, -1]
        #expect(pipe(&pipeEnds) == 0)
        #expect(try rig.client.execute("add-fd", ["name": .string("probe")], descriptor: pipeEnds[1])["return"] != nil)
        close(pipeEnds[1])  // the server holds the only write end now
        rig.server.emit("finished", data: ["side": .string("source")])
        rig.server.close()
        #expect(try rig.client.nextEvent(named: "finished")["data"]?["side"] == .string("source"))  // flushed before closing
        #expect(throws: ControlError.serverClosed) { try rig.client.nextMessage() }
        #expect(access(rig.scratch.socketPath, F_OK) != 0)
        var byte: UInt8 = 0
        #expect(read(pipeEnds[0], &byte, 1) == 0)  // EOF: the table's write end was closed
        close(pipeEnds[0])
        rig.server.close()  // idempotent
    }

    @Test func aPeerOfAnotherUIDIsRefusedWithALoggedReason() throws {
        // Root is not needed: the server is told its owner is another uid, so this
        // very process is the stranger, and the real SO_PEERCRED path decides.
        let stranger = geteuid() &+ 1
        let scratch = Scratch()
        let logs = LockedValue<[String]>([])
        var configuration = ControlServer.Configuration(address: .unix(path: scratch.socketPath))
        configuration.policy = PeerPolicy(ownerUID: stranger)
        configuration.log = { line in logs.withLock { $0.append(line) } }
        let server = try ControlServer(configuration, handler: RecordingHandler())
        let client = try ControlClient(path: scratch.socketPath)
        #expect(try client.nextMessage().errorText?.hasPrefix("permission denied: peer uid \(geteuid())") == true)
        #expect(throws: ControlError.serverClosed) { try client.nextMessage() }
        #expect(logs.current.contains { $0.contains("refused a controller") && $0.contains("not the owner uid \(stranger)") })
        server.close()
    }

    @Test func thePeerPolicyAdmitsTheOwnerOnly() throws {
        let policy = PeerPolicy(ownerUID: 1000)
        try policy.admit(PeerCredentials(pid: 42, uid: 1000, gid: 1000))
        #expect(throws: ControlError.peerNotPermitted(uid: 0, pid: 7, ownerUID: 1000)) {
            try policy.admit(PeerCredentials(pid: 7, uid: 0, gid: 0))
        }
        #expect(throws: ControlError.peerNotPermitted(uid: 1001, pid: 8, ownerUID: 1000)) {
            try policy.admit(PeerCredentials(pid: 8, uid: 1001, gid: 1000))
        }
    }

    @Test func anInheritedConnectedSocketIsTheController() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let server = try ControlServer(.init(address: .descriptor(pair[0])), handler: RecordingHandler())
        let client = ControlClient(connected: pair[1])
        #expect(try client.nextMessage()["QMP"] != nil)
        #expect(try client.execute("query")["return"]?["phase"] == .string("precopy"))
        server.close()
    }

    @Test func anInheritedDescriptorThatIsNoStreamSocketIsRefused() throws {
        var pipeEnds: [Int32] = [-1, -1]
        #expect(pipe(&pipeEnds) == 0)
        defer { close(pipeEnds[1]) }
        #expect(throws: ControlError.notAUnixStreamSocket(descriptor: pipeEnds[0], reason: "not a socket")) {
            try ControlServer(.init(address: .descriptor(pipeEnds[0])), handler: RecordingHandler())
        }
    }

    @Test func addressesParse() throws {
        #expect(try ControlAddress(parsing: "unix:/run/vm1.sock") == .unix(path: "/run/vm1.sock"))
        #expect(try ControlAddress(parsing: "fd:3") == .descriptor(3))
        #expect(throws: ControlError.self) { try ControlAddress(parsing: "tcp:1.2.3.4:5") }
        #expect(throws: ControlError.self) { try ControlAddress(parsing: "fd:-1") }
        #expect(throws: ControlError.self) { try ControlAddress(parsing: "unix:") }
    }
}
