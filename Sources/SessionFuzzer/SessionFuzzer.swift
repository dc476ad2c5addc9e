import Broker
import BrokerAdminClient
import BrokerProtocol
import Synchronization

#if !FUZZING
import Foundation
#endif

/// libFuzzer entry point for a broker session: one input is one guest's session, driven through
/// the real ``SessionStateMachine``, ``BrokerCore`` and its `Ledger`, beside a bystander guest of
/// another tenant.
///
/// Input layout:
/// - byte 0: the clock step between frames (so timeouts and heartbeats are reachable);
/// - byte 1: flags. Bit 0: connect the bystander first, at the protocol's largest pool and with
///   all of it discarded, so the cross-tenant sums start at their limits. Bit 1: after the
///   frames, sync the whole announced pool. Bit 2: after that, report the largest aligned
///   block at frame 0. Bit 3: pause the guest's tenant (reports get `tenant_paused`);
/// - bytes 2 ..< 31: the hello override. Byte 2 is a mask; each set bit replaces a field of the
///   session's first `ClientHello` (or of a default hello put first when the stream does not
///   start with one) with the raw little-endian bytes that follow, so every numeric field is
///   reached over its whole range without the fuzzer having to discover protobuf varints:
///   bit 0 `protocol_version` (bytes 3 ..< 7), bit 1 `page_size` (7 ..< 11), bit 2
///   `total_pages` (11 ..< 19), bit 3 `min_order` (19 ..< 23), bit 4 `max_order` (23 ..< 27),
///   bit 5 `max_frame_size` (27 ..< 31). A mask of 0 leaves the stream as sent;
/// - the rest: the byte stream the guest sent, cut into frames by the real `FrameParser`.
///
/// Built with `-DFUZZING` libFuzzer supplies `main`; a normal build gets the reproducer `main`
/// below.
@_cdecl("LLVMFuzzerTestOneInput")
public func sessionFuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    SessionFuzzCase(UnsafeRawBufferPointer(start: data, count: size)).run()
    return 0
}

/// A session control the fuzz case owns: the core's replacement and shutdown calls are recorded
/// and applied to the machine by the case itself, on its one thread.
final class FuzzSessionControl: SessionControl {
    func replaced() {}
    func shutdown() {}
}

/// Drives one session through one input and checks what must hold whatever the guest sends:
///
/// - the machine never accounts an invalid report, answers each accounted report once with its
///   own seq, sends nothing after closing, and every frame it sends fits the frame size in force;
/// - the core never traps (an overflow in a sum is a crash libFuzzer reports), its ledger's
///   invariants hold after every step, and `status()`, `tenants()` and `guests()` can be read;
/// - a session the core admitted never gets `backend_failed` for a valid sync, reuse or report:
///   every accepted hello describes a pool the ledger can account;
/// - the bystander's figures are untouched by anything the fuzzed guest does.
struct SessionFuzzCase {
    private struct HelloOverride {
        var mask: UInt8 = 0
        var protocolVersion: UInt32 = 0
        var pageSize: UInt32 = 0
        var totalPages: UInt64 = 0
        var minOrder: UInt32 = 0
        var maxOrder: UInt32 = 0
        var maxFrameSize: UInt32 = 0

        func apply(to hello: inout Pagebroker_V1_ClientHello) {
            if self.mask & 1 != 0 { hello.protocolVersion = self.protocolVersion }
            if self.mask & 2 != 0 { hello.pageSize = self.pageSize }
            if self.mask & 4 != 0 { hello.totalPages = self.totalPages }
            if self.mask & 8 != 0 { hello.minOrder = self.minOrder }
            if self.mask & 16 != 0 { hello.maxOrder = self.maxOrder }
            if self.mask & 32 != 0 { hello.maxFrameSize = self.maxFrameSize }
        }
    }

    private static let headerSize = 31
    private let step: Duration
    private let flags: UInt8
    private let override: HelloOverride
    private let frames: [Pagebroker_V1_Frame]

