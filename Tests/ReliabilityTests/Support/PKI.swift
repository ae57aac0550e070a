import Foundation
@testable import MigrationTLS

/// Throwaway PKI made with the openssl CLI once per test process (the approach of
/// MigrationTLSTests, not its code): a CA with good, wrong-name and expired leaves, and
/// a second CA with a stranger that carries the right names.
struct TestPKI: Sendable {
    let dir: String
    func path(_ name: String) -> String { dir + "/" + name }

    static let shared: Result<TestPKI, SetupError> = Result { () throws(SetupError) in try generate() }
    static func get() throws -> TestPKI { try shared.get() }

    private static let script = #"""
    set -eu
    cd "$1"
    ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
    mkca() {
      ec "$1-key.pem"
      openssl req -x509 -new -key "$1-key.pem" -sha256 -days 3650 -subj "/CN=test $1" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out "$1.pem"
      mkdir -p "$1.db"; : > "$1.db/index.txt"; echo 1000 > "$1.db/serial"
      cat > "$1.cnf" <<EOF
    [ca]
    default_ca = theca
    [theca]
    dir = $PWD/$1.db
    database = \$dir/index.txt
    serial = \$dir/serial
    new_certs_dir = \$dir
    certificate = $PWD/$1.pem
    private_key = $PWD/$1-key.pem
    default_md = sha256
    default_days = 365
    policy = anything
    unique_subject = no
    [anything]
    commonName = supplied
    [leaf]
    basicConstraints = critical,CA:FALSE
    keyUsage = critical,digitalSignature
    extendedKeyUsage = serverAuth,clientAuth
    subjectAltName = \$ENV::SAN
    [clientonly]
    basicConstraints = critical,CA:FALSE
    keyUsage = critical,digitalSignature
    extendedKeyUsage = clientAuth
    subjectAltName = \$ENV::SAN
    [serveronly]
    basicConstraints = critical,CA:FALSE
    keyUsage = critical,digitalSignature
    extendedKeyUsage = serverAuth
    subjectAltName = \$ENV::SAN
    EOF
    }
    issue() { # CA NAME SAN [STARTDATE ENDDATE]
      ca=$1; name=$2; export SAN=$3
      ec "$name-key.pem"
      openssl req -new -key "$name-key.pem" -subj "/CN=$name" -out "$name.csr"
      if [ $# -ge 5 ]; then
        openssl ca -batch -notext -config "$ca.cnf" -extensions "${EXT:-leaf}" -startdate "$4" -enddate "$5" -in "$name.csr" -out "$name.pem"
      else
        openssl ca -batch -notext -config "$ca.cnf" -extensions "${EXT:-leaf}" -in "$name.csr" -out "$name.pem"
      fi
    }
    mkca ca
    mkca otherca
    issue ca destination "DNS:destination.test,IP:127.0.0.1"
    issue ca source "DNS:source.test,IP:127.0.0.1"
    issue ca wrongname "DNS:somebody-else.test"
    issue ca expired "DNS:source.test" 20200101000000Z 20200201000000Z
    EXT=clientonly; issue ca clientonly "DNS:source.test,DNS:destination.test,IP:127.0.0.1"
    EXT=serveronly; issue ca serveronly "DNS:source.test,DNS:destination.test,IP:127.0.0.1"; EXT=leaf
    issue ca soon "DNS:source.test,DNS:destination.test,IP:127.0.0.1" "$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)" "$(date -u -d '+10 days' +%Y%m%d%H%M%SZ)"
    issue ca notyet "DNS:source.test,DNS:destination.test,IP:127.0.0.1" 20990101000000Z 20991231000000Z
    issue otherca stranger "DNS:source.test,DNS:destination.test,IP:127.0.0.1"
    """#

    private static func generate() throws(SetupError) -> TestPKI {
        let dir = NSTemporaryDirectory() + "vfio-migrate-rel-pki-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", script, "make-test-pki", dir]
            let log = Pipe()
            process.standardOutput = log
            process.standardError = log
            try process.run()
            let output = log.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw SetupError("test PKI generation failed:\n" + String(decoding: output, as: UTF8.self))
            }
        } catch let error as SetupError {
            throw error
        } catch {
            throw SetupError("test PKI generation failed: \(error)")
        }
        return TestPKI(dir: dir)
    }

    /// The listening destination: expects its client to be `source.test`.
    func serverContext() throws -> TLSContext {
        try TLSContext(configuration: TLSConfiguration(caFile: path("ca.pem"), certificateFile: path("destination.pem"),
                                                       privateKeyFile: path("destination-key.pem"), peerName: "source.test",
                                                       handshakeTimeoutSeconds: 5), role: .server)
    }

    /// A connecting source with certificate `cert` (expects the server to be `destination.test`).
    func clientContext(cert: String = "source", omitCertificate: Bool = false) throws -> TLSContext {
        try TLSContext(configuration: TLSConfiguration(caFile: path("ca.pem"), certificateFile: path(cert + ".pem"),
                                                       privateKeyFile: path(cert + "-key.pem"), peerName: "destination.test",
                                                       handshakeTimeoutSeconds: 5), role: .client,
                       hooks: TLSTestHooks(omitCertificate: omitCertificate, skipOwnValidityCheck: true))
    }

    /// CLI arguments for a receiver/sender using this PKI.
    func cliTLS(_ me: String, peer: String) -> [String] {
        ["--ca", path("ca.pem"), "--cert", path("\(me).pem"), "--key", path("\(me)-key.pem"), "--peer-name", peer]
    }
}
