import Foundation
import Glibc

/// The repository's root, from this file's path (tests run from anywhere).
public let repositoryRoot: String = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// Executables SwiftPM built next to the running test bundle; the test targets that
/// run them depend on their targets, so they are built first.
public enum BuiltBinary {
    public static let vfioMigrate = path("vfio-migrate")
    public static let vfioMigrateBench = path("vfio-migrate-bench")

    static func path(_ name: String) -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent(name).path
    }
}

/// The committed development PKI (certs/dev) as `send` and `receive` take it.
public enum DevCertificates {
    public static let directory = "\(repositoryRoot)/certs/dev"

    /// `--ca … --cert … --key … --peer-name … --allow-dev-certs` for the side named
    /// `me` ("source", "destination"), authenticating `peer`.
    public static func arguments(_ me: String, _ peer: String) -> [String] {
        ["--ca", "\(directory)/ca.pem", "--cert", "\(directory)/\(me).pem", "--key", "\(directory)/\(me)-key.pem",
         "--peer-name", "\(peer).vfio-migrate.test", "--allow-dev-certs"]
    }
}

/// The file a receiver started with `--port-file` writes its port to once it listens.
public enum PortFile {
    /// Polls `path` every 25 ms for up to 20 s, giving up early once `running()`
    /// says the receiver ended; the error carries `diagnostics()` (its stderr).
    public static func wait(_ path: String, while running: () -> Bool = { true },
                            diagnostics: () -> String) throws(SetupError) -> UInt16 {
        for _ in 0..<800 {
            if let s = try? String(contentsOfFile: path, encoding: .utf8), let port = UInt16(s.trimmingCharacters(in: .whitespacesAndNewlines)) {
                return port
            }
            if !running() { break }
            usleep(25_000)
        }
        throw SetupError("the receiver wrote no port file: \(diagnostics())")
    }
}

/// A fresh directory for one run's files (memory images, port file, dumps), named
/// `prefix-UUID` in the temporary directory; the caller removes it.
public func makeRunDirectory(prefix: String) throws -> String {
    let dir = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A guest-memory file of `pages` 4 KiB pages: a quarter zero, a quarter
/// pseudo-random (from `seed`), the rest repeated patterns, so compression and
/// zero-page skipping all have work.
public func writeGuestMemoryFile(_ path: String, pages: Int, seed: UInt64 = 0x1234_5678) throws {
    var bytes = [UInt8](repeating: 0, count: pages * 4096)
    var x = seed
    for p in 0..<pages where p % 4 != 0 {
        for k in 0..<4096 {
            if p % 4 == 3 { x = x &* 6364136223846793005 &+ 1442695040888963407; bytes[p * 4096 + k] = UInt8(truncatingIfNeeded: x >> 33) }
            else { bytes[p * 4096 + k] = UInt8(truncatingIfNeeded: (k / 16) &+ p) }
        }
    }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}
