import BrokerProtocol
import Testing

@Suite("Reason codes, limits and range lists")
struct WireProtocolTests {
    /// The published table (docs/protocol.md): changing a number or a name breaks
    /// every deployed peer and every dashboard, so it is pinned here.
    static let published: [(Int, String)] = [
        (0, "unspecified"), (1, "ok"), (2, "invalid_range"), (3, "not_aligned"), (4, "out_of_bounds"),
        (5, "overlap_in_batch"), (6, "tenant_paused"), (7, "rate_limited"), (8, "backend_failed"),
        (9, "shutting_down"), (10, "unsupported_version"), (11, "frame_too_large"), (12, "protocol_violation"),
        (13, "order_out_of_bounds"), (14, "sequence_replayed"), (15, "too_many_ranges"), (16, "limit_exceeded"),
        (17, "session_replaced"), (18, "discard_inhibited"), (19, "guest_paused"),
    ]

    @Test("reason code numbers and names match the published table")
    func reasonCodeTable() {
        #expect(Pagebroker_V1_ReasonCode.allCases.map { $0.code } == Self.published.map(\.0))
        #expect(Pagebroker_V1_ReasonCode.allCases.map(\.stableName) == Self.published.map(\.1))
        #expect(Pagebroker_V1_ReasonCode.tooManyRanges.protoName == "REASON_CODE_TOO_MANY_RANGES")
        for (number, name) in Self.published {
            #expect(Pagebroker_V1_ReasonCode(stableName: name)?.code == number)
        }
    }

    @Test("a code from a newer peer keeps its number and gets a name that says so")
    func unrecognizedCode() {
        let code = Pagebroker_V1_ReasonCode(rawValue: 99)!
        #expect(code.code == 99)
        #expect(code.stableName == "unrecognized_99")
        #expect(Pagebroker_V1_ReasonCode(stableName: "unrecognized_99") == nil)
        #expect(!code.isTransient)
    }

    @Test("only refusals about the broker's state are transient")
    func transientCodes() {
        let transient = Pagebroker_V1_ReasonCode.allCases.filter(\.isTransient).map(\.stableName)
        #expect(
            transient == [
                "tenant_paused", "rate_limited", "backend_failed", "shutting_down", "discard_inhibited", "guest_paused",
            ]
        )
    }

    @Test("the negotiated frame size is the smaller proposal, 0 meaning the default")
    func negotiation() {
        #expect(WireProtocol.negotiateMaxFrameSize(guestProposal: 0, brokerLimit: 65_536) == 65_536)
        #expect(WireProtocol.negotiateMaxFrameSize(guestProposal: 0, brokerLimit: 1 << 20) == 65_536)
        #expect(WireProtocol.negotiateMaxFrameSize(guestProposal: 1 << 20, brokerLimit: 1 << 18) == 1 << 18)
        #expect(WireProtocol.negotiateMaxFrameSize(guestProposal: 8192, brokerLimit: 65_536) == 8192)
        #expect(WireProtocol.negotiateMaxFrameSize(guestProposal: 4096, brokerLimit: 65_536) == 4096)
        #expect(WireProtocol.negotiateMaxFrameSize(guestProposal: 4095, brokerLimit: 65_536) == nil)
        // A misconfigured broker limit is clamped into the allowed range.
        #expect(WireProtocol.negotiateMaxFrameSize(guestProposal: 1 << 30, brokerLimit: 1 << 30) == 1 << 24)
        #expect(WireProtocol.negotiateMaxFrameSize(guestProposal: 8192, brokerLimit: 1) == 4096)
    }

    @Test("range lists read back as the pairs appended")
    func rangeLists() throws {
        var report = Pagebroker_V1_Report(seq: 1)
        report.appendBlock(frame: 512, order: 9)
        report.appendBlock(frame: 2048, order: 11)
        #expect(report.blocks == [512, 9, 2048, 11])
        #expect(
            Array(try #require(report.blockList)) == [
                ReportedBlock(frame: 512, order: 9), ReportedBlock(frame: 2048, order: 11),
            ]
        )

        var reuse = Pagebroker_V1_Reuse()
        reuse.appendRange(firstFrame: 7, count: 3)
        #expect(Array(try #require(reuse.rangeList)) == [FrameRange(firstFrame: 7, count: 3)])

        var sync = Pagebroker_V1_Sync()
        #expect(try #require(sync.rangeList).isEmpty)
        sync.appendRange(firstFrame: 0, count: 1)
        #expect(try #require(sync.rangeList).count == 1)
    }

    @Test("an odd-length range list has no pair view")
    func oddRangeList() {
        var report = Pagebroker_V1_Report(seq: 1)
        report.blocks = [512, 9, 1024]
        #expect(report.blockList == nil)
        var reuse = Pagebroker_V1_Reuse()
        reuse.ranges = [1]
        #expect(reuse.rangeList == nil)
    }
}

@Suite("Report size bound")
struct ReportSizeBoundTests {
    @Test("a report of the most blocks that fit, with the largest numbers, does fit")
    func worstCaseReportFits() throws {
        for maxFrameSize: UInt32 in [4096, 8192, 65_536] {
            let count = WireProtocol.maxRangesFitting(maxFrameSize: maxFrameSize)
            var frame = Pagebroker_V1_Frame()
            frame.report = Pagebroker_V1_Report(seq: .max)
            for _ in 0..<count { frame.report.appendBlock(frame: .max, order: 63) }
            let size = try framed(frame).count - WireProtocol.lengthPrefixSize
            #expect(size <= Int(maxFrameSize))
            // One more block would not be guaranteed to fit.
            #expect(size + WireProtocol.maximumEncodedBlockSize > Int(maxFrameSize) - WireProtocol.reportOverhead)
        }
        #expect(
            WireProtocol.maxRangesFitting(maxFrameSize: WireProtocol.minimumMaxFrameSize)
                >= WireProtocol.defaultMaxRangesPerReport
        )
        #expect(WireProtocol.maxRangesFitting(maxFrameSize: 10) == 0)
    }
}
