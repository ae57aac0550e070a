internal import COpenSSL

/// Incremental SHA-256 (OpenSSL libcrypto EVP).
/// `finalize()` returns the digest and resets the object for the next stream.
public final class SHA256Digest {
    public static let size = 32
    private let context: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed: out of memory") }
        self.context = context
        start()
    }

    deinit { EVP_MD_CTX_free(context) }

    private func start() {
        // Only fails if libcrypto itself is broken; nothing sensible to recover to.
        guard EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else { fatalError("EVP_DigestInit_ex(SHA-256) failed") }
    }

    public func update(_ bytes: [UInt8]) { update(bytes[...]) }

    public func update(_ bytes: ArraySlice<UInt8>) {
        bytes.withUnsafeBytes { raw in
            guard raw.count > 0 else { return }
            guard EVP_DigestUpdate(context, raw.baseAddress, raw.count) == 1 else { fatalError("EVP_DigestUpdate failed") }
        }
    }

    public func finalize() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: SHA256Digest.size)
        var length: UInt32 = 0
        guard EVP_DigestFinal_ex(context, &digest, &length) == 1, length == UInt32(SHA256Digest.size) else {
            fatalError("EVP_DigestFinal_ex failed")
        }
        start()
        return digest
    }

    /// SHA-256 of one buffer.
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        let digest = SHA256Digest()
        digest.update(bytes)
        return digest.finalize()
    }
}

/// Per-thread: owns C state that one thread at a time may use; never shared.
@available(*, unavailable)
extension SHA256Digest: Sendable {}
