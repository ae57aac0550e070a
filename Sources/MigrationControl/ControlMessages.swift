/// One parsed request line: `{"execute": NAME, "arguments": {...}, "id": ANY}`.
struct ControlRequest: Sendable, Equatable {
    var command: String
    var arguments: [String: JSONValue]
    /// Echoed back verbatim so a client can match replies to requests.
    var id: JSONValue?

    init(line: some Collection<UInt8>) throws(ControlError) {
        guard case .object(let object) = try JSONValue.parse(line) else {
            throw .malformedRequest("expected a JSON object")
        }
        guard case .string(let command)? = object["execute"] else {
            throw .malformedRequest("expected \"execute\" with a command name")
        }
        if let extra = object.keys.first(where: { !["execute", "arguments", "id"].contains($0) }) {
            throw .malformedRequest("unexpected member \"\(extra)\"")
        }
        switch object["arguments"] {
        case nil: arguments = [:]
        case .object(let a)?: arguments = a
        default: throw .malformedRequest("\"arguments\" must be an object")
        }
        self.command = command
        id = object["id"]
    }

    /// The id of a line that failed to parse as a request, if it has one (QMP does this too).
    static func bestEffortID(of line: some Collection<UInt8>) -> JSONValue? {
        (try? JSONValue.parse(line))?["id"]
    }
}

/// The shapes on the wire.
enum ControlMessage {
    static func reply(_ value: JSONValue, id: JSONValue?) -> JSONValue {
        var o: [String: JSONValue] = ["return": value]
        if let id { o["id"] = id }
        return .object(o)
    }

    static func error(_ error: ControlError, id: JSONValue?) -> JSONValue {
        var o: [String: JSONValue] = ["error": .object(["class": .string(error.errorClass), "desc": .string(error.description)])]
        if let id { o["id"] = id }
        return .object(o)
    }

    static func event(_ name: String, data: [String: JSONValue], at time: EventTimestamp) -> JSONValue {
        .object(["event": .string(name), "data": .object(data), "timestamp": time.jsonObject])
    }

    /// Sent once on connect, as QMP does, so a client knows what it talks to.
    static func greeting(commands: [String]) -> JSONValue {
        .object(["QMP": .object([
            "version": .object(["vfio-migrate": .object(["control-protocol": .int(1)])]),
            "capabilities": .array([]),
            "commands": .array(commands.map { .string($0) }),
        ])])
    }
}
