import Broker
import BrokerProtocol

#if !FUZZING
import Foundation
#endif

/// libFuzzer entry point for the broker's session state machine: one input is one session.
///
/// Input layout: byte 0 sets the clock step between frames (so timeouts and heartbeats are
/// reachable), byte 1 decides whether the hello is admitted, the rest is the byte stream a
/// guest sent, cut into frames by the real `FrameParser`. Built with `-DFUZZING` libFuzzer
/// supplies `main`; a normal build gets the reproducer `main` below.
@_cdecl("LLVMFuzzerTestOneInput")
public func sessionFuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    SessionFuzzCase(UnsafeRawBufferPointer(start: data, count: size)).run()
    return 0
}

/// Drives a ``SessionStateMachine`` through one input and checks what must hold whatever the
/// guest sends: the machine never accounts an invalid report, answers each accounted report
/// once with its own seq, sends nothing after closing, and every frame it sends fits the frame
/// size in force.
struct SessionFuzzCase {
    private let step: Duration
    private let admit: Bool
    private let frames: [Pagebroker_V1_Frame]

    init(_ input: UnsafeRawBufferPointer) {
        self.step = .milliseconds(Int64(input.first ?? 0) * 100)
        self.admit = input.count > 1 ? input[1] & 1 == 0 : true
        var frames: [Pagebroker_V1_Frame] = []
        if input.count > 2 {
            let stream = Array(input[2...])
            let parser = FrameParser(maxFrameSize: Int(WireProtocol.defaultMaxFrameSize))
            var offset = 0
            let bytes = stream.span.bytes
            while let parsed = try? parser.parseAtEndOfStream(bytes.extracting(offset...)) {
                frames.append(parsed.0)
                offset += parsed.1
            }
        }
        self.frames = frames
    }

    func run() {
        var now = Duration.zero
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: now)
        var geometry: GuestGeometry?
        var lastAccounted: UInt64 = 0
        for frame in self.frames {
            now += self.step
            let closedBeforeTick = machine.isClosed
            self.check(machine.tick(now: now), machine: machine, wasClosed: closedBeforeTick)
            let closedBeforeFrame = machine.isClosed
            let action = machine.receive(frame, now: now)
            self.check(action, machine: machine, wasClosed: closedBeforeFrame)
            switch action {
            case .admit(let admitted):
                geometry = admitted
                let answer =
                    self.admit
                    ? machine.admitted(sessionID: "fuzz", tenant: "t", guest: "g", now: now)
                    : machine.refused(code: .rateLimited, message: "refused by the fuzz input")
                self.check(answer, machine: machine, wasClosed: false)
            case .account(let seq, let blocks):
                guard let geometry else { fatalError("a report was accounted before any hello") }
                guard seq > lastAccounted else { fatalError("seq \(seq) accounted after \(lastAccounted)") }
                lastAccounted = seq
                Self.checkBlocks(blocks, geometry: geometry)
                let result = machine.reportAccounted(seq: seq, reason: .ok, now: now)
                guard case .send(let sent) = result, sent.reportResult.seq == seq else {
                    fatalError("accounted report \(seq) not answered with its seq: \(result)")
                }
            case .sync(_, let ranges, _), .reuse(let ranges):
                guard let geometry else { fatalError("ranges accepted before any hello") }
                for range in ranges where range.count == 0 || range.firstFrame + range.count > geometry.totalPages {
                    fatalError("range \(range) accepted outside \(geometry.totalPages) pages")
                }
            default:
                break
            }
        }
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
