import NIOCore

/// One-line set-up of the TLS transport for servers and clients.
public enum TLSTransport {
    /// A handler for one accepted connection, for a server bootstrap's child channel initializer:
    ///
    ///     .childChannelInitializer { channel in
    ///         channel.eventLoop.makeCompletedFuture {
    ///             try channel.pipeline.syncOperations.addHandler(TLSTransport.serverHandler(context: tls.current))
    ///             try channel.pipeline.syncOperations.addHandler(MyProtocolHandler())
    ///         }
    ///     }
    public static func serverHandler(context: TLSContext) throws(TLSError) -> TLSHandler {
        guard context.configuration.role == .server else {
            throw TLSError(code: .contextSetupFailed, reason: "serverHandler needs a server-role TLSContext")
        }
        return try TLSHandler(context: context)
    }

    /// A handler for one outgoing connection; `serverHostname` is what the server's certificate
    /// must name (DNS name or IP address literal).
    public static func clientHandler(context: TLSContext, serverHostname: String?) throws(TLSError) -> TLSHandler {
        guard context.configuration.role == .client else {
            throw TLSError(code: .contextSetupFailed, reason: "clientHandler needs a client-role TLSContext")
        }
        return try TLSHandler(context: context, serverHostname: serverHostname)
    }
}
