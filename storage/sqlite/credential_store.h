// Per-device broker credentials, kept in the gateway's SQLite file: a device id and the hash of
// its password in Mosquitto's password-file format (the password itself is never stored).
// Writes are synchronous and rare (provisioning); thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "twins/status.h"

namespace doppel::storage {

class CredentialStore {
 public:
  // Opens the table in the store's database file (created by the schema migrations).
  static Result<std::unique_ptr<CredentialStore>> open(const std::string& path);
  ~CredentialStore();

  Status put(const std::string& id, const std::string& hash);
  // OK whether or not the id had credentials.
  Status remove(const std::string& id);
  Result<bool> has(const std::string& id);
  // Calls `fn(id, hash)` for every credential, in id order.
  Status for_each(const std::function<void(const std::string&, const std::string&)>& fn);

  // Device certificates (--device-auth x509): the serial (hex) the device CA issued to `device`.
  Status add_certificate(const std::string& serial, const std::string& device, int64_t issued_at_s);
  // Marks every certificate of `device` not yet revoked as revoked at `at_s`; how many.
  Result<size_t> revoke_certificates(const std::string& device, int64_t at_s);
  // Every revoked certificate: serial and when (for the CRL).
  Result<std::vector<std::pair<std::string, int64_t>>> revoked_certificates();

 private:
  struct Impl;
  explicit CredentialStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace doppel::storage