    init(_ input: UnsafeRawBufferPointer) {
        self.step = .milliseconds(Int64(input.first ?? 0) * 100)
        self.flags = input.count > 1 ? input[1] : 0
        let bytes = Array(input)
        func integer<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            var value: T = 0
            for index in 0..<(T.bitWidth / 8) where offset + index < bytes.count {
                value |= T(bytes[offset + index]) << (8 * index)
            }
            return value
        }
        var override = HelloOverride()
        if bytes.count > 2 {
            override.mask = bytes[2]
            override.protocolVersion = integer(3, UInt32.self)
            override.pageSize = integer(7, UInt32.self)
            override.totalPages = integer(11, UInt64.self)
            override.minOrder = integer(19, UInt32.self)
            override.maxOrder = integer(23, UInt32.self)
            override.maxFrameSize = integer(27, UInt32.self)
        }
        self.override = override
        var frames: [Pagebroker_V1_Frame] = []
        if bytes.count > Self.headerSize {
            let stream = Array(bytes[Self.headerSize...])
            let parser = FrameParser(maxFrameSize: Int(WireProtocol.defaultMaxFrameSize))
            var offset = 0
            let span = stream.span.bytes
            while let parsed = try? parser.parseAtEndOfStream(span.extracting(offset...)) {
                frames.append(parsed.0)
                offset += parsed.1
            }
        }
        self.frames = frames
    }

    func run() {
        var now = Duration.zero
        let clock = FuzzClock()
        let core = BrokerCore(
            policies: PolicySet(tenants: ["t": TenantPolicy(paused: self.flags & 8 != 0), "bystander": TenantPolicy()]),
            clock: { clock.now }
        )
        let identity = GuestIdentity(trustDomain: "fuzz", tenant: "t", guest: "g")
        var bystanderBefore: TenantSnapshot?
        if self.flags & 1 != 0 { bystanderBefore = Self.connectBystander(core) }

        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: now)
        var geometry: GuestGeometry?
        var sessionID: String?
        var lastAccounted: UInt64 = 0

        var frames = self.frames
        if let first = frames.first, case .clientHello(var hello) = first.body {
            self.override.apply(to: &hello)
            frames[0] = .with { $0.clientHello = hello }
        } else if self.override.mask != 0 {
            var hello = Pagebroker_V1_ClientHello.with {
                $0.protocolVersion = 1
                $0.pageSize = 4096
                $0.totalPages = 1 << 20
                $0.maxOrder = 10
            }
            self.override.apply(to: &hello)
            frames.insert(.with { $0.clientHello = hello }, at: 0)
        }
        var index = 0
        var appended = false
        while true {
            if index == frames.count {
                // The synthetic tail: whole-pool sync and report, what crashed the broker when a
                // hello's geometry was not bounded.
                guard !appended, let geometry else { break }
                appended = true
                if self.flags & 2 != 0 {
                    frames.append(
                        .with {
                            $0.sync = .with {
                                $0.chunk = 0
                                $0.ranges = [0, geometry.totalPages]
                                $0.final = true
                            }
                        }
                    )
                }
                if self.flags & 4 != 0 {
                    // The largest order that fits the pool (total_pages ≥ 1 once admitted).
                    let fitting = UInt64(max(0, 63 - geometry.totalPages.leadingZeroBitCount))
                    let order = min(UInt64(geometry.maxOrder), fitting)
                    frames.append(
                        .with {
                            $0.report = .with {
                                $0.seq = lastAccounted &+ 1
                                $0.blocks = [0, order]
                            }
                        }
                    )
                }
                if index == frames.count { break }
            }
            let frame = frames[index]
            index += 1
            now += self.step
            clock.now = now
            let closedBeforeTick = machine.isClosed
            self.check(machine.tick(now: now), machine: machine, wasClosed: closedBeforeTick)
            let closedBeforeFrame = machine.isClosed
            var action = machine.receive(frame, now: now)
            self.check(action, machine: machine, wasClosed: closedBeforeFrame)
            // Follow-up actions: what the session handler does with each, on the real core.
            while true {
                var next: SessionStateMachine.Action?
                switch action {
                case .admit(let admitted):
                    geometry = admitted
                    switch core.admit(identity, geometry: admitted, control: FuzzSessionControl()) {
                    case .admitted(let id):
                        sessionID = id
                        if ProtocolLimits.violation(pageSize: admitted.pageSize, totalPages: admitted.totalPages) != nil
                        {
                            fatalError("the core admitted a pool beyond the limits: \(admitted)")
                        }
                        next = machine.admitted(sessionID: id, tenant: "t", guest: "g", now: now)
                    case .refused(let code, let message):
                        next = machine.refused(code: code, message: message)
                    }
                case .account(let seq, let blocks):
                    guard let geometry else { fatalError("a report was accounted before any hello") }
                    guard seq > lastAccounted else { fatalError("seq \(seq) accounted after \(lastAccounted)") }
                    lastAccounted = seq
                    Self.checkBlocks(blocks, geometry: geometry)
                    let outcome = core.account(identity, blocks: blocks)
                    if outcome.reason == .backendFailed {
                        fatalError("a valid report of an admitted session got backend_failed: \(outcome.message)")
                    }
                    let result = machine.reportAccounted(
                        seq: seq,
                        reason: outcome.reason,
                        retryAfterMilliseconds: outcome.retryAfterMilliseconds,
                        message: outcome.message,
                        now: now
                    )
                    guard case .send(let sent) = result, sent.reportResult.seq == seq else {
                        fatalError("accounted report \(seq) not answered with its seq: \(result)")
                    }
                    self.check(result, machine: machine, wasClosed: false)
                case .sync(let chunk, let ranges, let final):
                    guard let geometry else { fatalError("ranges accepted before any hello") }
                    Self.checkRanges(ranges, geometry: geometry)
                    do {
                        try core.sync(identity, chunk: chunk, ranges: ranges, final: final)
                    } catch {
                        fatalError("a valid sync of an admitted session failed: \(error)")
                    }
                case .reuse(let ranges):
                    guard let geometry else { fatalError("ranges accepted before any hello") }
                    Self.checkRanges(ranges, geometry: geometry)
                    do {
                        try core.reuse(identity, ranges: ranges)
                    } catch {
                        fatalError("a valid reuse of an admitted session failed: \(error)")
                    }
                default:
                    break
                }
                guard let follow = next else { break }
                self.check(follow, machine: machine, wasClosed: false)
                action = follow
            }
            if machine.isClosed, let id = sessionID {
                core.disconnect(identity, sessionID: id)
                sessionID = nil
            }
            Self.checkCore(core)
        }
        if let id = sessionID { core.disconnect(identity, sessionID: id) }
        Self.checkCore(core)
        if let bystanderBefore {
            let after = core.tenants().first { $0.tenant == "bystander" }
            guard after?.reclaimableBytes == bystanderBefore.reclaimableBytes else {
                fatalError("the bystander's figures changed: \(bystanderBefore) -> \(String(describing: after))")
            }
        }
    }

    /// A guest of another tenant at the protocol's largest pool, all of it discarded.
    private static func connectBystander(_ core: BrokerCore) -> TenantSnapshot? {
        let identity = GuestIdentity(trustDomain: "fuzz", tenant: "bystander", guest: "b")
        let pages = ProtocolLimits.maxPoolBytes / UInt64(ProtocolLimits.maxPageSize)
        let geometry = GuestGeometry(
            pageSize: ProtocolLimits.maxPageSize,
            totalPages: pages,
            minOrder: 0,
            maxOrder: 10,
            agentVersion: "fuzz"
        )
        guard case .admitted = core.admit(identity, geometry: geometry, control: FuzzSessionControl()) else {
            fatalError("the bystander at the protocol's limits was refused")
        }
        do {
            try core.sync(identity, chunk: 0, ranges: [FrameRange(firstFrame: 0, count: pages)], final: true)
        } catch {
            fatalError("the bystander's whole-pool sync failed: \(error)")
        }
        return core.tenants().first { $0.tenant == "bystander" }
    }

    private static func checkCore(_ core: BrokerCore) {
        let problems = core.checkInvariants()
        if !problems.isEmpty { fatalError("ledger invariants broken: \(problems)") }
        // Each of these sums over guests and tenants; reading them is the check (a trap is a crash).
        let status = core.status()
        _ = core.tenants()
        _ = core.guests(tenant: nil)
        if status.reclaimableBytes < 0 { fatalError("negative reclaimable bytes \(status.reclaimableBytes)") }
    }

    private func check(_ action: SessionStateMachine.Action, machine: SessionStateMachine, wasClosed: Bool) {
        switch action {
        case .send(let frame), .sendAndClose(let frame):
            if wasClosed { fatalError("sent \(frame) after the session closed") }
            let size = (try? frame.serializedBytes() as [UInt8])?.count ?? 0
            if size > Int(machine.maxFrameSize) {
                fatalError("sent a \(size)-byte frame over the limit \(machine.maxFrameSize)")
            }
            if case .sendAndClose = action, !machine.isClosed { fatalError("sendAndClose left the session open") }
        case .close:
            if !machine.isClosed { fatalError("close left the session open") }
        default:
            break
        }
    }

    private static func checkRanges(_ ranges: [FrameRange], geometry: GuestGeometry) {
        for range in ranges where range.count == 0 || range.firstFrame + range.count > geometry.totalPages {
            fatalError("range \(range) accepted outside \(geometry.totalPages) pages")
        }
    }

    /// An accounted report's blocks, checked independently of the machine.
    private static func checkBlocks(_ blocks: [ReportedBlock], geometry: GuestGeometry) {
        guard !blocks.isEmpty else { fatalError("empty report accounted") }
        var end: UInt64 = 0
        for block in blocks {
            guard block.order <= UInt64(geometry.maxOrder), block.order >= UInt64(geometry.minOrder) else {
                fatalError("order \(block.order) accounted outside \(geometry.minOrder)...\(geometry.maxOrder)")
            }
            let size: UInt64 = 1 << block.order
            guard block.frame % size == 0 else { fatalError("unaligned block \(block) accounted") }
            guard block.frame >= end else { fatalError("overlapping or unsorted block \(block) accounted") }
            guard block.frame + size <= geometry.totalPages else { fatalError("block \(block) past the end accounted") }
            end = block.frame + size
        }
    }
}

/// The core's clock, set by the fuzz case as it steps through the input.
final class FuzzClock: Sendable {
    private let value = Mutex<Duration>(.zero)

    var now: Duration {
        get { self.value.withLock { $0 } }
        set { self.value.withLock { $0 = newValue } }
    }
}

#if !FUZZING
/// Reproducer: `swift run SessionFuzzer crash-file...` replays saved inputs.
@main
struct SessionFuzzerMain {
    static func main() throws {
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            FileHandle.standardError.write(Data("usage: SessionFuzzer INPUT...\n".utf8))
            exit(2)
        }
        for path in paths {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            data.withUnsafeBytes { SessionFuzzCase($0).run() }
            print("\(path): ok")
        }
    }
}
#endif
