// DeviceCredentials: the port through which the API gives devices their broker credentials and
// takes them back (PUT /v1/twins/{id} {"credentials": ...}, {"certificate": ...}, DELETE). Two
// implementations: DeviceAuth (device_auth.h) keeps the embedded broker's password, ACL and CRL
// files; BrokerAccounts (broker_accounts.h) manages an external broker's accounts through its
// dynamic-security plugin, which is how the nodes of a cluster share one broker's credentials.
//
// Thread-safety: every member may be called from any thread.
#pragma once

#include <cstddef>
#include <string>

#include "gateway/device_ca.h"
#include "twins/status.h"

namespace doppel::gateway {

class DeviceCredentials {
 public:
  virtual ~DeviceCredentials() = default;

  // Whether `device_id` may have credentials at all (kInvalidId with the reason otherwise).
  virtual Status check_device(const std::string& device_id) const = 0;
  // A new password for `device_id`, replacing any old one; returned only here, never stored
  // in clear.
  virtual Result<std::string> issue(const std::string& device_id) = 0;

  // What revoke() took away.
  struct Revoked {
    bool password = false;
    size_t certificates = 0;
  };
  // Takes the device's credentials (and certificates) away: it cannot connect again, and its
  // current connection ends.
  virtual Result<Revoked> revoke(const std::string& device_id) = 0;

  // Whether certificates can be issued (--device-auth x509).
  virtual bool has_ca() const = 0;
  // A certificate for `device_id` (a new key pair, or the device's own CSR signed).
  virtual Result<IssuedCertificate> issue_certificate(const std::string& device_id,
                                                      const std::string& csr_pem) = 0;
};

}  // namespace doppel::gateway
