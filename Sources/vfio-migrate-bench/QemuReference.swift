import Foundation

/// QEMU's own live migration of the same guest bytes, the reference issue 14
/// measures against: a paused TCG guest whose RAM is the corpus's guest file,
/// a destination with preallocated RAM (a shared file, checked against the
/// corpus afterwards), mutual TLS (GnuTLS, x509 certificates made for the
/// run), driven over QMP.
enum QemuCase: String, CaseIterable, Sendable {
    case tls = "qemu-tls"
    /// Two multifd channels, each over TLS, zstd level 1: QEMU's fastest mode on a slow link.
    case multifdZstd = "qemu-multifd-zstd"

    var title: String {
        switch self {
        case .tls: return "QEMU TLS"
        case .multifdZstd: return "QEMU multifd×2+TLS+zstd-1"
        }
    }

    /// `migrate-set-capabilities` on both sides.
    var capabilities: [[String: Any]] { [["capability": "multifd", "state": self == .multifdZstd]] }

    /// `migrate-set-parameters` on both sides. The client checks the name
    /// `localhost` in the server's certificate whatever address it dials.
    var parameters: [String: Any] {
        var p: [String: Any] = ["tls-creds": QemuCommandLine.tlsObjectID, "tls-hostname": "localhost"]
        if self == .multifdZstd {
            p["multifd-channels"] = 2
            p["multifd-compression"] = "zstd"
            p["multifd-zstd-level"] = 1
        }
        return p
    }

    /// The source's own: no bandwidth cap (QEMU 7.2 defaults to 32 MiB/s) and our downtime target.
    static func sourceParameters(downtimeMs: Double) -> [String: Any] {
        ["max-bandwidth": Int64(1) << 40, "downtime-limit": max(1, Int(downtimeMs.rounded()))]
    }
}

/// The two QEMU command lines of a reference migration.
struct QemuCommandLine: Equatable {
    static let executable = "qemu-system-x86_64"
    static let tlsObjectID = "tls0"

    enum Role: String { case source, destination }

    let guestMiB: UInt64
    /// The corpus's guest file: mapped privately (`share=off`), so QEMU never writes it back.
    let guestFile: String
    /// The destination's RAM, shared (`share=on`) so that the bench can compare it with the corpus afterwards.
    let destinationFile: String
    let certificateDirectory: String

    func arguments(_ role: Role) -> [String] {
        let backend = role == .source
            ? "memory-backend-file,id=mem,size=\(guestMiB)M,mem-path=\(guestFile),share=off,prealloc=on"
            : "memory-backend-file,id=mem,size=\(guestMiB)M,mem-path=\(destinationFile),share=on,prealloc=on"
        var argv = ["-machine", "q35,accel=tcg,memory-backend=mem", "-m", "\(guestMiB)M", "-object", backend,
                    "-nodefaults", "-display", "none", "-S", "-qmp", "stdio",
                    "-object", "tls-creds-x509,id=\(Self.tlsObjectID),dir=\(certificateDirectory),endpoint=\(role == .source ? "client" : "server"),verify-peer=on"]
        if role == .destination { argv += ["-incoming", "defer"] }
        return argv
    }
}
