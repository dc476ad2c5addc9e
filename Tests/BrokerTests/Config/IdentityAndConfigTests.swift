import Broker
import Testing

@Suite struct IdentityTests {
    @Test func parsesTheGuestSPIFFEID() throws {
        let identity = try GuestIdentity.fromURISANs(
            ["spiffe://example.org/tenant/acme/guest/vm-1"],
            trustDomain: "example.org"
        )
        #expect(identity == GuestIdentity(trustDomain: "example.org", tenant: "acme", guest: "vm-1"))
        #expect(identity.spiffeID == "spiffe://example.org/tenant/acme/guest/vm-1")
    }

    @Test(arguments: [
        ([String](), IdentityError.Code.missingSPIFFEID),
        (["https://example.org/x"], .missingSPIFFEID),
        (["spiffe://example.org/tenant/a/guest/b", "spiffe://example.org/tenant/a/guest/c"], .multipleSPIFFEIDs),
        (["spiffe://other.org/tenant/a/guest/b"], .wrongTrustDomain),
        (["spiffe://example.org/tenant/a"], .malformedSPIFFEID),
        (["spiffe://example.org/tenants/a/guest/b"], .malformedSPIFFEID),
        (["spiffe://example.org/tenant/a/guest/b/extra"], .malformedSPIFFEID),
        (["spiffe://example.org/tenant//guest/b"], .malformedSPIFFEID),
        (["spiffe://example.org/tenant/../guest/b"], .malformedSPIFFEID),
        (["spiffe://Example.org/tenant/a/guest/b"], .malformedSPIFFEID),
        (["spiffe://example.org/tenant/a/guest/b?x=1"], .malformedSPIFFEID),
        (["spiffe://example.org/tenant/a b/guest/b"], .malformedSPIFFEID),
    ])
    func refusesWhatIsNotAGuestIdentity(uris: [String], code: IdentityError.Code) {
        #expect(throws: IdentityError.self) { try GuestIdentity.fromURISANs(uris, trustDomain: "example.org") }
        do {
            _ = try GuestIdentity.fromURISANs(uris, trustDomain: "example.org")
        } catch {
            #expect(error.code == code)
        }
    }
}

@Suite struct TokenBucketTests {
    @Test func refillsAtTheRate() {
        var bucket = TokenBucket(rate: 10, capacity: 2, now: .zero)
        #expect(bucket.take(now: .zero) == .allowed)
        #expect(bucket.take(now: .zero) == .allowed)
        #expect(bucket.take(now: .zero) == .limited(retryAfter: .milliseconds(100)))
        #expect(bucket.take(now: .milliseconds(100)) == .allowed)
    }
}

@Suite struct BrokerConfigurationTests {
    @Test func parsesEverySection() throws {
        let configuration = try BrokerConfiguration.parse(
            """
            listen: 0.0.0.0:7443
            admin_socket: /run/x.sock
            trust_domain: example.org
            tls:
              certificate: /etc/b.pem
              key: /etc/b.key
              client_ca: /etc/ca.pem
            limits:
              max_sessions: 100
              max_frame_size: 8192
              max_ranges_per_report: 64
              min_report_order: 9
              heartbeat_interval: 5s
              handshake_timeout: 500ms
            shutdown_timeout: 2s
            admin:
              allowed_uids: [0, 1000]
              allowed_gids: [998]
            default_tenant:
              max_reports_per_second: 10
            tenants:
              acme:
                paused: true
                max_reports_per_second: 500.5
                burst: 1000
                max_guests: 4
            metrics:
              listen: 127.0.0.1:9464
            event_loop_threads: 3
            """
        )
        #expect(configuration.listen == "0.0.0.0:7443")
        #expect(configuration.trustDomain == "example.org")
        #expect(
            configuration.certificate == "/etc/b.pem" && configuration.key == "/etc/b.key"
                && configuration.clientCA == "/etc/ca.pem"
        )
        #expect(configuration.maxSessions == 100)
        #expect(configuration.session.maxFrameSize == 8192 && configuration.session.maxRangesPerReport == 64)
        #expect(configuration.session.minReportOrder == 9)
        #expect(
            configuration.session.heartbeatInterval == .seconds(5)
                && configuration.session.handshakeTimeout == .milliseconds(500)
        )
        #expect(configuration.shutdownTimeout == .seconds(2))
        #expect(configuration.allowedUIDs == [0, 1000] && configuration.allowedGIDs == [998])
        #expect(configuration.policies.defaultPolicy == TenantPolicy(maxReportsPerSecond: 10))
        #expect(
            configuration.policies.tenants["acme"]
                == TenantPolicy(paused: true, maxReportsPerSecond: 500.5, burst: 1000, maxGuests: 4)
        )
        #expect(configuration.metricsListen == "127.0.0.1:9464")
        #expect(configuration.eventLoopThreads == 3)
    }

    @Test func emptyFileGivesDefaults() throws {
        let configuration = try BrokerConfiguration.parse("")
        #expect(configuration.listen == "127.0.0.1:7443")
        #expect(configuration.policies.defaultPolicy == nil)
        #expect(configuration.metricsListen == nil)
        #expect(configuration.eventLoopThreads == nil)
    }

    @Test(arguments: [
        ("listen: x\nbogus: 1\n", ConfigError.Code.unknownKey, "bogus", 2),
        ("tenants:\n  acme:\n    max_guest: 3\n", .unknownKey, "tenants.acme.max_guest", 3),
        ("limits:\n  max_frame_size: 100\n", .badValue, "limits.max_frame_size", 2),
        ("limits:\n  heartbeat_interval: soon\n", .badValue, "limits.heartbeat_interval", 2),
        ("listen: nowhere\n", .badValue, "listen", 1),
        ("trust_domain: Example.ORG\n", .badValue, "trust_domain", 1),
        ("tenants:\n  acme:\n    paused: maybe\n", .badValue, "tenants.acme.paused", 3),
        ("admin:\n  allowed_uids: root\n", .badValue, "admin.allowed_uids", 2),
        ("tenants: {}\nmetrics:\n  listen: 9464\n", .badValue, "metrics.listen", 3),
        ("metrics:\n  port: 9464\n", .unknownKey, "metrics.port", 2),
        ("metrics: 127.0.0.1:9464\n", .badValue, "metrics", 1),
        ("event_loop_threads: 0\n", .badValue, "event_loop_threads", 1),
    ])
    func badConfigurationNamesKeyAndLine(text: String, code: ConfigError.Code, key: String, line: Int) {
        do {
            _ = try BrokerConfiguration.parse(text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.code == code)
            #expect(error.key == key)
            #expect(error.line == line)
        }
    }

    @Test func syntaxErrorsHaveALine() {
        do {
            _ = try BrokerConfiguration.parse("listen: [unclosed\n")
            Issue.record("accepted bad YAML")
        } catch {
            #expect(error.code == .syntax)
        }
    }
}
