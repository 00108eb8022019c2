#include "gateway/device_auth.h"

#include <fcntl.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "twins/log.h"

namespace doppel::gateway {
namespace {

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string base64(const unsigned char* data, size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  const int len =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

}  // namespace

Status write_file_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  // Owner-only from the first byte (keys and secrets pass through here).
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status(StatusCode::kUnavailable, "cannot write " + tmp);
  ::fchmod(fd, 0600);
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n <= 0) {
      ::close(fd);
      return Status(StatusCode::kUnavailable, "cannot write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return Status(StatusCode::kUnavailable, "cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status(StatusCode::kUnavailable, "cannot replace " + path + ": " + ec.message());
  return Status::ok();
}

std::string random_secret(size_t bytes) {
  std::string raw(bytes, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes));
  std::string s = base64(reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  for (char& c : s) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  while (!s.empty() && s.back() == '=') s.pop_back();
  return s;
}

std::string mosquitto_password_hash(const std::string& password) {
  constexpr int kIterations = 101;  // Mosquitto 2.0's default for sha512-pbkdf2
  unsigned char salt[12];
  RAND_bytes(salt, sizeof salt);
  unsigned char digest[64];
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt, sizeof salt,
                    kIterations, EVP_sha512(), sizeof digest, digest);
  return "$7$" + std::to_string(kIterations) + "$" + base64(salt, sizeof salt) + "$" +
         base64(digest, sizeof digest);
}

DeviceAuth::DeviceAuth(DeviceAuthOptions options, storage::CredentialStore& store)
    : options_(std::move(options)), store_(store) {}

std::string DeviceAuth::password_file() const { return options_.dir + "/mosquitto.passwd"; }
std::string DeviceAuth::acl_file() const { return options_.dir + "/mosquitto.acl"; }

Status DeviceAuth::start() {
  std::error_code ec;
  std::filesystem::create_directories(options_.dir, ec);
  const std::string secret_file = options_.dir + "/gateway.secret";
  {
    std::ifstream in(secret_file);
    std::getline(in, gateway_password_);
  }
  if (gateway_password_.empty()) {
    gateway_password_ = random_secret(24);
    if (Status s = write_file_atomically(secret_file, gateway_password_ + "\n"); !s) return s;
  }
  return write_files();
}

uint64_t DeviceAuth::rewrites() const {
  std::lock_guard lock(mu_);
  return rewrites_;
}

uint64_t DeviceAuth::waiting_changes() const {
  std::lock_guard lock(mu_);
  return requested_ - covered_;
}

Status DeviceAuth::publish_change() {
  std::unique_lock lock(mu_);
  const uint64_t mine = ++requested_;
  while (covered_ < mine) {
    if (rewriting_) {
      rewritten_.wait(lock);
      continue;
    }
    // Nobody is rewriting: this caller does it, for every change announced so far (the files
    // are built from the store, which already holds them all).
    rewriting_ = true;
    const uint64_t covering = requested_;
    lock.unlock();
    Status s = write_files();
    lock.lock();
    rewriting_ = false;
    ++rewrites_;
    if (s) covered_ = covering;  // a failed rewrite covers nothing: the next waiter retries
    rewritten_.notify_all();
    if (!s) return s;
  }
  return Status::ok();  // covered_ only advances on a successful rewrite
}

Status DeviceAuth::write_files() {
  std::ostringstream passwd;
  passwd << options_.gateway_user << ":" << mosquitto_password_hash(gateway_password_) << "\n"
         << batch_user() << ":" << mosquitto_password_hash(gateway_password_) << "\n"
         << bulk_user() << ":" << mosquitto_password_hash(gateway_password_) << "\n";
  Status listed = store_.for_each([&](const std::string& id, const std::string& hash) {
    if (!gateway_account(id)) passwd << id << ":" << hash << "\n";
  });
  if (!listed) return listed;
  std::ostringstream acl;
  acl << "# Written by doppeld; edits are overwritten.\n"
      << "user " << options_.gateway_user << "\n"
      << "topic readwrite " << options_.prefix << "/#\n"
      << "# The broker's drop counter (overload) and its notices (device connections).\n"
      << "topic read $SYS/broker/publish/messages/dropped\n"
      << "topic read $SYS/broker/log/N\n\n"
      << "# doppeld's second and third connections: its publishes to devices, in batches (the\n"
      << "# third: job rollouts').\n";
  for (const std::string& user : {batch_user(), bulk_user()}) {
    acl << "user " << user << "\n"
        << "topic write " << options_.prefix << "/#\n"
        << "topic write $aws/things/#\n";
    // The broker plugin's relay (many QoS 0 messages in one packet; it takes them from the
    // batch user only).
    if (user == batch_user()) acl << "topic write $CONTROL/doppel/relay/v1\n";
    acl << "\n";
  }
  acl << "user " << options_.gateway_user << "\n"
      << "topic readwrite $aws/#\n"
      << "# The broker plugin's presence reports, and its control topic (kicks).\n"
      << "topic read $doppel/presence/#\n"
      << "topic write $CONTROL/doppel/#\n"
      << "# Every device (username = device id) reaches only its own twin's topics, in either\n"
      << "# dialect (Doppel's, and AWS IoT's shadow and jobs topics).\n"
      << "pattern readwrite " << options_.prefix << "/%u/#\n"
      << "pattern readwrite $aws/things/%u/#\n";
  if (options_.ca != nullptr) {
    auto revoked = store_.revoked_certificates();
    if (!revoked) return revoked.status();
    std::vector<RevokedCertificate> list;
    for (auto& [serial, at] : *revoked) list.push_back({serial, at});
    if (Status s = options_.ca->write_crl(list); !s) return s;
  }
  if (Status s = write_file_atomically(password_file(), passwd.str()); !s) return s;
  if (Status s = write_file_atomically(acl_file(), acl.str()); !s) return s;
  if (reload_) reload_();
  return Status::ok();
}

Status DeviceAuth::check_device(const std::string& device_id) const {
  if (gateway_account(device_id)) {
    return Status(StatusCode::kInvalidId, "'" + device_id +
                                              "' is the gateway's own broker account; a device "
                                              "with this id cannot have credentials");
  }
  if (device_id.find(':') != std::string::npos) {
    // Mosquitto's password file separates user and hash with ':', so such a user never logs in.
    return Status(StatusCode::kInvalidId,
                  "device id '" + device_id +
                      "' contains ':', which Mosquitto's password file cannot hold in a username; "
                      "give devices that need credentials ids without ':'");
  }
  return Status::ok();
}

Result<std::string> DeviceAuth::issue(const std::string& device_id) {
  if (Status s = check_device(device_id); !s) return s;
  std::string password = random_secret(18);
  if (Status s = store_.put(device_id, mosquitto_password_hash(password)); !s) return s;
  if (Status s = publish_change(); !s) return s;
  log_info("device credentials issued for '" + device_id + "'");
  return password;
}

Result<IssuedCertificate> DeviceAuth::issue_certificate(const std::string& device_id,
                                                        const std::string& csr_pem) {
  if (options_.ca == nullptr) {
    return Status(StatusCode::kInvalidArgument,
                  "this gateway does not issue device certificates; start doppeld with "
                  "--device-auth x509 (embedded broker, with --broker-tls-cert/--broker-tls-key)");
  }
  if (Status s = check_device(device_id); !s) return s;
  auto cert =
      csr_pem.empty() ? options_.ca->issue(device_id) : options_.ca->sign(device_id, csr_pem);
  if (!cert) return cert;
  if (Status s = store_.add_certificate(cert->serial, device_id, now_seconds()); !s) return s;
  log_info("device certificate " + cert->serial + " issued for '" + device_id + "'" +
           (csr_pem.empty() ? "" : " (from its CSR)"));
  return cert;
}

Result<size_t> DeviceAuth::revoke_certificates(const std::string& device_id) {
  if (options_.ca == nullptr) return size_t{0};
  auto n = store_.revoke_certificates(device_id, now_seconds());
  if (!n || *n == 0) return n;
  if (Status s = publish_change(); !s) return s;
  log_info("revoked " + std::to_string(*n) + " device certificate(s) of '" + device_id + "'");
  if (revoked_) revoked_(device_id);
  return n;
}

Result<DeviceAuth::Revoked> DeviceAuth::revoke(const std::string& device_id) {
  Revoked out;
  auto certs = revoke_certificates(device_id);
  if (!certs) return certs.status();
  out.certificates = *certs;
  auto had = store_.has(device_id);
  if (!had) return had.status();
  if (!*had) return out;
  if (Status s = store_.remove(device_id); !s) return s;
  if (Status s = publish_change(); !s) return s;
  log_info("device credentials revoked for '" + device_id + "'");
  out.password = true;
  return out;
}

}  // namespace doppel::gateway
