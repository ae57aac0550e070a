import Foundation
import MigrationTLS

/// Throwaway PKI made with the openssl CLI once per test process: a CA with good,
/// wrong-name, expired, not-yet-valid and revoked leaves (+ CRL), and a second CA.
public struct TestPKI: Sendable {
    public let dir: String
    public func path(_ name: String) -> String { dir + "/" + name }

    /// Generated once per test process (all test targets share one process).
    public static let shared: Result<TestPKI, SetupError> = Result { () throws(SetupError) in try generate() }
    public static func get() throws -> TestPKI { try shared.get() }

    private static let script = #"""
    set -eu
    cd "$1"
    ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
    mkca() {
      ec "$1-key.pem"
      openssl req -x509 -new -key "$1-key.pem" -sha256 -days 3650 -subj "/CN=test $1" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out "$1.pem"
      mkdir -p "$1.db"; : > "$1.db/index.txt"; echo 1000 > "$1.db/serial"; echo 1000 > "$1.db/crlnumber"
      cat > "$1.cnf" <<EOF
    [ca]
    default_ca = theca
    [theca]
    dir = $PWD/$1.db
    database = \$dir/index.txt
    serial = \$dir/serial
    crlnumber = \$dir/crlnumber
    new_certs_dir = \$dir
    certificate = $PWD/$1.pem
    private_key = $PWD/$1-key.pem
    default_md = sha256
    default_days = 365
    default_crl_days = 365
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
    issue ca destination "DNS:destination.test,DNS:localhost,IP:127.0.0.1,IP:::1"
    issue ca source "DNS:source.test,IP:127.0.0.1"
    issue ca wrongname "DNS:somebody-else.test"
    issue ca expired "DNS:source.test" 20200101000000Z 20200201000000Z
    EXT=clientonly; issue ca clientonly "DNS:source.test,DNS:destination.test,IP:127.0.0.1"
    EXT=serveronly; issue ca serveronly "DNS:source.test,DNS:destination.test,IP:127.0.0.1"; EXT=leaf
    issue ca soon "DNS:source.test,DNS:destination.test,IP:127.0.0.1" "$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)" "$(date -u -d '+10 days' +%Y%m%d%H%M%SZ)"
    issue ca notyet "DNS:source.test" 20990101000000Z 20991231000000Z
    issue ca revoked "DNS:source.test"
    issue otherca stranger "DNS:source.test,DNS:destination.test,IP:127.0.0.1"
    openssl ca -batch -config ca.cnf -revoke revoked.pem
    openssl ca -batch -config ca.cnf -gencrl -out crl.pem
    echo "this is not PEM" > garbage.pem
    chmod 600 garbage.pem  # also used as a key file: the 0600 rule comes before parsing
    openssl pkey -in source-key.pem -aes256 -passout pass:secret -out source-encrypted-key.pem
    """#

    private static func generate() throws(SetupError) -> TestPKI {
        let dir = NSTemporaryDirectory() + "vfio-migrate-test-pki-\(getpid())"
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

    /// The receiving side: destination certificate, expects the client to be `source.test`.
    public func serverConfig(cert: String = "destination", peerName: String = "source.test", allowed: [String] = [],
                      crl: Bool = false, handshakeTimeout: Double = 5) -> TLSConfiguration {
        TLSConfiguration(caFile: path("ca.pem"), certificateFile: path(cert + ".pem"),
                         privateKeyFile: path(cert + "-key.pem"), peerName: peerName, allowedPeerNames: allowed,
                         crlFile: crl ? path("crl.pem") : nil, handshakeTimeoutSeconds: handshakeTimeout)
    }

    /// The sending side: source certificate, expects the server to be `destination.test`.
    public func clientConfig(cert: String = "source", peerName: String = "destination.test", allowed: [String] = [],
                      crl: Bool = false) -> TLSConfiguration {
        TLSConfiguration(caFile: path("ca.pem"), certificateFile: path(cert + ".pem"),
                         privateKeyFile: path(cert + "-key.pem"), peerName: peerName, allowedPeerNames: allowed,
                         crlFile: crl ? path("crl.pem") : nil, handshakeTimeoutSeconds: 5)
    }

    /// CLI arguments for a receiver/sender using this PKI.
    public func cliTLS(_ me: String, peer: String) -> [String] {
        ["--ca", path("ca.pem"), "--cert", path("\(me).pem"), "--key", path("\(me)-key.pem"), "--peer-name", peer]
    }
}
