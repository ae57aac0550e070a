import Foundation
import Testing
@testable import vfio_migrate_bench

@Suite struct QMPParsing {
    static func object(_ json: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    }

    @Test func tellsGreetingEventAnswerAndErrorApart() throws {
        let greeting = try Self.object(#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}"#)
        guard case .greeting = QMPMessage(greeting) else { Issue.record("greeting"); return }
        let event = try Self.object(#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "MIGRATION", "data": {"status": "active"}}"#)
        guard case .event(let name) = QMPMessage(event) else { Issue.record("event"); return }
        #expect(name == "MIGRATION")
        #expect(!QMPMessage(event).isAnswer && !QMPMessage(greeting).isAnswer)
        let reply = try Self.object(#"{"return": {}}"#)
        #expect(QMPMessage(reply).isAnswer)
        let error = try Self.object(#"{"error": {"class": "GenericError", "desc": "Parameter 'multifd-compression' does not accept value 'zstd'"}}"#)
        guard case .error(let cls, let desc) = QMPMessage(error) else { Issue.record("error"); return }
        #expect(cls == "GenericError" && desc.contains("zstd"))
        #expect(QMPMessage(error).isAnswer)
        guard case .unrecognised = QMPMessage(["id": 1]) else { Issue.record("unrecognised"); return }
    }

    /// A reply as QEMU 7.2 sends it when a TLS migration completed.
    @Test func completedQueryMigrate() throws {
        let o = try Self.object("""
            {"expected-downtime": 300, "status": "completed", "setup-time": 12, "total-time": 1083, "downtime": 38,
             "ram": {"total": 1074069504, "postcopy-requests": 0, "dirty-sync-count": 3, "multifd-bytes": 0, "pages-per-second": 277894,
                     "downtime-bytes": 0, "page-size": 4096, "remaining": 0, "postcopy-bytes": 0, "mbps": 7451.2, "transferred": 807149281,
                     "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 807149281, "duplicate": 65601, "dirty-pages-rate": 0,
                     "skipped": 0, "normal-bytes": 805634048, "normal": 196688}}
            """)
        let info = QemuMigrationInfo(o)
        #expect(info.status == .completed && info.isFinal && info.isSettled)
        #expect(info.totalTimeMs == 1083 && info.downtimeMs == 38 && info.setupTimeMs == 12)
        #expect(info.transferredBytes == 807_149_281)
        #expect(info.errorDescription == nil)
    }

    @Test func runningFailedAndNotStarted() throws {
        let active = QemuMigrationInfo(try Self.object(#"{"status": "active", "total-time": 200, "ram": {"transferred": 5}}"#))
        #expect(active.status == .running("active") && !active.isFinal && active.downtimeMs == nil)
        let failed = QemuMigrationInfo(try Self.object(#"{"status": "failed", "error-desc": "TLS handshake failed"}"#))
        #expect(failed.status == .failed && failed.isFinal && failed.errorDescription == "TLS handshake failed")
        #expect(failed.isSettled)
        let early = QemuMigrationInfo(try Self.object(#"{"status": "completed", "total-time": 0, "downtime": 0, "ram": {"transferred": 5}}"#))
        #expect(early.isFinal && !early.isSettled, "completed before QEMU computed its times: poll again")
        let none = QemuMigrationInfo([:])
        #expect(none.status == QemuMigrationInfo.Status.none && !none.isFinal && none.totalTimeMs == nil)
    }
}

@Suite struct QemuCommandLines {
    let line = QemuCommandLine(guestMiB: 1024, guestFile: "/dev/shm/b/corpus.mem", destinationFile: "/dev/shm/b/qemu-destination.mem",
                               certificateDirectory: "/dev/shm/b/pki/qemu")

    @Test func sourceMapsTheCorpusPrivatelyAndPreallocated() {
        let a = line.arguments(.source)
        #expect(a.contains("memory-backend-file,id=mem,size=1024M,mem-path=/dev/shm/b/corpus.mem,share=off,prealloc=on"))
        #expect(a.contains("tls-creds-x509,id=tls0,dir=/dev/shm/b/pki/qemu,endpoint=client,verify-peer=on"))
        #expect(a.contains("-S") && a.contains("stdio") && !a.contains("-incoming"))
        #expect(a.contains("q35,accel=tcg,memory-backend=mem"))
    }

    @Test func destinationPreallocatesAndWaitsForMigrateIncoming() {
        let a = line.arguments(.destination)
        #expect(a.contains("memory-backend-file,id=mem,size=1024M,mem-path=/dev/shm/b/qemu-destination.mem,share=on,prealloc=on"),
                "shared, so the bench can compare it with the corpus")
        #expect(a.contains("tls-creds-x509,id=tls0,dir=/dev/shm/b/pki/qemu,endpoint=server,verify-peer=on"))
        #expect(Array(a.suffix(2)) == ["-incoming", "defer"])
    }

    @Test func casesSetWhatIssue14Measured() {
        let tls = QemuCase.tls.parameters, zstd = QemuCase.multifdZstd.parameters
        #expect(tls["tls-creds"] as? String == "tls0" && tls["tls-hostname"] as? String == "localhost")
        #expect(tls["multifd-channels"] == nil && tls["multifd-compression"] == nil)
        #expect(zstd["multifd-channels"] as? Int == 2 && zstd["multifd-compression"] as? String == "zstd" && zstd["multifd-zstd-level"] as? Int == 1)
        #expect(zstd["tls-creds"] as? String == "tls0")
        #expect(QemuCase.tls.capabilities.first?["state"] as? Bool == false)
        #expect(QemuCase.multifdZstd.capabilities.first?["state"] as? Bool == true)
        let source = QemuCase.sourceParameters(downtimeMs: 300)
        #expect(source["downtime-limit"] as? Int == 300 && (source["max-bandwidth"] as? Int64 ?? 0) >= 1 << 40,
                "QEMU 7.2 caps migration at 32 MiB/s unless told otherwise")
    }
}

@Suite struct BenchPKITests {
    @Test func certificatesCarryBothNamesAndTheNamespaceAddresses() throws {
        var files: [String: String] = [:]
        let commands = try BenchPKI.commands(in: "/x", writeFile: { path, text throws(BenchError) in files[path] = text })
        let destination = try #require(files["/x/destination.ext"])
        #expect(destination.contains("DNS:destination.vfio-migrate.test") && destination.contains("DNS:localhost"))
        #expect(destination.contains("IP:10.213.9.2") && destination.contains("extendedKeyUsage=serverAuth,clientAuth"))
        #expect(commands.allSatisfy { $0.first == "openssl" })
        #expect(commands.filter { $0.contains("-extfile") }.count == 2)
    }

    /// The openssl CLI for real: the set verifies against its CA and is not the committed development set.
    @Test(.enabled(if: BenchCommand.onPath("openssl"), "needs the openssl CLI"))
    func madeSetVerifies() throws {
        let dir = NSTemporaryDirectory() + "bench-pki-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (ours, qemu) = try BenchPKI.create(in: dir)
        #expect(!ours.development && !ours.migrateArguments(.source).contains("--allow-dev-certs"))
        let out = try BenchCommand.run(["openssl", "verify", "-CAfile", "\(dir)/ca.pem", "\(dir)/source.pem", "\(dir)/destination.pem"])
        #expect(out.contains("source.pem: OK") && out.contains("destination.pem: OK"))
        for (_, name) in BenchPKI.qemuFileNames { #expect(FileManager.default.fileExists(atPath: "\(qemu)/\(name)"), "\(name)") }
    }
}
