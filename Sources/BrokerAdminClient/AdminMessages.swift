import BrokerProtocol

// Conversions between the admin API's wire messages (admin.proto) and the
// broker's snapshot types, in both directions: the server encodes snapshots, and
// pagebrokerctl decodes them back so its JSON uses the snapshots' documented keys.
//
// Counts are `Int` in the broker and `uint64` on the wire; they are never
// negative, and clamping keeps a corrupt or hostile value from trapping.

extension BrokerStatus {
    /// The status as sent on the admin socket.
    public var wireMessage: Pagebroker_V1_AdminStatus {
        var message = Pagebroker_V1_AdminStatus()
        message.version = self.version
        message.uptimeSeconds = self.uptimeSeconds
        message.listening = self.listening
        message.tenants = UInt64(clamping: self.tenants)
        message.guests = UInt64(clamping: self.guests)
        message.guestsConnected = UInt64(clamping: self.guestsConnected)
        message.sessions = UInt64(clamping: self.sessions)
        message.reclaimableBytes = UInt64(clamping: self.reclaimableBytes)
        message.reportsOk = UInt64(clamping: self.reportsOK)
        message.reportsFailed = UInt64(clamping: self.reportsFailed)
        message.shuttingDown = self.shuttingDown
        return message
    }

    /// A status received on the admin socket.
    public init(_ message: Pagebroker_V1_AdminStatus) {
        self.init(
            version: message.version,
            uptimeSeconds: message.uptimeSeconds,
            listening: message.listening,
            tenants: Int(clamping: message.tenants),
            guests: Int(clamping: message.guests),
            guestsConnected: Int(clamping: message.guestsConnected),
            sessions: Int(clamping: message.sessions),
            reclaimableBytes: Int(clamping: message.reclaimableBytes),
            reportsOK: Int(clamping: message.reportsOk),
            reportsFailed: Int(clamping: message.reportsFailed),
            shuttingDown: message.shuttingDown
        )
    }
}

extension TenantSnapshot {
    /// The tenant's figures as sent on the admin socket.
    public var wireMessage: Pagebroker_V1_TenantStatus {
        var message = Pagebroker_V1_TenantStatus()
        message.tenant = self.tenant
        message.guests = UInt64(clamping: self.guests)
        message.guestsConnected = UInt64(clamping: self.guestsConnected)
        message.reclaimableBytes = UInt64(clamping: self.reclaimableBytes)
        message.reportsOk = UInt64(clamping: self.reportsOK)
        message.reportsFailed = UInt64(clamping: self.reportsFailed)
        for (reason, count) in self.reportsFailedByReason {
            message.reportsFailedByReason[UInt32(clamping: reason)] = UInt64(clamping: count)
        }
        message.bytesReported = UInt64(clamping: self.bytesReported)
        message.bytesReused = UInt64(clamping: self.bytesReused)
        message.paused = self.paused
        message.residentBytes = UInt64(clamping: self.residentBytes)
        message.discardedBytes = UInt64(clamping: self.discardedBytes)
        for (name, count) in self.discardFailuresByErrno {
            message.discardFailuresByErrno[name] = UInt64(clamping: count)
        }
        return message
    }

    /// A tenant's figures received on the admin socket.
    public init(_ message: Pagebroker_V1_TenantStatus) {
        self.tenant = message.tenant
        self.guests = Int(clamping: message.guests)
        self.guestsConnected = Int(clamping: message.guestsConnected)
        self.reclaimableBytes = Int(clamping: message.reclaimableBytes)
        self.reportsOK = Int(clamping: message.reportsOk)
        self.reportsFailed = Int(clamping: message.reportsFailed)
        var byReason: [Int: Int] = [:]
        for (reason, count) in message.reportsFailedByReason {
            byReason[Int(reason)] = Int(clamping: count)
        }
        self.reportsFailedByReason = byReason
        self.bytesReported = Int(clamping: message.bytesReported)
        self.bytesReused = Int(clamping: message.bytesReused)
        self.paused = message.paused
        self.residentBytes = Int(clamping: message.residentBytes)
        self.discardedBytes = Int(clamping: message.discardedBytes)
        self.discardFailuresByErrno = message.discardFailuresByErrno.mapValues { Int(clamping: $0) }
    }
}

extension GuestSnapshot {
    /// The guest's figures as sent on the admin socket.
    public var wireMessage: Pagebroker_V1_GuestStatus {
        var message = Pagebroker_V1_GuestStatus()
        message.guest = self.guest
        message.tenant = self.tenant
        message.connected = self.connected
        message.reclaimableBytes = UInt64(clamping: self.reclaimableBytes)
        message.frames = UInt64(clamping: self.frames)
        message.ranges = UInt64(clamping: self.ranges)
        message.pageSize = UInt64(clamping: self.pageSize)
        message.syncing = self.syncing
        message.memoryAttached = self.memoryAttached
        if let resident = self.residentBytes { message.residentBytes = UInt64(clamping: resident) }
        message.discardedBytes = UInt64(clamping: self.discardedBytes)
        for (name, count) in self.discardFailuresByErrno {
            message.discardFailuresByErrno[name] = UInt64(clamping: count)
        }
        message.discardInhibitedBy = self.discardInhibitedBy ?? ""
        message.paused = self.paused
        return message
    }

    /// A guest's figures received on the admin socket.
    public init(_ message: Pagebroker_V1_GuestStatus) {
        self.guest = message.guest
        self.tenant = message.tenant
        self.connected = message.connected
        self.reclaimableBytes = Int(clamping: message.reclaimableBytes)
        self.frames = Int(clamping: message.frames)
        self.ranges = Int(clamping: message.ranges)
        self.pageSize = Int(clamping: message.pageSize)
        self.syncing = message.syncing
        self.memoryAttached = message.memoryAttached
        self.residentBytes = message.hasResidentBytes ? Int(clamping: message.residentBytes) : nil
        self.discardedBytes = Int(clamping: message.discardedBytes)
        self.discardFailuresByErrno = message.discardFailuresByErrno.mapValues { Int(clamping: $0) }
        self.discardInhibitedBy = message.discardInhibitedBy.isEmpty ? nil : message.discardInhibitedBy
        self.paused = message.paused
    }
}

extension AdminError {
    /// The error as sent on the admin socket.
    public var wireMessage: Pagebroker_V1_AdminError {
        var message = Pagebroker_V1_AdminError()
        message.code = self.code.wireCode
        message.message = self.message
        return message
    }

    /// An error received on the admin socket. A code this version does not know
    /// (a newer broker's) becomes ``Code/internalError`` with the number in the text,
    /// so the caller still fails rather than mistaking it for success.
    public init(_ message: Pagebroker_V1_AdminError) {
        switch message.code {
        case .unknownTenant: self.init(.unknownTenant, message.message)
        case .permissionDenied: self.init(.permissionDenied, message.message)
        case .badRequest: self.init(.badRequest, message.message)
        case .internalError: self.init(.internalError, message.message)
        case .unspecified, .UNRECOGNIZED:
            self.init(.internalError, "error code \(message.code.rawValue): \(message.message)")
        }
    }
}

extension AdminError.Code {
    /// The admin protocol's number for this code.
    public var wireCode: Pagebroker_V1_AdminErrorCode {
        switch self {
        case .unknownTenant: .unknownTenant
        case .permissionDenied: .permissionDenied
        case .badRequest: .badRequest
        default: .internalError
        }
    }
}

extension Pagebroker_V1_AdminResponse {
    /// A response carrying `error`.
    public static func failure(_ error: AdminError) -> Self {
        var response = Self()
        response.error = error.wireMessage
        return response
    }
}
