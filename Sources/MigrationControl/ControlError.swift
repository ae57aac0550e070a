import Glibc

/// Everything the control socket can refuse, each naming its cause. Setting-up
/// errors are thrown to the CLI; request errors become a QMP error reply.
public enum ControlError: Error, Equatable, Sendable, CustomStringConvertible {
    // Setting up the socket
    case invalidAddress(String, reason: String)
    case pathIsNotASocket(path: String)
    case socketInUse(path: String)
    case notAUnixStreamSocket(descriptor: Int32, reason: String)
    case systemCall(operation: String, errno: Int32)

    // One request
    case malformedRequest(String)
    case lineTooLong(limit: Int)
    case unknownCommand(String)
    case missingArgument(command: String, argument: String)
    case unknownArgument(command: String, argument: String)
    case invalidArgument(command: String, argument: String, reason: String)
    case descriptorMissing(command: String)
    case tooManyDescriptors(command: String, count: Int)
    case descriptorsTruncated
    case invalidDescriptorName(String, reason: String)
    case descriptorNameInUse(String)
    case unknownDescriptor(String)
    case unsuitableDescriptor(name: String, reason: String)
    case noPendingRequest(String)
    /// The engine refused a valid request (e.g. `set` after switch-over).
    case refused(String)

    // Connections
    case anotherControllerConnected
    case peerNotPermitted(uid: UInt32, pid: Int32, ownerUID: UInt32)
    case serverClosed

    /// QMP's error class: clients switch on it, the description is for people.
    public var errorClass: String {
        if case .unknownCommand = self { return "CommandNotFound" }
        return "GenericError"
    }

    public var description: String {
        switch self {
        case let .invalidAddress(text, reason): return "control address '\(text)': \(reason)"
        case let .pathIsNotASocket(path): return "\(path) exists and is not a socket; refusing to replace it"
        case let .socketInUse(path): return "\(path): another process listens on this control socket"
        case let .notAUnixStreamSocket(fd, reason): return "control descriptor \(fd): \(reason)"
        case let .systemCall(operation, err): return "\(operation): \(String(cString: strerror(err)))"
        case let .malformedRequest(why): return "malformed request: \(why)"
        case let .lineTooLong(limit): return "request line longer than \(limit) bytes; discarded"
        case let .unknownCommand(name): return "unknown command '\(name)'"
        case let .missingArgument(command, argument): return "\(command): missing argument '\(argument)'"
        case let .unknownArgument(command, argument): return "\(command): unknown argument '\(argument)'"
        case let .invalidArgument(command, argument, reason): return "\(command): '\(argument)' \(reason)"
        case let .descriptorMissing(command): return "\(command): no descriptor came with the request (send it with SCM_RIGHTS)"
        case let .tooManyDescriptors(command, count): return "\(command): expected one descriptor, got \(count)"
        case .descriptorsTruncated: return "too many descriptors in one message; all of them were closed"
        case let .invalidDescriptorName(name, reason): return "descriptor name '\(name)': \(reason)"
        case let .descriptorNameInUse(name): return "a descriptor named '\(name)' is already registered"
        case let .unknownDescriptor(name): return "no descriptor named '\(name)'"
        case let .unsuitableDescriptor(name, reason): return "descriptor '\(name)': \(reason)"
        case let .noPendingRequest(command): return "\(command): nothing is waiting for it"
        case let .refused(why): return why
        case .anotherControllerConnected: return "another controller is connected; one at a time"
        case let .peerNotPermitted(uid, pid, owner): return "permission denied: peer uid \(uid) (pid \(pid)) is not the owner uid \(owner)"
        case .serverClosed: return "the control server is closed"
        }
    }
}
