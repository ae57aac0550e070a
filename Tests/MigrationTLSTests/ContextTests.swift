import Glibc
import SystemPackage
import Testing
@testable import MigrationTLS
import TestSupport

extension TLSTests {
    @Suite struct Configuration {
        @Test func validConfigurationLoadsForBothRoles() throws {
            let pki = try TestPKI.get()
            _ = try TLSContext(configuration: pki.serverConfig(crl: true), role: .server)
            _ = try TLSContext(configuration: pki.clientConfig(), role: .client)
        }

        @Test func missingFileIsReportedWithItsPathAndErrno() throws {
            let pki = try TestPKI.get()
            var config = pki.clientConfig()
            config.certificateFile = pki.path("no-such-cert.pem")
            #expect(throws: TLSError.fileUnreadable(path: pki.path("no-such-cert.pem"), errno: .noSuchFileOrDirectory)) {
                try TLSContext(configuration: config, role: .client)
            }
            config = pki.clientConfig()
            config.crlFile = pki.path("no-such-crl.pem")
            #expect(throws: TLSError.fileUnreadable(path: pki.path("no-such-crl.pem"), errno: .noSuchFileOrDirectory)) {
                try TLSContext(configuration: config, role: .client)
            }
        }

        @Test func keyOfAnotherCertificateIsRefused() throws {
            let pki = try TestPKI.get()
            var config = pki.clientConfig()
            config.privateKeyFile = pki.path("destination-key.pem")
            #expect(throws: TLSError.keyDoesNotMatchCertificate(certificate: config.certificateFile,
                                                                key: config.privateKeyFile)) {
                try TLSContext(configuration: config, role: .client)
            }
        }

        @Test func encryptedKeyIsRefusedWithoutPrompting() throws {
            let pki = try TestPKI.get()
            var config = pki.clientConfig()
            config.privateKeyFile = pki.path("source-encrypted-key.pem")
            #expect(throws: TLSError.encryptedPrivateKey(path: config.privateKeyFile)) {
                try TLSContext(configuration: config, role: .client)
            }
        }

        @Test(arguments: ["caFile", "certificateFile", "privateKeyFile", "crlFile"])
        func unparsablePEMNamesTheFile(field: String) throws {
            let pki = try TestPKI.get()
            var config = pki.clientConfig()
            let garbage = pki.path("garbage.pem")
            switch field {
            case "caFile": config.caFile = garbage
            case "certificateFile": config.certificateFile = garbage
            case "privateKeyFile": config.privateKeyFile = garbage
            default: config.crlFile = garbage
            }
            #expect {
                try TLSContext(configuration: config, role: .client)
            } throws: { error in
                guard case .invalidPEM(let path, _) = error as? TLSError else { return false }
                return path == garbage
            }
        }

        @Test func ownExpiredOrNotYetValidCertificateIsRefusedEarly() throws {
            let pki = try TestPKI.get()
            #expect {
                try TLSContext(configuration: pki.clientConfig(cert: "expired"), role: .client)
            } throws: { error in
                guard case .ownCertificateExpired(let path, _, let notAfter) = error as? TLSError else { return false }
                return path == pki.path("expired.pem") && notAfter.contains("2020")
            }
            #expect {
                try TLSContext(configuration: pki.clientConfig(cert: "notyet"), role: .client)
            } throws: { error in
                guard case .ownCertificateNotYetValid(_, _, let notBefore) = error as? TLSError else { return false }
                return notBefore.contains("2099")
            }
        }

        @Test func emptyPeerNameIsRefused() throws {
            let pki = try TestPKI.get()
            #expect {
                try TLSContext(configuration: pki.clientConfig(peerName: ""), role: .client)
            } throws: { error in
                if case .invalidConfiguration = error as? TLSError { return true }
                return false
            }
        }

        @Test func errorDescriptionsAreReadable() {
            #expect(TLSError.fileUnreadable(path: "/x.pem", errno: .noSuchFileOrDirectory).description
                == "cannot read /x.pem: No such file or directory (ENOENT)")
            #expect(TLSError.peerNameMismatch(expected: ["a.test"], presented: ["b.test"]).description
                .contains("b.test"))
        }
    }
}
