import SystemErrno
import SystemPackage

/// Why the test VMM could not set up or run its KVM guest. Each names the step
/// (the ioctl, the mapping) and the kernel's errno, so "no KVM here" reads
/// differently from "KVM refused this guest".
public enum KVMError: Error, Sendable, CustomStringConvertible {
    /// `/dev/kvm` could not be opened (missing, no permission).
    case unavailable(path: String, errno: Errno)
    /// KVM_GET_API_VERSION answered something other than the stable API (12).
    case apiVersion(Int32)
    case ioctl(String, errno: Errno)
    case mapping(String, errno: Errno)
    /// KVM_RUN returned for a reason this guest never causes (its code is only
    /// `out` and stores): the guest or its setup is broken.
    case unexpectedExit(String)

    public var description: String {
        switch self {
        case .unavailable(let path, let errno): "cannot open \(path): \(errno.explanation)"
        case .apiVersion(let version): "KVM API version \(version); this VMM speaks version 12"
        case .ioctl(let name, let errno): "\(name) failed: \(errno.explanation)"
        case .mapping(let what, let errno): "cannot map \(what): \(errno.explanation)"
        case .unexpectedExit(let exit): "the vCPU exited with \(exit); the guest only stores and does `out 0x10`"
        }
    }
}
