internal import COpenSSL

/// A server's ALPN preference, reached from OpenSSL's select callback through its
/// `arg`; owned by the `TLSContext` (so it lives as long as the SSL_CTX), immutable.
final class ApplicationProtocolPreference: Sendable {
    let identifiers: [[UInt8]]
    init(_ names: [String]) { identifiers = names.map { Array($0.utf8) } }

    /// The index into `offered` (RFC 7301 wire form: length-prefixed strings) of our
    /// most preferred identifier the client offered; nil when none (or a malformed list).
    func choose(offered: UnsafeBufferPointer<UInt8>) -> (offset: Int, length: Int)? {
        var entries: [(offset: Int, bytes: ArraySlice<UInt8>)] = []
        var i = 0
        while i < offered.count {
            let length = Int(offered[i])
            guard length > 0, i + 1 + length <= offered.count else { return nil }
            entries.append((i + 1, ArraySlice(offered[(i + 1)..<(i + 1 + length)])))
            i += 1 + length
        }
        for wanted in identifiers {
            if let hit = entries.first(where: { $0.bytes.elementsEqual(wanted) }) { return (hit.offset, wanted.count) }
        }
        return nil
    }

    /// RFC 7301 wire form of `names` (each at most 255 bytes, checked by the caller).
    static func wireForm(_ names: [String]) -> [UInt8] {
        names.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
    }
}

/// OpenSSL's ALPN select callback: our preferred offered identifier, or NOACK (no
/// protocol selected: the session is whatever "no ALPN" means), never a fatal alert.
let applicationProtocolSelectCallback: @convention(c) (
    OpaquePointer?, UnsafeMutablePointer<UnsafePointer<UInt8>?>?, UnsafeMutablePointer<UInt8>?,
    UnsafePointer<UInt8>?, UInt32, UnsafeMutableRawPointer?
) -> Int32 = { _, out, outLength, offered, offeredLength, arg in
    guard let out, let outLength, let offered, let arg else { return SSL_TLSEXT_ERR_NOACK }
    let preference = Unmanaged<ApplicationProtocolPreference>.fromOpaque(arg).takeUnretainedValue()
    guard let (offset, length) = preference.choose(offered: UnsafeBufferPointer(start: offered, count: Int(offeredLength))) else {
        return SSL_TLSEXT_ERR_NOACK
    }
    out.pointee = offered + offset  // into the client's list, which outlives the callback
    outLength.pointee = UInt8(length)
    return SSL_TLSEXT_ERR_OK
}
