import ArgumentParser
import Testing
@testable import vfio_migrate

/// Bad values are usage errors (exit 64) caught while parsing, with a message that
/// names the option; none reaches `run()`, traps, or silently becomes a default.
@Suite struct ArgumentValidation {
    static let tls = ["--ca", "ca.pem", "--cert", "c.pem", "--key", "k.pem", "--peer-name", "p"]
    static let send = ["send", "--connect", "127.0.0.1:1", "--device", "d=sim:state=64K"] + tls
    static let receive = ["receive", "--listen", "127.0.0.1:0", "--device", "d=sim:state=64K"] + tls

    /// (arguments, text the message must contain)
    static let refused: [([String], String)] = [
        (send + ["--max-iterations", "0"], "--max-iterations 0"),
        (send + ["--max-iterations", "-3"], "--max-iterations"),
        (send + ["--downtime-ms", "nan"], "--downtime-ms"),
        (send + ["--downtime-ms", "inf"], "--downtime-ms"),
        (send + ["--downtime-ms", "0"], "--downtime-ms"),
        (send + ["--timeout", "1e300"], "--timeout"),
        (send + ["--peer-timeout", "-1"], "--peer-timeout"),
        (send + ["--ready-timeout", "nan"], "--ready-timeout"),
        (send + ["--connect-timeout", "inf"], "--connect-timeout"),
        (send + ["--workers", "0"], "--workers 0"),
        (send + ["--compress", "zlib:0"], "--compress"),
        (send + ["--compress", "gzip"], "--compress"),
        (send + ["--on-timeout", "explode"], "--on-timeout"),
        (send + ["--bandwidth", "fast"], "--bandwidth"),
        (send + ["--bandwidth", "0"], "--bandwidth 0"),
        (send + ["--bandwidth", "99999999999999999999T"], "--bandwidth"),
        (send + ["--log-level", "verbose"], "--log-level"),
        (send + ["--dirty", "everything"], "--dirty"),
        (send + ["--dirty", "vmm"], "--dirty vmm needs --control"),
        (send + ["--guest-dirty-log"], "--guest-dirty-log needs --control"),
        (send + ["--page-size", "3000"], "--page-size 3000"),
        (send + ["--memory-size", "1G"], "--memory-size needs --memory"),
        (send + ["--await-start"], "--await-start needs --control"),
        (send + ["--control", "unix:/x", "--start-timeout", "0"], "--start-timeout"),
        (send + ["--memory", "fd:ram"], "fd:ram names a descriptor passed with add-fd, which needs --control"),
        (receive + ["--device", "g=fd:gpu"], "fd:gpu names a descriptor passed with add-fd, which needs --control"),
        (send + ["--iommu", "/dev/vfio/vfio", "--dirty", "iommu"], "--iommu /dev/vfio/vfio: expected fd:N or fd:NAME"),
        (send + ["--iommu", "fd:4"], "applies to --dirty iommu only"),
        (send + ["--device", "bad"], "expected NAME=BACKEND"),
        (send + ["--device", "x=sim:speed=3"], "unknown sim option speed"),
        (receive + ["--workers", "0"], "--workers 0"),
        (receive + ["--accept-timeout", "nan"], "--accept-timeout"),
        (receive + ["--peer-timeout", "0"], "--peer-timeout"),
        (["receive", "--listen", "127.0.0.1:0"] + tls, "at least one --device"),
        (["demo", "--devices", "0"], "--devices 0"),
        (["demo", "--memory-size", "100K"], "--memory-size"),
        (["demo", "--state-size", "8G"], "--state-size"),
        (["demo", "--workload-ms", "-1"], "--workload-ms"),
    ]

    @Test(arguments: refused)
    func badValueIsAUsageErrorNamingTheOption(arguments: [String], text: String) {
        do {
            _ = try VfioMigrate.parseAsRoot(arguments)
            Issue.record("accepted: \(arguments)")
        } catch {
            #expect(VfioMigrate.exitCode(for: error) == .validationFailure, "\(arguments)")
            let message = VfioMigrate.message(for: error)
            #expect(message.contains(text), "\(arguments): \(message)")
        }
    }

    /// `start` waits for every add-fd name the command line uses, and for the
    /// dirty-log bitmap when the guest's dirty pages are asked for; nothing waits without a name or `--await-start`.
    @Test func startWaitsForTheNamedDescriptorsAndTheDirtyLog() throws {
        let control = ["--control", "unix:/run/x.sock"]
        func requirements(_ extra: [String]) throws -> [String]? {
            let send = try #require(try VfioMigrate.parseAsRoot(Self.send + control + extra) as? Send)
            return send.controlOptions.startRequirements(devices: send.devices)
        }
        #expect(try requirements([]) == nil)
        #expect(try requirements(["--await-start"]) == [])
        #expect(try requirements(["--memory", "fd:ram", "--device", "g=fd:gpu", "--device", "n=file:fd:nic@4K", "--dirty", "iommu", "--iommu", "fd:box"])
                == ["gpu", "nic", "ram", "box"])
        #expect(try requirements(["--memory", "fd:3", "--dirty", "vmm", "--await-start"]) == ["dirty-log"])
        #expect(try requirements(["--memory", "fd:3", "--guest-dirty-log"]) == nil, "without --await-start the bitmap may come any time before pre-copy")
    }

    @Test func goodValuesParseToTheirTypes() throws {
        let parsed = try VfioMigrate.parseAsRoot(Self.send + ["--compress", "zlib:6", "--on-timeout", "switchover",
                                                               "--bandwidth", "100M", "--log-level", "debug",
                                                               "--dirty", "none", "--max-iterations", "1"])
        let send = try #require(parsed as? Send)
        #expect(send.tuning.compress == .zlib(level: 6))
        #expect(send.tuning.onTimeout == .switchover)
        #expect(send.tuning.bandwidth?.bytes == 100 << 20)
        #expect(send.output.logLevel == .debug)
        #expect(send.devices.dirty == .none)
        let options = send.tuning.options()
        #expect(options.maxIterations == 1 && options.bandwidthBytesPerSecond == 100 << 20)
    }
}

