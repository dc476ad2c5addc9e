import NIOCore

/// Hand-written encoding and decoding of `Frame { report { seq, blocks } }` and
/// `Frame { report_result { seq, reason, retry_after_ms } }` (without a message), the two
/// frames on the hot path: a guest sends one report per reporting batch, the broker answers
/// each with one result.
///
/// SwiftProtobuf's generic path costs about 0.6 µs each way for a 32-block
/// report: it sizes nested messages once per enclosing level before writing
/// them, serializes into a fresh array, and decodes through its generic
/// field visitor. Writing the few bytes of this one shape directly into the
/// channel's buffer, and reading them back in one pass, is several times faster.
///
/// Both directions produce exactly what SwiftProtobuf does, and the decoder
/// only claims input it fully understands: anything else (unknown fields,
/// fields out of order, unpacked blocks, overlong tags, malformed varints)
/// returns `nil` and goes through SwiftProtobuf, which has the last word on
/// what is valid. The golden vectors, the tests and the fuzzer (which decodes
/// every input both ways and compares) hold the two paths together.
package enum ReportFrameCodec {
    private static let frameReportTag: UInt8 = 0x1A  // Frame field 3, length-delimited
    private static let seqTag: UInt8 = 0x08  // Report field 1, varint
    private static let blocksTag: UInt8 = 0x12  // Report field 2, length-delimited (packed)
    private static let frameResultTag: UInt8 = 0x22  // Frame field 4, length-delimited
    private static let resultSeqTag: UInt8 = 0x08  // ReportResult field 1, varint
    private static let resultReasonTag: UInt8 = 0x10  // ReportResult field 2, varint (enum)
    private static let resultRetryTag: UInt8 = 0x18  // ReportResult field 3, varint

    /// Writes `frame` with its length prefix if it is a plain report frame.
    ///
    /// - Returns: `false` without touching `buffer` when the frame is not a
    ///   report or carries unknown fields; the caller then uses SwiftProtobuf.
    package static func write(
        _ frame: Pagebroker_V1_Frame,
        into buffer: inout ByteBuffer,
        maxFrameSize: Int
    ) throws(FrameError) -> Bool {
        if case .reportResult(let result) = frame.body {
            return try self.writeResult(result, frame: frame, into: &buffer, maxFrameSize: maxFrameSize)
        }
        guard case .report(let report) = frame.body, frame.unknownFields.data.isEmpty,
            report.unknownFields.data.isEmpty
        else { return false }

        var blocksSize = 0
        for value in report.blocks { blocksSize += varintSize(value) }
        var reportSize = 0
        if report.seq != 0 { reportSize += fieldSize(report.seq) }
        if !report.blocks.isEmpty { reportSize += 1 + varintSize(UInt64(blocksSize)) + blocksSize }
        let frameSize = 1 + varintSize(UInt64(reportSize)) + reportSize
        guard frameSize <= maxFrameSize else {
            throw FrameError(code: .frameTooLarge, frameLength: frameSize, maxFrameSize: maxFrameSize)
        }

        let total = WireProtocol.lengthPrefixSize + frameSize
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { raw in
            var out = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            writeFrameHeader(frameSize: frameSize, tag: frameReportTag, bodySize: reportSize, to: &out)
            if report.seq != 0 { writeField(seqTag, report.seq, to: &out) }
            if !report.blocks.isEmpty {
                out.pointee = blocksTag
                out += 1
                writeVarint(UInt64(blocksSize), to: &out)
                for value in report.blocks { writeVarint(value, to: &out) }
            }
            return total
        }
        return true
    }

    /// A report result without a message (every OK, most failures) with its length prefix.
    private static func writeResult(
        _ result: Pagebroker_V1_ReportResult,
        frame: Pagebroker_V1_Frame,
        into buffer: inout ByteBuffer,
        maxFrameSize: Int
    ) throws(FrameError) -> Bool {
        guard result.message.isEmpty, frame.unknownFields.data.isEmpty, result.unknownFields.data.isEmpty else {
            return false
        }
        return try self.writeResult(
            seq: result.seq,
            reason: result.reason,
            retryAfterMilliseconds: result.retryAfterMs,
            into: &buffer,
            maxFrameSize: maxFrameSize
        )
    }

    /// `Frame { report_result { seq, reason, retry_after_ms } }` (no message) with its length
    /// prefix, from its fields: the bytes SwiftProtobuf writes for that frame, with no frame to
    /// build.
    ///
    /// - Returns: `false` without touching `buffer` for a reason SwiftProtobuf would write as a
    ///   negative (ten-byte) varint; the caller then uses SwiftProtobuf.
    package static func writeResult(
        seq: UInt64,
        reason: Pagebroker_V1_ReasonCode,
        retryAfterMilliseconds: UInt32,
        into buffer: inout ByteBuffer,
        maxFrameSize: Int
    ) throws(FrameError) -> Bool {
        let reason = reason.rawValue
        guard reason >= 0, reason <= Int(Int32.max) else { return false }
        var resultSize = 0
        if seq != 0 { resultSize += fieldSize(seq) }
        if reason != 0 { resultSize += fieldSize(UInt64(reason)) }
        if retryAfterMilliseconds != 0 { resultSize += fieldSize(UInt64(retryAfterMilliseconds)) }
        let frameSize = 1 + varintSize(UInt64(resultSize)) + resultSize
        guard frameSize <= maxFrameSize else {
            throw FrameError(code: .frameTooLarge, frameLength: frameSize, maxFrameSize: maxFrameSize)
        }
        let total = WireProtocol.lengthPrefixSize + frameSize
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { raw in
            var out = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            writeFrameHeader(frameSize: frameSize, tag: frameResultTag, bodySize: resultSize, to: &out)
            if seq != 0 { writeField(resultSeqTag, seq, to: &out) }
            if reason != 0 { writeField(resultReasonTag, UInt64(reason), to: &out) }
            if retryAfterMilliseconds != 0 { writeField(resultRetryTag, UInt64(retryAfterMilliseconds), to: &out) }
            return total
        }
        return true
    }

    /// Decodes a frame body that is exactly one report, or one report result without a
    /// message, or returns `nil` for SwiftProtobuf to decide.
    package static func decode(_ body: RawSpan) -> Pagebroker_V1_Frame? {
        var blocks: [UInt64] = []
        return self.decode(body, reusingBlocks: &blocks)
    }

    /// ``decode(_:)``, with a report's block list built in the storage of `blocks` (its
    /// contents are replaced, its capacity kept): the report takes the storage over and
    /// `blocks` is left empty; when the body is not decoded here `blocks` keeps it. A caller
    /// that hands the list back once it is done with the frame decodes reports without
    /// allocating.
    package static func decode(_ body: RawSpan, reusingBlocks blocks: inout [UInt64]) -> Pagebroker_V1_Frame? {
        body.withUnsafeBytes { raw -> Pagebroker_V1_Frame? in
            var reader = Reader(raw)
            switch reader.byte() {
            case frameReportTag: break
            case frameResultTag: return decodeResult(&reader)
            default: return nil
            }
            // Taken out of `blocks`, so that it is uniquely referenced and clearing it keeps
            // its storage; given back on every path that does not decode the report.
            var list = blocks
            blocks = []
            guard let seq = decodeReportFields(&reader, raw, into: &list) else {
                blocks = list
                return nil
            }
            var report = Pagebroker_V1_Report()
            report.seq = seq
            report.blocks = list
            var frame = Pagebroker_V1_Frame()
            frame.body = .report(report)
            return frame
        }
    }

    /// The report of a frame body that is exactly one report, as ``decode(_:reusingBlocks:)``
    /// would claim it, without a `Frame`: its seq, with its blocks in `blocks` (contents
    /// replaced, capacity kept). `nil` for any other body, and then what `blocks` holds is
    /// unspecified (its storage is kept).
    ///
    /// The broker's direct path: a report frame is decoded, checked and answered without a
    /// `Frame` value to build, copy and destroy.
    package static func decodeReport(_ body: RawSpan, into blocks: inout [UInt64]) -> UInt64? {
        body.withUnsafeBytes { raw -> UInt64? in
            var reader = Reader(raw)
            guard reader.byte() == frameReportTag else { return nil }
            return decodeReportFields(&reader, raw, into: &blocks)
        }
    }

    /// The rest of a frame body after the `report` tag: the report's length, then its seq and
    /// packed blocks (each at most once, in that order), decoded into `list` (cleared first).
    private static func decodeReportFields(
        _ reader: inout Reader,
        _ raw: UnsafeRawBufferPointer,
        into list: inout [UInt64]
    ) -> UInt64? {
        guard let reportSize = reader.varint(), reportSize == UInt64(reader.remaining) else { return nil }
        list.removeAll(keepingCapacity: true)
        var seq: UInt64 = 0
        while reader.remaining > 0 {
            switch reader.byte() {
            case seqTag:
                guard let value = reader.varint() else { return nil }
                seq = value
            case blocksTag:
                guard let size = reader.varint(), size <= UInt64(reader.remaining) else { return nil }
                let packed = UnsafeRawBufferPointer(rebasing: raw[reader.offset..<reader.offset + Int(size)])
                guard Self.appendPacked(packed, to: &list) else { return nil }
                reader.offset += Int(size)
            default:
                return nil
            }
        }
        return seq
    }

    /// Appends the varints of a packed `repeated uint64` field's bytes to `list`, read as
    /// ``Reader/varint()`` reads each (at most 10 bytes, bits past 64 dropped); `false` if the
    /// bytes end inside a varint or one is longer than 10 bytes.
    ///
    /// The values are counted first (a varint ends at each byte without the continuation bit;
    /// counted eight bytes at a time), so the list grows once and, with the last byte known to end a
    /// varint, each one is read without checking for the end of the bytes.
    private static func appendPacked(_ bytes: UnsafeRawBufferPointer, to list: inout [UInt64]) -> Bool {
        guard let last = bytes.last else { return true }
        guard last & 0x80 == 0 else { return false }
        var count = 0
        var offset = 0
        while offset + 8 <= bytes.count {
            let word = bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            // One per byte without the continuation bit, summed by the multiply into the top
            // byte (at most 8, so no carries): cheaper than a population count without POPCNT.
            count += Int((((~word & 0x8080_8080_8080_8080) >> 7) &* 0x0101_0101_0101_0101) >> 56)
            offset += 8
        }
        while offset < bytes.count {
            if bytes[offset] & 0x80 == 0 { count += 1 }
            offset += 1
        }
        let start = list.count
        list.append(contentsOf: repeatElement(0, count: count))
        let decoded = list.withUnsafeMutableBufferPointer { values -> Bool in
            var input = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
            for index in start..<start + count {
                var byte = input.pointee
                input += 1
                var value = UInt64(byte & 0x7F)
                var shift: UInt64 = 7
                while byte & 0x80 != 0 {
                    guard shift < 70 else { return false }
                    byte = input.pointee
                    input += 1
                    value |= UInt64(byte & 0x7F) << shift
                    shift += 7
                }
                values[index] = value
            }
            return true
        }
        if !decoded { list.removeSubrange(start...) }
        return decoded
    }

    /// The rest of a frame body after the `report_result` tag.
    private static func decodeResult(_ reader: inout Reader) -> Pagebroker_V1_Frame? {
        guard let resultSize = reader.varint(), resultSize == UInt64(reader.remaining) else { return nil }
        var result = Pagebroker_V1_ReportResult()
        while reader.remaining > 0 {
            switch reader.byte() {
            case resultSeqTag:
                guard let seq = reader.varint() else { return nil }
                result.seq = seq
            case resultReasonTag:
                // Values SwiftProtobuf would truncate to a negative Int32 are left to it.
                guard let value = reader.varint(), value <= UInt64(Int32.max),
                    let reason = Pagebroker_V1_ReasonCode(rawValue: Int(value))
                else { return nil }
                result.reason = reason
            case resultRetryTag:
                // SwiftProtobuf truncates a uint32 varint to its low 32 bits.
                guard let value = reader.varint() else { return nil }
                result.retryAfterMs = UInt32(truncatingIfNeeded: value)
            default:
                return nil
            }
        }
        var frame = Pagebroker_V1_Frame()
        frame.body = .reportResult(result)
        return frame
    }

    private static func varintSize(_ value: UInt64) -> Int {
        // 1 byte per 7 significant bits, at least 1.
        let bits = 64 - (value | 1).leadingZeroBitCount
        return (bits + 6) / 7
    }

    /// A one-byte tag and a varint value.
    private static func fieldSize(_ value: UInt64) -> Int { 1 + varintSize(value) }

    /// The 4-byte big-endian length prefix, the frame's one-byte `oneof` tag and the body's
    /// varint length: what every frame this codec writes starts with.
    private static func writeFrameHeader(
        frameSize: Int,
        tag: UInt8,
        bodySize: Int,
        to out: inout UnsafeMutablePointer<UInt8>
    ) {
        var length = UInt32(frameSize).bigEndian
        withUnsafeBytes(of: &length) {
            out.update(from: $0.baseAddress!.assumingMemoryBound(to: UInt8.self), count: 4)
        }
        out += 4
        out.pointee = tag
        out += 1
        writeVarint(UInt64(bodySize), to: &out)
    }

    /// A varint field: its one-byte tag, then the value.
    private static func writeField(_ tag: UInt8, _ value: UInt64, to out: inout UnsafeMutablePointer<UInt8>) {
        out.pointee = tag
        out += 1
        writeVarint(value, to: &out)
    }

    private static func writeVarint(_ value: UInt64, to out: inout UnsafeMutablePointer<UInt8>) {
        var value = value
        while value >= 0x80 {
            out.pointee = UInt8(truncatingIfNeeded: value) | 0x80
            out += 1
            value >>= 7
        }
        out.pointee = UInt8(value)
        out += 1
    }

    /// A cursor over untrusted bytes; every read is bounds-checked and fails as `nil`.
    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        init(_ bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
        }

        var remaining: Int { self.bytes.count - self.offset }

        mutating func byte() -> UInt8? {
            guard self.offset < self.bytes.count else { return nil }
            defer { self.offset += 1 }
            return self.bytes[self.offset]
        }

        /// A varint as SwiftProtobuf reads one: at most 10 bytes, bits past 64
        /// dropped; `nil` if it runs off the end or past 10 bytes.
        mutating func varint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while shift < 70 {
                guard let byte = self.byte() else { return nil }
                value |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
    }
}
