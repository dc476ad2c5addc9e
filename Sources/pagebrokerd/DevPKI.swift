import Foundation

/// A throwaway PKI for `pagebrokerd --dev`, made with the `openssl` command-line tool: a CA, a
/// broker certificate for 127.0.0.1/localhost, and guest certificates whose URI SAN is
/// `spiffe://<trust domain>/tenant/<t>/guest/<g>`.
struct DevPKI {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let directory: String
    let trustDomain: String

    var caCertificate: String { "\(self.directory)/ca.pem" }
    var brokerCertificate: String { "\(self.directory)/broker.pem" }
    var brokerKey: String { "\(self.directory)/broker.key" }

    func guestCertificate(tenant: String, guest: String) -> String { "\(self.directory)/\(tenant)-\(guest).pem" }
    func guestKey(tenant: String, guest: String) -> String { "\(self.directory)/\(tenant)-\(guest).key" }

    /// Makes the CA and the broker's certificate.
    func makeAuthority() throws {
        try self.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "7",
            "-subj", "/CN=pagebroker dev CA", "-keyout", "\(self.directory)/ca.key", "-out", self.caCertificate,
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        try self.issue(
            name: "broker",
            subject: "/CN=pagebrokerd",
            extensions: "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n"
        )
    }

    /// Makes a guest's certificate and key.
    func makeGuest(tenant: String, guest: String) throws {
        try self.issue(
            name: "\(tenant)-\(guest)",
            subject: "/CN=\(tenant).\(guest)",
            extensions:
                "subjectAltName=URI:spiffe://\(self.trustDomain)/tenant/\(tenant)/guest/\(guest)\nextendedKeyUsage=clientAuth\n"
        )
    }

    private func issue(name: String, subject: String, extensions: String) throws {
        let key = "\(self.directory)/\(name).key"
        let request = "\(self.directory)/\(name).csr"
        let extensionsFile = "\(self.directory)/\(name).ext"
        try extensions.write(toFile: extensionsFile, atomically: true, encoding: .utf8)
        try self.openssl([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", subject,
            "-keyout", key,
            "-out", request,
        ])
        try self.openssl([
            "x509", "-req", "-in", request, "-CA", self.caCertificate, "-CAkey", "\(self.directory)/ca.key",
            "-CAcreateserial",
            "-days", "7", "-extfile", extensionsFile, "-out", "\(self.directory)/\(name).pem",
        ])
        try? FileManager.default.removeItem(atPath: request)
        try? FileManager.default.removeItem(atPath: extensionsFile)
    }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw Failure(description: "cannot run openssl (install the openssl package): \(error)")
        }
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(
                description:
                    "openssl \(arguments.prefix(2).joined(separator: " ")) failed: \(String(decoding: output, as: UTF8.self))"
            )
        }
    }
}
