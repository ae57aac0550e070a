import COpenSSL

/// SHA-256 through libcrypto (fast enough to hash 256 MiB in a debug build).
final class SHA256Digest {
    private let ctx: OpaquePointer
    init() {
        ctx = EVP_MD_CTX_new()
        EVP_DigestInit_ex(ctx, EVP_sha256(), nil)
    }
    deinit { EVP_MD_CTX_free(ctx) }
    func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { _ = EVP_DigestUpdate(ctx, $0.baseAddress, $0.count) }
    }
    func finish() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &out, &len)
        return out
    }
}
