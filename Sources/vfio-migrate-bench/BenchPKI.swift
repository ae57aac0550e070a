import Foundation

/// A throwaway certificate set made for one bench invocation with the openssl
/// CLI (P-256, valid two days): the committed development set is refused off
/// loopback, and the shaped links cross a veth. The same keys serve our
/// migrations on every link (names as in certs/dev: `source`/`destination`
/// `.vfio-migrate.test`) and QEMU's (`tls-creds-x509` reads fixed file names
/// from a directory of its own: the destination is QEMU's server).
enum BenchPKI {
    static func create(in dir: String) throws(BenchError) -> (ours: BenchCertificates, qemuDirectory: String) {
        let qemu = "\(dir)/qemu"
        do { try FileManager.default.createDirectory(atPath: qemu, withIntermediateDirectories: true) } catch { throw .cannotCreate(path: qemu) }
        let write = { (path: String, text: String) throws(BenchError) -> Void in
            guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else { throw .cannotCreate(path: path) }
        }
        for command in try commands(in: dir, writeFile: write) { try BenchCommand.run(command) }
        for (ours, theirs) in qemuFileNames {
            do { try FileManager.default.copyItem(atPath: "\(dir)/\(ours)", toPath: "\(qemu)/\(theirs)") } catch { throw .cannotCreate(path: "\(qemu)/\(theirs)") }
        }
        return (try BenchCertificates(directory: dir, development: false), qemu)
    }

    /// Our file → QEMU's name for it.
    static let qemuFileNames = [("ca.pem", "ca-cert.pem"), ("destination.pem", "server-cert.pem"), ("destination-key.pem", "server-key.pem"),
                                ("source.pem", "client-cert.pem"), ("source-key.pem", "client-key.pem")]

    /// The openssl commands, in order; `writeFile` writes the extension files they read.
    static func commands(in dir: String, writeFile: (String, String) throws(BenchError) -> Void) throws(BenchError) -> [[String]] {
        func key(_ name: String) -> [String] { ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "\(dir)/\(name)-key.pem"] }
        var c = [key("ca"),
                 ["openssl", "req", "-x509", "-new", "-key", "\(dir)/ca-key.pem", "-sha256", "-days", "2", "-subj", "/CN=vfio-migrate-bench CA",
                  "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "\(dir)/ca.pem"]]
        for (serial, who) in ["source", "destination"].enumerated() {
            // localhost: the name QEMU's client checks (tls-hostname); the addresses: either link.
            try writeFile("\(dir)/\(who).ext", """
                basicConstraints=critical,CA:FALSE
                keyUsage=critical,digitalSignature,keyEncipherment
                extendedKeyUsage=serverAuth,clientAuth
                subjectAltName=DNS:\(who).vfio-migrate.test,DNS:localhost,IP:127.0.0.1,IP:\(NamespacePair.sourceAddress),IP:\(NamespacePair.destinationAddress)

                """)
            c.append(key(who))
            c.append(["openssl", "req", "-new", "-key", "\(dir)/\(who)-key.pem", "-subj", "/CN=\(who).vfio-migrate.test", "-out", "\(dir)/\(who).csr"])
            c.append(["openssl", "x509", "-req", "-in", "\(dir)/\(who).csr", "-CA", "\(dir)/ca.pem", "-CAkey", "\(dir)/ca-key.pem",
                      "-set_serial", "\(serial + 2)", "-days", "2", "-sha256", "-extfile", "\(dir)/\(who).ext", "-out", "\(dir)/\(who).pem"])
        }
        return c
    }
}
