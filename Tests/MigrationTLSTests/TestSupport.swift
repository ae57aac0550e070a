import Foundation
import Testing
@testable import MigrationTLS

struct TestSetupError: Error, CustomStringConvertible { let description: String }

/// Throwaway PKI made with the openssl CLI once per test process: a CA with good,
/// wrong-name, expired, not-yet-valid and revoked leaves (+ CRL), and a second CA.
struct TestPKI: Sendable {
    let dir: String
    func path(_ name: String) -> String { dir + "/" + name }

    static let shared: Result<TestPKI, TestSetupError> = Result { () throws(TestSetupError) in try generate() }
    static func get() throws -> TestPKI { try shared.get() }

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

    private static func generate() throws(TestSetupError) -> TestPKI {
        let dir = NSTemporaryDirectory() + "vfio-migrate-tls-tests-\(getpid())"
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
                throw TestSetupError(description: "test PKI generation failed:\n" + String(decoding: output, as: UTF8.self))
            }
        } catch let error as TestSetupError {
            throw error
        } catch {
            throw TestSetupError(description: "test PKI generation failed: \(error)")
        }
        return TestPKI(dir: dir)
    }

    /// The receiving side: destination certificate, expects the client to be `source.test`.
    func serverConfig(cert: String = "destination", peerName: String = "source.test", allowed: [String] = [],
                      crl: Bool = false, handshakeTimeout: Double = 5) -> TLSConfiguration {
        TLSConfiguration(caFile: path("ca.pem"), certificateFile: path(cert + ".pem"),
                         privateKeyFile: path(cert + "-key.pem"), peerName: peerName, allowedPeerNames: allowed,
                         crlFile: crl ? path("crl.pem") : nil, handshakeTimeoutSeconds: handshakeTimeout)
    }

    /// The sending side: source certificate, expects the server to be `destination.test`.
    func clientConfig(cert: String = "source", peerName: String = "destination.test", allowed: [String] = [],
                      crl: Bool = false) -> TLSConfiguration {
        TLSConfiguration(caFile: path("ca.pem"), certificateFile: path(cert + ".pem"),
                         privateKeyFile: path(cert + "-key.pem"), peerName: peerName, allowedPeerNames: allowed,
                         crlFile: crl ? path("crl.pem") : nil, handshakeTimeoutSeconds: 5)
    }
}

/// Runs blocking work on a dedicated thread (not the cooperative pool) and joins it.
final class Background<T>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<T, any Error>?

    init(_ body: @escaping @Sendable () throws -> T) {
        let thread = Thread { [self] in
            result = Result { try body() }
            done.signal()
        }
        thread.start()
    }

    func join(timeout: Double = 60) throws -> T {
        guard done.wait(timeout: .now() + timeout) == .success else {
            throw TestSetupError(description: "background thread did not finish within \(timeout) s")
        }
        return try result!.get()
    }

    func joinResult(timeout: Double = 60) -> Result<T, any Error> {
        Result { try join(timeout: timeout) }
    }
}

extension Result {
    var tlsError: TLSError? {
        if case let .failure(error) = self { return error as? TLSError }
        return nil
    }
}

let loopback = Endpoint.tcp(host: "127.0.0.1", port: 0)

/// A connected, authenticated pair; the server side is accepted on its own thread.
func connectedPair(server: TLSContext, client: TLSContext, endpoint: Endpoint = loopback)
    throws -> (server: TLSStream, client: TLSStream) {
    let listener = try TLSListener(endpoint: endpoint, context: server)
    defer { listener.close() }
    let accepted = Background { try listener.accept(timeoutSeconds: 10) }
    let client = try TLSConnector.connect(to: listener.boundEndpoint, context: client, timeoutSeconds: 5)
    return (try accepted.join(), client)
}

/// Runs one handshake that is expected to fail and reports what each side saw. The client
/// reads after connecting, because a TLS 1.3 client learns of its rejection only then.
func failedHandshake(server: TLSContext, client: TLSContext) throws
    -> (server: TLSError?, client: TLSError?) {
    let listener = try TLSListener(endpoint: loopback, context: server)
    defer { listener.close() }
    let accepted = Background {
        let stream = try listener.accept(timeoutSeconds: 10)
        stream.close()  // accepted although it should not have been: end the client's read
    }
    let clientResult = Result<Void, any Error> {
        let stream = try TLSConnector.connect(to: listener.boundEndpoint, context: client, timeoutSeconds: 5)
        defer { stream.close() }
        stream.readTimeoutSeconds = 5
        _ = try stream.read(maxCount: 1)
    }
    let serverResult = accepted.joinResult()
    if case let .failure(error) = serverResult, !(error is TLSError) { throw error }
    return (serverResult.tlsError, clientResult.tlsError)
}

/// A deterministic stream of distinct 1 MiB chunks: one pseudo-random block, each chunk
/// stamped with its index, so a lost, repeated or reordered chunk changes the digest.
struct ChunkGenerator {
    static let chunkSize = 1 << 20
    private let base: [UInt8]
    init(seed: UInt64) {
        var state = seed | 1
        var block = [UInt8](repeating: 0, count: Self.chunkSize)
        for i in 0..<block.count {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            block[i] = UInt8(truncatingIfNeeded: state >> 33)
        }
        base = block
    }
    func chunk(_ index: Int) -> [UInt8] {
        var chunk = base
        withUnsafeBytes(of: UInt64(index).littleEndian) { stamp in
            for i in 0..<8 { chunk[i] = stamp[i] }
        }
        return chunk
    }
}
