// DeviceAuth: per-device broker credentials for the embedded Mosquitto (DESIGN §4: a device's
// username is its id, and the ACL `pattern readwrite twins/%u/#` confines it to its own twin).
// It issues random passwords (returned once, stored only as Mosquitto PBKDF2-SHA512 hashes),
// keeps the broker's password and ACL files in the data directory, gives the gateway an
// account of its own, and asks the broker to reload (SIGHUP) after every change.
//
// Rewriting the files (and the broker re-reading them) costs O(devices), so concurrent changes
// share one rewrite, the way the store's writer shares a commit: a change waits until a rewrite
// that started after it has finished, and whichever caller finds no rewrite running does it
// for everyone waiting. issue() and revoke() return once the broker has been asked to reload.
//
// Thread-safety: issue() and revoke() may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "gateway/device_ca.h"
#include "gateway/device_credentials.h"
#include "storage/sqlite/credential_store.h"
#include "twins/status.h"

namespace doppel::gateway {

struct DeviceAuthOptions {
  std::string dir;               // where mosquitto.passwd and mosquitto.acl are kept
  std::string prefix = "twins";  // topic prefix
  std::string gateway_user = "doppel-gateway";
  DeviceCa* ca = nullptr;  // --device-auth x509: certificates instead of (beside) passwords
};

class DeviceAuth final : public DeviceCredentials {
 public:
  DeviceAuth(DeviceAuthOptions options, storage::CredentialStore& store);

  // Loads (or creates) the gateway's own secret and writes the broker's files.
  Status start();
  // Called after the files change, to make the broker reload them.
  void on_change(std::function<void()> reload) { reload_ = std::move(reload); }

  // A new password for `device_id` (replacing any old one), stored hashed; returned only here.
  Result<std::string> issue(const std::string& device_id) override;
  // Whether `device_id` may have credentials at all (not the gateway's account, no ':').
  Status check_device(const std::string& device_id) const override;
  // Removes the device's credentials and revokes its certificates; it can no longer connect (or
  // act) once the broker reloads.
  Result<Revoked> revoke(const std::string& device_id) override;

  // --device-auth x509: a certificate for `device_id` (a new key pair, or the device's own CSR
  // signed), recorded so it can be revoked. kFailedPrecondition-like kInvalidArgument without a CA.
  Result<IssuedCertificate> issue_certificate(const std::string& device_id,
                                              const std::string& csr_pem) override;
  // Revokes every certificate of `device_id` (the CRL is rewritten and the broker reloads it);
  // how many were revoked.
  Result<size_t> revoke_certificates(const std::string& device_id);
  bool has_ca() const override { return options_.ca != nullptr; }
  // Called with the device id after a revocation, to end its current connection.
  void on_revoked(std::function<void(const std::string&)> fn) { revoked_ = std::move(fn); }

  const std::string& gateway_user() const { return options_.gateway_user; }
  // The account of doppeld's second connection (its publishes in batches,
  // mqtt/batch_publisher.h): the gateway's password, allowed only to publish, to the topic prefix
  // and $aws/things/#. A broker that makes the username the client id would otherwise make it
  // take over the gateway's session.
  std::string batch_user() const { return options_.gateway_user + "-qos0"; }
  // ... and of its third, for job rollouts' publishes.
  std::string bulk_user() const { return options_.gateway_user + "-bulk"; }
  // Whether `username` is one of doppeld's own accounts (no device may have it).
  bool gateway_account(const std::string& username) const {
    return username == options_.gateway_user || username == batch_user() || username == bulk_user();
  }
  const std::string& gateway_password() const { return gateway_password_; }
  std::string password_file() const;
  std::string acl_file() const;

  // Rewrites done since start() (each followed by a broker reload), and changes waiting for one.
  uint64_t rewrites() const;
  uint64_t waiting_changes() const;

 private:
  Status write_files();
  // After a change to the store: waits for (or performs) a rewrite that includes it.
  Status publish_change();

  DeviceAuthOptions options_;
  storage::CredentialStore& store_;
  std::function<void()> reload_;
  std::function<void(const std::string&)> revoked_;
  std::string gateway_password_;
  mutable std::mutex mu_;
  std::condition_variable rewritten_;
  uint64_t requested_ = 0;  // changes announced so far
  uint64_t covered_ = 0;    // changes included in a finished rewrite
  bool rewriting_ = false;
  uint64_t rewrites_ = 0;
};

// Mosquitto's password-file hash ("$7$101$<salt>$<digest>", PBKDF2-HMAC-SHA512).
std::string mosquitto_password_hash(const std::string& password);
// Writes `content` to `path` through a temporary file (owner-only) and a rename.
Status write_file_atomically(const std::string& path, const std::string& content);
// `bytes` random bytes as URL-safe text (for passwords and secrets).
std::string random_secret(size_t bytes);

}  // namespace doppel::gateway
