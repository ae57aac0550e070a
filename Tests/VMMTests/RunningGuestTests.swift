import Testing
import TestVMM

extension KVMGuestSuites {
    /// The test VMM's guest on its own, before any migration relies on it: the
    /// real-mode program stores what `CounterSweepProgram.page` says, the dirty log
    /// names exactly the pages written since the last harvest, and the writer thread
    /// (the no-KVM fallback) stores the very same bytes.
    @Suite struct RunningGuestTests {
        static let pages = 16
        static var dataPages: Int { pages - CounterSweepProgram.firstDataPage }

        static func guest(useKVM: Bool = true) throws -> (RunningGuest, SharedMemoryFile) {
            let memory = try SharedMemoryFile(name: "guest-test", byteCount: pages * CounterSweepProgram.pageSize)
            let guest = RunningGuest.start(in: memory, useKVM: useKVM, paused: true)
            print("TestVMM mode: \(guest.mode)")
            return (guest, memory)
        }

        static func page(_ bytes: [UInt8], _ p: Int) -> [UInt8] {
            Array(bytes[(p * CounterSweepProgram.pageSize)..<((p + 1) * CounterSweepProgram.pageSize)])
        }

        @Test func twoSweepsLeaveThePatternAndTheLogNamesExactlyThePagesWritten() throws {
            let (guest, memory) = try Self.guest()
            defer { guest.stop() }
            guest.run(untilPagesWritten: 2 * Self.dataPages)
            #expect(guest.failure == nil, "\(guest.failure ?? "")")
            let bytes = memory.snapshot()
            #expect(Array(bytes.prefix(guest.program.code.count)) == guest.program.code, "page 0 keeps the code")
            let stale = (1..<Self.pages).filter { Self.page(bytes, $0) != CounterSweepProgram.page($0, afterSweep: 2) }
            #expect(stale == [], "pages without sweep 2's pattern")
            #expect(CounterSweepProgram.counter(in: bytes) == 2)
            // Every page: 0 (the counter; the code was loaded by the VMM, which KVM does not log), 1…15.
            #expect(try guest.harvestDirtyLog() == [0xFFFF])
            guest.run(untilPagesWritten: 2 * Self.dataPages + 3)
            #expect(try guest.harvestDirtyLog() == [0b1111], "sweep 3 has written its counter and pages 1, 2 and 3 since the last harvest")
            #expect(try guest.harvestDirtyLog() == [0], "a paused guest dirties nothing")
        }

        @Test(.enabled(if: (try? KVMSystem()) != nil, "needs a usable /dev/kvm"))
        func theWriterThreadStoresWhatTheKVMGuestStores() throws {
            let (kvm, kvmMemory) = try Self.guest()
            let (writer, writerMemory) = try Self.guest(useKVM: false)
            defer { kvm.stop(); writer.stop() }
            let halfway = Self.dataPages + Self.dataPages / 2
            kvm.run(untilPagesWritten: halfway)
            writer.run(untilPagesWritten: halfway)
            #expect("\(kvm.mode)" == "kvm")
            #expect(differingPages(kvmMemory.snapshot(), writerMemory.snapshot()) == [])
        }
    }
}
