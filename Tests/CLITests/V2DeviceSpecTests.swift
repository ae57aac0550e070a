import Testing
import VFIODevice
@testable import vfio_migrate

@Suite struct V2DeviceSpecParsing {
    @Test func simulatedV2DeviceWithEveryOption() throws {
        let spec = try DeviceSpec(parsing: "gpu0=sim:interface=v2,state=256K,seed=9,dirty=4,churn=1K,chunk=32K,precopy=0,p2p=1,dmalog=0,datasize=0,precopyend=zero,compat=mlx5 fw 28")
        #expect(spec.compatibility == "mlx5 fw 28")
        guard case .simV2(let c, let chunk) = spec.backend else { Issue.record("\(spec.backend)"); return }
        #expect(c.stateSize == 256 << 10 && c.seed == 9 && c.dirtyPagesPerStep == 4 && c.stateBytesPerStep == 1024 && chunk == 32 << 10)
        #expect(c.flags == [.stopCopy, .p2p] && !c.dmaLogging && !c.offersDataSize && c.precopyEndReturnsZero)
        guard case .simV2(let d, 1 << 20) = try DeviceSpec(parsing: "n=sim:interface=v2").backend else { Issue.record("defaults"); return }
        #expect(d.flags == [.stopCopy, .p2p, .preCopy] && d.dmaLogging && !d.precopyEndReturnsZero)
        guard case .sim = try DeviceSpec(parsing: "n=sim:interface=v1,state=64K").backend else { Issue.record("v1"); return }
    }

    @Test(arguments: ["n=sim:interface=v2,precopy=maybe", "n=sim:interface=v2,allevery=3", "n=sim:interface=v2,precopyend=eof",
                      "n=sim:interface=v2,chunk=0", "n=vfio:26/0000:65:00.0,interface=v3", "n=vfio:26/0000:65:00.0,foo=1"])
    func badV2OptionsAreRefused(_ text: String) {
        #expect(throws: CLIError.self) { try DeviceSpec(parsing: text) }
    }

    @Test func vfioInterfaceIsForcedOrProbed() throws {
        guard case .vfio("26", "0000:65:00.0") = try DeviceSpec(parsing: "g=vfio:26/0000:65:00.0").backend else { Issue.record("auto"); return }
        guard case .vfioForced("26", "0000:65:00.0", .v2) = try DeviceSpec(parsing: "g=vfio:26/0000:65:00.0,interface=v2").backend else { Issue.record("v2"); return }
        guard case .vfioForced(_, _, .v1) = try DeviceSpec(parsing: "g=vfio:26/0000:65:00.0,interface=v1,compat=x").backend else { Issue.record("v1"); return }
    }

    @Test func dirtySourceMustFitTheInterface() throws {
        let memory = try GuestMemory(anonymousNamed: "cli", size: 64 * 4096, pageSize: 4096)
        let v2 = try DeviceSpec(parsing: "g=sim:interface=v2,state=64K")
        #expect(throws: CLIError.self) { try OpenedDevices(specs: [v2], memory: memory, dirty: .region) }
        #expect(throws: CLIError.self) { try OpenedDevices(specs: [try DeviceSpec(parsing: "g=sim:state=64K")], memory: memory, dirty: .deviceLog) }
        #expect(throws: CLIError.self) { try OpenedDevices(specs: [try DeviceSpec(parsing: "g=sim:interface=v2,dmalog=0")], memory: memory, dirty: .deviceLog) }
        let opened = try OpenedDevices(specs: [v2], memory: memory, dirty: .deviceLog)
        #expect(opened.simulatedV2.count == 1 && opened.dirtySources.first! is DeviceDMALogDirtyPageSource)
        #expect(opened.sourceDevices.first?.compatibility == "vfio-v2[STOP_COPY|P2P|PRE_COPY];sim/v2 state=65536")
    }
}
