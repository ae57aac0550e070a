/// The guest: 16-bit real-mode x86, hand-assembled, loaded at guest-physical 0
/// (page 0) and entered at CS:IP = 0:0. It sweeps over every other page of guest
/// memory forever; sweep k fills the first `wordsPerPage` words of each page with
/// the 16-bit word k and then stores the page's own segment (page number × 0x100)
/// in its first word, so every page says which page and which sweep wrote it
/// (the dirty log counts pages, so one store would do). After each page
/// it does `out 0x10, al`, which returns KVM_RUN to the VMM: the VMM sees
/// progress and can pause the vCPU between two pages.
///
/// The sweep counter lives in memory (page 0, `counterOffset`), not only in a
/// register: a vCPU entered at 0:0 over migrated memory continues the count
/// where the source stopped (the transport moves memory, not vCPU registers).
///
/// Segment stepping reaches 1 MiB at most: page p is segment p × 0x100 (phys
/// p × 4096), the last page of a 1 MiB guest is segment 0xFF00.
public struct CounterSweepProgram: Sendable {
    public static let pageSize = 4096
    /// The port of the `out` after every page.
    public static let progressPort: UInt16 = 0x10
    /// Where the code is loaded and entered (guest-physical, = IP with CS = 0).
    public static let entry: UInt64 = 0
    /// Page 0 holds the code and the counter; the sweep writes pages 1 … pageCount-1.
    public static let firstDataPage = 1
    /// The 16-bit sweep counter, in page 0 after the code (DS = 0).
    public static let counterOffset = 0x0FF0
    /// Words stored per page. Real mode runs in KVM's instruction emulator on a
    /// nested host (this one: ~0.6 µs per stored word, ~20 µs per exit), so a
    /// page gets 64 bytes, not 4096: a sweep takes milliseconds, not a second.
    public static let wordsPerPage = 32

    public let pageCount: Int

    /// `pageCount` pages of guest memory, 2 to 256 (1 MiB, what real mode reaches).
    public init(pageCount: Int) {
        precondition((2...256).contains(pageCount), "the real-mode guest needs 2 to 256 pages (at most 1 MiB)")
        self.pageCount = pageCount
    }

    public var dataPages: Int { pageCount - Self.firstDataPage }

    /// The machine code. Offsets in the comments; jumps are rel8 from the next instruction.
    public var code: [UInt8] {
        let pages = UInt16(dataPages)
        let counter = [UInt8(Self.counterOffset & 0xFF), UInt8(Self.counterOffset >> 8)]
        return [0xA1] + counter + [             // 00: mov ax, [0x0FF0]     ; the sweep counter, from memory
            0x40,                              // 03: inc ax               ; next sweep
            0xA3] + counter + [                // 04: mov [0x0FF0], ax     ; back to memory
            0xBB, 0x00, 0x01,                  // 07: mov bx, 0x0100       ; bx = segment of page 1
            0xBE, UInt8(pages & 0xFF), UInt8(pages >> 8),  // 0A: mov si, dataPages ; pages left in this sweep
            // page:
            0x8E, 0xC3,                        // 0D: mov es, bx           ; es:0 = this page
            0x31, 0xFF,                        // 0F: xor di, di           ; from its first byte
            0xB9, UInt8(Self.wordsPerPage), 0x00,  // 11: mov cx, wordsPerPage
            0xF3, 0xAB,                        // 14: rep stosw            ; es:[di++] = ax, cx times (DF = 0)
            0x26, 0x89, 0x1E, 0x00, 0x00,      // 16: mov es:[0x0000], bx  ; first word = the page's segment
            0xE6, UInt8(Self.progressPort),    // 1B: out 0x10, al         ; exit to the VMM: one page done
            0x81, 0xC3, 0x00, 0x01,            // 1D: add bx, 0x0100       ; next page (4096 bytes on)
            0x4E,                              // 21: dec si
            0x75, 0xE9,                        // 22: jnz page             ; 0x0D - 0x24 = -0x17
            0xEB, 0xDA,                        // 24: jmp 0                ; next sweep: 0x00 - 0x26 = -0x26
        ]
    }

    /// The sweep counter as stored in `memory` (page 0 of the guest).
    public static func counter(in memory: [UInt8]) -> Int {
        Int(memory[counterOffset]) | Int(memory[counterOffset + 1]) << 8
    }

    /// The page `page` as sweep `sweep` leaves it: what the writer thread stores
    /// when there is no KVM, byte for byte what the code above stores.
    public static func page(_ page: Int, afterSweep sweep: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: pageSize)
        let counter = UInt16(truncatingIfNeeded: sweep)
        for i in stride(from: 0, to: 2 * wordsPerPage, by: 2) {
            bytes[i] = UInt8(counter & 0xFF)
            bytes[i + 1] = UInt8(counter >> 8)
        }
        let segment = UInt16(truncatingIfNeeded: page * 0x100)
        bytes[0] = UInt8(segment & 0xFF)
        bytes[1] = UInt8(segment >> 8)
        return bytes
    }
}
