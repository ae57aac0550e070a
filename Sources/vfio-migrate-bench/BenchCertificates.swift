import Foundation
import MigrationTLS

/// The development certificates every process of a bench run uses: the
/// `vfio-migrate` children get them as options, the TLS baseline's processes
/// as a configuration. One place, so both sides of every row use the same keys.
struct BenchCertificates {
    enum Side: String {
        case source, destination
        var peer: Side { self == .source ? .destination : .source }
    }

    let directory: String
    /// The committed set (certs/dev): `vfio-migrate` must be told to allow it, and allows it on loopback only.
    let development: Bool

    init(directory: String, development: Bool = true) throws(BenchError) {
        self.directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        self.development = development
        for file in ["ca.pem", "source.pem", "source-key.pem", "destination.pem", "destination-key.pem"]
        where !FileManager.default.fileExists(atPath: "\(self.directory)/\(file)") {
            throw .certificateMissing(path: "\(self.directory)/\(file)")
        }
    }

    /// The TLS options of `vfio-migrate send`/`receive` on `side`.
    func migrateArguments(_ side: Side) -> [String] {
        ["--ca", "\(directory)/ca.pem", "--cert", "\(directory)/\(side).pem", "--key", "\(directory)/\(side)-key.pem",
         "--peer-name", "\(side.peer).vfio-migrate.test"] + (development ? ["--allow-dev-certs"] : [])
    }

    /// The same, for the TLS baseline's processes (this binary).
    func configuration(_ side: Side) -> TLSConfiguration {
        TLSConfiguration(caFile: "\(directory)/ca.pem", certificateFile: "\(directory)/\(side).pem",
                         privateKeyFile: "\(directory)/\(side)-key.pem", peerName: "\(side.peer).vfio-migrate.test",
                         allowDevelopmentCertificates: true)
    }
}
