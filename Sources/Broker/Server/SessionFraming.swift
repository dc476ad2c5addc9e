import BrokerProtocol
import NIOCore

/// The framing state of one guest session, kept by its ``SessionHandler`` instead of a
/// `ByteToMessageHandler(FrameDecoder)` and a `MessageToByteHandler(FrameEncoder)`: the part of
/// a frame that has not all arrived yet, the decoder's state, and the one outbound buffer the
/// session's frames are encoded into until the end of the read batch.
///
/// Why in the handler and not in the pipeline: with two codec handlers between the TLS handler
/// and the session, every frame crossed the pipeline twice boxed in a `NIOAny`, and every result
/// was a write and a flush of its own (docs/benchmarks.md, "The broker against the floor"). The
/// semantics are the two handlers': the decoder stops at its first error and reports data that
/// arrives after it as `ByteToMessageDecoderError.dataReceivedInErrorState`; at the end of the
/// stream left-over bytes are decoded with ``FrameParser/parseAtEndOfStream(_:)`` (a truncated
/// frame is an error); an encoder error fails that write and every later one.
struct SessionFraming {
    /// Where decoding stands, as `ByteToMessageHandler`'s state.
    enum DecodeState {
        /// Frames are decoded as bytes arrive.
        case active
        /// A frame was bad: nothing more is decoded.
        case failed(any Error)
        /// The stream ended and its left-overs were decoded.
        case done
    }

    var decodeState: DecodeState = .active
    /// Bytes of a frame that has not all arrived; `nil` (the usual case: a read carries whole
    /// frames) when there are none, so that whole frames are decoded in the TLS handler's buffer.
    private var partial: ByteBuffer?
    /// The frames written since the last flush; one buffer per session, cleared (not
    /// reallocated) once the TLS handler has taken its bytes.
    var outbound: ByteBuffer
    /// The error of the first failed encode: every later write fails with it.
    var encodeError: (any Error)?

    /// Creates the state, with an outbound buffer of `outboundCapacity` bytes (the capacity
    /// `MessageToByteHandler` started with: a result or a ping fits, a hello grows it once).
    init(allocator: ByteBufferAllocator, outboundCapacity: Int = 256) {
        self.outbound = allocator.buffer(capacity: outboundCapacity)
    }

    /// Writes a report's result into the outbound buffer, unless an earlier encode failed: the
    /// error (that one, or this write's, then kept for every later write) comes back for the
    /// session to fail with. One access to the framing per result, not one for the error and
    /// one for the buffer.
    mutating func write(_ answer: SessionStateMachine.ReportAnswer, maxFrameSize: Int) -> (any Error)? {
        if let error = self.encodeError { return error }
        do {
            try answer.write(into: &self.outbound, maxFrameSize: maxFrameSize)
            return nil
        } catch {
            self.encodeError = error
            return error
        }
    }

    var isDecoding: Bool {
        if case .active = self.decodeState { return true }
        return false
    }

    /// Takes the bytes of an incomplete frame out (so that appending to them does not copy), or
    /// `nil` when there are none.
    mutating func takePartial() -> ByteBuffer? {
        guard let partial = self.partial, partial.readableBytes > 0 else { return nil }
        self.partial = nil
        return partial
    }

    /// Keeps what is left of `bytes` for the next read. `bytes` may be the TLS handler's buffer,
    /// which it reuses: its left-over is copied, never held.
    mutating func keepRemainder(of bytes: ByteBuffer, allocator: ByteBufferAllocator, owned: Bool) {
        guard bytes.readableBytes > 0 else {
            // Keeps an emptied buffer for the next partial frame, unless a bulk sync grew it:
            // an idle session should not hold that.
            if owned, bytes.capacity <= 4_096 {
                var emptied = bytes
                emptied.clear()
                self.partial = emptied
            }
            return
        }
        if owned {
            var kept = bytes
            if kept.readerIndex >= 1_024 { kept.discardReadBytes() }
            self.partial = kept
            return
        }
        var copy = self.partial ?? allocator.buffer(capacity: max(bytes.readableBytes, 512))
        copy.clear()
        copy.writeImmutableBuffer(bytes)
        self.partial = copy
    }
}

@available(*, unavailable)
extension SessionFraming: Sendable {}
