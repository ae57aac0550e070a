// `set` arguments to typed values, and typed values back to reply objects.
// The ranges are the CLI's (--downtime-ms, --bandwidth, --max-iterations), so
// a value the socket accepts is one the command line would have accepted.

extension ControlParameters {
    static let maxDowntimeMs = 365.0 * 86_400 * 1000
    static let iterationRange = 1...1_000_000

    /// Strict: an unknown key is an error, so a typo never silently does nothing.
    init(setArguments arguments: [String: JSONValue]) throws(ControlError) {
        self.init()
        for (key, value) in arguments {
            switch key {
            case "downtime-ms": downtimeMs = try Self.downtime(value)
            case "bandwidth": bandwidth = try Self.bandwidth(value)
            case "max-iterations": maxIterations = try Self.iterations(value)
            default: throw .unknownArgument(command: "set", argument: key)
            }
        }
        if isEmpty { throw .missingArgument(command: "set", argument: "downtime-ms, bandwidth or max-iterations") }
    }

    private static func downtime(_ value: JSONValue) throws(ControlError) -> Double {
        guard let ms = value.numberValue else { throw invalid("downtime-ms", "must be a number of milliseconds") }
        guard ms.isFinite, ms > 0, ms <= maxDowntimeMs else {
            throw invalid("downtime-ms", "must be above 0 and at most \(Int(maxDowntimeMs)) ms")
        }
        return ms
    }

    private static func bandwidth(_ value: JSONValue) throws(ControlError) -> BandwidthLimit {
        if value == .string("unlimited") { return .unlimited }
        guard let rate = value.intValue else {
            throw invalid("bandwidth", "must be an integer number of bytes per second or \"unlimited\"")
        }
        guard rate > 0 else { throw invalid("bandwidth", "must be above 0 (use \"unlimited\" for no cap)") }
        return .bytesPerSecond(UInt64(rate))
    }

    private static func iterations(_ value: JSONValue) throws(ControlError) -> Int {
        guard let count = value.intValue else { throw invalid("max-iterations", "must be an integer") }
        guard iterationRange.contains(Int(count)) else {
            throw invalid("max-iterations", "must be in \(iterationRange.lowerBound)...\(iterationRange.upperBound)")
        }
        return Int(count)
    }

    private static func invalid(_ argument: String, _ reason: String) -> ControlError {
        .invalidArgument(command: "set", argument: argument, reason: reason)
    }

    /// The given values only, in the argument spelling.
    var jsonObject: JSONValue {
        var o: [String: JSONValue] = [:]
        if let downtimeMs { o["downtime-ms"] = .double(downtimeMs) }
        switch bandwidth {
        case .unlimited?: o["bandwidth"] = .string("unlimited")
        case .bytesPerSecond(let rate)?: o["bandwidth"] = JSONValue(rate)
        case nil: break
        }
        if let maxIterations { o["max-iterations"] = JSONValue(maxIterations) }
        return .object(o)
    }
}

extension ControlStatus {
    /// `last-event` is the server's to add: it knows what it last pushed.
    func jsonObject(lastEvent: JSONValue?) -> JSONValue {
        .object([
            "phase": .string(phase),
            "iteration": JSONValue(iteration),
            "raw-bytes": JSONValue(rawBytes),
            "wire-bytes": JSONValue(wireBytes),
            "bytes-per-second": .double(bytesPerSecond),
            "pending-bytes": JSONValue(pendingBytes),
            "dirty-pages": JSONValue(dirtyPages),
            "eta-seconds": JSONValue(etaSeconds),
            "connection": connection.map(JSONValue.string) ?? .null,
            "outage-seconds": JSONValue(outageSeconds),
            "parameters": parameters.jsonObject,
            "last-event": lastEvent ?? .null,
        ])
    }
}
