import SyncPrimitives

/// Runs one request line and returns its reply; an error reply for anything
/// refused, so a bad line never changes anything else.
struct CommandDispatcher: Sendable {
    static let commands = [
        "qmp_capabilities", "query", "cancel", "set", "switchover", "add-fd", "dirty-log-setup", "start",
    ] + VMMRequest.allCases.map(\.answer)

    let handler: any ControlHandler
    let descriptors: DescriptorTable
    let requests: VMMRequests
    let dirtyLog: LockedValue<DirtyLogLayout?>
    let lastEvent: @Sendable () -> JSONValue?
    /// nil: the transport does not wait for `start` (no `--await-start`).
    let startGate: StartGate?

    func reply(to line: [UInt8], descriptors attached: inout [Int32]) -> JSONValue {
        let request: ControlRequest
        do { request = try ControlRequest(line: line) } catch {
            return ControlMessage.error(error, id: ControlRequest.bestEffortID(of: line))
        }
        do { return ControlMessage.reply(try execute(request, &attached), id: request.id) } catch {
            return ControlMessage.error(error, id: request.id)
        }
    }

    private func execute(_ request: ControlRequest, _ attached: inout [Int32]) throws(ControlError) -> JSONValue {
        let arguments = request.arguments
        switch request.command {
        case "qmp_capabilities":  // QMP clients send it first; nothing to negotiate
            return .object([:])
        case "query":
            try expectNoArguments(request)
            return handler.query().jsonObject(lastEvent: lastEvent())
        case "cancel":
            try expectNoArguments(request)
            startGate?.cancel()
            handler.cancel()
            return .object([:])
        case "set":
            try handler.set(ControlParameters(setArguments: arguments))
            return .object([:])
        case "switchover":
            try expectNoArguments(request)
            try handler.switchover()
            return .object([:])
        case "add-fd":
            return try addDescriptor(arguments, &attached)
        case "dirty-log-setup":
            return try setUpDirtyLog(arguments, &attached)
        case "start":
            try expectNoArguments(request)
            guard let startGate else { throw .refused("start: nothing waits for it (the transport runs without --await-start)") }
            try startGate.start(table: descriptors)
            return .object([:])
        case let command where VMMRequest.answering(command) != nil:
            try requests.answer(command, arguments: arguments)
            return .object([:])
        default:
            throw .unknownCommand(request.command)
        }
    }

    private func expectNoArguments(_ request: ControlRequest) throws(ControlError) {
        if let key = request.arguments.keys.first { throw .unknownArgument(command: request.command, argument: key) }
    }

    /// `{"name": NAME}` with exactly one descriptor attached (SCM_RIGHTS).
    private func addDescriptor(_ arguments: [String: JSONValue], _ attached: inout [Int32]) throws(ControlError) -> JSONValue {
        if let key = arguments.keys.first(where: { $0 != "name" }) { throw .unknownArgument(command: "add-fd", argument: key) }
        guard let nameValue = arguments["name"] else { throw .missingArgument(command: "add-fd", argument: "name") }
        guard let name = nameValue.stringValue else {
            throw .invalidArgument(command: "add-fd", argument: "name", reason: "must be a string")
        }
        let fd = try single(attached, command: "add-fd")
        try descriptors.register(fd, as: name)
        attached = []  // the table owns it now
        return .object(["name": .string(name), "fd": .int(Int64(fd))])
    }

    /// `{"page-size": N, "pages": N}` with the bitmap's memfd attached; once per server.
    private func setUpDirtyLog(_ arguments: [String: JSONValue], _ attached: inout [Int32]) throws(ControlError) -> JSONValue {
        let layout = try DirtyLogLayout(setupArguments: arguments)
        let fd = try single(attached, command: "dirty-log-setup")
        try layout.check(fd, name: DirtyLogLayout.descriptorName)
        try descriptors.register(fd, as: DirtyLogLayout.descriptorName)
        attached = []
        dirtyLog.withLock { $0 = layout }
        return .object(["bitmap-bytes": JSONValue(layout.byteCount)])
    }

    private func single(_ attached: [Int32], command: String) throws(ControlError) -> Int32 {
        guard let fd = attached.first else { throw .descriptorMissing(command: command) }
        guard attached.count == 1 else { throw .tooManyDescriptors(command: command, count: attached.count) }
        return fd
    }
}

extension DirtyLogLayout {
    /// The descriptor table's name for the bitmap, so the CLI reaches it as `fd:dirty-log`.
    public static let descriptorName = "dirty-log"
}
