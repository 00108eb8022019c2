// DeviceAuth: per-device broker credentials for the embedded Mosquitto (DESIGN §4: a device's
// username is its id, and the ACL `pattern readwrite twins/%u/#` confines it to its own twin).
// It issues random passwords (returned once, stored only as Mosquitto PBKDF2-SHA512 hashes),
// keeps the broker's password and ACL files in the data directory, gives the gateway an
// account of its own, and asks the broker to reload (SIGHUP) after every change.
//
// Thread-safety: issue() and revoke() may be called from any thread (serialized internally).
#pragma once

#include <functional>
#include <mutex>
#include <string>

#include "storage/credential_store.h"
#include "twins/status.h"

namespace doppel::gateway {

struct DeviceAuthOptions {
  std::string dir;               // where mosquitto.passwd and mosquitto.acl are kept
  std::string prefix = "twins";  // topic prefix
  std::string gateway_user = "doppel-gateway";
};

class DeviceAuth {
 public:
  DeviceAuth(DeviceAuthOptions options, storage::CredentialStore& store);

  // Loads (or creates) the gateway's own secret and writes the broker's files.
  Status start();
  // Called after the files change, to make the broker reload them.
  void on_change(std::function<void()> reload) { reload_ = std::move(reload); }

  // A new password for `device_id` (replacing any old one), stored hashed; returned only here.
  Result<std::string> issue(const std::string& device_id);
  // Removes the device's credentials; it can no longer connect (or act) once the broker reloads.
  Status revoke(const std::string& device_id);

  const std::string& gateway_user() const { return options_.gateway_user; }
  const std::string& gateway_password() const { return gateway_password_; }
  std::string password_file() const;
  std::string acl_file() const;

 private:
  Status write_files();

  DeviceAuthOptions options_;
  storage::CredentialStore& store_;
  std::function<void()> reload_;
  std::string gateway_password_;
  std::mutex mu_;
};

// Mosquitto's password-file hash ("$7$101$<salt>$<digest>", PBKDF2-HMAC-SHA512).
std::string mosquitto_password_hash(const std::string& password);
// `bytes` random bytes as URL-safe text (for passwords and secrets).
std::string random_secret(size_t bytes);

}  // namespace doppel::gateway
