import Foundation
import MigrationControl
import Testing

@Suite struct PassedDescriptors {
    @Test func addFdPassesAMemfdWhoseContentsReadBackThroughTheTable() throws {
        let rig = try Rig()
        let memfd = makeMemfd("guest-ram")
        try #require(memfd >= 0)
        let content = Array("guest memory page 0".utf8)
        #expect(write(memfd, content, content.count) == content.count)
        let reply = try rig.client.execute("add-fd", ["name": .string("guest-ram")], id: .int(1), descriptor: memfd)
        close(memfd)  // the server has its own copy now
        #expect(reply["return"]?["name"] == .string("guest-ram"))
        #expect(rig.server.descriptors.names == ["guest-ram"])

        let reference = try #require(try DescriptorReference(parsing: "fd:guest-ram"))
        guard case .named(let name) = reference else { Issue.record("fd:guest-ram is a name"); return }
        let received = try #require(rig.server.descriptors.descriptor(named: name))
        var back = [UInt8](repeating: 0, count: content.count)
        #expect(pread(received, &back, back.count, 0) == content.count)
        #expect(back == content)

        let taken = try rig.server.descriptors.take(named: "guest-ram")
        #expect(rig.server.descriptors.names.isEmpty)
        close(taken)
        rig.server.close()
    }

    @Test func addFdRefusesAMissingDescriptorABadNameAndADuplicate() throws {
        let rig = try Rig()
        #expect(try rig.client.execute("add-fd", ["name": .string("memory")]).errorText?.contains("no descriptor came with the request") == true)
        let memfd = makeMemfd("m")
        defer { close(memfd) }
        #expect(try rig.client.execute("add-fd", ["name": .string("3")], descriptor: memfd).errorText?.contains("must start with a letter") == true)
        #expect(try rig.client.execute("add-fd", ["name": .string("memory")], descriptor: memfd)["return"] != nil)
        #expect(try rig.client.execute("add-fd", ["name": .string("memory")], descriptor: memfd).errorText?.contains("already registered") == true)
        #expect(try rig.client.execute("add-fd", descriptor: memfd).errorText?.contains("missing argument 'name'") == true)
        #expect(rig.server.descriptors.names == ["memory"])
        rig.server.close()
    }

    @Test func aDescriptorSentWithAnotherCommandIsClosedNotKept() throws {
        let rig = try Rig()
        var pipeEnds: [Int32] = [-1, -1]
        #expect(pipe(&pipeEnds) == 0)
        #expect(try rig.client.execute("query", descriptor: pipeEnds[1])["return"] != nil)
        close(pipeEnds[1])
        var byte: UInt8 = 0
        #expect(read(pipeEnds[0], &byte, 1) == 0)  // the server closed its copy: EOF
        close(pipeEnds[0])
        rig.server.close()
    }

    @Test func descriptorReferencesTellInheritedNumbersFromNames() throws {
        #expect(try DescriptorReference(parsing: "fd:3") == .inherited(3))
        #expect(try DescriptorReference(parsing: "fd:vm-memory") == .named("vm-memory"))
        #expect(try DescriptorReference(parsing: "/dev/vfio/12") == nil)
        #expect(throws: ControlError.self) { try DescriptorReference(parsing: "fd:") }
        #expect(throws: ControlError.self) { try DescriptorReference(parsing: "fd:a/b") }
    }

    @Test func dirtyLogSetupChecksTheBitmapSize() throws {
        let rig = try Rig()
        let memfd = makeMemfd("dirty")
        defer { close(memfd) }
        #expect(ftruncate(memfd, 8) == 0)  // one word: 64 pages at most
        let tooSmall = try rig.client.execute("dirty-log-setup", ["page-size": .int(4096), "pages": .int(65)], descriptor: memfd)
        #expect(tooSmall.errorText?.contains("needs 16") == true)
        #expect(try rig.client.execute("dirty-log-setup", ["page-size": .int(4000), "pages": .int(8)], descriptor: memfd).errorText?.contains("power of two") == true)
        let ok = try rig.client.execute("dirty-log-setup", ["page-size": .int(4096), "pages": .int(64)], descriptor: memfd)
        #expect(ok["return"]?["bitmap-bytes"] == .int(8))
        #expect(rig.server.dirtyLogLayout == DirtyLogLayout(pageSize: 4096, pageCount: 64))
        #expect(rig.server.descriptors.descriptor(named: DirtyLogLayout.descriptorName) != nil)
        rig.server.close()
    }

    @Test func theDirtyBitmapIsLittleEndianWordsOneBitPerPage() {
        let layout = DirtyLogLayout(pageSize: 4096, pageCount: 70)
        #expect(layout.byteCount == 16)
        var bitmap = [UInt8](repeating: 0, count: 16)
        bitmap[0] = 0b0000_0101  // pages 0 and 2
        bitmap[7] = 0x80  // page 63: the top bit of word 0 is its last byte (little-endian)
        bitmap[8] = 0x01  // page 64
        bitmap[8] |= 0x80  // page 71: past pageCount, ignored
        #expect(layout.dirtyPages(in: bitmap) == [0, 2, 63, 64])
    }
}