@Suite struct SizeParsing {
    @Test(arguments: [("4096", 4096), ("64K", 65536), ("64k", 65536), ("256M", 256 << 20), ("1G", 1 << 30),
                      ("2T", 2 << 40), ("0x1000", 4096), ("0x10K", 16 << 10), (" 8K ", 8192), ("0", 0)] as [(String, UInt64)])
    func sizesInBinaryUnits(text: String, bytes: UInt64) throws {
        #expect(try parseSize(text, what: "x") == bytes)
    }

    @Test(arguments: ["", "K", "1.5G", "-1", "1P", "abc", "0x", "0xZZ", "16777216T", "0xFFFFFFFFFFFFFFFFK", "18446744073709551616"])
    func malformedOrOverflowingSizesAreRefused(text: String) {
        #expect(throws: (any Error).self) { try parseSize(text, what: "--x") }
    }
}

@Suite struct DeviceSpecParsing {
    @Test func simulatedDeviceWithEveryOption() throws {
        let spec = try DeviceSpec(parsing: "gpu0=sim:state=1M,seed=7,dirty=3,churn=2K,chunk=64K,allevery=5,compat=vendor 1.2")
        #expect(spec.name == "gpu0" && spec.compatibility == "vendor 1.2")
        guard case .sim(let c) = spec.backend else { Issue.record("\(spec.backend)"); return }
        #expect(c.stateSize == 1 << 20 && c.seed == 7 && c.dirtyPagesPerStep == 3)
        #expect(c.stateBytesPerStep == 2048 && c.maxChunkSize == 64 << 10 && c.allEvery == 5)
    }

    @Test func fileRegionWithOffsetAndSize() throws {
        let spec = try DeviceSpec(parsing: "nic=file:/dev/vfio-emul/nic@0x1000,size=64K")
        guard case .file(let path, let offset, let size) = spec.backend else { Issue.record("\(spec.backend)"); return }
        #expect(path == "/dev/vfio-emul/nic" && offset == 4096 && size == 65536)
        #expect(spec.compatibility == nil)
    }

    @Test func fileRegionOnAnInheritedDescriptor() throws {
        let spec = try DeviceSpec(parsing: "nic=file:fd:4@0x1000,size=64K")
        guard case .fileDescriptor(let fd, let name, let offset, let size) = spec.backend else { Issue.record("\(spec.backend)"); return }
        #expect(fd == .inherited(4) && name == "fd:4" && offset == 4096 && size == 65536)
    }

    /// `fd:NAME` (add-fd) in every place a descriptor goes; the CLI then waits for `start`.
    @Test func descriptorsByNameAndOpenVFIODevices() throws {
        let file = try DeviceSpec(parsing: "nic=file:fd:nic-state@4K")
        guard case .fileDescriptor(.named("nic-state"), _, 4096, nil) = file.backend else { Issue.record("\(file.backend)"); return }
        let vfio = try DeviceSpec(parsing: "gpu=fd:5,interface=v2")
        guard case .vfioDescriptor(.inherited(5), "fd:5", .v2) = vfio.backend else { Issue.record("\(vfio.backend)"); return }
        let named = try DeviceSpec(parsing: "gpu=fd:gpu0,compat=x")
        guard case .vfioDescriptor(.named("gpu0"), _, .auto) = named.backend else { Issue.record("\(named.backend)"); return }
        #expect(file.descriptorName == "nic-state" && named.descriptorName == "gpu0" && vfio.descriptorName == nil)
    }

    @Test func vfioGroupAndDevice() throws {
        let spec = try DeviceSpec(parsing: "gpu=vfio:26/0000:65:00.0")
        guard case .vfio(let group, let device) = spec.backend else { Issue.record("\(spec.backend)"); return }
        #expect(group == "26" && device == "0000:65:00.0")
    }

    @Test(arguments: [("nameless", "expected NAME=BACKEND"), ("=sim:", "device name"), ("a b=sim:", "device name"),
                      ("d=sim", "backend must be"), ("d=tape:x", "unknown backend tape"), ("d=sim:state", "not KEY=VALUE"),
                      ("d=sim:seed=x", "seed must be a number"), ("d=sim:dirty=-1", "dirty must be"),
                      ("d=sim:state=lots", "not a size"), ("d=file:", "needs a path"), ("d=file:/x,mode=rw", "unknown file option"),
                      ("d=vfio:26", "GROUP/DEVICE"), ("d=vfio:/x", "GROUP/DEVICE"),
                      ("d=sim:image=/no/such/image", "cannot open image"),
                      ("d=file:fd:-1", "0 or more"), ("d=fd:", "must be 1 to 64 bytes"), ("d=fd:1x", "must start with a letter"),
                      ("d=fd:5,interface=v3", "unknown vfio option")])
    func malformedSpecIsRefusedSayingWhy(text: String, why: String) {
        #expect {
            try DeviceSpec(parsing: text)
        } throws: { error in
            "\(error)".contains(why)
        }
    }
}
