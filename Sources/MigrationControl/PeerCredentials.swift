import Glibc

/// Who is on the other end of a UNIX socket, as the kernel recorded it at
/// connect (SO_PEERCRED): it cannot be forged by the peer.
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    /// `struct ucred` is behind _GNU_SOURCE, which Swift's Glibc module does
    /// not expose; its layout (pid, uid, gid: three 32-bit fields) is fixed ABI.
    private struct KernelUcred { var pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0 }

    static func of(socket fd: Int32) throws(ControlError) -> PeerCredentials {
        var raw = KernelUcred()
        var length = socklen_t(MemoryLayout<KernelUcred>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &raw, &length) == 0 else {
            throw .systemCall(operation: "getsockopt(SO_PEERCRED)", errno: errno)
        }
        return PeerCredentials(pid: raw.pid, uid: raw.uid, gid: raw.gid)
    }
}

/// Who may drive the migration: only the uid that owns the control socket
/// (root included: a root orchestrator runs the transport as root). The file
/// mode 0600 already keeps others out of a path socket; this check also covers
/// an inherited socket, whose file mode this process did not choose.
public struct PeerPolicy: Sendable, Equatable {
    public var ownerUID: UInt32

    public init(ownerUID: UInt32 = geteuid()) { self.ownerUID = ownerUID }

    public func admit(_ peer: PeerCredentials) throws(ControlError) {
        guard peer.uid == ownerUID else {
            throw .peerNotPermitted(uid: peer.uid, pid: peer.pid, ownerUID: ownerUID)
        }
    }
}
