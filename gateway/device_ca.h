// DeviceCa: the certificate authority that signs device certificates for --device-auth x509
// (AWS IoT's CreateKeysAndCertificate, self-hosted). Created in the data directory at first start
// (an EC P-256 key and a self-signed certificate, owner-only files), or loaded from
// --device-ca-cert/--device-ca-key. It issues certificates whose subject CN is the device id
// (Mosquitto takes it as the username and client id), signs a device's own CSR when its CN is
// the device id, and writes the certificate revocation list the broker checks. OpenSSL 3.
//
// Thread-safety: every method may be called from any thread (the key is only read).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "twins/status.h"

namespace doppel::gateway {

struct DeviceCaOptions {
  std::string dir;        // where ca.pem, ca.key and crl.pem are kept (created 0700)
  std::string cert_file;  // both set: use this CA instead of creating one
  std::string key_file;
};

struct IssuedCertificate {
  std::string serial;  // hex, as the CRL and the registry name it
  std::string certificate_pem;
  std::string private_key_pem;  // empty when the device sent a CSR
  std::string ca_pem;
};

struct RevokedCertificate {
  std::string serial;  // hex
  int64_t revoked_at_s = 0;
};

class DeviceCa {
 public:
  static Result<std::unique_ptr<DeviceCa>> open(const DeviceCaOptions& options);
  ~DeviceCa();

  // A new key pair and a certificate for `device_id` (CN), valid ten years, for TLS clients.
  Result<IssuedCertificate> issue(const std::string& device_id) const;
  // Signs `csr_pem` for `device_id`: kInvalidArgument if it does not parse, its signature does
  // not verify, or its CN is not the device id.
  Result<IssuedCertificate> sign(const std::string& device_id, const std::string& csr_pem) const;
  // Rewrites crl.pem (atomically) listing `revoked`; the broker reads it on reload.
  Status write_crl(const std::vector<RevokedCertificate>& revoked) const;

  const std::string& ca_pem() const { return ca_pem_; }
  std::string ca_file() const;
  std::string crl_file() const;

 private:
  struct Keys;
  DeviceCa(DeviceCaOptions options, std::unique_ptr<Keys> keys, std::string ca_pem);
  Result<IssuedCertificate> certify(const std::string& device_id, void* public_key) const;

  DeviceCaOptions options_;
  std::unique_ptr<Keys> keys_;
  std::string ca_pem_;
};

}  // namespace doppel::gateway
