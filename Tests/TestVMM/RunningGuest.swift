import Foundation
import Glibc
import SyncPrimitives

/// How the guest runs: a real KVM vCPU, or (no usable `/dev/kvm`) a thread that
/// stores the same bytes and keeps its own dirty log.
public enum GuestMode: Sendable, CustomStringConvertible {
    case kvm
    case writerThread(reason: String)

    public var description: String {
        switch self {
        case .kvm: "kvm"
        case .writerThread(let reason): "writer thread (\(reason))"
        }
    }
}

/// The guest of the test VMM, running on its own thread in `memory` (page 0 the
/// code, pages 1… swept by `CounterSweepProgram`), pausable between two pages,
/// with a dirty log the VMM harvests.
public final class RunningGuest: Sendable {
    public let mode: GuestMode
    public let program: CounterSweepProgram
    private let loop: GuestLoop
    private let harvest: @Sendable () throws(KVMError) -> [UInt64]

    /// KVM when it works here (checked by running the guest's first page), else
    /// the writer thread. `paused`: held after that first page until `resume` or
    /// `run(untilPagesWritten:)`. `loadingCode` false: `memory` already holds the
    /// guest (migrated), which goes on from its own counter.
    public static func start(in memory: SharedMemoryFile, useKVM: Bool = true, paused: Bool = false, loadingCode: Bool = true) -> RunningGuest {
        let program = CounterSweepProgram(pageCount: memory.byteCount / CounterSweepProgram.pageSize)
        if loadingCode { memory.write(program.code, at: Int(CounterSweepProgram.entry)) }
        guard useKVM else { return writerThread(memory, program, paused: paused, reason: "KVM not wanted by this test") }
        do {
            return try kvm(memory, program, paused: paused)
        } catch {
            return writerThread(memory, program, paused: paused, reason: "\(error)")
        }
    }

    private init(mode: GuestMode, program: CounterSweepProgram, loop: GuestLoop,
                 harvest: @escaping @Sendable () throws(KVMError) -> [UInt64]) {
        self.mode = mode; self.program = program; self.loop = loop; self.harvest = harvest
    }

    deinit { loop.stop() }

    private static func kvm(_ memory: SharedMemoryFile, _ program: CounterSweepProgram, paused: Bool) throws(KVMError) -> RunningGuest {
        let vm = try KVMSystem().createVM()
        try vm.setMemoryRegion(slot: 0, guestPhysicalAddress: 0, memory: memory, logDirtyPages: true)
        let vcpu = try vm.createVCPU(id: 0)
        try vcpu.resetToRealMode(ip: CounterSweepProgram.entry)
        let step = { @Sendable () throws(KVMError) in
            let exit = try vcpu.runUntilExit()
            guard case .output(port: CounterSweepProgram.progressPort, value: _) = exit else {
                throw .unexpectedExit("\(exit)")
            }
        }
        try step()  // the first page: proof that this host runs the guest, before the thread owns the vCPU
        let pages = program.pageCount
        return RunningGuest(mode: .kvm, program: program, loop: GuestLoop(startPaused: paused) { () throws(KVMError) in try step() },
                            harvest: { () throws(KVMError) -> [UInt64] in try vm.dirtyLog(slot: 0, pageCount: pages) })
    }

    private static func writerThread(_ memory: SharedMemoryFile, _ program: CounterSweepProgram, paused: Bool, reason: String) -> RunningGuest {
        let writer = PageWriter(memory: memory, program: program)
        writer.writeNextPage()  // as the KVM guest's first page, so both count alike
        return RunningGuest(mode: .writerThread(reason: reason), program: program, loop: GuestLoop(startPaused: paused) { () throws(KVMError) in writer.writeNextPage() },
                            harvest: { () throws(KVMError) -> [UInt64] in writer.harvest() })
    }

    /// Pages written so far: the first before the loop started, then one per step.
    public var pagesWritten: Int { loop.steps + 1 }
    /// Why the guest stopped on its own, if it did.
    public var failure: String? { if case .stopped(let failure) = loop.phase { failure } else { nil } }

    /// Returns once no more guest writes happen (the vCPU is out of KVM_RUN and held).
    public func pause() { loop.pause() }
    /// Runs (a paused guest too) until `pagesWritten` reaches `pages`, then holds it paused.
    public func run(untilPagesWritten pages: Int) { loop.run(untilSteps: pages - 1) }
    /// Waits until `pagesWritten` reaches `pages`, at most `seconds`; true if it did.
    public func waitForPagesWritten(_ pages: Int, seconds: Double) -> Bool {
        loop.waitForSteps(pages - 1, deadline: monotonicSeconds() + seconds)
    }
    public var isPaused: Bool { loop.phase == .paused }
    public func resume() { loop.resume() }
    public func stop() { loop.stop() }

    /// The pages written since the previous harvest (EVENTS.md's word layout).
    public func harvestDirtyLog() throws(KVMError) -> [UInt64] { try harvest() }
}

/// The writer thread's guest: the bytes `CounterSweepProgram` stores, page by
/// page (the counter in page 0 at each sweep's start), and its own dirty log (a
/// bit set after each page is written).
final class PageWriter: Sendable {
    private struct State { var nextStep = 0; var sweep: UInt16 = 0; var dirty: [UInt64] }
    private let memory: SharedMemoryFile
    private let program: CounterSweepProgram
    private let state: LockedValue<State>

    init(memory: SharedMemoryFile, program: CounterSweepProgram) {
        self.memory = memory
        self.program = program
        state = LockedValue(State(dirty: [UInt64](repeating: 0, count: (program.pageCount + 63) / 64)))
    }

    func writeNextPage() {
        let index = state.withLock { $0.nextStep } % program.dataPages
        if index == 0 {  // a sweep begins: the counter from page 0, plus one, back to page 0
            let sweep = memory.loadUInt16(at: CounterSweepProgram.counterOffset) &+ 1
            memory.storeUInt16(sweep, at: CounterSweepProgram.counterOffset)
            state.withLock { s in s.sweep = sweep; s.dirty[0] |= 1 }
        }
        let page = CounterSweepProgram.firstDataPage + index
        memory.write(CounterSweepProgram.page(page, afterSweep: Int(state.withLock { $0.sweep })), at: page * CounterSweepProgram.pageSize)
        state.withLock { s in
            s.nextStep += 1
            s.dirty[page / 64] |= 1 << UInt64(page % 64)
        }
    }

    func harvest() -> [UInt64] {
        state.withLock { s in
            defer { s.dirty = [UInt64](repeating: 0, count: s.dirty.count) }
            return s.dirty
        }
    }
}
