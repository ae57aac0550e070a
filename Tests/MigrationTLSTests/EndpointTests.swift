import Glibc
import Testing
@testable import MigrationTLS

@Suite struct EndpointParsing {
    @Test(arguments: [
        ("127.0.0.1:4444", Endpoint.tcp(host: "127.0.0.1", port: 4444)),
        ("destination.example:0", .tcp(host: "destination.example", port: 0)),
        ("[::1]:65535", .tcp(host: "::1", port: 65535)),
        ("[fe80::1%eth0]:22", .tcp(host: "fe80::1%eth0", port: 22)),
        ("unix:/run/vfio-migrate.sock", .unix(path: "/run/vfio-migrate.sock")),
    ])
    func parsesAndPrintsBack(text: String, expected: Endpoint) throws {
        let endpoint = try Endpoint(parsing: text)
        #expect(endpoint == expected)
        #expect(endpoint.description == text)
    }

    @Test(arguments: ["", "host", "host:", ":80", "host:65536", "host:-1", "host:8x", "::1:80", "[::1]80",
                      "[::1", "[127.0.0.1]:80", "unix:", "unix:/" + String(repeating: "x", count: 120)])
    func rejectsMalformed(text: String) {
        #expect {
            try Endpoint(parsing: text)
        } throws: { error in
            guard case .invalidEndpoint(let echoed, _) = error as? TLSError else { return false }
            return echoed == text
        }
    }
}
